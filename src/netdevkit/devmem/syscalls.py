"""The syscall boundary of the devmem data path: ``recvmsg``, ``sendmsg``, ``setsockopt``.

Python's own socket methods cannot do three things devmem needs, so these go
through libc with ctypes:

- ``setsockopt(SO_DEVMEM_DONTNEED)`` returns the number of frags the kernel
  freed (a positive count); ``socket.setsockopt`` throws it away.
- ``sendmsg`` with devmem takes iovecs whose ``iov_base`` is an *offset into
  the dmabuf*, not a pointer into this process: ``socket.sendmsg`` only
  accepts buffers.
- ``recvmsg`` into long-lived, preallocated iov and control buffers (one
  ``struct msghdr`` reused for every call) costs less per call than
  ``socket.recvmsg_into``, which builds new objects each time.

:class:`Kernel` is the interface the receiver and sender use; :class:`Libc`
is the real one and :class:`netdevkit.devmem.fake.FakeKernel` the fake that
tests and benchmarks drive. Errors are :class:`OSError` with the errno, as
the kernel answered.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .uapi import MSG_DONTWAIT, MSG_ERRQUEUE, SO_DEVMEM_DONTNEED, SO_ZEROCOPY, SOL_SOCKET


class Kernel(Protocol):
    """The calls the devmem receiver and sender make."""

    def recvmsg(
        self, fd: int, iov: bytearray, control: bytearray, control_len: int, flags: int
    ) -> tuple[int, int, int]:
        """Receive into *iov*; returns (bytes, control bytes used, msg_flags)."""
        ...

    def dontneed(self, fd: int, ranges: npt.NDArray[np.void] | bytes) -> int:
        """SO_DEVMEM_DONTNEED with *ranges* (``dmabuf_token`` records); returns frags freed."""
        ...

    def sendmsg(
        self, fd: int, iovecs: Sequence[tuple[int, int]], control: bytes, flags: int
    ) -> int:
        """sendmsg with raw (base, len) iovecs and a control buffer; returns bytes sent."""
        ...

    def recv_errqueue(self, fd: int, control: bytearray) -> tuple[int, int]:
        """recvmsg(MSG_ERRQUEUE | MSG_DONTWAIT); returns (control bytes used, msg_flags)."""
        ...

    def enable_zerocopy(self, fd: int) -> None:
        """setsockopt(SOL_SOCKET, SO_ZEROCOPY, 1)."""
        ...


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


def _address(buf: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


class Libc(Kernel):
    """The real kernel, through libc."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c") or "libc.so.6"
        libc = ctypes.CDLL(name, use_errno=True)
        self._recvmsg = libc.recvmsg
        self._recvmsg.argtypes = (ctypes.c_int, ctypes.POINTER(_Msghdr), ctypes.c_int)
        self._recvmsg.restype = ctypes.c_ssize_t
        self._sendmsg = libc.sendmsg
        self._sendmsg.argtypes = (ctypes.c_int, ctypes.POINTER(_Msghdr), ctypes.c_int)
        self._sendmsg.restype = ctypes.c_ssize_t
        self._setsockopt = libc.setsockopt
        self._setsockopt.argtypes = (
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_uint32,
        )
        self._setsockopt.restype = ctypes.c_int
        # one msghdr per (iov, control) pair, reused for every call
        self._hdrs: dict[tuple[int, int], tuple[_Msghdr, _Iovec, object, object]] = {}

    def _hdr(self, iov: bytearray, control: bytearray) -> tuple[_Msghdr, _Iovec]:
        key = (id(iov), id(control))
        got = self._hdrs.get(key)
        if got is None or got[1].iov_len != len(iov):
            # the ctypes views pin both buffers (a bytearray cannot be resized while
            # exported) and keep them alive as long as the cache entry lives
            iov_c = (ctypes.c_char * len(iov)).from_buffer(iov)
            ctl_c = (ctypes.c_char * len(control)).from_buffer(control)
            vec = _Iovec(ctypes.addressof(iov_c), len(iov))
            hdr = _Msghdr()
            hdr.msg_iov = ctypes.pointer(vec)
            hdr.msg_iovlen = 1
            hdr.msg_control = ctypes.addressof(ctl_c)
            if len(self._hdrs) >= _MAX_CACHED:
                self._hdrs.pop(next(iter(self._hdrs)))
            got = self._hdrs[key] = (hdr, vec, iov_c, ctl_c)
        return got[0], got[1]

    def recvmsg(
        self, fd: int, iov: bytearray, control: bytearray, control_len: int, flags: int
    ) -> tuple[int, int, int]:
        hdr, _vec = self._hdr(iov, control)
        hdr.msg_controllen = min(control_len, len(control))
        hdr.msg_flags = 0
        while True:
            n = self._recvmsg(fd, ctypes.byref(hdr), flags)
            if n >= 0:
                return n, hdr.msg_controllen, hdr.msg_flags
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise OSError(err, os.strerror(err))

    def dontneed(self, fd: int, ranges: npt.NDArray[np.void] | bytes) -> int:
        buf = ranges if isinstance(ranges, bytes) else np.ascontiguousarray(ranges).tobytes()
        n = self._setsockopt(fd, SOL_SOCKET, SO_DEVMEM_DONTNEED, buf, len(buf))
        if n < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return int(n)

    def sendmsg(
        self, fd: int, iovecs: Sequence[tuple[int, int]], control: bytes, flags: int
    ) -> int:
        vecs = (_Iovec * max(1, len(iovecs)))()
        for i, (base, length) in enumerate(iovecs):
            vecs[i].iov_base = base
            vecs[i].iov_len = length
        cbuf = ctypes.create_string_buffer(control, len(control))
        hdr = _Msghdr()
        hdr.msg_iov = ctypes.cast(vecs, ctypes.POINTER(_Iovec))
        hdr.msg_iovlen = len(iovecs)
        hdr.msg_control = ctypes.cast(cbuf, ctypes.c_void_p) if control else None
        hdr.msg_controllen = len(control)
        while True:
            n = self._sendmsg(fd, ctypes.byref(hdr), flags)
            if n >= 0:
                return int(n)
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise OSError(err, os.strerror(err))

    def recv_errqueue(self, fd: int, control: bytearray) -> tuple[int, int]:
        hdr = _Msghdr()
        hdr.msg_iov = None
        hdr.msg_iovlen = 0
        hdr.msg_control = _address(control)
        hdr.msg_controllen = len(control)
        flags = MSG_ERRQUEUE | MSG_DONTWAIT
        while True:
            n = self._recvmsg(fd, ctypes.byref(hdr), flags)
            if n >= 0:
                return hdr.msg_controllen, hdr.msg_flags
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise OSError(err, os.strerror(err))

    def enable_zerocopy(self, fd: int) -> None:
        if self._setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, (1).to_bytes(4, "little"), 4) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))


_LIBC: Libc | None = None
#: msghdrs kept for reuse (one per receiver buffer pair)
_MAX_CACHED = 64


def libc() -> Libc:
    """The process's :class:`Libc` (made on first use)."""
    global _LIBC  # noqa: PLW0603 - one ctypes handle per process is enough
    if _LIBC is None:
        _LIBC = Libc()
    return _LIBC
