"""Attach busy-poll parameters to the epoll contexts of a running, unmodified process.

:func:`attach` takes a :class:`~netdevkit.busypoll.config.BusyPollConfig` and sets its epoll
parameters; the loop knobs need netdevkit's own loops and are refused here.

How (see :mod:`.pidfd` and :mod:`.proc` for the kernel facts):

1. ``pidfd_open(pid)`` first, so the process is pinned: a pid reused later cannot be
   confused with it, and the pidfd tells when it exits.
2. List its epoll fds in ``/proc/PID/fd`` (and in the fd tables of threads that have their
   own), copy each into this process with ``pidfd_getfd``. The copy is the target's own
   epoll instance, so ``EPIOCGPARAMS``/``EPIOCSPARAMS`` on it read and change the target.
3. Read every context's old parameters *before* changing any (two fds may name one instance,
   e.g. after ``dup``; reading all first keeps the old values right), then set and read back
   each one. If one fails, the ones already changed are set back to their old values and the
   error is raised: nothing stays half-applied.
4. If the process exited during the attach, :class:`~.pidfd.ProcessGone` is raised after the
   contexts were restored (a forked child may share an epoll instance and outlive it).
5. Report each context: its fd, old and new parameters, the files it watches (fdinfo ``tfd:``
   lines) and the ``SO_INCOMING_NAPI_ID`` of each watched socket. The kernel busy polls the
   NAPI of the last socket that became ready (``ep->napi_id``), so a context watching sockets
   of two different non-zero NAPI ids busy polls them in turn; that earns a warning.

:func:`detach` sets the old values back, but only on contexts that still carry exactly what
attach set (a context the program has changed since is left alone and reported).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .. import _fault
from .._argcheck import instance_arg, int_arg
from ..busypoll.config import BusyPollConfig, checked
from ..busypoll.epoll import EpollParams, get_params, is_epoll_fd, set_params
from ..busypoll.sockopt import get_incoming_napi_id
from ..errors import FdGone, NetdevkitError, NotFoundError, ProcessGone

# Defined in errors.py; importable from here as before.
from ..errors import NoEpollError as NoEpollError  # noqa: PLC0414
from ..journal import Journal, Record
from .pidfd import Pidfd
from .proc import EpollFd, fd_link, find_epoll_fds, read_epoll_fdinfo, start_time
from .records import KIND as EPOLL_KIND
from .records import epoll_record, params_dict, params_from

__all__ = [
    "AttachResult",
    "ContextReport",
    "DetachResult",
    "NoEpollError",
    "WatchedFd",
    "attach",
    "detach",
    "inspect",
    "watched_fds",
    "watched_in",
]


@dataclass(frozen=True, slots=True)
class WatchedFd:
    """One file an epoll context watches.

    ``kind`` is what ``/proc/PID/fd`` calls it: ``socket``, ``pipe``, ``eventfd``,
    ``eventpoll``, ``timerfd``, ``file``... or ``closed``/``reused`` when the fd number no
    longer names the watched file. ``napi_id`` is the socket's ``SO_INCOMING_NAPI_ID`` (0:
    its traffic came through no NAPI yet, e.g. loopback or a listener), ``None`` for
    anything that is not a readable socket.
    """

    fd: int
    events: int
    kind: str
    napi_id: int | None = None


@dataclass(frozen=True, slots=True)
class ContextReport:
    """One epoll context of the target, as attach left it."""

    epoll: EpollFd
    old: EpollParams
    new: EpollParams
    watched: tuple[WatchedFd, ...] = ()

    @property
    def napi_ids(self) -> tuple[int, ...]:
        """Distinct non-zero NAPI ids of the watched sockets, sorted."""
        return tuple(sorted({w.napi_id for w in self.watched if w.napi_id}))

    @property
    def mixed(self) -> bool:
        return len(self.napi_ids) > 1

    @property
    def warning(self) -> str | None:
        if not self.mixed:
            return None
        ids = ", ".join(map(str, self.napi_ids))
        return (
            f"epoll {self.epoll} of pid {self.epoll.pid} watches sockets of NAPIs {ids}: a "
            "context busy polls only the NAPI of its last ready socket, so these take turns; "
            "route connections by SO_INCOMING_NAPI_ID (e.g. memcached -N, netdevkit.dispatch)"
        )


@dataclass(frozen=True, slots=True)
class AttachResult:
    """What :func:`attach` did to process *pid*; :func:`detach` undoes it."""

    pid: int
    start_time: int
    params: EpollParams
    contexts: tuple[ContextReport, ...]

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(c.warning for c in self.contexts if c.warning)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (the CLI saves it so ``netdevkit detach`` can restore)."""
        return {
            "pid": self.pid,
            "start_time": self.start_time,
            "params": params_dict(self.params),
            "contexts": [
                {
                    "tid": c.epoll.tid,
                    "fd": c.epoll.fd,
                    "old": params_dict(c.old),
                    "new": params_dict(c.new),
                    "napi_ids": list(c.napi_ids),
                    "watched": [
                        {"fd": w.fd, "events": w.events, "kind": w.kind, "napi_id": w.napi_id}
                        for w in c.watched
                    ],
                    "warning": c.warning,
                }
                for c in self.contexts
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttachResult:
        pid = int(data["pid"])
        return cls(
            pid=pid,
            start_time=int(data["start_time"]),
            params=params_from(data["params"]),
            contexts=tuple(
                ContextReport(
                    epoll=EpollFd(pid, int(c["tid"]), int(c["fd"])),
                    old=params_from(c["old"]),
                    new=params_from(c["new"]),
                    watched=tuple(
                        WatchedFd(int(w["fd"]), int(w["events"]), str(w["kind"]), w["napi_id"])
                        for w in c.get("watched", ())
                    ),
                )
                for c in data["contexts"]
            ),
        )


@dataclass(frozen=True, slots=True)
class DetachResult:
    pid: int
    restored: tuple[EpollFd, ...] = ()
    skipped: tuple[tuple[EpollFd, str], ...] = field(default=())


# --- the target: pidfds per fd table, duplicates ------------------------------------------


class Target:
    """Pidfds for one process (and for threads with their own fd table), opened lazily.

    The process's pidfd is opened on construction, before anything is read from ``/proc``,
    so every later copy comes from that very process.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pidfds: dict[int, Pidfd] = {pid: Pidfd.open(pid)}

    def alive(self) -> bool:
        return self._pidfds[self.pid].alive()

    def dup(self, epoll_or_tid: EpollFd | int, fd: int | None = None) -> int:
        """Copy fd *fd* of the fd table of task *tid* (or the fd of an :class:`EpollFd`)."""
        if isinstance(epoll_or_tid, EpollFd):
            tid, fd = epoll_or_tid.tid, epoll_or_tid.fd
        else:
            tid = epoll_or_tid
        assert fd is not None
        pidfd = self._pidfds.get(tid)
        if pidfd is None:
            pidfd = self._pidfds[tid] = Pidfd.open(tid, thread=True)
        return pidfd.getfd(fd)

    @contextlib.contextmanager
    def copy(self, epoll_or_tid: EpollFd | int, fd: int | None = None) -> Iterator[int]:
        dup = self.dup(epoll_or_tid, fd)
        try:
            yield dup
        finally:
            os.close(dup)

    def close(self) -> None:
        for pidfd in self._pidfds.values():
            pidfd.close()
        self._pidfds.clear()

    def __enter__(self) -> Target:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _kind(link: str | None) -> str:
    if link is None:
        return "closed"
    if link.startswith("anon_inode:"):
        return link.removeprefix("anon_inode:").strip("[]")
    if ":[" in link:
        return link.split(":[", 1)[0]  # socket:[123], pipe:[456]
    return "file"


def _link_inode(link: str) -> int | None:
    if link.endswith("]") and ":[" in link:
        with contextlib.suppress(ValueError):
            return int(link.rsplit(":[", 1)[1][:-1])
    return None


def watched_in(target: Target, epoll: EpollFd) -> tuple[WatchedFd, ...]:
    """The files epoll context *epoll* watches, with each socket's NAPI id.

    A socket is copied with ``pidfd_getfd`` and asked ``SO_INCOMING_NAPI_ID``; a tfd whose
    number now names another file (inode differs from the fdinfo line) is ``reused``.
    """
    try:
        entries = read_epoll_fdinfo(epoll)
    except NotFoundError:
        return ()  # the epoll fd was closed meanwhile
    out = []
    for e in entries:
        link = fd_link(epoll.pid, epoll.tid, e.tfd)
        kind = _kind(link)
        if link is not None:
            ino = _link_inode(link)
            if ino is not None and ino != e.ino:
                kind = "reused"
        napi: int | None = None
        if kind == "socket":
            try:
                with target.copy(epoll.tid, e.tfd) as dup:
                    if os.fstat(dup).st_ino != e.ino or not stat.S_ISSOCK(os.fstat(dup).st_mode):
                        kind = "reused"
                    else:
                        napi = get_incoming_napi_id(dup)
            except FdGone:
                kind = "closed"
            except NetdevkitError:
                napi = None  # not readable (e.g. option unsupported): report the socket anyway
        out.append(WatchedFd(e.tfd, e.events, kind, napi))
    return tuple(out)


def watched_fds(pid: int, epfd: int | EpollFd) -> tuple[WatchedFd, ...]:
    """The files epoll fd *epfd* of process *pid* watches, with each socket's NAPI id.

    An int *epfd* is looked up in the process's shared fd table.
    """
    int_arg("pid", pid)
    if not isinstance(epfd, EpollFd):
        int_arg("epfd", epfd)
    epoll = epfd if isinstance(epfd, EpollFd) else EpollFd(pid, pid, epfd)
    with Target(pid) as target:
        return watched_in(target, epoll)


# --- attach / detach ----------------------------------------------------------------------

# Test hook: called after each context was set, with how many are set so far.
AfterSetHook = Callable[[int], None]


@dataclass(slots=True)
class _Held:
    epoll: EpollFd
    dup: int
    old: EpollParams = field(default_factory=EpollParams)
    new: EpollParams | None = None


def _restore(held: list[_Held]) -> list[str]:
    """Set the old parameters back on every context that was changed; returns failures."""
    failures = []
    for h in reversed(held):
        if h.new is None:
            continue
        try:
            set_params(h.dup, h.old)
            h.new = None
        except NetdevkitError as err:
            failures.append(f"{h.epoll}: {err}")
    return failures


def _abort_note(err: BaseException, changed: int, failures: list[str]) -> None:
    if failures:
        err.add_note(
            "could NOT restore the old parameters of: "
            + "; ".join(failures)
            + " (set them by hand or retry `netdevkit detach`)"
        )
    elif changed:
        err.add_note(
            f"attach aborted; the {changed} epoll context(s) already changed were set back "
            "to their old parameters"
        )


def _hold_all(target: Target, epolls: list[EpollFd], held: list[_Held]) -> None:
    for e in epolls:
        try:
            dup = target.dup(e)
        except FdGone:
            continue  # closed between the listing and the copy: nothing to attach
        h = _Held(e, dup)
        held.append(h)
        if not is_epoll_fd(dup):
            held.pop()
            os.close(dup)  # the number was reused for something else
            continue
        h.old = get_params(dup)


def attach(
    pid: int,
    config: BusyPollConfig,
    *,
    after_set: AfterSetHook | None = None,
    journal: Journal | None = None,
) -> AttachResult:
    """Set the epoll parameters of *config* on every epoll context of process *pid*; see
    the module docstring.

    The process runs its own loop, so only the epoll parameters apply: a config with a loop
    knob on (``adaptive_us``, ``hybrid``, ``hot_spin_us``) is refused.

    With a *journal*, each context's old parameters are journaled (kind ``epoll``) before
    the first change, so ``netdevkit detach``/``restore`` can put them back from any
    process; a rolled-back attach removes what it journaled.

    Raises :class:`NotFoundError` (no such process), :class:`NoEpollError`,
    :class:`~.pidfd.ProcessGone` (exited during the attach),
    :class:`~netdevkit.errors.PermissionDenied` naming CAP_SYS_PTRACE (no ptrace rights) or
    CAP_NET_ADMIN (budget above 64), :class:`~netdevkit.errors.UnsupportedError` (kernel
    before 6.9: no epoll ioctls), :class:`~netdevkit.errors.RequestError` (bad values).
    """
    params = checked(config, "attach", ()).params
    instance_arg("journal", journal, (Journal, type(None)), "a Journal or None")
    with Target(pid) as target:
        started = start_time(pid)
        epolls = find_epoll_fds(pid)
        if not epolls:
            raise NoEpollError(
                f"process {pid} has no epoll fd: nothing to attach to (a program creates its "
                "epoll when its event loop starts: attach later, or use `netdevkit run`)"
            )
        held: list[_Held] = []
        try:
            _hold_all(target, epolls, held)
            if not held:
                raise NoEpollError(f"process {pid} closed all its epoll fds during the attach")
            records = [epoll_record(h.epoll, started, h.old, params) for h in held]
            intent = journal.intent(records) if journal is not None else _no_journal()
            with intent as added:
                _set_all(target, held, params, after_set, journal, added)
                if journal is not None:  # contexts journaled before: now carry *params*
                    fresh = {r.ident for r in added}  # a set: `in added` made this O(N^2)
                    journal.update(r for r in records if r.ident not in fresh)
            contexts = tuple(
                ContextReport(h.epoll, h.old, h.new or h.old, watched_in(target, h.epoll))
                for h in held
            )
        finally:
            for h in held:
                os.close(h.dup)
    return AttachResult(pid, started, params, contexts)


@contextlib.contextmanager
def _no_journal() -> Iterator[list[Record]]:
    yield []


def _set_all(
    target: Target,
    held: list[_Held],
    params: EpollParams,
    after_set: AfterSetHook | None,
    journal: Journal | None,
    added: list[Record],
) -> None:
    """Set *params* on every held context; on any failure set the old values back."""
    try:
        for n, h in enumerate(held, 1):
            _fault.point("epoll-set")
            h.new = params  # in flight: a signal now may land after the kernel call
            try:
                h.new = set_params(h.dup, params)
            except NetdevkitError:
                h.new = None  # the kernel refused: this context did not change
                raise
            if after_set is not None:
                after_set(n)
        if not target.alive():
            raise ProcessGone(
                f"process {target.pid} exited during the attach: its epoll contexts went with it"
            )
    except BaseException as err:
        changed = sum(1 for h in held if h.new is not None)
        failures = _restore(held)
        _abort_note(err, changed, failures)
        if journal is not None:
            stuck = {(h.epoll.tid, h.epoll.fd) for h in held if h.new is not None}
            journal.forget(r for r in added if (r.info["tid"], r.info["fd"]) not in stuck)
        raise


def inspect(pid: int) -> AttachResult:
    """The epoll contexts of process *pid* with their current parameters; changes nothing.

    Each context's ``old`` and ``new`` are both what it reads back now; ``params`` is the
    kernel default. Raises like :func:`attach` (an empty ``contexts`` is not an error here).
    """
    with Target(pid) as target:
        started = start_time(pid)
        held: list[_Held] = []
        try:
            _hold_all(target, find_epoll_fds(pid), held)
            contexts = tuple(
                ContextReport(h.epoll, h.old, h.old, watched_in(target, h.epoll)) for h in held
            )
        finally:
            for h in held:
                os.close(h.dup)
    return AttachResult(pid, started, EpollParams(), contexts)


def _detach_one(target: Target, ctx: ContextReport) -> str | None:
    """Restore one context; returns why it was skipped, or None when restored."""
    try:
        with target.copy(ctx.epoll) as dup:
            if not is_epoll_fd(dup):
                return "the fd is no longer an epoll"
            now = get_params(dup)
            if now == ctx.old:
                return None  # already back (another fd of the same instance, or by hand)
            if now != ctx.new:
                return f"changed since attach (now {now}); left alone"
            _fault.point("epoll-restore")
            set_params(dup, ctx.old)
            return None
    except FdGone:
        return "the epoll fd was closed"


def detach(result: AttachResult) -> DetachResult:
    """Restore the old parameters :func:`attach` recorded in *result*.

    Contexts that are gone, or carry other values than attach set, are skipped with a reason;
    a process that has exited (or a pid now used by another process) skips everything.
    """
    instance_arg("result", result, AttachResult, "the AttachResult of attach()")
    try:
        target = Target(result.pid)
    except ProcessGone:
        return DetachResult(
            result.pid, skipped=tuple((c.epoll, "process exited") for c in result.contexts)
        )
    with target:
        try:
            same = start_time(result.pid) == result.start_time
        except NotFoundError:
            same = False
        if not same:
            return DetachResult(
                result.pid,
                skipped=tuple(
                    (c.epoll, "process exited (the pid now names another process)")
                    for c in result.contexts
                ),
            )
        restored, skipped = [], []
        for ctx in result.contexts:
            try:
                reason = _detach_one(target, ctx)
            except ProcessGone:
                reason = "process exited"
            if reason is None:
                restored.append(ctx.epoll)
            else:
                skipped.append((ctx.epoll, reason))
    return DetachResult(result.pid, tuple(restored), tuple(skipped))


def detach_journaled(journal: Journal, match: Callable[[Record], bool]) -> list[DetachResult]:
    """Restore the journaled epoll contexts *match* selects (any process wrote them, also
    one that was killed), drop their records, and report per process.

    Contexts restored or already at their old values count as restored; gone ones and
    ones the program changed since are skipped with the reason; a context that could not
    be restored stays journaled and is skipped with the error.
    """
    from ..journal import restore_all

    outcomes = restore_all(journal, kinds=[EPOLL_KIND], match=match)
    by_pid: dict[int, tuple[list[EpollFd], list[tuple[EpollFd, str]]]] = {}
    for o in reversed(outcomes):  # oldest first, as attach listed them
        i = o.record.info
        e = EpollFd(int(i["pid"]), int(i["tid"]), int(i["fd"]))
        restored, skipped = by_pid.setdefault(e.pid, ([], []))
        if o.status in ("restored", "unchanged"):
            restored.append(e)
        else:
            skipped.append((e, o.message.split(": ", 1)[-1]))
    return [DetachResult(pid, tuple(r), tuple(s)) for pid, (r, s) in sorted(by_pid.items())]
