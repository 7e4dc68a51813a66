"""``pidfd_open`` and ``pidfd_getfd``: copy a file descriptor out of another process.

Kernel facts relied on (kernel/pid.c, Linux 5.6+; checked on 6.18 x86_64):

- ``pidfd_open(pid, flags)`` (syscall 434) needs no privilege; it fails with ESRCH when no
  such process exists, and with EINVAL for a thread id unless ``PIDFD_THREAD`` (= ``O_EXCL``,
  Linux 6.9) is passed. A pidfd names one process for its whole life: unlike a pid it is
  never reused, so everything done through it reaches the process that was opened.
  It polls readable once the process has exited.
- ``pidfd_getfd(pidfd, targetfd, 0)`` (syscall 438) installs in the caller a duplicate of
  the target's fd, as ``dup`` would: the same open file, so an ``EPIOCSPARAMS`` on the copy
  changes the target's own epoll instance. The copy is close-on-exec. It needs ptrace-attach
  rights over the target (``PTRACE_MODE_ATTACH_REALCREDS``: same uid and dumpable, or
  CAP_SYS_PTRACE; Yama's ptrace_scope can narrow that further) -> EPERM otherwise; EBADF when
  the target has no such fd; ESRCH once the target is exiting (its fd table is gone).
- Syscall numbers 424 and up are the same on every architecture since Linux 5.1 (alpha adds
  110, MIPS its ABI offset), so 434/438 hold for x86_64, arm64, riscv64, ppc64 and s390x.
  glibc 2.36+ exports ``pidfd_getfd``; it is used when present, else the raw syscall.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import select
from collections.abc import Callable
from types import TracebackType
from typing import cast

# Defined in errors.py; importable from here as before.
from .._argcheck import int_arg
from ..errors import FdGone as FdGone  # noqa: PLC0414
from ..errors import NotFoundError, UnsupportedError, translate_oserror
from ..errors import ProcessGone as ProcessGone  # noqa: PLC0414

__all__ = ["PIDFD_THREAD", "FdGone", "Pidfd", "ProcessGone"]

PIDFD_THREAD = os.O_EXCL  # Linux 6.9: the pidfd names a thread, not a thread group
SYS_PIDFD_GETFD = 438
_UNIFIED_NUMBERS = {
    "x86_64",
    "aarch64",
    "arm64",
    "riscv64",
    "ppc64le",
    "ppc64",
    "s390x",
    "loongarch64",
    "i686",
    "armv7l",
}


_GetFd = Callable[[int, int, int], int]


def _libc_getfd() -> _GetFd:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "pidfd_getfd", None)
    if fn is not None:
        return cast(_GetFd, fn)
    if platform.machine() not in _UNIFIED_NUMBERS:
        raise UnsupportedError(
            f"pidfd_getfd: glibc lacks it and the syscall number for {platform.machine()} "
            "is not known to netdevkit"
        )

    def raw(pidfd: int, fd: int, flags: int) -> int:
        return int(libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, flags))

    return raw


class Pidfd:
    """A pidfd for one process (or, with ``thread=True``, one thread's fd table).

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, fd: int, pid: int) -> None:
        self.fd = fd
        self.pid = pid

    @classmethod
    def open(cls, pid: int, *, thread: bool = False) -> Pidfd:
        """``pidfd_open(pid)``; :class:`ProcessGone` if there is no such process."""
        int_arg("pid", pid)
        if pid <= 0:
            raise NotFoundError(f"pid must be a positive int, got {pid!r}")
        unsupported = {
            errno.ENOSYS: f"pidfd_open: needs Linux >= 5.3, running {os.uname().release}"
        }
        if thread:  # PIDFD_THREAD is unknown before 6.9
            unsupported[errno.EINVAL] = (
                f"pidfd_open(PIDFD_THREAD) for thread {pid}: needs Linux >= 6.9"
            )
        try:
            fd = os.pidfd_open(pid, PIDFD_THREAD if thread else 0)
        except OSError as err:
            raise translate_oserror(
                err,
                f"pidfd_open({pid})",
                gone={errno.ESRCH: ProcessGone(f"process {pid} does not exist")},
                unsupported=unsupported,
            ) from err
        return cls(fd, pid)

    def alive(self) -> bool:
        """False once the process has exited (the pidfd polls readable)."""
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        return not p.poll(0)

    def getfd(self, targetfd: int) -> int:
        """A duplicate, in this process, of the target's fd *targetfd* (close-on-exec).

        Raises :class:`PermissionDenied` (CAP_SYS_PTRACE), :class:`ProcessGone`,
        :class:`FdGone` or :class:`UnsupportedError` (kernel before 5.6).
        """
        fn = _libc_getfd()
        ret = int(fn(self.fd, targetfd, 0))
        if ret >= 0:
            return ret
        operation = f"pidfd_getfd(pid {self.pid}, fd {targetfd})"
        raise translate_oserror(
            ctypes.get_errno(),
            operation,
            capability="CAP_SYS_PTRACE",
            denied_because=" (copying another process's fd needs ptrace-attach rights: the same "
            "uid and a dumpable target, or root; Yama ptrace_scope may restrict it)",
            gone={
                errno.ESRCH: ProcessGone(f"process {self.pid} exited ({operation}: ESRCH)"),
                errno.EBADF: FdGone(
                    f"process {self.pid} has no fd {targetfd} any more ({operation})"
                ),
            },
            unsupported={
                errno.ENOSYS: f"{operation}: needs Linux >= 5.6, running {os.uname().release}"
            },
            hint="raise the open-file limit (ulimit -n): one fd is copied per epoll context"
            if ctypes.get_errno() == errno.EMFILE
            else "",
        )

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Pidfd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
