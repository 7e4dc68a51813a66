"""Keep attaching: a process's epoll contexts appear over its life, not all at start.

:class:`AttachWatcher` is what ``netdevkit run`` and ``netdevkit attach --watch`` use. Each
:meth:`~AttachWatcher.scan` lists the epoll fds of the process (and, by default, of its
descendants: pre-fork servers create their contexts in worker processes) and sets the
parameters on every context it has not handled yet. A scan costs a ``readlink`` per open fd
plus a ``pidfd_getfd`` and an ``EPIOCGPARAMS`` per epoll fd; at the default 50 ms interval
that is noise for programs with up to thousands of fds.

Which contexts get the parameters (the program's own choices are respected):

- a context never seen before: always;
- a context seen before (same task, same fd number) that reads back the kernel default
  ``(0, 0, 0)`` again: the program closed it and a new epoll reused the number between two
  scans, so it is set again;
- a context seen before that reads back anything else: left alone, whether that is what we
  set or a value the program chose itself.

Epoll fds are told apart only by (pid, fd table, fd number): every epoll file shares one
anonymous inode, so there is no cheaper identity. Contexts created and closed within one
interval are missed; that is the price of not tracing the program.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from types import TracebackType

from .. import _fault
from ..busypoll.config import BusyPollConfig, checked
from ..busypoll.epoll import EpollParams, get_params, is_epoll_fd, set_params
from ..errors import FdGone, NotFoundError, PermissionDenied
from ..journal import Journal, Record
from .core import (
    AttachResult,
    ContextReport,
    DetachResult,
    Target,
    detach,
    detach_journaled,
    watched_in,
)
from .proc import EpollFd, descendants, find_epoll_fds, start_time
from .records import epoll_record

__all__ = ["AttachWatcher"]

_DEFAULT = EpollParams()


@dataclass(slots=True)
class _Proc:
    target: Target
    start_time: int
    contexts: dict[tuple[int, int], ContextReport] = field(default_factory=dict)


class AttachWatcher:
    """Attach the epoll parameters of *config* to process *pid* (and its descendants) and
    keep doing so (loop knobs are refused, as by :func:`~.core.attach`); :attr:`params` are
    those parameters.

    Call :meth:`scan` periodically; :meth:`detach` restores what is still ours; :meth:`close`
    (or the ``with`` block) releases the pidfds. No I/O happens in the constructor.
    """

    def __init__(
        self,
        pid: int,
        config: BusyPollConfig,
        *,
        follow_children: bool = True,
        journal: Journal | None = None,
    ) -> None:
        params = checked(config, "AttachWatcher", ()).params
        self.journal = journal
        self._records: dict[tuple[str, str], Record] = {}
        self.pid = pid
        self.params = params
        self.follow_children = follow_children
        self.warnings: list[str] = []
        self._procs: dict[int, _Proc] = {}
        self._warned: set[int] = set()
        self._root_seen = False  # pidfd of *pid* opened once: it existed

    @property
    def contexts(self) -> list[ContextReport]:
        return [c for p in self._procs.values() for c in p.contexts.values()]

    def results(self) -> list[AttachResult]:
        """One :class:`AttachResult` per process with attached contexts (for :func:`detach`)."""
        return [
            AttachResult(pid, p.start_time, self.params, tuple(p.contexts.values()))
            for pid, p in sorted(self._procs.items())
            if p.contexts
        ]

    def _proc(self, pid: int) -> _Proc | None:
        proc = self._procs.get(pid)
        if proc is not None:
            return proc
        target = Target(pid)
        try:
            proc = _Proc(target, start_time(pid))
        except BaseException:
            target.close()
            raise
        self._procs[pid] = proc
        return proc

    def _scan_one(self, pid: int) -> list[ContextReport]:
        proc = self._proc(pid)
        assert proc is not None
        self._root_seen |= pid == self.pid
        epolls = find_epoll_fds(pid)
        keys = {(e.tid, e.fd) for e in epolls}
        for gone in set(proc.contexts) - keys:
            del proc.contexts[gone]
        # Two looks, one copy of one fd at a time (a process with thousands of epoll fds
        # must not need thousands of fds here): read each context, journal all the ones to
        # change in one write, then set each one that still reads as it did.
        pending = [(e, now) for e in epolls if (now := self._look(proc, e)) is not None]
        self._journal(proc, pending)
        added = []
        for e, now in pending:
            new = now if now == self.params else self._set(proc, e, now)
            if new is None:
                continue  # closed, reused or changed in between: the next scan looks again
            report = ContextReport(e, now, new, watched_in(proc.target, e))
            proc.contexts[(e.tid, e.fd)] = report
            added.append(report)
        return added

    def _look(self, proc: _Proc, e: EpollFd) -> EpollParams | None:
        """The parameters of context *e* if it is one to set (see the module docstring)."""
        known = proc.contexts.get((e.tid, e.fd))
        try:
            with proc.target.copy(e) as dup:
                if not is_epoll_fd(dup):
                    return None
                now = get_params(dup)
        except FdGone:
            return None
        if known is None or (now == _DEFAULT and now != self.params):
            return now
        return None

    def _journal(self, proc: _Proc, pending: list[tuple[EpollFd, EpollParams]]) -> None:
        """Journal the old parameters of the contexts about to change (if a journal was
        given) in one write; contexts journaled before keep their older values."""
        records = [
            epoll_record(e, proc.start_time, now, self.params)
            for e, now in pending
            if now != self.params
        ]
        if self.journal is None or not records:
            return
        fresh = {r.ident for r in self.journal.add(records)}
        self.journal.update(r for r in records if r.ident not in fresh)
        self._records.update((r.ident, r) for r in records)

    def _set(self, proc: _Proc, e: EpollFd, old: EpollParams) -> EpollParams | None:
        """Set ours on context *e* if it still reads *old*; None if it does not."""
        try:
            with proc.target.copy(e) as dup:
                if not is_epoll_fd(dup):
                    return None
                now = get_params(dup)
                if now == self.params:
                    return now  # another fd of the same epoll instance was set just before
                if now != old:
                    return None
                _fault.point("epoll-set")
                return set_params(dup, self.params)
        except FdGone:
            return None

    def scan(self) -> list[ContextReport]:
        """Attach to contexts that appeared since the last scan; returns those.

        A process that exits during the scan is dropped silently (that is normal for
        short-lived children); one this process may not inspect is noted once in
        :attr:`warnings` and skipped. Raises :class:`NotFoundError` if process *pid*
        itself does not exist at the first scan (a pid that never named a process is an
        error, not a process that exited).
        """
        pids = [self.pid]
        if self.follow_children:
            pids += descendants(self.pid)
        for gone in set(self._procs) - set(pids):
            self._procs.pop(gone).target.close()
        added: list[ContextReport] = []
        for pid in pids:
            try:
                added += self._scan_one(pid)
            except PermissionDenied as err:
                if pid not in self._warned:
                    self._warned.add(pid)
                    self.warnings.append(f"pid {pid} skipped: {err}")
            except NotFoundError:
                if pid == self.pid and not self._root_seen:
                    raise
                proc = self._procs.pop(pid, None)
                if proc is not None:
                    proc.target.close()
        return added

    def refresh(self) -> list[ContextReport]:
        """Re-read the watched sockets (and their NAPI ids) of every attached context."""
        for proc in self._procs.values():
            for key, ctx in list(proc.contexts.items()):
                with contextlib.suppress(NotFoundError):
                    proc.contexts[key] = ContextReport(
                        ctx.epoll, ctx.old, ctx.new, watched_in(proc.target, ctx.epoll)
                    )
        return self.contexts

    def detach(self) -> list[DetachResult]:
        """Restore the old parameters of every context that still carries ours."""
        if self.journal is not None:
            # The journal holds the oldest values (a killed attach may have set ours before).
            idents, self._records = set(self._records), {}
            out = detach_journaled(self.journal, lambda r: r.ident in idents)
        else:
            out = [detach(r) for r in self.results()]
        for proc in self._procs.values():
            proc.contexts.clear()
        return out

    def close(self) -> None:
        for proc in self._procs.values():
            proc.target.close()
        self._procs.clear()

    def __enter__(self) -> AttachWatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
