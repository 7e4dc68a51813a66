"""The ``epoll`` kind of the journal: busy-poll parameters that ``attach`` set on a process.

One record per epoll context (process, fd table, fd number), written *before* the
``EPIOCSPARAMS`` that changes it, holding the parameters it had before (``before``) and the
ones attach set (``info["new"]``). The process is named by pid *and* start time, so a pid
reused by another process is never touched.

Restoring a record (``netdevkit detach --pid PID`` or ``netdevkit restore``, from any
process, also after the attaching one was killed) copies the epoll fd out of the target
again with ``pidfd_getfd`` and:

- sets ``before`` back if the context still carries exactly ``new``;
- does nothing if it already carries ``before`` (the change never happened, or was undone);
- leaves a context the program changed since alone, and says so;
- reports the process, or the fd, as gone.
"""

from __future__ import annotations

import os
from typing import Any

from .. import _fault
from ..busypoll.epoll import EpollParams, describe_change, get_params, is_epoll_fd, set_params
from ..errors import FdGone, NotFoundError, ProcessGone
from ..journal import Record, RestoreOutcome, key_of, register_kind
from .pidfd import Pidfd
from .proc import EpollFd, start_time

KIND = "epoll"


def params_dict(p: EpollParams) -> dict[str, Any]:
    return {
        "busy_poll_usecs": p.busy_poll_usecs,
        "busy_poll_budget": p.busy_poll_budget,
        "prefer_busy_poll": bool(p.prefer_busy_poll),
    }


def params_from(d: dict[str, Any]) -> EpollParams:
    usecs, budget, prefer = d["busy_poll_usecs"], d["busy_poll_budget"], d["prefer_busy_poll"]
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (usecs, budget)):
        raise ValueError(f"epoll parameters {d!r}: usecs and budget must be integers")
    return EpollParams(usecs, budget, bool(prefer))


def epoll_record(epoll: EpollFd, started: int, old: EpollParams, new: EpollParams) -> Record:
    """The journal record of one context attach is about to change from *old* to *new*."""
    return Record(
        KIND,
        key_of(epoll.pid, started, epoll.tid, epoll.fd),
        params_dict(old),
        {
            "pid": epoll.pid,
            "start_time": started,
            "tid": epoll.tid,
            "fd": epoll.fd,
            "new": params_dict(new),
            "label": f"epoll {epoll} of pid {epoll.pid}",
        },
    )


def _where(record: Record) -> tuple[EpollFd, int]:
    i = record.info
    pid, tid, fd, started = i["pid"], i["tid"], i["fd"], i["start_time"]
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in (pid, tid, fd)):
        raise ValueError(f"pid/tid/fd {pid!r}/{tid!r}/{fd!r} are not numbers")
    if pid == 0 or tid == 0 or isinstance(started, bool) or not isinstance(started, int):
        raise ValueError(f"pid {pid!r}, tid {tid!r}, start time {started!r}")
    return EpollFd(pid, tid, fd), started


class _Gone(Exception):
    pass


def _read(record: Record) -> tuple[Pidfd, int, EpollFd] | str:
    """(pidfd, copy of the epoll fd, where) or why the context is gone."""
    epoll, started = _where(record)
    try:
        pidfd = Pidfd.open(epoll.tid, thread=not epoll.shared_table)
    except ProcessGone:
        return f"process {epoll.pid} exited"
    try:
        try:
            if start_time(epoll.pid) != started:
                raise _Gone(f"process {epoll.pid} exited (the pid now names another process)")
            dup = pidfd.getfd(epoll.fd)
        except FdGone:
            raise _Gone(f"fd {epoll.fd} was closed") from None
        except NotFoundError:  # ProcessGone, or /proc/PID vanished
            raise _Gone(f"process {epoll.pid} exited") from None
        if not is_epoll_fd(dup):
            os.close(dup)
            raise _Gone(f"fd {epoll.fd} is no longer an epoll")
    except _Gone as why:
        pidfd.close()
        return str(why)
    except BaseException:
        pidfd.close()
        raise
    return pidfd, dup, epoll


class EpollRestorer:
    def restore_outcome(self, record: Record) -> RestoreOutcome:
        old, new = params_from(record.before), params_from(record.info["new"])
        got = _read(record)
        label = str(record.info.get("label", record.key))
        if isinstance(got, str):
            return RestoreOutcome(record, "gone", f"{label}: {got}; nothing to restore")
        pidfd, dup, _epoll = got
        try:
            now = get_params(dup)
            if now == old:
                return RestoreOutcome(record, "unchanged", f"{label}: already at {old}")
            if now != new:
                return RestoreOutcome(
                    record, "kept", f"{label}: changed since attach (now {now}); left alone"
                )
            _fault.point("epoll-restore")
            set_params(dup, old)
            change = describe_change(new, old)
            return RestoreOutcome(record, "restored", f"{label}: restored {change}")
        finally:
            os.close(dup)
            pidfd.close()

    def restore(self, record: Record) -> str:
        return self.restore_outcome(record).message

    def current(self, record: Record) -> dict[str, Any] | None:
        got = _read(record)
        if isinstance(got, str):
            return None
        pidfd, dup, _epoll = got
        try:
            return params_dict(get_params(dup))
        finally:
            os.close(dup)
            pidfd.close()


register_kind(KIND, EpollRestorer())
