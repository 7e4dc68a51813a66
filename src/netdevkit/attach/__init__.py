"""Retrofit busy polling onto unmodified programs: ``netdevkit attach`` and ``netdevkit run``.

Kernel facts (Linux 6.9+, see the submodules for details and sources):

- Per-epoll busy-poll parameters (``EPIOCSPARAMS``/``EPIOCGPARAMS``, 6.9) apply to an epoll
  *instance*; any fd naming that instance can change them.
- ``pidfd_getfd`` (5.6) copies an fd out of another process; with ptrace-attach rights over
  it (root, or CAP_SYS_PTRACE) a copy of its epoll fd lets us configure its epoll instance
  without its cooperation.
- ``/proc/PID/fd`` lists the epoll fds (``anon_inode:[eventpoll]``), ``/proc/PID/fdinfo/FD``
  the files each one watches (``tfd:`` lines), and a copy of each watched socket answers
  ``SO_INCOMING_NAPI_ID``.
- An epoll context busy polls the NAPI of its last ready socket: contexts that mix sockets of
  several NAPIs are reported with a warning.

Modules: :mod:`.proc` (reading /proc), :mod:`.pidfd` (the syscalls), :mod:`.core`
(:func:`attach`, :func:`detach`), :mod:`.watch` (:class:`AttachWatcher` for programs that
create contexts over time).
"""

from __future__ import annotations

from .core import (
    AttachResult,
    ContextReport,
    DetachResult,
    NoEpollError,
    Target,
    WatchedFd,
    attach,
    detach,
    detach_journaled,
    inspect,
    watched_fds,
)
from .pidfd import FdGone, Pidfd, ProcessGone
from .proc import EpollFd, TfdEntry, descendants, find_epoll_fds, parse_epoll_fdinfo
from .watch import AttachWatcher

__all__ = [
    "AttachResult",
    "AttachWatcher",
    "ContextReport",
    "DetachResult",
    "EpollFd",
    "FdGone",
    "NoEpollError",
    "Pidfd",
    "ProcessGone",
    "Target",
    "TfdEntry",
    "WatchedFd",
    "attach",
    "descendants",
    "detach",
    "detach_journaled",
    "find_epoll_fds",
    "inspect",
    "parse_epoll_fdinfo",
    "watched_fds",
]
