"""Netlink message codec: bytes in, messages out, and back. No I/O here.

Like h11, this module never touches a socket: :func:`encode_message` turns a
request into bytes and :func:`decode_messages` turns a datagram into
:class:`Message` objects (``NLMSG_ERROR`` already decoded into
:class:`ErrorPayload`, extended ack included). The socket layer
(:mod:`netdevkit.netlink.socket`) stays thin on top of it.

Kernel facts relied on (include/uapi/linux/netlink.h, genetlink.h):

- ``struct nlmsghdr`` is ``=IHHII`` (len, type, flags, seq, pid), 16 bytes;
  messages and attributes are padded to 4 bytes (NLMSG_ALIGN / NLA_ALIGN).
- ``struct genlmsghdr`` is ``=BBH`` (cmd, version, reserved).
- An ``NLMSG_ERROR`` payload is an ``int error`` (negative errno, 0 = ACK)
  followed by the request's header and, unless ``NLM_F_CAPPED`` is set, the
  whole request. With ``NLM_F_ACK_TLVS`` extended-ack attributes follow.
"""

# No `from __future__ import annotations`: NamedTuple fields annotated with strings
# cost a compile() each at import, and every CLI start-up imports this module.
import struct
from collections.abc import Iterator
from typing import NamedTuple

from ..errors import DecodeError

# Message types
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
GENL_ID_CTRL = 0x10

# Message flags
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_ECHO = 0x8
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
# flags of an NLMSG_ERROR message
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200

# Extended ack attributes (enum nlmsgerr_attrs)
NLMSGERR_ATTR_MSG = 1
NLMSGERR_ATTR_OFFS = 2
NLMSGERR_ATTR_COOKIE = 3
NLMSGERR_ATTR_POLICY = 4
NLMSGERR_ATTR_MISS_TYPE = 5
NLMSGERR_ATTR_MISS_NEST = 6

# Attribute header type bits
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = 0x3FFF

NLMSGHDR = struct.Struct("=IHHII")
GENLMSGHDR = struct.Struct("=BBH")
NLATTR = struct.Struct("=HH")
NLMSGHDR_LEN = NLMSGHDR.size
GENLMSGHDR_LEN = GENLMSGHDR.size
NLA_HDRLEN = NLATTR.size
_I32 = struct.Struct("=i")
_U32 = struct.Struct("=I")


def align4(n: int) -> int:
    """NLMSG_ALIGN / NLA_ALIGN: round up to a multiple of 4."""
    return (n + 3) & ~3


class ExtAck(NamedTuple):
    """The kernel's extended acknowledgement for an error (or a warning on ACK)."""

    message: str = ""
    #: byte offset of the offending attribute inside the *request* message
    offset: int | None = None
    missing_type: int | None = None
    missing_nest: int | None = None
    cookie: bytes = b""


class ErrorPayload(NamedTuple):
    """A decoded NLMSG_ERROR: ``error`` is 0 for an ACK, else a negative errno."""

    error: int
    request_type: int
    request_seq: int
    extack: ExtAck = ExtAck()


class Message(NamedTuple):
    """One netlink message. ``payload`` follows the 16-byte header, unpadded."""

    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes
    #: decoded NLMSG_ERROR body, else None
    error: ErrorPayload | None = None


def encode_attr(attr_type: int, payload: bytes) -> bytes:
    """One attribute: header, payload and padding to 4 bytes."""
    length = NLA_HDRLEN + len(payload)
    if length > 0xFFFF:
        raise ValueError(f"netlink attribute {attr_type} too long ({length} bytes)")
    return NLATTR.pack(length, attr_type) + payload + b"\0" * (align4(length) - length)


def encode_message(msg_type: int, flags: int, seq: int, payload: bytes, pid: int = 0) -> bytes:
    """One netlink message with header; the payload is padded to 4 bytes."""
    length = NLMSGHDR_LEN + len(payload)
    return (
        NLMSGHDR.pack(length, msg_type, flags, seq, pid)
        + payload
        + b"\0" * (align4(length) - length)
    )


def encode_genl(
    family_id: int, cmd: int, version: int, flags: int, seq: int, attrs: bytes = b""
) -> bytes:
    """A generic netlink request: nlmsghdr + genlmsghdr + attributes."""
    return encode_message(family_id, flags, seq, GENLMSGHDR.pack(cmd, version, 0) + attrs)


def iter_attrs(
    buf: bytes | memoryview, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, int, int]]:
    """Yield ``(type, payload_start, payload_end)`` for each attribute in ``buf[start:end]``.

    ``type`` keeps its flag bits (mask with :data:`NLA_TYPE_MASK`). Raises
    :class:`DecodeError` for a header that runs past the end or claims a
    length below the header size. Trailing padding (fewer than 4 bytes) is
    accepted, as the kernel's ``nla_for_each_attr`` does.
    """
    if end is None:
        end = len(buf)
    pos = start
    unpack = NLATTR.unpack_from
    while end - pos >= NLA_HDRLEN:
        length, attr_type = unpack(buf, pos)
        if length < NLA_HDRLEN or pos + length > end:
            raise attr_overrun(pos, length, end - pos)
        yield attr_type, pos + NLA_HDRLEN, pos + length
        pos += align4(length)


def attr_overrun(pos: int, length: int, left: int, where: str = "") -> DecodeError:
    """The error for the attribute header at byte *pos* whose *length* is below the header
    size or runs past the *left* bytes that remain (*where*: the attribute set, if known)."""
    prefix = f"{where}: " if where else ""
    return DecodeError(f"{prefix}attribute at byte {pos} has length {length}, {left} bytes left")


def decode_extack(buf: bytes, start: int) -> ExtAck:
    """Decode the NLMSGERR_ATTR_* TLVs that follow the (capped) error."""
    message = ""
    offset = missing_type = missing_nest = None
    cookie = b""
    for attr_type, a, b in iter_attrs(buf, start):
        kind = attr_type & NLA_TYPE_MASK
        if kind == NLMSGERR_ATTR_MSG:
            message = buf[a:b].split(b"\0", 1)[0].decode("utf-8", "replace")
        elif kind == NLMSGERR_ATTR_OFFS and b - a >= 4:
            offset = _U32.unpack_from(buf, a)[0]
        elif kind == NLMSGERR_ATTR_MISS_TYPE and b - a >= 4:
            missing_type = _U32.unpack_from(buf, a)[0]
        elif kind == NLMSGERR_ATTR_MISS_NEST and b - a >= 4:
            missing_nest = _U32.unpack_from(buf, a)[0]
        elif kind == NLMSGERR_ATTR_COOKIE:
            cookie = bytes(buf[a:b])
    return ExtAck(message, offset, missing_type, missing_nest, cookie)


def decode_error(payload: bytes, flags: int) -> ErrorPayload:
    """Decode the body of an NLMSG_ERROR message."""
    if len(payload) < 4 + NLMSGHDR_LEN:
        raise DecodeError(f"NLMSG_ERROR body of {len(payload)} bytes is shorter than 20")
    (error,) = _I32.unpack_from(payload, 0)
    orig_len, orig_type, _f, orig_seq, _p = NLMSGHDR.unpack_from(payload, 4)
    extack = ExtAck()
    if flags & NLM_F_ACK_TLVS:
        # capped: only the request's header was echoed; else the whole request
        tlv_start = 4 + NLMSGHDR_LEN if flags & NLM_F_CAPPED else 4 + align4(orig_len)
        if tlv_start > len(payload):
            raise DecodeError("NLMSG_ERROR: extended ack starts past the end of the message")
        extack = decode_extack(payload, tlv_start)
    return ErrorPayload(error, orig_type, orig_seq, extack)


#: one message header: (type, flags, seq, payload start, message end)
Header = tuple[int, int, int, int, int]


def headers(buf: bytes | memoryview, pos: int = 0) -> list[Header]:
    """``(type, flags, seq, start, end)`` of each message in ``buf[pos:]``.

    ``buf[start:end]`` is the message's payload (after its nlmsghdr, without
    the padding that follows). This is the one loop over message headers:
    :func:`decode_messages` and the socket's replies and dumps all use it. It
    returns a list for the whole datagram (a generator would cost a resume
    per message on the dump path). Raises :class:`DecodeError` for a
    truncated header or a length field that is too small or runs past the
    datagram.
    """
    out: list[Header] = []
    add = out.append
    end = len(buf)
    unpack = NLMSGHDR.unpack_from
    hdrlen = NLMSGHDR_LEN
    while pos < end:
        if end - pos < hdrlen:
            raise DecodeError(f"truncated netlink header: {end - pos} bytes at byte {pos}")
        length, msg_type, flags, seq, _pid = unpack(buf, pos)
        if length < hdrlen or pos + length > end:
            raise DecodeError(
                f"netlink message at byte {pos}: length {length} does not fit in {end - pos} bytes"
            )
        add((msg_type, flags, seq, pos + hdrlen, pos + length))
        pos += (length + 3) & ~3  # align4(length), without a call per message
    return out


def pid_at(buf: bytes | memoryview, start: int) -> int:
    """The port id in the header of the message whose payload starts at *start*."""
    return int(NLMSGHDR.unpack_from(buf, start - NLMSGHDR_LEN)[4])


def decode_messages(buf: bytes) -> list[Message]:
    """Split one datagram into messages.

    Raises :class:`DecodeError` for a truncated header, a length field that
    is too small or runs past the datagram, or a malformed NLMSG_ERROR.
    """
    out: list[Message] = []
    for msg_type, flags, seq, start, end in headers(buf):
        payload = buf[start:end]
        error = decode_error(payload, flags) if msg_type == NLMSG_ERROR else None
        out.append(Message(msg_type, flags, seq, pid_at(buf, start), payload, error))
    return out


def split_genl(payload: bytes) -> tuple[int, int]:
    """``(cmd, version)`` of a generic netlink payload; attributes start at byte 4."""
    if len(payload) < GENLMSGHDR_LEN:
        raise DecodeError(f"generic netlink payload of {len(payload)} bytes has no genlmsghdr")
    cmd, version, _ = GENLMSGHDR.unpack_from(payload, 0)
    return cmd, version
