"""sockperf's framing without I/O (netdevkit.bench.servers.framing): byte tables and
properties over any message stream cut anywhere."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdevkit.bench.servers.framing import (
    FLAG_CLIENT,
    FLAG_PONG_REQUEST,
    FLAG_WARMUP,
    HEADER,
    MAX_MESSAGE,
    Counts,
    Framer,
    FramingError,
    reply_to,
)

PING = FLAG_CLIENT | FLAG_PONG_REQUEST


def msg(seq: int, flags: int, size: int = 14, fill: int = 0xAB) -> bytes:
    return HEADER.pack(seq, flags, size) + bytes([fill]) * (size - HEADER.size)


# one read's bytes -> the replies (None: the connection is to be dropped)
FEED_TABLE: list[tuple[str, bytes, bytes | None]] = [
    ("ping answered, CLIENT cleared", msg(1, PING), msg(1, FLAG_PONG_REQUEST)),
    ("payload sent back as is", msg(2, PING, 100), msg(2, FLAG_PONG_REQUEST, 100)),
    ("no PONG_REQUEST: consumed", msg(3, FLAG_CLIENT), b""),
    ("warm-up ping answered", msg(4, PING | FLAG_WARMUP), msg(4, FLAG_PONG_REQUEST | FLAG_WARMUP)),
    (
        "two messages in one read",
        msg(5, PING) + msg(6, PING, 20),
        msg(5, FLAG_PONG_REQUEST) + msg(6, FLAG_PONG_REQUEST, 20),
    ),
    (
        "only the asking one of three",
        msg(7, FLAG_CLIENT) + msg(8, PING) + msg(9, FLAG_CLIENT),
        msg(8, FLAG_PONG_REQUEST),
    ),
    ("half a header: held back", msg(10, PING)[:7], b""),
    ("header without its body: held back", msg(11, PING, 50)[:14], b""),
    ("largest message", msg(12, PING, MAX_MESSAGE), msg(12, FLAG_PONG_REQUEST, MAX_MESSAGE)),
    ("length below the header", HEADER.pack(13, PING, 13), None),
    ("length 0", HEADER.pack(14, PING, 0), None),
    ("length above the limit", HEADER.pack(15, PING, MAX_MESSAGE + 1), None),
    ("a bad one after a good one", msg(16, PING) + HEADER.pack(17, PING, 3), None),
]


@pytest.mark.parametrize(
    ("data", "want"), [t[1:] for t in FEED_TABLE], ids=[t[0] for t in FEED_TABLE]
)
def test_feed_table(data: bytes, want: bytes | None) -> None:
    framer = Framer()
    if want is None:
        with pytest.raises(FramingError, match="total length"):
            framer.feed(data)
        return
    assert bytes(framer.feed(data)) == want


@pytest.mark.parametrize(
    ("data", "want"), [t[1:] for t in FEED_TABLE], ids=[t[0] for t in FEED_TABLE]
)
def test_received_table(data: bytes, want: bytes | None) -> None:
    """The same answers when the server reads into the framer's buffer."""
    framer = Framer(buffer_size=len(data))
    framer.buffer[: len(data)] = data
    if want is None:
        with pytest.raises(FramingError):
            framer.received(len(data))
        return
    assert bytes(framer.received(len(data))) == want


def test_whole_message_is_answered_in_place() -> None:
    """A read of exactly one message: the reply is the buffer itself, the flag flipped."""
    framer = Framer(buffer_size=MAX_MESSAGE)
    for seq, size in ((1, 14), (2, 14), (3, 64)):
        framer.buffer[:size] = msg(seq, PING, size)
        out = framer.received(size)
        assert isinstance(out, memoryview) and out.obj is framer.buffer
        assert bytes(out) == msg(seq, FLAG_PONG_REQUEST, size)
    assert (framer.counts.messages, framer.counts.replies) == (3, 3)


def test_a_split_message_is_answered_once_complete() -> None:
    framer = Framer(buffer_size=MAX_MESSAGE)
    data = msg(1, PING, 40)
    framer.buffer[:10] = data[:10]
    assert framer.received(10) == b"" and framer.pending == 10
    framer.buffer[:30] = data[10:]
    assert bytes(framer.received(30)) == msg(1, FLAG_PONG_REQUEST, 40)
    assert framer.pending == 0


def test_counts_go_where_the_server_keeps_them() -> None:
    counts = Counts()
    framer = Framer(counts)
    framer.feed(msg(1, PING) + msg(2, FLAG_CLIENT))
    framer.feed(msg(3, PING))
    assert counts == Counts(messages=3, replies=2)


def test_reply_to_one_message() -> None:
    reply = reply_to(msg(1, PING))
    assert reply is not None and bytes(reply) == msg(1, FLAG_PONG_REQUEST)
    assert reply_to(msg(1, FLAG_CLIENT)) is None


messages = st.lists(
    st.tuples(
        st.integers(0, 2**64 - 1),
        st.integers(0, 0xFFFF),
        st.integers(HEADER.size, 300),
    ),
    min_size=1,
    max_size=12,
)


def _expected(stream: list[tuple[int, int, int]]) -> tuple[bytes, int]:
    want = b""
    replies = 0
    for seq, flags, size in stream:
        if flags & FLAG_PONG_REQUEST:
            want += HEADER.pack(seq, flags & ~FLAG_CLIENT, size) + b"\xab" * (size - HEADER.size)
            replies += 1
    return want, replies


@settings(max_examples=300, deadline=None)
@given(stream=messages, cuts=st.lists(st.integers(0, 4000), max_size=8))
def test_any_stream_cut_anywhere(stream: list[tuple[int, int, int]], cuts: list[int]) -> None:
    """Both entry points answer every message asking for it, in order, whatever the reads."""
    data = b"".join(msg(seq, flags, size) for seq, flags, size in stream)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    want, replies = _expected(stream)

    fed = Framer()
    got = b"".join(bytes(fed.feed(c)) for c in chunks)
    assert got == want
    assert (fed.counts.messages, fed.counts.replies, fed.pending) == (len(stream), replies, 0)

    into = Framer(buffer_size=4096)
    got = b""
    for c in chunks:
        into.buffer[: len(c)] = c
        got += bytes(into.received(len(c)))
    assert got == want
    assert (into.counts.messages, into.counts.replies, into.pending) == (len(stream), replies, 0)
