"""sockperf's TCP request/response framing, without I/O: bytes in, replies out.

The framing, as sockperf 3.7's client sends it:

- every message starts with a 14-byte big-endian header: u64 sequence number, u16 flags,
  u32 total length (header included; ``-m`` sets it, 14 at least);
- flags: 0x1 ``CLIENT`` (set on everything a client sends), 0x2 ``PONG_REQUEST`` (an
  answer is wanted: every message in ping-pong, one in ``--reply-every N`` under load),
  0x4 ``WARMUP``;
- the server answers a message carrying ``PONG_REQUEST`` with the same bytes and
  ``CLIENT`` cleared; other messages are consumed silently.

:class:`Framer` holds one connection's state. Every server of :mod:`netdevkit.bench.servers`
answers through it, in one of two ways:

- :meth:`Framer.feed` takes the bytes a read returned (an asyncio protocol's
  ``data_received``, a stream's ``read``) and returns the replies;
- :meth:`Framer.received` serves a server that reads into :attr:`Framer.buffer` itself
  (``recv_into``): when the read holds exactly one whole message, as every ping-pong read
  does, the reply is that message with the flag cleared in place (no copy).

Both keep messages split across reads and several messages in one read apart, count
messages and replies into the counters they were given, and raise :class:`FramingError` on
a total length outside ``14..MAX_MESSAGE`` (the peer is not a sockperf client).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

from ...errors import FramingError

__all__ = [
    "FLAG_CLIENT",
    "FLAG_PONG_REQUEST",
    "FLAG_WARMUP",
    "HEADER",
    "MAX_MESSAGE",
    "Counts",
    "Framer",
    "FramingError",
    "reply_to",
]

HEADER = struct.Struct(">QHI")  # sequence number, flags, total length: 14 bytes
FLAG_CLIENT = 0x1
FLAG_PONG_REQUEST = 0x2
FLAG_WARMUP = 0x4
#: The largest total length accepted (sockperf's own limit, MAX_PAYLOAD_SIZE 65507 bytes
#: plus the header, is below it).
MAX_MESSAGE = 65536
#: The flags' low byte is byte 9 of a message (u16 big-endian at offset 8).
_FLAGS_LO = 9
#: The total length is the u32 at offset 10.
_LENGTH = 10
_CLEAR_CLIENT = ~FLAG_CLIENT & 0xFF


class CountsLike(Protocol):
    """Where a :class:`Framer` counts (a server's statistics, e.g. ``RrStats``)."""

    messages: int
    replies: int


@dataclass(slots=True)
class Counts:
    """Messages received and replies produced."""

    messages: int = 0
    replies: int = 0


def reply_to(message: bytes | bytearray | memoryview) -> bytearray | None:
    """The reply to one whole *message* (a copy, ``CLIENT`` cleared), or None when the
    message asks for no reply."""
    if not message[_FLAGS_LO] & FLAG_PONG_REQUEST:
        return None
    reply = bytearray(message)
    reply[_FLAGS_LO] &= _CLEAR_CLIENT
    return reply


class Framer:
    """One connection's sockperf framing: received bytes in, the bytes to send back out.

    *counts* receives the counts (default: a :class:`Counts` of its own, :attr:`counts`);
    *buffer_size* sizes :attr:`buffer` for :meth:`received` (0: no buffer, :meth:`feed`
    only).
    """

    __slots__ = ("_last", "_pending", "_view", "buffer", "counts")

    def __init__(self, counts: CountsLike | None = None, *, buffer_size: int = 0) -> None:
        self.counts: CountsLike = counts if counts is not None else Counts()
        #: the receive buffer of :meth:`received`
        self.buffer = bytearray(buffer_size)
        self._view = memoryview(self.buffer)
        self._last = self._view[:0]  # the last in-place reply's view, reused for its size
        self._pending = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back for the next read."""
        return len(self._pending)

    def feed(self, data: bytes | bytearray | memoryview) -> bytes | bytearray:
        """Consume *data*; return the concatenated replies to every message it completes
        (empty when none asks for one)."""
        n = len(data)
        if not self._pending and n >= HEADER.size and int.from_bytes(data[10:14], "big") == n:
            # exactly one whole message: ping-pong always reads one
            counts = self.counts
            counts.messages += 1
            if data[_FLAGS_LO] & FLAG_PONG_REQUEST:
                reply = bytearray(data)
                reply[_FLAGS_LO] &= _CLEAR_CLIENT
                counts.replies += 1
                return reply
            return b""
        return self._feed_buffered(data)

    def received(self, n: int) -> memoryview | bytes | bytearray:
        """The bytes to send after a read put *n* (> 0) bytes at the start of :attr:`buffer`.

        A read of exactly one whole message is answered in place: the result is a view of
        :attr:`buffer`, valid until the next read into it. The length check reads single
        bytes (no tuple, no slice) and the view is reused for equal sizes: nothing is
        allocated on this path.
        """
        buf = self.buffer
        if (
            n >= HEADER.size
            and not self._pending
            and not buf[10]
            and not buf[11]
            and buf[12] << 8 | buf[13] == n
        ):
            counts = self.counts
            counts.messages += 1
            if buf[_FLAGS_LO] & FLAG_PONG_REQUEST:
                buf[_FLAGS_LO] &= _CLEAR_CLIENT
                counts.replies += 1
                last = self._last
                if len(last) != n:
                    last = self._last = self._view[:n]
                return last
            return b""
        return self._feed_buffered(self._view[:n])

    def _feed_buffered(self, data: bytes | bytearray | memoryview) -> bytes:
        buf = self._pending
        buf += data
        out = bytearray()
        pos = 0
        end = len(buf)
        counts = self.counts
        while end - pos >= HEADER.size:
            length = int.from_bytes(buf[pos + _LENGTH : pos + _LENGTH + 4], "big")
            if not HEADER.size <= length <= MAX_MESSAGE:
                raise FramingError(
                    f"sockperf message with total length {length}: must be "
                    f"{HEADER.size}..{MAX_MESSAGE} (is the peer a sockperf client?)"
                )
            if end - pos < length:
                break
            counts.messages += 1
            reply = reply_to(memoryview(buf)[pos : pos + length])
            if reply is not None:
                counts.replies += 1
                out += reply
            pos += length
        del buf[:pos]
        return bytes(out)
