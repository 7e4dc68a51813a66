"""``with tuned(...)``: NAPI settings for the length of a block, undone on every exit.

>>> with tuned("eth0", preset="suspend") as t:               # doctest: +SKIP
...     run_server()          # settings in effect; t.changes says what changed

The settings are put back when the block ends, when it raises, and when the
process gets SIGTERM or SIGINT while the block runs. A SIGKILL cannot be
caught: the journal (written before anything changed) lets ``netdevkit
restore`` finish the job from another process.

Signals: while active, and only when entered in the main thread (Python
runs signal handlers there and nowhere else), SIGTERM and SIGINT handlers
are installed; the previous ones come back on exit. The handler restores,
then hands the signal on: to the previous Python handler if there was one
(SIGINT's default raises KeyboardInterrupt), else it re-raises the signal
with the default action, so the process still dies *of SIGTERM* and its
parent sees that. A signal that lands while settings are being written is
held until the write (and its rollback, if any) is complete, so the journal
and the kernel never disagree. A process that ignores a signal keeps
ignoring it.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import Any

from .._argcheck import instance_arg, ints_arg, str_arg
from .._os import SignalScope
from .journal import Journal
from .model import overlay
from .napi import Applied, Outcome, Tuner
from .presets import NapiSettings, get_preset

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class tuned:  # noqa: N801 - used like a function: ``with tuned(...)``
    """Apply *preset* and/or *settings* to the NAPIs of *ifname* (or *napi_ids*).

    Explicit *settings* override the preset's values knob by knob. *backend*
    and *journal* are those of :class:`~.napi.Tuner`. Entering raises before
    anything changes if the request is invalid; see :meth:`Tuner.apply` for
    what happens when the kernel refuses part of it.
    """

    def __init__(
        self,
        ifname: str | None = None,
        *,
        preset: str | None = None,
        settings: NapiSettings | None = None,
        napi_ids: Sequence[int] | None = None,
        netns: str | None = None,
        backend: str | None = None,
        journal: Journal | None = None,
        signals: bool = True,
    ) -> None:
        for name, value in (("ifname", ifname), ("preset", preset), ("netns", netns)):
            str_arg(name, value, none_ok=True)
        str_arg("backend", backend, none_ok=True)
        instance_arg("settings", settings, (NapiSettings, type(None)), "a NapiSettings or None")
        ints_arg("napi_ids", napi_ids, none_ok=True)
        instance_arg("journal", journal, (Journal, type(None)), "a Journal or None")
        instance_arg("signals", signals, bool, "a bool")
        wanted = get_preset(preset).napi if preset is not None else NapiSettings()
        if settings is not None:
            wanted = overlay(wanted, settings)
        self.settings = wanted
        self.ifname = ifname
        self.napi_ids = napi_ids
        self.netns = netns
        self.backend = backend
        self.journal = journal
        self.signals = signals
        self.applied: Applied | None = None
        self.restored: list[Outcome] = []
        self._tuner: Tuner | None = None
        self._scope = SignalScope(SIGNALS, self._on_signal)
        self._busy = False
        self._pending: tuple[int, FrameType | None] | None = None

    @property
    def changes(self) -> tuple[Any, ...]:
        """The :class:`~.model.Change` objects that were applied."""
        return () if self.applied is None else self.applied.changes

    def __enter__(self) -> tuned:
        self._tuner = Tuner(self.backend, self.journal)
        try:
            plan = self._tuner.plan_for(
                self.settings, netns=self.netns, ifname=self.ifname, napi_ids=self.napi_ids
            )
            self._install()
            with self._critical():
                self.applied = self._tuner.apply(plan)
        except BaseException:
            self._uninstall()
            if self._tuner is not None:  # None when a held signal already restored
                self._tuner.close()
                self._tuner = None
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.restore()
        finally:
            self._uninstall()

    def restore(self) -> list[Outcome]:
        """Undo now (idempotent); returns what happened per target."""
        tuner, applied = self._tuner, self.applied
        self._tuner, self.applied = None, None
        if tuner is None:
            return self.restored
        try:
            with self._critical():
                if applied is not None:
                    self.restored = tuner.undo(applied)
        finally:
            tuner.close()
        return self.restored

    # -- signals ---------------------------------------------------------------------

    def _install(self) -> None:
        if self.signals:
            self._scope.install()

    def _uninstall(self) -> None:
        self._scope.restore()

    class _Critical:
        def __init__(self, owner: tuned) -> None:
            self.owner = owner

        def __enter__(self) -> None:
            self.owner._busy = True

        def __exit__(self, *exc: object) -> None:
            self.owner._busy = False
            pending, self.owner._pending = self.owner._pending, None
            if pending is not None:
                self.owner._on_signal(*pending)

    def _critical(self) -> tuned._Critical:
        return tuned._Critical(self)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._busy:
            self._pending = (signum, frame)  # handled when the write completes
            return
        prev = self._scope.previous_of(signum)
        self.restore()
        self._uninstall()
        self._scope.chain(signum, frame, prev)
