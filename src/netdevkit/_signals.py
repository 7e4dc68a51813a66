"""Signal scopes for code that changes the system: hold signals back, act on them at safe points.

Two tools, for two kinds of critical section:

- :func:`blocked`: the signals are blocked in the calling thread (``pthread_sigmask``) for a
  short, uninterruptible step such as writing the journal; the kernel delivers them when the
  step ends. Works in any thread and defers default actions (death by SIGTERM) as well.
- :class:`Deferral`: while active (main thread only: Python runs signal handlers nowhere
  else) SIGINT, SIGTERM and SIGHUP are recorded instead of acted on. Long operations poll
  :attr:`Deferral.pending` at their safe points (between two kernel writes) and wind down;
  a signal still pending when the scope ends is re-raised then, so the process reacts to it
  as it would have without the scope (KeyboardInterrupt, or death by the signal).

Python facts relied on: the C-level handler only sets a flag, and the Python handler runs
in the main thread between two bytecodes; ``signal.raise_signal`` runs the handler that is
installed at that moment.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType, TracebackType

from ._os import SignalScope, mask_signals

#: the signals a terminal, a service manager or a parent send to stop us
DEFERRED: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def blocked(signals: tuple[signal.Signals, ...] = DEFERRED) -> Iterator[None]:
    """Hold *signals* back for the body; they are acted on when it ends.

    Blocking them in this thread is not enough in a process with other threads: the kernel
    then delivers a process-directed signal to a thread that does not block it, and Python
    runs the handler in the main thread mid-body. So in the main thread the body also runs
    under a :class:`Deferral`, which records such a signal and re-raises it at the end.
    """
    with Deferral(signals), mask_signals(signals):
        yield


class Interrupted(KeyboardInterrupt):
    """A signal stopped an operation at a safe point; :attr:`message` says what was undone."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.message = message

    def __str__(self) -> str:
        return self.message


class Deferral:
    """Record SIGINT/SIGTERM/SIGHUP while active; see the module docstring.

    Outside the main thread, or when the process ignores a signal, nothing is installed for
    it (and :attr:`pending` stays empty for it).
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = DEFERRED) -> None:
        self.signals = signals
        self.pending: list[int] = []
        self._scope = SignalScope(signals, self._record)

    def __enter__(self) -> Deferral:
        self._scope.install()
        return self

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.pending.append(signum)

    def take(self) -> int | None:
        """The first pending signal, consumed (the scope will not re-raise it)."""
        if not self.pending:
            return None
        first = self.pending[0]
        self.pending.clear()
        return first

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._scope.restore()
        pending = self.take()
        if pending is not None and exc is None:
            signal.raise_signal(pending)  # the previous handler acts on it now
