"""Device Memory TCP send and bindings, against the fake kernel (no NIC needed)."""

from __future__ import annotations

import errno

import pytest

from netdevkit.devmem.fake import FakeKernel, TxBinding
from netdevkit.devmem.tx import DevmemSender, devmem_cmsg, parse_completions
from netdevkit.devmem.uapi import CMSGHDR, MSG_ZEROCOPY, SOCK_EXTENDED_ERR
from netdevkit.errors import KernelError, RequestError

PAGE = 4096


class _Binding:
    def __init__(self, bid: int, size: int) -> None:
        self.id = bid
        self.ifname = "eth9"

        class _Buf:
            pass

        self.dmabuf = _Buf()
        self.dmabuf.size = size  # type: ignore[attr-defined]


def test_devmem_cmsg_bytes() -> None:
    # struct cmsghdr {len 20, SOL_SOCKET 1, SCM_DEVMEM_DMABUF 79} + u32 id, padded to 24
    assert devmem_cmsg(7) == (
        (20).to_bytes(8, "little")
        + (1).to_bytes(4, "little")
        + (79).to_bytes(4, "little")
        + (7).to_bytes(4, "little")
        + b"\0" * 4
    )


def test_completion_parsing_byte_table() -> None:
    ee = SOCK_EXTENDED_ERR.pack(0, 5, 0, 1, 0, 3, 9)  # zerocopy, COPIED, ids 3..9
    buf = CMSGHDR.pack(16 + len(ee), 0, 11) + ee
    assert parse_completions(buf) == ([(3, 9)], True)
    other = SOCK_EXTENDED_ERR.pack(111, 2, 0, 0, 0, 0, 0)  # ICMP origin: not ours
    assert parse_completions(CMSGHDR.pack(16 + 16, 0, 11) + other) == ([], False)


def test_send_from_dmabuf_offsets_and_track_completions() -> None:
    fk = FakeKernel(16 * PAGE, tx_bindings=[TxBinding(5, ifindex=3)], route_ifindex=3)
    fk.memory[0:8] = b"ABCDEFGH"
    tx = DevmemSender(fk, _Binding(5, len(fk.memory)), kernel=fk)
    assert fk.zerocopy
    a = tx.send((0, 4))
    b = tx.send([(4, 2), (6, 2)])
    assert (a.id, a.sent, b.id, b.sent) == (0, 4, 1, 4)
    assert bytes(fk.sent) == b"ABCDEFGH"
    assert [s.id for s in tx.inflight] == [0, 1]
    fk.complete_sends(1)
    assert [s.id for s in tx.poll_completions()] == [0]
    fk.complete_sends()
    assert [s.id for s in tx.poll_completions()] == [1]
    assert tx.inflight == [] and tx.poll_completions() == []


def test_unknown_binding_is_explained() -> None:
    fk = FakeKernel(16 * PAGE, tx_bindings=[TxBinding(5, ifindex=3)], route_ifindex=3)
    tx = DevmemSender(fk, _Binding(6, len(fk.memory)), kernel=fk)
    with pytest.raises(KernelError, match="knows no TX binding with id 6") as exc:
        tx.send((0, 10))
    assert exc.value.errno == errno.EINVAL


def test_route_through_another_device_is_enodev_explained() -> None:
    fk = FakeKernel(16 * PAGE, tx_bindings=[TxBinding(5, ifindex=3)], route_ifindex=4)
    tx = DevmemSender(fk, _Binding(5, len(fk.memory)), kernel=fk)
    with pytest.raises(KernelError, match="leaves through another device") as exc:
        tx.send((0, 10))
    assert exc.value.errno == errno.ENODEV


def test_regions_outside_the_dmabuf_are_refused_before_the_kernel() -> None:
    fk = FakeKernel(4 * PAGE, tx_bindings=[TxBinding(5, ifindex=3)], route_ifindex=3)
    tx = DevmemSender(fk, _Binding(5, len(fk.memory)), kernel=fk)
    for bad in [(4 * PAGE - 1, 2), (-1, 4), (0, 0)]:
        with pytest.raises(RequestError):
            tx.send(bad)
    with pytest.raises(RequestError, match="at least one"):
        tx.send([])
    assert fk.sent == bytearray()


def test_fake_sendmsg_without_zerocopy_is_einval() -> None:
    fk = FakeKernel(4 * PAGE, tx_bindings=[TxBinding(5, ifindex=3)], route_ifindex=3)
    for flags in (0, MSG_ZEROCOPY):  # SO_ZEROCOPY is off
        with pytest.raises(OSError) as exc:
            fk.sendmsg(0, [(0, 4)], devmem_cmsg(5), flags)
        assert exc.value.errno == errno.EINVAL
