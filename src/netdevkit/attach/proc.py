"""Finding another process's epoll contexts and what they watch, from ``/proc``.

Kernel facts relied on (fs/proc/fd.c, fs/eventpoll.c, kernel/kcmp.c; checked on 6.18):

- ``/proc/PID/fd/N`` is a symlink; an epoll instance reads ``anon_inode:[eventpoll]``, a
  socket ``socket:[INODE]``. Listing it needs ptrace read rights over PID
  (``PTRACE_MODE_READ_FSCREDS``): the same uid and a dumpable process, or CAP_SYS_PTRACE.
- File descriptors belong to an fd table (``struct files_struct``), not to a thread: every
  thread created with ``CLONE_FILES`` (all pthreads) shares the process's table, so
  ``/proc/PID/fd`` shows them all. A task cloned *without* ``CLONE_FILES`` has its own table,
  visible only as ``/proc/PID/task/TID/fd``. ``kcmp(pid, tid, KCMP_FILES, 0, 0)`` answers 0
  when two tasks share a table; :func:`find_epoll_fds` asks it for each thread (cheap: one
  syscall per thread) and lists the private tables only. Without kcmp (CONFIG_KCMP off, or an
  architecture whose number is not known here) threads are assumed to share the table.
- ``/proc/PID/fdinfo/N`` of an epoll fd holds one line per watched file (``ep_show_fdinfo``)::

      tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x

  ``tfd`` is the fd number the file had in the fd table of whoever called ``epoll_ctl``
  (normally the same table as the epoll fd); ``ino`` identifies the file, so a tfd that was
  closed and reused since is recognised by a different inode. Lines come in the kernel's
  red-black-tree order, not registration order.
- All anonymous-inode files (every epoll instance) share one inode number, so two epoll fds
  cannot be told apart (or found to be the same instance) by ``st_ino``.

This module only reads ``/proc`` and parses; it never changes the target.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import re
from dataclasses import dataclass

from .._argcheck import int_arg
from .._os import process_start_time
from ..errors import NetdevkitError, NotFoundError, translate_oserror
from ..procfs import descendants as descendants  # noqa: PLC0414 - re-exported

__all__ = [
    "EVENTPOLL_LINK",
    "EpollFd",
    "TfdEntry",
    "descendants",
    "find_epoll_fds",
    "parse_epoll_fdinfo",
    "read_epoll_fdinfo",
    "same_file",
    "shares_fd_table",
    "start_time",
]

EVENTPOLL_LINK = "anon_inode:[eventpoll]"
KCMP_FILE = 0
KCMP_FILES = 2
# kcmp(2) numbers; the generic table (arm64, riscv, loongarch) uses 272.
_KCMP_NR = {"x86_64": 312, "aarch64": 272, "arm64": 272, "riscv64": 272, "i686": 349}

_TFD_RE = re.compile(
    r"^tfd:\s*(?P<tfd>\d+)\s+events:\s*(?P<events>[0-9a-f]+)\s+data:\s*(?P<data>[0-9a-f]+)"
    r"\s+pos:\s*(?P<pos>-?\d+)\s+ino:\s*(?P<ino>[0-9a-f]+)\s+sdev:\s*(?P<sdev>[0-9a-f]+)",
)


@dataclass(frozen=True, slots=True)
class EpollFd:
    """One epoll fd of a process.

    ``tid`` is the task whose fd table holds it: the process id itself for the process's
    shared table (all ordinary threads), a thread id for a thread with a table of its own.
    """

    pid: int
    tid: int
    fd: int

    @property
    def shared_table(self) -> bool:
        return self.tid == self.pid

    def __str__(self) -> str:
        where = "" if self.shared_table else f" (thread {self.tid}'s own fd table)"
        return f"fd {self.fd}{where}"


@dataclass(frozen=True, slots=True)
class TfdEntry:
    """One ``tfd:`` line of an epoll fd's fdinfo: a file the epoll context watches."""

    tfd: int
    events: int
    data: int
    pos: int
    ino: int
    sdev: int


def parse_epoll_fdinfo(text: str) -> list[TfdEntry]:
    """The ``tfd:`` lines of an epoll fd's ``/proc/PID/fdinfo/N`` text, in file order.

    Other lines (``pos:``, ``flags:``, ``mnt_id:``, ``ino:``) are ignored; a ``tfd:`` line
    that does not parse is an error rather than silently dropped.
    """
    entries = []
    for line in text.splitlines():
        if not line.startswith("tfd:"):
            continue
        m = _TFD_RE.match(line)
        if m is None:
            raise ValueError(f"unexpected epoll fdinfo line: {line!r}")
        entries.append(
            TfdEntry(
                tfd=int(m["tfd"]),
                events=int(m["events"], 16),
                data=int(m["data"], 16),
                pos=int(m["pos"]),
                ino=int(m["ino"], 16),
                sdev=int(m["sdev"], 16),
            )
        )
    return entries


def _proc_error(err: OSError, pid: int, what: str) -> NetdevkitError:
    gone = f"process {pid} does not exist (no /proc/{pid}): {what}"
    return translate_oserror(
        err,
        f"read {what} of process {pid}",
        capability="CAP_SYS_PTRACE",
        gone={errno.ENOENT: gone, errno.ESRCH: gone},
    )


def _task_dir(pid: int, tid: int) -> str:
    return f"/proc/{pid}" if tid == pid else f"/proc/{pid}/task/{tid}"


def _epoll_fds_in(pid: int, tid: int) -> list[int]:
    base = _task_dir(pid, tid)
    try:
        names = os.listdir(f"{base}/fd")
    except OSError as err:
        raise _proc_error(err, pid, f"{base}/fd") from err
    found = []
    for name in names:
        try:
            if os.readlink(f"{base}/fd/{name}") == EVENTPOLL_LINK:
                found.append(int(name))
        except FileNotFoundError:
            continue  # closed since listdir
        except OSError as err:
            raise _proc_error(err, pid, f"{base}/fd/{name}") from err
    return sorted(found)


def _kcmp_nr() -> int | None:
    return _KCMP_NR.get(platform.machine())


def _kcmp(pid1: int, pid2: int, kind: int, idx1: int, idx2: int) -> int | None:
    nr = _kcmp_nr()
    if nr is None:
        return None
    ret = int(ctypes.CDLL(None, use_errno=True).syscall(nr, pid1, pid2, kind, idx1, idx2))
    return None if ret < 0 else ret


def same_file(pid1: int, fd1: int, pid2: int, fd2: int) -> bool | None:
    """Whether fd1 of task pid1 and fd2 of task pid2 are one open file (kcmp KCMP_FILE);
    None when the kernel cannot tell us."""
    ret = _kcmp(pid1, pid2, KCMP_FILE, fd1, fd2)
    return None if ret is None else ret == 0


def shares_fd_table(pid: int, tid: int) -> bool | None:
    """Whether task *tid* uses the fd table of task *pid* (kcmp ``KCMP_FILES``).

    ``None`` when the kernel cannot tell us (no kcmp, no rights, task gone).
    """
    if pid == tid:
        return True
    ret = _kcmp(pid, tid, KCMP_FILES, 0, 0)
    return None if ret is None else ret == 0


def _tasks(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError as err:
        raise _proc_error(err, pid, "task list") from err


def find_epoll_fds(pid: int) -> list[EpollFd]:
    """Every epoll fd of process *pid*: its shared fd table, plus the tables of threads
    that have their own (created without ``CLONE_FILES``, or after ``unshare(CLONE_FILES)``;
    found with kcmp). An fd of such a table that names the same epoll instance as one of the
    shared table (a copy inherited at the split) is listed once, from the shared table.

    Raises :class:`NotFoundError` if the process does not exist and
    :class:`PermissionDenied` (naming CAP_SYS_PTRACE) when ``/proc/PID/fd`` is not readable.
    """
    int_arg("pid", pid)
    found = [EpollFd(pid, pid, fd) for fd in _epoll_fds_in(pid, pid)]
    for tid in _tasks(pid):
        if tid == pid or shares_fd_table(pid, tid) is not False:
            continue
        try:
            fds = _epoll_fds_in(pid, tid)
        except NotFoundError:
            continue  # the thread exited meanwhile
        # A table made by unshare(CLONE_FILES) starts as a copy: its inherited fds name the
        # same epoll instances as the shared table's. List only the thread's own.
        shared = [e.fd for e in found if e.shared_table]
        found.extend(
            EpollFd(pid, tid, fd)
            for fd in fds
            if not any(same_file(pid, other, tid, fd) for other in shared)
        )
    return found


def read_epoll_fdinfo(epoll: EpollFd) -> list[TfdEntry]:
    """The files epoll context *epoll* watches (its fdinfo ``tfd:`` lines)."""
    path = f"{_task_dir(epoll.pid, epoll.tid)}/fdinfo/{epoll.fd}"
    try:
        with open(path, encoding="ascii") as info:
            text = info.read()
    except OSError as err:
        raise _proc_error(err, epoll.pid, path) from err
    return parse_epoll_fdinfo(text)


def fd_link(pid: int, tid: int, fd: int) -> str | None:
    """What ``/proc/PID/fd/N`` names (``socket:[123]``, ``pipe:[4]``...), None if closed."""
    try:
        return os.readlink(f"{_task_dir(pid, tid)}/fd/{fd}")
    except OSError:
        return None


def start_time(pid: int) -> int:
    """Field 22 of ``/proc/PID/stat`` (clock ticks since boot): with the pid it names a
    process uniquely, so a record about a pid is not applied to a later process that
    reused the number."""
    int_arg("pid", pid)
    try:
        return process_start_time(pid)
    except OSError as err:
        raise _proc_error(err, pid, "stat") from err
