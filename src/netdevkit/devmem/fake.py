"""A fake of the kernel's devmem socket calls, faithful at the syscall boundary.

:class:`FakeKernel` stands for one TCP socket whose RX queue is bound to a
dmabuf (and, for send, a TX binding). It implements
:class:`~netdevkit.devmem.syscalls.Kernel` the way net/ipv4/tcp.c
(``tcp_recvmsg_dmabuf``) and net/core/sock.c (``sock_devmem_dontneed``)
do, so the receiver, the sender, the tests and the benchmark drive the same
code they drive on a real NIC:

- ``recvmsg`` without ``MSG_SOCK_DEVMEM`` on devmem data: ``EFAULT``.
- Readable (ordinary) data is copied into the iov with no cmsg; one call never
  mixes readable and devmem data.
- Devmem data: the linear part of an skb is copied into the iov (packed:
  only linear bytes advance the iov) and described by a ``SCM_DEVMEM_LINEAR``
  cmsg; each fragment gets a ``SCM_DEVMEM_DMABUF`` cmsg with a fresh token.
  Tokens are the lowest free ids from 1 up (the kernel's xarray is
  ``XA_FLAGS_ALLOC1``). Fragment bytes count against the iov length
  although nothing is written there. A fragment cut by the iov length is
  handed out in pieces, each with its own token.
- A control buffer without room for the next cmsg ends the call; if nothing
  was delivered yet the call fails with ``EFAULT`` (``put_cmsg_notrunc``
  answers ``-ETOOSMALL`` and ``tcp_recvmsg_locked`` turns an error with
  nothing copied into ``-EFAULT``).
- ``SO_DEVMEM_DONTNEED``: optlen not a multiple of 8, under 4 or above 128
  entries: ``EINVAL``; the kernel inspects at most 1024 frags per call
  (:attr:`max_dontneed_frags` may lower it to test partial frees), skips
  tokens it does not hold (a second return of the same token included) and
  returns how many it freed.
- A page of the dmabuf is free again once its skb is consumed and every
  token on it has come back; :meth:`deliver` stops when no page is free,
  which is what starving the NIC looks like.

It also keeps counts a test can check: tokens handed out, returned, and
returned although not outstanding (:attr:`bad_returns`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .cmsg import CMSG_DTYPE
from .syscalls import Kernel
from .uapi import (
    CMSGHDR,
    DEVMEM_CMSG_SPACE,
    IP_RECVERR,
    MAX_DONTNEED_FRAGS,
    MAX_DONTNEED_TOKENS,
    MSG_SOCK_DEVMEM,
    MSG_ZEROCOPY,
    SCM_DEVMEM_DMABUF,
    SCM_DEVMEM_LINEAR,
    SO_EE_ORIGIN_ZEROCOPY,
    SOCK_EXTENDED_ERR,
    SOL_IP,
    SOL_SOCKET,
    cmsg_len,
    cmsg_space,
)

PAGE = 4096
#: MAX_SKB_FRAGS on x86_64
SKB_FRAGS = 17
_READ, _LIN, _FRAG = 0, 1, 2
_DEVMEM_LEN = cmsg_len(24)
_U32 = struct.Struct("=I")
_TOKEN = struct.Struct("=II")


def _oserror(err: int) -> OSError:
    return OSError(err, os.strerror(err))


@dataclass(frozen=True, slots=True)
class TxBinding:
    """A TX binding the fake knows: its id and the ifindex it was made on."""

    id: int
    ifindex: int


class FakeKernel(Kernel):
    """One devmem TCP socket and its dmabuf, in memory. See the module docstring."""

    def __init__(
        self,
        dmabuf_size: int = 1024 * PAGE,
        *,
        binding_id: int = 1,
        page_size: int = PAGE,
        max_dontneed_frags: int = MAX_DONTNEED_FRAGS,
        tx_bindings: Sequence[TxBinding] = (),
        route_ifindex: int = 0,
    ) -> None:
        self.memory = bytearray(dmabuf_size)
        self.binding_id = binding_id
        self.page_size = page_size
        self.max_dontneed_frags = max_dontneed_frags
        npages = dmabuf_size // page_size
        self._refs = np.zeros(npages, np.int64)
        self._page_free = np.ones(npages, np.bool_)
        self._tok_page = np.full(1024, -1, np.int64)
        # the receive queue: one row per piece (readable chunk, linear part, fragment)
        self._kind = np.zeros(0, np.int8)
        self._a = np.zeros(0, np.int64)  # page (fragment) or offset into _data
        self._size = np.zeros(0, np.int64)
        self._head_used = 0
        self._data = bytearray()
        self._eof = False
        self._event = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.handed_out = 0
        self.returned = 0
        self.bad_returns = 0
        self.dontneed_calls = 0
        #: seconds spent inside the fake's recvmsg and dontneed (benchmarks subtract it)
        self.time_in_kernel = 0.0
        # send side
        self.tx_bindings = {b.id: b for b in tx_bindings}
        self.route_ifindex = route_ifindex
        self.zerocopy = False
        self.sent = bytearray()
        self._zc_next = 0
        self._zc_done = 0
        self._zc_reported = 0

    # -- a socket-like face ---------------------------------------------------

    def fileno(self) -> int:
        """Readable while data (or EOF) waits: for selectors and asyncio."""
        return self._event

    def view(self, offset: int, size: int) -> memoryview:
        """The fake dmabuf's bytes (the fake serves as a receiver's ``source``)."""
        return memoryview(self.memory)[offset : offset + size]

    def close(self) -> None:
        if self._event >= 0:
            os.close(self._event)
            self._event = -1

    def _signal(self) -> None:
        if self._event >= 0:
            os.eventfd_write(self._event, 1)

    def _drain(self) -> None:
        if self._event >= 0 and not self._eof:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._event)

    # -- the wire side ----------------------------------------------------------

    def deliver(
        self,
        data: bytes | None = None,
        *,
        nbytes: int | None = None,
        linear: int = 0,
        frag_size: int | None = None,
        readable: bool = False,
    ) -> int:
        """Queue a stream segment as the NIC would; returns the bytes accepted.

        Devmem skbs carry *linear* bytes in their linear part, then up to 17
        fragments of *frag_size* (default a page), each on a free page of the
        dmabuf. Without *data* (``nbytes`` only) the payload is not written,
        which benchmarks use. Stops early when no page is free.
        """
        if data is None:
            if nbytes is None:
                raise ValueError("deliver needs data or nbytes")
            total = nbytes
        else:
            total = len(data)
        if readable:
            assert data is not None
            self._append([_READ], [len(self._data)], [total])
            self._data += data
            self._signal()
            return total
        frag = frag_size or self.page_size
        if not 0 < frag <= self.page_size:
            raise ValueError(f"frag_size must be 1..{self.page_size}")
        kinds, a, sizes, pos = self._lay_out(data, total, linear, frag)
        pages = np.array([p for k, p in zip(kinds, a, strict=True) if k == _FRAG], np.int64)
        self._page_free[pages] = False
        self._refs[pages] += 1
        self._append(kinds, a, sizes)
        if kinds:
            self._signal()
        return pos

    def _lay_out(
        self, data: bytes | None, total: int, linear: int, frag: int
    ) -> tuple[list[int], list[int], list[int], int]:
        """Cut *total* bytes into skbs: (kinds, linear offset or page, sizes, bytes taken).

        Each skb is *linear* bytes of linear data, then up to SKB_FRAGS fragments of
        *frag* bytes on free pages (written to :attr:`memory` when *data* is given).
        """
        kinds: list[int] = []
        a: list[int] = []
        sizes: list[int] = []
        pos = 0
        free = np.flatnonzero(self._page_free).tolist()
        fi = 0
        while pos < total:
            if linear:
                n = min(linear, total - pos)
                kinds.append(_LIN)
                a.append(len(self._data))
                sizes.append(n)
                self._data += data[pos : pos + n] if data is not None else bytes(n)
                pos += n
            for _ in range(SKB_FRAGS):
                if pos >= total:
                    break
                if fi == len(free):
                    total = pos  # the NIC has no buffer: the rest is dropped
                    break
                page = free[fi]
                fi += 1
                n = min(frag, total - pos)
                if data is not None:
                    base = page * self.page_size
                    self.memory[base : base + n] = data[pos : pos + n]
                kinds.append(_FRAG)
                a.append(page)
                sizes.append(n)
                pos += n
        return kinds, a, sizes, pos

    def _append(self, kinds: list[int], a: list[int], sizes: list[int]) -> None:
        self._kind = np.concatenate((self._kind, np.array(kinds, np.int8)))
        self._a = np.concatenate((self._a, np.array(a, np.int64)))
        self._size = np.concatenate((self._size, np.array(sizes, np.int64)))

    def shutdown(self) -> None:
        """The peer closed: once the queue is empty, recvmsg returns 0."""
        self._eof = True
        self._signal()

    def pending_bytes(self) -> int:
        return int(self._size.sum()) - self._head_used

    def free_pages(self) -> int:
        return int(self._page_free.sum())

    def outstanding(self) -> int:
        """Tokens handed out and not yet returned."""
        return int((self._tok_page >= 0).sum())

    # -- recvmsg ------------------------------------------------------------------

    def recvmsg(
        self, fd: int, iov: bytearray, control: bytearray, control_len: int, flags: int
    ) -> tuple[int, int, int]:
        t0 = time.perf_counter()
        try:
            return self._recvmsg(iov, control, min(control_len, len(control)), flags)
        finally:
            self.time_in_kernel += time.perf_counter() - t0

    def _recvmsg(
        self, iov: bytearray, control: bytearray, control_len: int, flags: int
    ) -> tuple[int, int, int]:
        if self._event < 0:
            raise _oserror(errno.EBADF)
        if not len(self._kind):
            if self._eof:
                return 0, 0, 0
            raise _oserror(errno.EAGAIN)
        if not len(iov):
            return 0, 0, 0
        if self._kind[0] == _READ:
            return self._recv_readable(iov), 0, 0
        if not flags & MSG_SOCK_DEVMEM:
            raise _oserror(errno.EFAULT)
        return self._recv_devmem(iov, control, control_len)

    def _recv_readable(self, iov: bytearray) -> int:
        out = 0
        room = len(iov)
        while len(self._kind) and self._kind[0] == _READ and room:
            start = int(self._a[0]) + self._head_used
            n = min(int(self._size[0]) - self._head_used, room)
            iov[out : out + n] = self._data[start : start + n]
            out += n
            room -= n
            if self._head_used + n == self._size[0]:
                self._consume(1, 0)
            else:
                self._consume(0, n)
        return out

    def _recv_devmem(
        self, iov: bytearray, control: bytearray, control_len: int
    ) -> tuple[int, int, int]:
        ncap = control_len // DEVMEM_CMSG_SPACE
        kind = self._kind
        stop = np.flatnonzero(kind == _READ)
        span = int(stop[0]) if len(stop) else len(kind)
        span = min(span, ncap)
        if span == 0:
            raise _oserror(errno.EFAULT)  # no room for one cmsg and nothing copied
        sizes = self._size[:span].copy()
        sizes[0] -= self._head_used
        cum = np.cumsum(sizes)
        room = len(iov)
        full = int(np.searchsorted(cum, room, side="right"))
        taken = sizes[:full]
        partial = 0
        if full < span:
            partial = room - (int(cum[full - 1]) if full else 0)
            if partial > 0:
                taken = np.concatenate((taken, [partial]))
        n = len(taken)
        kinds = kind[:n]
        starts = np.zeros(n, np.int64)
        starts[0] = self._head_used
        is_frag = kinds == _FRAG
        pages = self._a[:n]
        rec = np.zeros(n, CMSG_DTYPE)
        rec["len"] = _DEVMEM_LEN
        rec["level"] = SOL_SOCKET
        rec["type"] = np.where(is_frag, SCM_DEVMEM_DMABUF, SCM_DEVMEM_LINEAR)
        rec["size"] = taken
        frag_idx = np.flatnonzero(is_frag)
        if len(frag_idx):
            tokens = self._alloc_tokens(len(frag_idx))
            fpages = pages[frag_idx]
            self._tok_page[tokens] = fpages
            np.add.at(self._refs, fpages, 1)
            rec["offset"][frag_idx] = fpages * self.page_size + starts[frag_idx]
            rec["token"][frag_idx] = tokens
            rec["dmabuf_id"][frag_idx] = self.binding_id
            self.handed_out += len(frag_idx)
        out = 0
        for i in np.flatnonzero(~is_frag).tolist():
            src = int(pages[i]) + int(starts[i])
            m = int(taken[i])
            iov[out : out + m] = self._data[src : src + m]
            out += m
        used = n * DEVMEM_CMSG_SPACE
        control[:used] = rec.tobytes()
        whole = n - (1 if partial > 0 else 0)
        self._consume(whole, partial)
        return int(taken.sum()), used, 0

    def _consume(self, whole: int, partial: int) -> None:
        """Drop *whole* pieces from the head, then eat *partial* bytes of the next."""
        if whole:
            gone = self._kind[:whole] == _FRAG
            pages = self._a[:whole][gone]
            np.subtract.at(self._refs, pages, 1)
            self._release_pages(pages)
            self._kind = self._kind[whole:]
            self._a = self._a[whole:]
            self._size = self._size[whole:]
            self._head_used = 0
        self._head_used += partial
        if not len(self._kind):
            self._data = bytearray()
            self._drain()

    def _release_pages(self, pages: npt.NDArray[np.int64]) -> None:
        done = pages[self._refs[pages] == 0]
        self._page_free[done] = True

    def _alloc_tokens(self, n: int) -> npt.NDArray[np.int64]:
        while True:
            free = np.flatnonzero(self._tok_page[1:] < 0)[:n] + 1
            if len(free) == n:
                return free
            self._tok_page = np.concatenate(
                (self._tok_page, np.full(len(self._tok_page), -1, np.int64))
            )

    # -- SO_DEVMEM_DONTNEED -------------------------------------------------------

    def dontneed(self, fd: int, ranges: npt.NDArray[np.void] | bytes) -> int:
        t0 = time.perf_counter()
        try:
            return self._dontneed(ranges if isinstance(ranges, bytes) else ranges.tobytes())
        finally:
            self.time_in_kernel += time.perf_counter() - t0

    def _dontneed(self, optval: bytes) -> int:
        self.dontneed_calls += 1
        if self._event < 0:
            raise _oserror(errno.EBADF)
        nbytes = len(optval)
        if nbytes < 4 or nbytes % 8 or nbytes > 8 * MAX_DONTNEED_TOKENS:
            raise _oserror(errno.EINVAL)
        if nbytes == 8:  # one range: the common per-fragment call, without numpy
            start, count = _TOKEN.unpack(optval)
            if count == 1:
                return self._dontneed_one(start)
        flat = np.frombuffer(optval, np.uint32).reshape(-1, 2).astype(np.int64)
        starts, counts = flat[:, 0], flat[:, 1]
        # the kernel stops after inspecting max_dontneed_frags frags
        cum = np.cumsum(counts)
        limit = self.max_dontneed_frags
        k = int(np.searchsorted(cum, limit, side="left"))
        if k < len(counts):
            counts = counts[: k + 1].copy()
            counts[k] -= int(cum[k]) - limit
            starts = starts[: k + 1]
        total = int(counts.sum())
        if total == 0:
            return 0
        offs = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        tokens = offs + np.arange(total)
        inside = (tokens > 0) & (tokens < len(self._tok_page))
        known = np.zeros(total, np.bool_)
        known[inside] = self._tok_page[tokens[inside]] >= 0
        cand = tokens[known]
        uniq = np.unique(cand)
        self.bad_returns += total - len(uniq)
        if not len(uniq):
            return 0
        pages = self._tok_page[uniq]
        self._tok_page[uniq] = -1
        np.subtract.at(self._refs, pages, 1)
        self._release_pages(pages)
        self.returned += len(uniq)
        return len(uniq)

    def _dontneed_one(self, token: int) -> int:
        if not 0 < token < len(self._tok_page) or self._tok_page[token] < 0:
            self.bad_returns += 1
            return 0
        page = int(self._tok_page[token])
        self._tok_page[token] = -1
        self._refs[page] -= 1
        if self._refs[page] == 0:
            self._page_free[page] = True
        self.returned += 1
        return 1

    # -- send side ----------------------------------------------------------------

    def enable_zerocopy(self, fd: int) -> None:
        self.zerocopy = True

    def sendmsg(
        self, fd: int, iovecs: Sequence[tuple[int, int]], control: bytes, flags: int
    ) -> int:
        binding_id = _devmem_binding_id(control)
        if binding_id is not None:
            if not (flags & MSG_ZEROCOPY and self.zerocopy):
                raise _oserror(errno.EINVAL)  # [seen on 6.18] devmem cmsg without zerocopy
            b = self.tx_bindings.get(binding_id)
            if b is None:
                raise _oserror(errno.EINVAL)
            if b.ifindex != self.route_ifindex:
                raise _oserror(errno.ENODEV)
        total = 0
        for base, length in iovecs:
            if binding_id is None or base < 0 or base + length > len(self.memory):
                raise _oserror(errno.EFAULT)
            self.sent += self.memory[base : base + length]
            total += length
        if flags & MSG_ZEROCOPY and self.zerocopy and total:
            self._zc_next += 1
        return total

    def complete_sends(self, n: int | None = None) -> None:
        """The NIC finished *n* more zerocopy sends (all pending when None)."""
        pending = self._zc_next - self._zc_done
        self._zc_done += pending if n is None else min(n, pending)
        if self._zc_done > self._zc_reported:
            self._signal()

    def recv_errqueue(self, fd: int, control: bytearray) -> tuple[int, int]:
        if self._zc_done == self._zc_reported:
            raise _oserror(errno.EAGAIN)
        lo, hi = self._zc_reported, self._zc_done - 1
        self._zc_reported = self._zc_done
        payload = SOCK_EXTENDED_ERR.pack(0, SO_EE_ORIGIN_ZEROCOPY, 0, 0, 0, lo, hi)
        space = cmsg_space(len(payload))
        if len(control) < space:
            return 0, 0x8  # MSG_CTRUNC
        control[: CMSGHDR.size] = CMSGHDR.pack(cmsg_len(len(payload)), SOL_IP, IP_RECVERR)
        control[CMSGHDR.size : CMSGHDR.size + len(payload)] = payload
        return space, 0


def _devmem_binding_id(control: bytes) -> int | None:
    pos = 0
    while len(control) - pos >= CMSGHDR.size:
        clen, level, ctype = CMSGHDR.unpack_from(control, pos)
        if clen < CMSGHDR.size:
            raise _oserror(errno.EINVAL)
        if level == SOL_SOCKET and ctype == SCM_DEVMEM_DMABUF:
            if clen != cmsg_len(4):
                raise _oserror(errno.EINVAL)
            return int(_U32.unpack_from(control, pos + CMSGHDR.size)[0])
        pos += (clen + 7) & ~7
    return None
