"""The socket layer's receive logic, fed real datagrams through an AF_UNIX pair.

AF_UNIX datagram sockets keep message boundaries and honour
``MSG_PEEK | MSG_TRUNC`` (returning the real length) the way netlink sockets
do, so the code paths are the ones a kernel reply takes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from netdevkit.errors import DumpInterrupted, ErrorReply
from netdevkit.netlink import codec
from netdevkit.netlink.socket import GenlSocket


@pytest.fixture
def pair() -> Iterator[tuple[GenlSocket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    gs = GenlSocket(a)
    try:
        yield gs, b
    finally:
        gs.close()
        b.close()


def genl(seq: int, flags: int, body: bytes = b"") -> bytes:
    return codec.encode_message(20, flags, seq, b"\x0b\x01\x00\x00" + body)


def ack(seq: int, error: int = 0, tlvs: bytes = b"") -> bytes:
    hdr = codec.NLMSGHDR.pack(20, 20, 5, seq, 0)
    flags = codec.NLM_F_CAPPED | (codec.NLM_F_ACK_TLVS if tlvs else 0)
    return codec.encode_message(
        codec.NLMSG_ERROR, flags, seq, error.to_bytes(4, "little", signed=True) + hdr + tlvs
    )


def done(seq: int, flags: int = codec.NLM_F_MULTI) -> bytes:
    return codec.encode_message(codec.NLMSG_DONE, flags, seq, b"\0\0\0\0")


def test_replies_are_matched_by_sequence(pair: tuple[GenlSocket, socket.socket]) -> None:
    gs, peer = pair
    seq = gs.next_seq()
    peer.send(genl(seq + 100, codec.NLM_F_MULTI))  # stale reply of an abandoned request
    peer.send(genl(0, 0, b"ntf"))  # a notification
    peer.send(genl(seq, codec.NLM_F_MULTI, b"one") + genl(seq, codec.NLM_F_MULTI, b"two"))
    peer.send(done(seq))
    replies = gs.transact(b"request", seq, "test dump")
    assert [r.payload[4:7] for r in replies] == [b"one", b"two"]
    assert peer.recv(100) == b"request"
    ntf = list(gs.poll_notifications(timeout=0.01))
    assert [n.payload[4:7] for n in ntf] == [b"ntf"]


def test_error_reply_carries_extack(pair: tuple[GenlSocket, socket.socket]) -> None:
    gs, peer = pair
    seq = gs.next_seq()
    tlvs = codec.encode_attr(codec.NLMSGERR_ATTR_MSG, b"integer out of range\0")
    tlvs += codec.encode_attr(codec.NLMSGERR_ATTR_OFFS, (28).to_bytes(4, "little"))
    peer.send(ack(seq, -34, tlvs))
    with pytest.raises(ErrorReply) as info:
        gs.transact(b"r", seq, "napi-set id 1")
    assert info.value.errno == 34
    assert info.value.raw_extack.offset == 28
    assert "integer out of range" in str(info.value)
    assert "napi-set id 1" in str(info.value)


def test_do_reply_then_ack(pair: tuple[GenlSocket, socket.socket]) -> None:
    gs, peer = pair
    seq = gs.next_seq()
    peer.send(genl(seq, 0, b"obj"))
    peer.send(ack(seq))
    replies = gs.transact(b"r", seq, "get")
    assert len(replies) == 1


def test_datagram_larger_than_buffer_is_not_truncated(
    pair: tuple[GenlSocket, socket.socket],
) -> None:
    gs, peer = pair
    seq = gs.next_seq()
    big = b"x" * 200_000  # far above the initial 64 KiB receive buffer
    msgs = b"".join(
        genl(seq, codec.NLM_F_MULTI, big[i : i + 60_000]) for i in range(0, 200_000, 60_000)
    )
    peer.send(msgs)
    peer.send(done(seq))
    replies = gs.transact(b"r", seq, "dump")
    assert b"".join(r.payload[4:] for r in replies).rstrip(b"\0") == big


def test_dump_interrupted_is_reported(pair: tuple[GenlSocket, socket.socket]) -> None:
    gs, peer = pair
    seq = gs.next_seq()
    peer.send(genl(seq, codec.NLM_F_MULTI | codec.NLM_F_DUMP_INTR, b"a"))
    peer.send(done(seq))
    with pytest.raises(DumpInterrupted):
        gs.transact(b"r", seq, "dump")


def test_error_in_done_of_a_dump(pair: tuple[GenlSocket, socket.socket]) -> None:
    gs, peer = pair
    seq = gs.next_seq()
    peer.send(
        codec.encode_message(
            codec.NLMSG_DONE, codec.NLM_F_MULTI, seq, (-95).to_bytes(4, "little", signed=True)
        )
    )
    with pytest.raises(ErrorReply) as info:
        gs.transact(b"r", seq, "qstats-get dump")
    assert info.value.errno == 95
