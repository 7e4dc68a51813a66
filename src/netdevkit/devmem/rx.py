"""Receive with Device Memory TCP: :class:`DevmemReceiver` and its asyncio twin.

>>> with bind_rx("eth1", [14, 15], udmabuf(64 << 20)) as binding, \\
...      DevmemReceiver(conn, binding) as rx:                        # doctest: +SKIP
...     for batch in rx:                 # one recvmsg each, tokens go back by themselves
...         print(batch.frag_count, batch.size.sum())

The API is built around batches: each ``recvmsg`` (``MSG_SOCK_DEVMEM``, a
control buffer with room for a whole batch of 40-byte cmsgs) becomes one
:class:`RxBatch` of numpy arrays (``offset``, ``size``, ``token``,
``dmabuf_id``, ``linear``), parsed in one go (:mod:`.cmsg`). Per-fragment
objects exist only when asked for (:meth:`RxBatch.chunks`).

Token return, the part ncdevmem leaves to the reader:

- Released tokens are queued and given back before the next ``recvmsg``
  (and on :meth:`DevmemReceiver.close`): consecutive tokens coalesced into
  ranges, at most 128 ranges and 1024 frags per ``SO_DEVMEM_DONTNEED``.
- The kernel's return value (frags freed) is read; when it freed fewer than
  asked, the rest is sent again. A call that frees nothing means the kernel
  does not hold those tokens: :class:`TokenReturnError`.
- Every token is returned exactly once: a batch releases once (a second
  :meth:`RxBatch.release` does nothing), and :meth:`DevmemReceiver.close`
  (the ``with`` exit, exceptions included) releases every batch still out.
- ``auto_release=True`` (default): a batch is released when the next one is
  received. Otherwise the caller releases; past ``max_outstanding`` frags
  the receiver shrinks the control buffer so a batch cannot exceed the cap,
  and at the cap refuses to receive (:class:`OutstandingLimit`; the asyncio
  receiver waits instead). Frags never returned starve the NIC: it drops.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .._argcheck import has_fileno, int_arg
from ..errors import NetdevkitError, RequestError, translate_oserror

# Defined in errors.py; importable from here as before.
from ..errors import OutstandingLimit as OutstandingLimit  # noqa: PLC0414
from ..errors import TokenReturnError as TokenReturnError  # noqa: PLC0414
from .cmsg import EMPTY, Parsed, dontneed_batches, parse_control, ranges_tail, token_ranges
from .syscalls import Kernel, libc
from .uapi import DEVMEM_CMSG_SPACE, MSG_DONTWAIT, MSG_SOCK_DEVMEM

#: control buffer of the default receiver: 1638 cmsgs (64 KiB)
DEFAULT_BATCH = 1638
DEFAULT_MAX_OUTSTANDING = 16384


class FdLike(Protocol):
    def fileno(self) -> int: ...


class Source(Protocol):
    """Where fragment bytes can be looked at (a dmabuf mapping, device memory)."""

    def view(self, offset: int, size: int) -> memoryview: ...


@dataclass(frozen=True, slots=True)
class Fragment:
    """One payload fragment that stayed in the dmabuf."""

    offset: int
    size: int
    token: int
    dmabuf_id: int


@dataclass(frozen=True, slots=True)
class RxStats:
    """What a receiver has seen so far."""

    batches: int
    bytes: int
    frags: int
    linear_chunks: int
    readable_bytes: int
    tokens_returned: int
    dontneed_calls: int
    outstanding: int


class RxBatch:
    """The result of one ``recvmsg``: arrays in stream order, and the linear bytes.

    ``readable`` batches carry ordinary data in :attr:`data` and no arrays.
    Otherwise cmsg *i* is a linear chunk where ``linear[i]`` (its bytes are
    the next ``size[i]`` bytes of :attr:`data`) or a fragment in the dmabuf.
    """

    __slots__ = (
        "_receiver",
        "_released",
        "data",
        "dmabuf_id",
        "frag_count",
        "linear",
        "nbytes",
        "offset",
        "readable",
        "size",
        "token",
    )

    def __init__(self, receiver: DevmemReceiver | None, parsed: Parsed, data: bytes, nbytes: int):
        self._receiver = receiver
        self.linear = parsed.linear
        self.offset = parsed.offset
        self.size = parsed.size
        self.token = parsed.token
        self.dmabuf_id = parsed.dmabuf_id
        self.linear.flags.writeable = False  # the others are views of read-only bytes
        self.data = data
        self.nbytes = nbytes
        self.readable = len(parsed) == 0
        self.frag_count = int(len(parsed) - np.count_nonzero(parsed.linear))
        self._released = self.frag_count == 0

    @property
    def released(self) -> bool:
        return self._released

    @property
    def linear_count(self) -> int:
        return len(self.linear) - self.frag_count

    def frag_tokens(self) -> npt.NDArray[np.uint32]:
        """The tokens of the fragments (linear chunks carry none)."""
        if self.frag_count == len(self.token):
            return self.token
        return self.token[~self.linear]

    def view(self, i: int) -> memoryview:
        """The bytes of cmsg *i*: a fragment through the receiver's source, or linear bytes."""
        if self.readable:
            raise RequestError("a readable batch has no fragments: its bytes are in .data")
        if self.linear[i]:
            start = int(self.size[:i][self.linear[:i]].sum())
            return memoryview(self.data)[start : start + int(self.size[i])]
        source = self._receiver.source if self._receiver is not None else None
        if source is None:
            raise RequestError("no source to view fragments through (pass binding= or source=)")
        return source.view(int(self.offset[i]), int(self.size[i]))

    def device_pointers(self, base: int) -> npt.NDArray[np.uint64]:
        """Device addresses of the fragments: *base* (``CudaDmabuf.device_pointer()``) + offset."""
        return (self.offset[~self.linear] + np.uint64(base)).astype(np.uint64)

    def release(self) -> None:
        """Give this batch's fragments back (queued; sent before the next recv). Idempotent."""
        if self._released:
            return
        self._released = True
        if self._receiver is not None:
            self._receiver._queue_return(self)

    def chunks(self) -> Iterator[Fragment | bytes]:
        """Stream order: :class:`Fragment` objects and ``bytes`` (linear or readable data)."""
        if self.readable:
            if self.data:
                yield self.data
            return
        pos = 0
        rows = zip(
            self.linear.tolist(),
            self.offset.tolist(),
            self.size.tolist(),
            self.token.tolist(),
            self.dmabuf_id.tolist(),
            strict=True,
        )
        for lin, off, size, tok, dmabuf_id in rows:
            if lin:
                yield self.data[pos : pos + size]
                pos += size
            else:
                yield Fragment(off, size, tok, dmabuf_id)

    def tobytes(self, source: Source) -> bytes:
        """The stream bytes of this batch, fragments read through *source*."""
        out = bytearray()
        for chunk in self.chunks():
            if isinstance(chunk, Fragment):
                out += source.view(chunk.offset, chunk.size)
            else:
                out += chunk
        return bytes(out)


class DevmemReceiver:
    """Receive devmem data from a connected TCP socket bound to a dmabuf.

    *sock*: the socket (anything with ``fileno()``). *binding*: the RX binding
    (its dmabuf is the :attr:`source` fragments are viewed through); *source*
    overrides it. *kernel*: the syscall layer (:class:`~.fake.FakeKernel` in
    tests). *batch*: cmsgs per recvmsg (control buffer ``40 * batch`` bytes).
    *iov_size*: iov bytes per recvmsg; fragments count against it although
    only linear bytes are written there (default ``batch`` pages).
    """

    def __init__(
        self,
        sock: FdLike,
        binding: object | None = None,
        *,
        kernel: Kernel | None = None,
        source: Source | None = None,
        batch: int = DEFAULT_BATCH,
        iov_size: int | None = None,
        max_outstanding: int = DEFAULT_MAX_OUTSTANDING,
        auto_release: bool = True,
    ) -> None:
        has_fileno("sock", sock)
        int_arg("batch", batch)
        int_arg("max_outstanding", max_outstanding)
        int_arg("iov_size", iov_size, none_ok=True)
        if batch < 1:
            raise RequestError(f"batch must be at least 1 cmsg, not {batch}")
        if max_outstanding < 1:
            raise RequestError(f"max_outstanding must be at least 1, not {max_outstanding}")
        self._sock = sock
        self._fd = sock.fileno()
        self._kernel: Kernel = kernel if kernel is not None else libc()
        dmabuf = getattr(binding, "dmabuf", None)
        self.source: Source | None = source if source is not None else dmabuf
        self.binding = binding
        self._control = bytearray(batch * DEVMEM_CMSG_SPACE)
        self._iov = bytearray(iov_size if iov_size is not None else batch * 4096)
        self.max_outstanding = max_outstanding
        self.auto_release = auto_release
        self._live: dict[int, RxBatch] = {}
        self._pending: list[npt.NDArray[np.uint32]] = []
        self._last: RxBatch | None = None
        self._closed = False
        self._outstanding = 0
        self._batches = self._bytes = self._frags = self._linear = self._readable = 0
        self._returned = self._calls = 0
        #: called after a batch is released (the asyncio receiver wakes up on it)
        self.on_release: Callable[[], None] | None = None

    # -- receiving --------------------------------------------------------------

    def recv(self, flags: int = 0) -> RxBatch | None:
        """One ``recvmsg``: the next batch, or None at end of stream.

        Gives back released tokens first. With ``MSG_DONTWAIT`` in *flags*
        (or a nonblocking socket) raises :class:`BlockingIOError` when nothing
        waits.
        """
        if self._closed:
            raise RequestError("this DevmemReceiver is closed")
        if self.auto_release and self._last is not None:
            self._last.release()
            self._last = None
        self.flush()
        room = self.max_outstanding - self._outstanding
        if room <= 0:
            raise OutstandingLimit(
                f"{self._outstanding} fragments are outstanding (max_outstanding "
                f"{self.max_outstanding}): release batches before receiving more"
            )
        control_len = min(len(self._control), room * DEVMEM_CMSG_SPACE)
        try:
            n, clen, _mflags = self._kernel.recvmsg(
                self._fd, self._iov, self._control, control_len, flags | MSG_SOCK_DEVMEM
            )
        except BlockingIOError:
            raise
        except OSError as err:
            if err.errno == errno.EAGAIN:
                raise BlockingIOError(err.errno, err.strerror) from None
            raise _recv_error(err, control_len) from err
        if n == 0:
            return None
        parsed = parse_control(self._control, clen) if clen else EMPTY
        if len(parsed):
            lin = int(parsed.size[parsed.linear].sum())
            data = bytes(self._iov[:lin])
        else:
            data = bytes(self._iov[:n])
        batch = RxBatch(self, parsed, data, n)
        self._account(batch)
        if not batch.released:
            self._live[id(batch)] = batch
            self._outstanding += batch.frag_count
        if self.auto_release:
            self._last = batch
        return batch

    def _account(self, batch: RxBatch) -> None:
        self._batches += 1
        self._bytes += batch.nbytes
        self._frags += batch.frag_count
        self._linear += batch.linear_count
        if batch.readable:
            self._readable += batch.nbytes

    def __iter__(self) -> Iterator[RxBatch]:
        """Batches until the peer closes (each released when the next arrives)."""
        while True:
            batch = self.recv()
            if batch is None:
                return
            yield batch

    def chunks(self) -> Iterator[Fragment | bytes]:
        """Fragments and byte chunks in stream order until the peer closes."""
        for batch in self:
            yield from batch.chunks()

    # -- token return -----------------------------------------------------------

    def _queue_return(self, batch: RxBatch) -> None:
        if self._live.pop(id(batch), None) is None:
            return
        self._outstanding -= batch.frag_count
        self._pending.append(batch.frag_tokens())
        if self.on_release is not None:
            self.on_release()

    def flush(self) -> int:
        """Give every released token back now; returns how many the kernel freed."""
        if not self._pending:
            return 0
        tokens = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending = []
        freed = 0
        batches = list(dontneed_batches(token_ranges(tokens)))
        for i, call in enumerate(batches):
            try:
                freed += self._give_back(call)
            except BaseException:
                # nothing handed back twice, nothing lost: the rest is retried later
                rest = [_expand(b) for b in batches[i + 1 :]]
                self._pending = [*rest, *self._pending]
                raise
        return freed

    def _give_back(self, call: npt.NDArray[np.void]) -> int:
        want = int(call["count"].sum())
        done = 0
        while done < want:
            try:
                n = self._kernel.dontneed(self._fd, call)
            except OSError as err:
                self._pending.insert(0, _expand(call))
                raise translate_oserror(
                    err,
                    f"SO_DEVMEM_DONTNEED of {want - done} frags",
                    hint="the socket may be closed (the kernel then frees them itself)",
                ) from err
            self._calls += 1
            if n <= 0:
                raise TokenReturnError(
                    errno.EINVAL,
                    f"SO_DEVMEM_DONTNEED of {want - done} frags",
                    hint="the kernel freed none: it does not hold these tokens",
                )
            done += n
            self._returned += n
            if done < want:
                call = ranges_tail(call, n)
        return done

    # -- lifetime ---------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        """Fragments handed out and not yet released."""
        return self._outstanding

    def stats(self) -> RxStats:
        return RxStats(
            self._batches,
            self._bytes,
            self._frags,
            self._linear,
            self._readable,
            self._returned,
            self._calls,
            self._outstanding,
        )

    def close(self) -> None:
        """Release every batch still out and give all tokens back. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for batch in list(self._live.values()):
            batch.release()
        self._last = None
        self.flush()

    def __enter__(self) -> DevmemReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _expand(call: npt.NDArray[np.void]) -> npt.NDArray[np.uint32]:
    """The tokens a ``dmabuf_token`` array covers, in order."""
    starts = call["start"].astype(np.int64)
    counts = call["count"].astype(np.int64)
    if not len(counts):
        return np.zeros(0, np.uint32)
    offs = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return (offs + np.arange(int(counts.sum()))).astype(np.uint32)


def _recv_error(err: OSError, control_len: int) -> NetdevkitError:
    hint = ""
    if err.errno == errno.EFAULT:
        hint = (
            f"the {control_len}-byte control buffer had no room for one 40-byte cmsg, "
            "or the data is devmem and MSG_SOCK_DEVMEM was missing"
        )
    return translate_oserror(err, "recvmsg(MSG_SOCK_DEVMEM)", hint=hint)


class AsyncDevmemReceiver:
    """The asyncio face of :class:`DevmemReceiver` (same arguments).

    ``await recv()`` waits for readability instead of blocking, and at the
    ``max_outstanding`` cap waits until the caller releases batches instead
    of raising.
    """

    def __init__(self, sock: FdLike, binding: object | None = None, **kw: object) -> None:
        self._rx = DevmemReceiver(sock, binding, **kw)  # type: ignore[arg-type]
        self._fd = sock.fileno()
        self._released = asyncio.Event()
        self._rx.on_release = self._released.set

    @property
    def receiver(self) -> DevmemReceiver:
        return self._rx

    async def recv(self) -> RxBatch | None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                batch = self._rx.recv(MSG_DONTWAIT)
            except BlockingIOError:
                await _readable(loop, self._fd)
                continue
            except OutstandingLimit:
                self._released.clear()
                await self._released.wait()
                continue
            return batch

    def __aiter__(self) -> AsyncIterator[RxBatch]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[RxBatch]:
        while True:
            batch = await self.recv()
            if batch is None:
                return
            yield batch

    def close(self) -> None:
        self._rx.close()

    async def __aenter__(self) -> AsyncDevmemReceiver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        loop.remove_reader(fd)
