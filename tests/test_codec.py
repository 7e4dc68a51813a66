"""The netlink codec without a kernel: byte tables both ways, truncation, fuzzing.

The byte tables are written out by hand from the struct layouts in
include/uapi/linux/netlink.h and genetlink.h (little-endian, as on x86_64 and
arm64), so they check the codec against the ABI rather than against itself.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdevkit.errors import DecodeError, RequestError
from netdevkit.netdev.client import (
    NAPI_FIELDS,
    QUEUE_FIELDS,
    Lease,
    Napi,
    Netdev,
    Queue,
)
from netdevkit.netdev.family import NETDEV, NapiThreaded, QueueType
from netdevkit.netlink import codec
from netdevkit.netlink.socket import FamilyInfo, GenlSocket
from netdevkit.netlink.spec import UNKNOWN, Codec, attr_path, encode_attrs

pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="tables are little-endian")

NETDEV_CODEC = Codec(NETDEV)

# napi-get do, id 513, family id 20, seq 7: nlmsghdr + genlmsghdr + one u32 attribute
NAPI_GET_513 = bytes.fromhex(
    "1c000000"  # nlmsg_len 28
    "1400"  # type 20 (netdev family id on this kernel)
    "0500"  # REQUEST | ACK
    "07000000"  # seq 7
    "00000000"  # pid 0
    "0b010000"  # cmd 11 napi-get, version 1, reserved
    "0800"
    "0200"
    "01020000"  # len 8, type 2 (id), 513
)

# A napi-get reply: ifindex 3, id 513, defer 100, gro-flush-timeout as a
# 4-byte uint (200000), irq-suspend-timeout as an 8-byte uint (2**33),
# threaded 1, and an attribute (id 42) no declaration knows.
NAPI_REPLY_ATTRS = bytes.fromhex(
    "0800"
    "0100"
    "03000000"  # ifindex 3
    "0800"
    "0200"
    "01020000"  # id 513
    "0800"
    "0500"
    "64000000"  # defer-hard-irqs 100
    "0800"
    "0600"
    "400d0300"  # gro-flush-timeout 200000 (4-byte uint)
    "0c00"
    "0700"
    "0000000002000000"  # irq-suspend-timeout 2**33 (8-byte uint)
    "0800"
    "0800"
    "01000000"  # threaded 1
    "0600"
    "2a00"
    "abcd0000"  # unknown attribute 42, 2 bytes + padding
)

# dmabuf bind-rx attributes: ifindex 5, fd 9, queues [{id 0, type rx}, {id 3, type rx}]
BIND_RX_ATTRS = bytes.fromhex(
    "0800"
    "0100"
    "05000000"  # ifindex 5
    "0800"
    "0300"
    "09000000"  # fd 9
    "1400"
    "0280"  # queues, NLA_F_NESTED | 2, len 20
    "0800"
    "0100"
    "00000000"  # id 0
    "0800"
    "0300"
    "00000000"  # type rx
    "1400"
    "0280"
    "0800"
    "0100"
    "03000000"  # id 3
    "0800"
    "0300"
    "00000000"  # type rx
)

EXTACK_TEXT = b"integer out of range\x00"
# NLMSG_ERROR for a napi-set of 36 bytes: -ERANGE, capped, with TLVs: message
# and the offset (28) of the bad attribute inside the request.
ERANGE_ERROR = (
    bytes.fromhex(
        "48000000"  # len 72 = 16 + 4 + 16 + 28 (msg TLV) + 8 (offs TLV)
        "0200"  # NLMSG_ERROR
        "0003"  # CAPPED | ACK_TLVS
        "09000000"  # seq 9
        "00000000"
        "deffffff"  # error -34 (ERANGE)
        "24000000"
        "1400"
        "0500"
        "09000000"
        "00000000"  # echoed request header
        "1900"
        "0100"  # NLMSGERR_ATTR_MSG, len 25
    )
    + EXTACK_TEXT
    + b"\x00\x00\x00"
    + bytes.fromhex("080002001c000000")  # NLMSGERR_ATTR_OFFS 28
)

DONE = bytes.fromhex("1400000003000200070000000000000000000000")


def test_encode_request_matches_table() -> None:
    attrs = encode_attrs(NETDEV, "napi", {"id": 513})
    assert codec.encode_genl(20, 11, 1, codec.NLM_F_REQUEST | codec.NLM_F_ACK, 7, attrs) == (
        NAPI_GET_513
    )


def test_decode_request_table() -> None:
    (msg,) = codec.decode_messages(NAPI_GET_513)
    assert (msg.type, msg.flags, msg.seq, msg.pid) == (20, 5, 7, 0)
    assert codec.split_genl(msg.payload) == (11, 1)
    assert NETDEV_CODEC.decode("napi", msg.payload, codec.GENLMSGHDR_LEN) == {"id": 513}


def test_decode_napi_reply_table() -> None:
    d = NETDEV_CODEC.decode("napi", NAPI_REPLY_ATTRS)
    assert d["ifindex"] == 3
    assert d["id"] == 513
    assert d["defer-hard-irqs"] == 100
    assert d["gro-flush-timeout"] == 200_000
    assert d["irq-suspend-timeout"] == 2**33
    assert d["threaded"] == 1
    assert d[UNKNOWN] == [(42, b"\xab\xcd")]


def test_encode_uint_picks_width() -> None:
    # variable-width uint: 4 bytes when it fits in u32, else 8
    small = encode_attrs(NETDEV, "napi", {"gro-flush-timeout": 200_000})
    large = encode_attrs(NETDEV, "napi", {"irq-suspend-timeout": 2**33})
    assert small == bytes.fromhex("08000600400d0300")
    assert large == bytes.fromhex("0c0007000000000002000000")


def test_nested_multi_attr_both_ways() -> None:
    values = {
        "ifindex": 5,
        "fd": 9,
        "queues": [{"id": 0, "type": QueueType.RX}, {"id": 3, "type": QueueType.RX}],
    }
    assert encode_attrs(NETDEV, "dmabuf", values) == BIND_RX_ATTRS
    d = NETDEV_CODEC.decode("dmabuf", BIND_RX_ATTRS)
    assert d == {"ifindex": 5, "fd": 9, "queues": [{"id": 0, "type": 0}, {"id": 3, "type": 0}]}


def test_decode_error_with_extack_table() -> None:
    (msg,) = codec.decode_messages(ERANGE_ERROR)
    assert msg.type == codec.NLMSG_ERROR
    assert msg.error is not None
    assert msg.error.error == -34
    assert msg.error.request_seq == 9
    assert msg.error.request_type == 20
    assert msg.error.extack.message == "integer out of range"
    assert msg.error.extack.offset == 28


def test_extack_offset_names_the_attribute() -> None:
    # napi-set id 513 threaded 2: the threaded attribute starts at byte 28
    attrs = bytes.fromhex("08000200010200000800080002000000")
    req = codec.encode_genl(20, 14, 1, 5, 9, attrs)
    assert attr_path(NETDEV, "napi", req, 20, 28) == "napi.threaded"
    assert attr_path(NETDEV, "napi", req, 20, 20) == "napi.id"
    assert attr_path(NETDEV, "napi", req, 20, 2) == ""


def test_extack_path_inside_a_nest() -> None:
    req = codec.encode_genl(20, 13, 1, 5, 1, BIND_RX_ATTRS)
    # second queue nest starts at 20 + 16 + 20 = 56; its "type" at 56 + 4 + 8 = 68
    assert attr_path(NETDEV, "dmabuf", req, 20, 68) == "dmabuf.queues.type"
    assert attr_path(NETDEV, "dmabuf", req, 20, 56) == "dmabuf.queues"


def test_done_and_multipart_datagram() -> None:
    reply = codec.encode_message(20, codec.NLM_F_MULTI, 7, b"\x0b\x01\x00\x00" + NAPI_REPLY_ATTRS)
    msgs = codec.decode_messages(reply + reply + DONE)
    assert [m.type for m in msgs] == [20, 20, codec.NLMSG_DONE]
    assert all(m.seq == 7 for m in msgs)


def test_encode_rejects_bad_values_before_sending() -> None:
    with pytest.raises(RequestError, match="threaded"):
        encode_attrs(NETDEV, "napi", {"threaded": 3})
    with pytest.raises(RequestError, match="defer-hard-irqs"):
        encode_attrs(NETDEV, "napi", {"defer-hard-irqs": 2**31})
    with pytest.raises(RequestError, match="gro-flush-timeout"):
        encode_attrs(NETDEV, "napi", {"gro-flush-timeout": -1})
    with pytest.raises(RequestError, match="no such attribute"):
        encode_attrs(NETDEV, "napi", {"gro_flush_timeout": 1})
    with pytest.raises(RequestError, match="integer"):
        encode_attrs(NETDEV, "napi", {"id": "513"})
    assert encode_attrs(NETDEV, "napi", {"threaded": NapiThreaded.ENABLED}) == bytes.fromhex(
        "0800080001000000"
    )


@pytest.mark.parametrize("data", [NAPI_GET_513, ERANGE_ERROR, DONE])
def test_every_truncation_is_a_decode_error(data: bytes) -> None:
    for cut in range(1, len(data)):
        with pytest.raises(DecodeError):
            codec.decode_messages(data[:cut])


def test_byte_by_byte_attrs() -> None:
    # each prefix of an attribute stream decodes to a prefix of the values or fails cleanly
    full = NETDEV_CODEC.decode("napi", NAPI_REPLY_ATTRS)
    for cut in range(len(NAPI_REPLY_ATTRS) + 1):
        try:
            part = NETDEV_CODEC.decode("napi", NAPI_REPLY_ATTRS[:cut])
        except DecodeError:
            continue
        for key, value in part.items():
            if key != UNKNOWN:
                assert full[key] == value


def test_uint_of_odd_width_is_rejected() -> None:
    with pytest.raises(DecodeError, match="variable-width"):
        NETDEV_CODEC.decode("napi", bytes.fromhex("0600060001020000"))


def test_error_shorter_than_header_is_rejected() -> None:
    short = codec.encode_message(codec.NLMSG_ERROR, 0, 1, b"\xde\xff\xff\xff")
    with pytest.raises(DecodeError, match="NLMSG_ERROR"):
        codec.decode_messages(short)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        msgs = codec.decode_messages(data)
    except DecodeError:
        return
    for m in msgs:
        for set_name in NETDEV.attr_sets:
            with contextlib.suppress(DecodeError):
                NETDEV_CODEC.decode(set_name, m.payload, 0)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.integers(0, 2**32 - 1),
            "ifindex": st.integers(0, 2**32 - 1),
            "defer-hard-irqs": st.integers(0, 2**31 - 1),
            "gro-flush-timeout": st.integers(0, 2**64 - 1),
            "irq-suspend-timeout": st.integers(0, 2**64 - 1),
            "threaded": st.integers(0, 1),
        },
    )
)
def test_napi_round_trip(values: dict[str, int]) -> None:
    assert NETDEV_CODEC.decode("napi", encode_attrs(NETDEV, "napi", values)) == values


# -- the row decoders behind queue and NAPI dumps ------------------------------

NAPI_ROW = NETDEV_CODEC.row_decoder("napi", NAPI_FIELDS, list)
QUEUE_ROW = NETDEV_CODEC.row_decoder("queue", QUEUE_FIELDS, list)


def test_row_decoder_matches_the_dict_decoder() -> None:
    row = NAPI_ROW(NAPI_REPLY_ATTRS, 0, len(NAPI_REPLY_ATTRS))
    d = NETDEV_CODEC.decode("napi", NAPI_REPLY_ATTRS)
    assert row[:-1] == [d.get(name) for name in NAPI_FIELDS]
    assert row[-1] == d[UNKNOWN] == [(42, b"\xab\xcd")]


@contextlib.contextmanager
def netdev_replying(cmd: int, *replies: bytes) -> Iterator[Netdev]:
    """A :class:`Netdev` whose next request is answered by *replies* (attributes of
    command *cmd*), then NLMSG_DONE: a real datagram through an AF_UNIX pair."""
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ops = frozenset(op.id for op in NETDEV.operations)
    info = FamilyInfo("netdev", 20, 1, 0, ops, {})
    seq = 1  # the first request of a new socket
    head = codec.GENLMSGHDR.pack(cmd, 1, 0)
    data = b"".join(codec.encode_message(20, codec.NLM_F_MULTI, seq, head + r) for r in replies)
    peer.send(data + codec.encode_message(codec.NLMSG_DONE, codec.NLM_F_MULTI, seq, bytes(4)))
    try:
        with Netdev(GenlSocket(ours), info) as nd:
            yield nd
    finally:
        peer.close()


NAPI_GET, QUEUE_GET, DEV_GET = 11, 10, 1


def napis(*replies: bytes) -> list[Napi]:
    with netdev_replying(NAPI_GET, *replies) as nd:
        return nd.napi_dump()


def queues(*replies: bytes) -> list[Queue]:
    with netdev_replying(QUEUE_GET, *replies) as nd:
        return nd.queue_dump()


def test_napi_object_keeps_unknown_attributes_and_values() -> None:
    [napi] = napis(NAPI_REPLY_ATTRS)
    assert (napi.id, napi.ifindex, napi.defer_hard_irqs) == (513, 3, 100)
    assert napi.gro_flush_timeout == 200_000
    assert napi.irq_suspend_timeout == 2**33
    assert napi.threaded is NapiThreaded.ENABLED
    assert napi.irq is None and napi.pid is None
    assert napi.extra == ((42, b"\xab\xcd"),)


def test_unknown_enum_value_stays_an_int() -> None:
    # threaded 3 (no kernel has it yet) and a queue type 7
    [napi] = napis(bytes.fromhex("080001000300000008000200010200000800080003000000"))
    assert napi.threaded == 3 and not isinstance(napi.threaded, NapiThreaded)
    [queue] = queues(bytes.fromhex("080001000000000008000200030000000800030007000000"))
    assert queue.type == 7 and not isinstance(queue.type, QueueType)


def test_threaded_busy_poll_and_a_leased_queue_decode() -> None:
    [napi] = napis(bytes.fromhex("080001000300000008000200010200000800080002000000"))
    assert napi.threaded is NapiThreaded.BUSY_POLL
    # RX queue 0 of ifindex 5, leased from RX queue 3 of ifindex 2 in netns id 1 (7.1+)
    reply = bytes.fromhex(
        "0800010000000000" "0800020005000000" "0800030000000000"
        "28000880" "0800010002000000" "14000280" "0800010003000000" "0800030000000000"
        "0800030001000000"
    )  # fmt: skip
    [queue] = queues(reply)
    assert queue.lease == Lease(2, 3, QueueType.RX, 1)
    assert (queue.id, queue.ifindex, queue.extra) == (0, 5, ())
    encoded = encode_attrs(
        NETDEV,
        "queue",
        {
            "id": 0,
            "ifindex": 5,
            "type": QueueType.RX,
            "lease": {"ifindex": 2, "queue": {"id": 3, "type": 0}, "netns-id": 1},
        },
    )
    assert encoded == reply


def test_reply_without_its_id_is_a_decode_error() -> None:
    only_ifindex = bytes.fromhex("0800010003000000")
    with pytest.raises(DecodeError, match="napi reply without"):
        napis(only_ifindex)
    with pytest.raises(DecodeError, match="queue reply without"):
        queues(only_ifindex)


def test_row_decoder_must_cover_the_set() -> None:
    with pytest.raises(ValueError, match="lacks fields"):
        NETDEV_CODEC.row_decoder("napi", ("id", "ifindex"), list)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_row_and_dict_decoders_agree_on_arbitrary_bytes(data: bytes) -> None:
    try:
        d = NETDEV_CODEC.decode("queue", data)
    except DecodeError:
        with pytest.raises(DecodeError):
            QUEUE_ROW(data, 0, len(data))
        return
    row = QUEUE_ROW(data, 0, len(data))
    assert row[:-1] == [d.get(name) for name in QUEUE_FIELDS]
    assert (row[-1] or []) == d.get(UNKNOWN, [])


def test_dumped_objects_are_immutable_values() -> None:
    [napi] = napis(NAPI_REPLY_ATTRS)
    same = Napi(513, 3, None, None, 100, 200_000, 2**33, NapiThreaded.ENABLED, ((42, b"\xab\xcd"),))
    assert type(napi) is Napi
    assert napi == same
    assert hash(napi) == hash(same)
    assert repr(napi) == repr(same)
    with pytest.raises(AttributeError):
        napi.defer_hard_irqs = 0  # type: ignore[misc]
    attrs = {"id": 5, "ifindex": 2, "type": QueueType.TX, "napi-id": 77, "io-uring": {}}
    [queue] = queues(encode_attrs(NETDEV, "queue", attrs))
    assert type(queue) is Queue
    assert queue == Queue(5, 2, QueueType.TX, 77, None, True, False, ())
    with pytest.raises(AttributeError):
        queue.id = 6  # type: ignore[misc]
    assert queue._replace(id=6).id == 6


def test_dict_built_reply_without_a_required_attribute_is_a_decode_error() -> None:
    # a dev-get reply with only xdp-features: no ifindex
    reply = bytes.fromhex("0c0003000100000000000000")
    with (
        netdev_replying(DEV_GET, reply) as nd,
        pytest.raises(DecodeError, match="dev reply without its ifindex"),
    ):
        nd.dev_dump()
