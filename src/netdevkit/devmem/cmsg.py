"""The devmem control buffer and token batches, parsed and built in bulk.

Sans-I/O, like :mod:`netdevkit.netlink.codec`: bytes in, numpy arrays out,
and back. The receive path never loops in Python per cmsg:

- Every cmsg a devmem ``recvmsg`` produces is ``SOL_SOCKET`` /
  ``SCM_DEVMEM_DMABUF`` (79) or ``SCM_DEVMEM_LINEAR`` (78) carrying one
  24-byte ``struct dmabuf_cmsg``, so each takes exactly
  ``CMSG_SPACE(24)`` = 40 bytes and the whole control buffer is one numpy
  structured array (:data:`CMSG_DTYPE`) viewed in place. A buffer holding
  anything else (a cmsg of another type or length) is walked header by
  header instead (:func:`parse_control_slow`), which still gives the same
  arrays.
- Tokens go back in ``struct dmabuf_token`` ranges: :func:`token_ranges`
  coalesces consecutive tokens with ``numpy.diff`` and
  :func:`dontneed_batches` splits the ranges into calls the kernel accepts
  (at most 128 ranges and 1024 frags each; net/core/sock.c).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..errors import DecodeError
from .uapi import (
    CMSGHDR,
    DEVMEM_CMSG_SPACE,
    DMABUF_CMSG,
    MAX_DONTNEED_FRAGS,
    MAX_DONTNEED_TOKENS,
    SCM_DEVMEM_DMABUF,
    SCM_DEVMEM_LINEAR,
    SOL_SOCKET,
    cmsg_len,
)

U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]

#: one devmem cmsg as the kernel writes it (cmsghdr + struct dmabuf_cmsg), 40 bytes
CMSG_DTYPE = np.dtype(
    [
        ("len", "<u8"),
        ("level", "<i4"),
        ("type", "<i4"),
        ("offset", "<u8"),
        ("size", "<u4"),
        ("token", "<u4"),
        ("dmabuf_id", "<u4"),
        ("flags", "<u4"),
    ]
)
assert CMSG_DTYPE.itemsize == DEVMEM_CMSG_SPACE
#: struct dmabuf_token as a numpy record
TOKEN_DTYPE = np.dtype([("start", "<u4"), ("count", "<u4")])
_DEVMEM_LEN = cmsg_len(DMABUF_CMSG.size)
#: the same 40 bytes seen as (cmsg_len, level and type in one u64, payload)
_HEAD_DTYPE = np.dtype([("len", "<u8"), ("level_type", "<u8"), ("body", "V24")])
_LINEAR_KEY = SOL_SOCKET | (SCM_DEVMEM_LINEAR << 32)
_DMABUF_KEY = SOL_SOCKET | (SCM_DEVMEM_DMABUF << 32)


@dataclass(frozen=True, slots=True)
class Parsed:
    """The devmem cmsgs of one ``recvmsg``, in stream order, as arrays.

    ``linear[i]`` is true where cmsg *i* is ``SCM_DEVMEM_LINEAR`` (its
    bytes were copied into the iov; only ``size`` is valid), false where it
    is ``SCM_DEVMEM_DMABUF`` (a fragment in the dmabuf).
    """

    linear: npt.NDArray[np.bool_]
    offset: U64
    size: U32
    token: U32
    dmabuf_id: U32

    def __len__(self) -> int:
        return len(self.size)


EMPTY = Parsed(
    np.zeros(0, np.bool_),
    np.zeros(0, np.uint64),
    np.zeros(0, np.uint32),
    np.zeros(0, np.uint32),
    np.zeros(0, np.uint32),
)


def parse_control(control: bytes | bytearray | memoryview, length: int) -> Parsed:
    """Parse ``control[:length]`` as the kernel left it after a devmem recvmsg.

    Copies the fields out (the control buffer is reused by the next call).
    Raises :class:`DecodeError` for a truncated cmsg.
    """
    if length == 0:
        return EMPTY
    if length % DEVMEM_CMSG_SPACE == 0:
        # one copy of the used bytes (the kernel reuses the buffer), then views into it
        rec = np.frombuffer(bytes(control[:length]), CMSG_DTYPE)
        head = rec.view(_HEAD_DTYPE)
        kind = head["level_type"]
        linear = kind == _LINEAR_KEY
        if (head["len"] == _DEVMEM_LEN).all() and (linear | (kind == _DMABUF_KEY)).all():
            return Parsed(linear, rec["offset"], rec["size"], rec["token"], rec["dmabuf_id"])
    return parse_control_slow(bytes(control[:length]))


def parse_control_slow(buf: bytes) -> Parsed:
    """Walk the cmsgs one by one; keeps the devmem ones, skips the others."""
    rows: list[tuple[bool, int, int, int, int]] = []
    pos, end = 0, len(buf)
    while end - pos >= CMSGHDR.size:
        clen, level, ctype = CMSGHDR.unpack_from(buf, pos)
        if clen < CMSGHDR.size or pos + clen > end:
            raise DecodeError(f"control message at byte {pos} has length {clen}, {end - pos} left")
        if level == SOL_SOCKET and ctype in (SCM_DEVMEM_LINEAR, SCM_DEVMEM_DMABUF):
            if clen < _DEVMEM_LEN:
                raise DecodeError(f"devmem cmsg at byte {pos} is {clen} bytes, expected 40")
            off, size, token, dmabuf_id, _flags = DMABUF_CMSG.unpack_from(buf, pos + CMSGHDR.size)
            rows.append((ctype == SCM_DEVMEM_LINEAR, off, size, token, dmabuf_id))
        pos += (clen + 7) & ~7
    if not rows:
        return EMPTY
    cols = list(zip(*rows, strict=True))
    return Parsed(
        np.array(cols[0], np.bool_),
        np.array(cols[1], np.uint64),
        np.array(cols[2], np.uint32),
        np.array(cols[3], np.uint32),
        np.array(cols[4], np.uint32),
    )


def build_control(parsed: Parsed) -> bytes:
    """The control-buffer bytes the kernel writes for *parsed* (the inverse)."""
    rec = np.zeros(len(parsed), CMSG_DTYPE)
    rec["len"] = _DEVMEM_LEN
    rec["level"] = SOL_SOCKET
    rec["type"] = np.where(parsed.linear, SCM_DEVMEM_LINEAR, SCM_DEVMEM_DMABUF)
    rec["offset"] = np.where(parsed.linear, 0, parsed.offset)
    rec["size"] = parsed.size
    rec["token"] = np.where(parsed.linear, 0, parsed.token)
    rec["dmabuf_id"] = np.where(parsed.linear, 0, parsed.dmabuf_id)
    return rec.tobytes()


# -- token return ----------------------------------------------------------------


def token_ranges(tokens: U32) -> npt.NDArray[np.void]:
    """Coalesce *tokens* (in the order given) into ``dmabuf_token`` ranges.

    Runs of consecutive values (t, t+1, t+2 ...) become one range; the order
    of the tokens is kept, so every token appears in exactly one range.
    """
    n = len(tokens)
    out = np.zeros(0, TOKEN_DTYPE)
    if n == 0:
        return out
    t = tokens.astype(np.int64, copy=False)
    breaks = np.flatnonzero(np.diff(t) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [n]))
    out = np.empty(len(starts), TOKEN_DTYPE)
    out["start"] = tokens[starts]
    out["count"] = ends - starts
    return out


def dontneed_batches(
    ranges: npt.NDArray[np.void],
    max_ranges: int = MAX_DONTNEED_TOKENS,
    max_frags: int = MAX_DONTNEED_FRAGS,
) -> Iterator[npt.NDArray[np.void]]:
    """Split *ranges* into SO_DEVMEM_DONTNEED calls the kernel accepts whole.

    Each yielded array has at most *max_ranges* entries covering at most
    *max_frags* tokens; a range longer than *max_frags* is cut in pieces.
    """
    counts = ranges["count"].astype(np.int64)
    if len(counts) and counts.max() > max_frags:
        ranges = _cut_long_ranges(ranges, max_frags)
        counts = ranges["count"].astype(np.int64)
    i, n = 0, len(ranges)
    cum = np.cumsum(counts)
    while i < n:
        base = cum[i - 1] if i else 0
        # the furthest j with sum(counts[i:j]) <= max_frags, capped by max_ranges
        j = int(np.searchsorted(cum, base + max_frags, side="right"))
        j = max(i + 1, min(j, i + max_ranges, n))
        yield ranges[i:j]
        i = j


def _cut_long_ranges(ranges: npt.NDArray[np.void], max_frags: int) -> npt.NDArray[np.void]:
    pieces: list[tuple[int, int]] = []
    for first, total in ranges.tolist():
        for done in range(0, total, max_frags):
            pieces.append((first + done, min(max_frags, total - done)))
    return np.array(pieces, TOKEN_DTYPE)


def ranges_tail(batch: npt.NDArray[np.void], done: int) -> npt.NDArray[np.void]:
    """The part of *batch* after its first *done* tokens (what a partial free left)."""
    counts = batch["count"].astype(np.int64)
    cum = np.cumsum(counts)
    k = int(np.searchsorted(cum, done, side="right"))
    rest = batch[k:].copy()
    if len(rest):
        used = done - (int(cum[k - 1]) if k else 0)
        rest["start"][0] += used
        rest["count"][0] -= used
    return rest
