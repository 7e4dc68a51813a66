"""The ethtool family declaration: request bytes, reply decoding, and veth's real answers."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable

import pytest

from netdevkit.errors import KernelError
from netdevkit.ethtool.client import Ethtool
from netdevkit.ethtool.family import ETHTOOL, TcpDataSplit
from netdevkit.netlink import codec
from netdevkit.netlink.codec import encode_attr
from netdevkit.netlink.socket import FamilyInfo, GenlSocket
from netdevkit.netlink.spec import encode_attrs
from netdevkit.testbed import Testbed


def test_message_ids_follow_the_uapi_enum() -> None:
    ids = {op.name: op.id for op in ETHTOOL.operations}
    assert ids == {
        "features-get": 11,
        "features-set": 12,
        "rings-get": 15,
        "rings-set": 16,
        "channels-get": 17,
        "channels-set": 18,
        "rss-get": 38,
        "rss-set": 48,
        "rss-create-act": 49,
        "rss-delete-act": 50,
    }


def test_rings_set_request_bytes() -> None:
    got = encode_attrs(
        ETHTOOL,
        "rings",
        {
            "header": {"dev-name": "eth1"},
            "tcp-data-split": int(TcpDataSplit.ENABLED),
            "hds-thresh": 0,
        },
    )
    header = encode_attr(1 | 0x8000, encode_attr(2, b"eth1\0"))
    want = header + encode_attr(11, b"\x02") + encode_attr(17, struct.pack("=I", 0))
    assert got == want


def test_features_reply_bitsets_decode_to_names() -> None:
    def bit(index: int, name: str, on: bool) -> bytes:
        body = encode_attr(1, struct.pack("=I", index)) + encode_attr(2, name.encode() + b"\0")
        return encode_attr(1 | 0x8000, body + (encode_attr(3, b"") if on else b""))

    bits = encode_attr(3 | 0x8000, bit(0, "rx-gro", True) + bit(1, "rx-ntuple-filter", False))
    listed = encode_attr(1, b"") + encode_attr(2, struct.pack("=I", 2)) + bits  # nomask
    masked = encode_attr(2, struct.pack("=I", 2)) + bits
    reply = encode_attr(4 | 0x8000, listed) + encode_attr(2 | 0x8000, masked)
    # the reply to the first request (seq 1) of a socket, then its ACK, through an AF_UNIX pair
    head = codec.GENLMSGHDR.pack(11, 1, 0)
    ack = struct.pack("=i", 0) + codec.NLMSGHDR.pack(20, 20, 5, 1, 0)
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.send(
        codec.encode_message(21, 0, 1, head + reply)
        + codec.encode_message(codec.NLMSG_ERROR, codec.NLM_F_CAPPED, 1, ack)
    )
    info = FamilyInfo("ethtool", 21, 1, 0, frozenset(op.id for op in ETHTOOL.operations), {})
    try:
        with Ethtool(GenlSocket(ours), info) as et:
            feats = et.features_get("eth1")
    finally:
        peer.close()
    # a nomask bitset lists the set bits; a masked one says which are set by the value flag
    assert feats.active == {"rx-gro", "rx-ntuple-filter"}
    assert feats.hw == {"rx-gro"}


@pytest.mark.kernel
def test_veth_answers(testbed4: Testbed) -> None:
    ifname = testbed4.server_if
    with Ethtool.open(testbed4.server_ns) as et:
        chans = et.channels_get(ifname)
        assert (chans.rx_count, chans.rx_queues) == (4, 4)
        feats = et.features_get(ifname)
        assert "rx-gro" in feats.active  # the testbed turns GRO on for NAPI
        assert "rx-ntuple-filter" not in feats.hw
        for call in (lambda: et.rings_get(ifname), lambda: et.rss_get(ifname)):
            with pytest.raises(KernelError) as exc:
                call()
            assert exc.value.errno == errno.EOPNOTSUPP
        with pytest.raises(KernelError) as exc:
            et.rings_set(ifname, hds_thresh=0)
        assert exc.value.attr_path == "rings.hds-thresh"
        with pytest.raises(KernelError) as exc:
            et.rss_create(ifname, [0, 1])
        assert exc.value.errno == errno.EOPNOTSUPP
        assert et.supports("rss-set")  # the 6.18 kernel has it; veth does not


@pytest.mark.kernel
def test_rss_indirection_ioctl_on_veth(testbed4: Testbed) -> None:
    from netdevkit.ethtool.ioctl import rxfh_indir_get, rxfh_indir_set

    for call in (
        lambda: rxfh_indir_get(testbed4.server_if, testbed4.server_ns),
        lambda: rxfh_indir_set(testbed4.server_if, [0, 1, 2], testbed4.server_ns),
    ):
        with pytest.raises(KernelError, match="no RSS indirection table") as exc:
            call()
        assert exc.value.errno == errno.EOPNOTSUPP


@pytest.mark.kernel
def test_ntuple_calls_on_veth_are_refused(testbed4: Testbed) -> None:
    from netdevkit.ethtool.ioctl import ntuple_find, ntuple_insert, parse_flow

    flow = parse_flow("tcp dst-port 5201")
    calls: list[Callable[[], object]] = [
        lambda: ntuple_find(testbed4.server_if, flow, 1, testbed4.server_ns),
        lambda: ntuple_insert(testbed4.server_if, flow, 1, netns=testbed4.server_ns),
    ]
    for call in calls:
        with pytest.raises(KernelError, match="no ntuple flow steering") as exc:
            call()
        assert exc.value.errno == errno.EOPNOTSUPP
