"""Device Memory TCP receive: control-buffer parsing, token return, the receiver.

Driven by :class:`netdevkit.devmem.fake.FakeKernel`, which reproduces the
kernel's cmsg layout and SO_DEVMEM_DONTNEED semantics (see its docstring).
"""

from __future__ import annotations

import asyncio
import errno
import struct

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netdevkit.devmem.cmsg import (
    TOKEN_DTYPE,
    build_control,
    dontneed_batches,
    parse_control,
    ranges_tail,
    token_ranges,
)
from netdevkit.devmem.fake import FakeKernel
from netdevkit.devmem.rx import AsyncDevmemReceiver, DevmemReceiver, Fragment, RxBatch
from netdevkit.devmem.uapi import MSG_SOCK_DEVMEM
from netdevkit.errors import KernelError, OutstandingLimit, RequestError, TokenReturnError

PAGE = 4096


def _cmsg(ctype: int, off: int, size: int, token: int, dmabuf_id: int) -> bytes:
    # struct cmsghdr {size_t len; int level; int type} + struct dmabuf_cmsg, by hand
    return struct.pack("=Qii", 40, 1, ctype) + struct.pack("=QIIII", off, size, token, dmabuf_id, 0)


# -- the control buffer, as bytes ------------------------------------------------


def test_control_buffer_byte_table() -> None:
    buf = _cmsg(78, 0, 66, 0, 0) + _cmsg(79, 8192, 4096, 7, 3) + _cmsg(79, 12288, 100, 8, 3)
    assert len(buf) == 3 * 40
    p = parse_control(buf, len(buf))
    assert p.linear.tolist() == [True, False, False]
    assert p.offset.tolist() == [0, 8192, 12288]
    assert p.size.tolist() == [66, 4096, 100]
    assert p.token.tolist() == [0, 7, 8]
    assert p.dmabuf_id.tolist() == [0, 3, 3]
    assert build_control(p) == buf


def test_foreign_cmsg_takes_the_slow_path_with_the_same_result() -> None:
    # a 4-byte SOL_SOCKET cmsg (type 29, SO_TIMESTAMP-like) padded to 24 bytes, in between
    other = struct.pack("=Qii", 20, 1, 29) + b"\1\0\0\0" + b"\0" * 4
    buf = _cmsg(79, 0, 4096, 1, 2) + other + _cmsg(79, 4096, 10, 2, 2)
    p = parse_control(buf, len(buf))
    assert p.token.tolist() == [1, 2] and p.size.tolist() == [4096, 10]


def test_truncated_cmsg_is_a_decode_error() -> None:
    from netdevkit.errors import DecodeError

    buf = _cmsg(79, 0, 4096, 1, 2) + struct.pack("=Qii", 200, 1, 79)
    with pytest.raises(DecodeError):
        parse_control(buf, len(buf))


@given(st.lists(st.integers(1, 5000), max_size=3000))
def test_token_ranges_cover_tokens_in_order(tokens: list[int]) -> None:
    arr = np.array(tokens, np.uint32)
    ranges = token_ranges(arr)
    expanded = [s + i for s, c in ranges.tolist() for i in range(c)]
    assert expanded == tokens
    # maximal coalescing: two neighbouring ranges are never contiguous
    for (s1, c1), (s2, _c2) in zip(ranges.tolist(), ranges.tolist()[1:], strict=False):
        assert s1 + c1 != s2


@given(
    st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 3000)), max_size=400),
    st.integers(1, 128),
    st.integers(1, 1024),
)
def test_dontneed_batches_respect_the_kernel_limits(
    ranges: list[tuple[int, int]], max_ranges: int, max_frags: int
) -> None:
    arr = np.array(ranges, TOKEN_DTYPE)
    calls = list(dontneed_batches(arr, max_ranges, max_frags))
    for call in calls:
        assert 1 <= len(call) <= max_ranges
        assert int(call["count"].sum()) <= max_frags
    flat = [(s + i) for call in calls for s, c in call.tolist() for i in range(c)]
    assert flat == [(s + i) for s, c in ranges for i in range(c)]


def test_ranges_tail_after_partial_free() -> None:
    call = np.array([(1, 3), (10, 5)], TOKEN_DTYPE)
    assert ranges_tail(call, 0).tolist() == [(1, 3), (10, 5)]
    assert ranges_tail(call, 2).tolist() == [(3, 1), (10, 5)]
    assert ranges_tail(call, 3).tolist() == [(10, 5)]
    assert ranges_tail(call, 6).tolist() == [(13, 2)]


# -- the fake kernel, against the kernel's documented behaviour -----------------


def test_devmem_data_without_msg_sock_devmem_is_efault() -> None:
    fk = FakeKernel(16 * PAGE)
    fk.deliver(b"x" * 5000)
    with pytest.raises(OSError) as exc:
        fk.recvmsg(0, bytearray(65536), bytearray(400), 400, 0)
    assert exc.value.errno == errno.EFAULT


def test_control_buffer_too_small_for_one_cmsg_is_efault() -> None:
    fk = FakeKernel(16 * PAGE)
    fk.deliver(b"x" * 5000)
    with pytest.raises(OSError) as exc:
        fk.recvmsg(0, bytearray(65536), bytearray(39), 39, MSG_SOCK_DEVMEM)
    assert exc.value.errno == errno.EFAULT
    # room for one cmsg: a short read of one fragment, the rest stays queued
    n, used, _ = fk.recvmsg(0, bytearray(65536), bytearray(79), 79, MSG_SOCK_DEVMEM)
    assert (n, used) == (4096, 40)
    assert fk.pending_bytes() == 5000 - 4096


def test_readable_data_is_never_mixed_with_devmem_data() -> None:
    fk = FakeKernel(16 * PAGE)
    fk.deliver(b"plain", readable=True)
    fk.deliver(b"d" * 100)
    ctrl = bytearray(400)
    iov = bytearray(65536)
    assert fk.recvmsg(0, iov, ctrl, 400, MSG_SOCK_DEVMEM) == (5, 0, 0)
    assert iov[:5] == b"plain"
    n, used, _ = fk.recvmsg(0, iov, ctrl, 400, MSG_SOCK_DEVMEM)
    assert (n, used) == (100, 40)


@pytest.mark.parametrize("nbytes", [0, 4, 12, 129 * 8])
def test_dontneed_optlen_rules(nbytes: int) -> None:
    fk = FakeKernel(16 * PAGE)
    arr = np.frombuffer(bytes(nbytes), np.uint8)
    with pytest.raises(OSError) as exc:
        fk.dontneed(0, arr)  # type: ignore[arg-type]
    assert exc.value.errno == errno.EINVAL


def test_dontneed_frees_only_held_tokens_and_counts_them() -> None:
    fk = FakeKernel(16 * PAGE)
    fk.deliver(b"x" * (3 * PAGE))
    fk.recvmsg(0, bytearray(65536), bytearray(400), 400, MSG_SOCK_DEVMEM)
    assert fk.outstanding() == 3  # tokens 1, 2, 3
    assert fk.dontneed(0, np.array([(2, 1), (100, 5)], TOKEN_DTYPE)) == 1
    assert fk.dontneed(0, np.array([(1, 3)], TOKEN_DTYPE)) == 2  # 2 again is skipped
    assert fk.outstanding() == 0 and fk.bad_returns == 6
    assert fk.free_pages() == 16


def test_dontneed_inspects_at_most_the_frag_limit() -> None:
    fk = FakeKernel(64 * PAGE, max_dontneed_frags=10)
    fk.deliver(b"x" * (20 * PAGE))
    fk.recvmsg(0, bytearray(1 << 20), bytearray(4000), 4000, MSG_SOCK_DEVMEM)
    assert fk.dontneed(0, np.array([(1, 20)], TOKEN_DTYPE)) == 10
    assert fk.dontneed(0, np.array([(11, 10)], TOKEN_DTYPE)) == 10


# -- the receiver -----------------------------------------------------------------


def _receive_all(fk: FakeKernel, rx: DevmemReceiver) -> bytes:
    out = bytearray()
    for batch in rx:
        out += batch.tobytes(fk)
    return bytes(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(min_size=1, max_size=60_000),
    linear=st.integers(0, 300),
    frag=st.integers(1, PAGE),
    batch=st.integers(1, 64),
    iov=st.integers(1, 40_000),
    limit=st.integers(1, 1024),
    readable_at=st.integers(0, 3),
)
def test_every_token_returned_exactly_once_and_stream_reproduced(
    data: bytes, linear: int, frag: int, batch: int, iov: int, limit: int, readable_at: int
) -> None:
    fk = FakeKernel(64 * PAGE, max_dontneed_frags=limit)
    calls: list[tuple[int, int]] = []
    real = fk.dontneed

    def spy(fd: int, ranges: npt.NDArray[np.void] | bytes) -> int:
        raw = ranges if isinstance(ranges, bytes) else ranges.tobytes()
        arr = np.frombuffer(raw, TOKEN_DTYPE)
        calls.append((len(arr), int(arr["count"].sum())))
        return real(fd, ranges)

    fk.dontneed = spy  # type: ignore[method-assign]
    expect = bytearray()
    pos = 0
    out = bytearray()
    with DevmemReceiver(fk, kernel=fk, source=fk, batch=batch, iov_size=iov) as rx:
        for i in range(4):
            if i == readable_at:
                fk.deliver(b"<plain>", readable=True)
                expect += b"<plain>"
            piece = data[pos : pos + len(data) // 4 + 1]
            pos += len(piece)
            took = fk.deliver(piece, linear=linear, frag_size=frag)
            expect += piece[:took]
            while fk.pending_bytes():
                b = rx.recv()
                assert b is not None
                out += b.tobytes(fk)
        fk.shutdown()
        out += _receive_all(fk, rx)
    assert bytes(out) == bytes(expect)
    assert fk.returned == fk.handed_out and fk.bad_returns == 0 and fk.outstanding() == 0
    assert rx.stats().tokens_returned == fk.handed_out
    assert all(r <= 128 and f <= 1024 for r, f in calls)
    assert fk.free_pages() == 64


@settings(max_examples=30, deadline=None)
@given(fail_after=st.integers(0, 12), batch=st.integers(1, 20))
def test_exception_mid_stream_still_returns_everything(fail_after: int, batch: int) -> None:
    fk = FakeKernel(64 * PAGE)
    fk.deliver(b"z" * (40 * PAGE))
    seen = 0
    with (
        pytest.raises(RuntimeError, match="reader failed"),
        DevmemReceiver(fk, kernel=fk, source=fk, batch=batch, auto_release=False) as rx,
    ):
        kept = []
        while True:
            b = rx.recv()
            assert b is not None
            kept.append(b)  # never released by the caller
            seen += b.frag_count
            if len(kept) > fail_after or not fk.pending_bytes():
                raise RuntimeError("reader failed")
    assert seen > 0
    assert fk.returned == fk.handed_out == seen
    assert fk.outstanding() == 0 and fk.bad_returns == 0


def test_release_is_idempotent() -> None:
    fk = FakeKernel(16 * PAGE)
    fk.deliver(b"a" * (4 * PAGE))
    with DevmemReceiver(fk, kernel=fk, source=fk, auto_release=False) as rx:
        b = rx.recv()
        assert b is not None and b.frag_count == 4
        b.release()
        b.release()
        rx.flush()
        assert fk.returned == 4 and rx.outstanding == 0
    assert fk.returned == 4 and fk.bad_returns == 0


def test_partial_frees_are_retried_with_the_rest() -> None:
    fk = FakeKernel(512 * PAGE, max_dontneed_frags=7)
    fk.deliver(b"q" * (300 * PAGE))
    with DevmemReceiver(fk, kernel=fk, source=fk, batch=400) as rx:
        b = rx.recv()
        assert b is not None and b.frag_count == 300
        b.release()
        assert rx.flush() == 300
        assert rx.stats().dontneed_calls == 43  # ceil(300 / 7)
    assert fk.returned == 300 and fk.bad_returns == 0


def test_a_kernel_that_frees_nothing_is_an_error_not_a_loop() -> None:
    fk = FakeKernel(16 * PAGE)
    fk.deliver(b"a" * PAGE)
    rx = DevmemReceiver(fk, kernel=fk, source=fk, auto_release=False)
    b = rx.recv()
    assert b is not None
    fk.dontneed(0, np.array([(1, 1)], TOKEN_DTYPE))  # someone else returned it
    b.release()
    with pytest.raises(TokenReturnError, match="does not hold these tokens"):
        rx.flush()


def test_back_pressure_caps_outstanding_fragments() -> None:
    fk = FakeKernel(64 * PAGE)
    fk.deliver(b"b" * (30 * PAGE))
    with DevmemReceiver(fk, kernel=fk, source=fk, auto_release=False, max_outstanding=8) as rx:
        first = rx.recv()
        assert first is not None and first.frag_count == 8
        with pytest.raises(OutstandingLimit, match="8 fragments are outstanding"):
            rx.recv()
        first.release()
        second = rx.recv()
        assert second is not None and second.frag_count == 8
        assert fk.returned == 8


def test_unreturned_fragments_starve_the_nic() -> None:
    fk = FakeKernel(8 * PAGE)
    assert fk.deliver(b"s" * (10 * PAGE)) == 8 * PAGE  # 2 pages dropped: no buffer
    with DevmemReceiver(fk, kernel=fk, source=fk, auto_release=False) as rx:
        b = rx.recv()
        assert b is not None
        assert fk.deliver(b"s" * PAGE) == 0  # held by the reader
        b.release()
        rx.flush()
        assert fk.deliver(b"s" * PAGE) == PAGE


def test_chunks_in_stream_order_with_views_through_the_source() -> None:
    fk = FakeKernel(16 * PAGE)
    payload = bytes(range(256)) * 40  # 10240 bytes
    fk.deliver(payload, linear=240)
    fk.shutdown()
    with DevmemReceiver(fk, kernel=fk, source=fk) as rx:
        chunks = list(rx.chunks())
    kinds = ["frag" if isinstance(c, Fragment) else "bytes" for c in chunks]
    assert kinds == ["bytes", "frag", "frag", "frag"]
    got = b"".join(
        bytes(fk.view(c.offset, c.size)) if isinstance(c, Fragment) else c for c in chunks
    )
    assert got == payload


def test_recv_efault_is_explained() -> None:
    class Refusing(FakeKernel):
        def recvmsg(
            self, fd: int, iov: bytearray, control: bytearray, control_len: int, flags: int
        ) -> tuple[int, int, int]:
            raise OSError(errno.EFAULT, "Bad address")

    fk = Refusing(16 * PAGE)
    with pytest.raises(KernelError, match="room for one 40-byte cmsg") as exc:
        DevmemReceiver(fk, kernel=fk, batch=4).recv()
    assert exc.value.errno == errno.EFAULT


def test_async_receiver_waits_for_data_and_for_releases() -> None:
    async def main() -> tuple[bytes, int]:
        fk = FakeKernel(64 * PAGE)
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, fk.deliver, b"1" * (20 * PAGE))
        loop.call_later(0.05, fk.shutdown)
        out = bytearray()
        held: list[RxBatch] = []
        async with AsyncDevmemReceiver(
            fk, kernel=fk, source=fk, auto_release=False, max_outstanding=6
        ) as arx:

            def release_one() -> None:
                held.pop(0).release()

            while True:
                b = await arx.recv()
                if b is None:
                    break
                out += b.tobytes(fk)
                held.append(b)
                loop.call_later(0.005, release_one)
        return bytes(out), fk.outstanding()

    data, outstanding = asyncio.run(main())
    assert data == b"1" * (20 * PAGE)
    assert outstanding == 0


def test_batch_views_and_device_pointers() -> None:
    fk = FakeKernel(16 * PAGE)
    payload = bytes(range(256)) * 20  # 5120 bytes: 100 linear, then two fragments
    fk.deliver(payload, linear=100)
    with DevmemReceiver(fk, kernel=fk, source=fk) as rx:
        b = rx.recv()
        assert b is not None and b.linear.tolist() == [True, False, False]
        assert bytes(b.view(0)) == payload[:100]
        assert bytes(b.view(1)) + bytes(b.view(2)) == payload[100:]
        ptrs = b.device_pointers(1 << 40)
        assert ptrs.tolist() == [(1 << 40) + int(o) for o in b.offset[1:]]
    bare = DevmemReceiver(fk, kernel=fk)  # no binding, no source
    fk.deliver(b"x" * 10)
    b2 = bare.recv()
    assert b2 is not None
    with pytest.raises(RequestError, match="no source"):
        b2.view(0)
    bare.close()
