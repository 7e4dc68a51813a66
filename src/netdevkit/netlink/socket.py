"""A thin generic netlink socket on top of :mod:`netdevkit.netlink.codec`.

It sends a request, collects the replies that carry its sequence number until
the ACK or ``NLMSG_DONE``, keeps messages with other sequence numbers
(notifications, sequence 0) aside for :meth:`GenlSocket.notifications`, and
turns ``NLMSG_ERROR`` into :class:`~netdevkit.errors.KernelError`.

Kernel facts relied on:

- ``NETLINK_EXT_ACK`` makes the kernel explain errors; ``NETLINK_CAP_ACK``
  stops it echoing the whole request back; ``NETLINK_GET_STRICT_CHK`` makes
  it reject dump filters it does not understand instead of ignoring them.
- A netlink datagram larger than the receive buffer is truncated and the rest
  is lost (``MSG_TRUNC``). So each receive first peeks with
  ``MSG_PEEK | MSG_TRUNC``, which returns the datagram's real length, and
  grows the buffer when needed: nothing is ever truncated.
- A dump whose object list changed while it ran carries ``NLM_F_DUMP_INTR``;
  the caller should retry it (:class:`DumpInterrupted`).
- A socket belongs for its whole life to the network namespace it was
  created in, which is how :meth:`GenlSocket.open` reaches a named namespace.
"""

# No `from __future__ import annotations`: NamedTuple fields annotated with strings
# cost a compile() each at import, and every CLI start-up imports this module.
import collections
import errno
import socket
import sys
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar

from ..errors import DecodeError, KernelError, UnsupportedError, translate_oserror

# Defined in errors.py; importable from here as before.
from ..errors import DumpInterrupted as DumpInterrupted  # noqa: PLC0414
from ..errors import ErrorReply as ErrorReply  # noqa: PLC0414
from ..errors import NotificationsLost as NotificationsLost  # noqa: PLC0414
from ..netns import entered
from . import codec
from .codec import Message

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_DROP_MEMBERSHIP = 2
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

# nlctrl (include/uapi/linux/genetlink.h)
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_VERSION = 3
CTRL_ATTR_HDRSIZE = 4
CTRL_ATTR_MAXATTR = 5
CTRL_ATTR_OPS = 6
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_OP_ID = 1
CTRL_ATTR_OP_FLAGS = 2
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2

_INITIAL_BUFSIZE = 64 * 1024
#: netlink message types below this are control messages (NOOP, ERROR, DONE, OVERRUN)
_FIRST_FAMILY_TYPE = 0x10
T = TypeVar("T")


class FamilyInfo(NamedTuple):
    """What nlctrl says about a family on this kernel."""

    name: str
    id: int
    version: int
    maxattr: int
    #: command ids the running kernel implements
    op_ids: frozenset[int]
    #: multicast group name -> group id
    mcast_groups: dict[str, int]


def _u32(buf: bytes, a: int) -> int:
    return int.from_bytes(buf[a : a + 4], sys.byteorder)


def parse_family_info(payload: bytes) -> FamilyInfo:
    """Decode a CTRL_CMD_NEWFAMILY reply (genl payload incl. genlmsghdr)."""
    name, fid, version, maxattr = "", 0, 0, 0
    ops: set[int] = set()
    groups: dict[str, int] = {}
    for t, a, b in codec.iter_attrs(payload, codec.GENLMSGHDR_LEN):
        kind = t & codec.NLA_TYPE_MASK
        if kind == CTRL_ATTR_FAMILY_ID:
            fid = int.from_bytes(payload[a : a + 2], sys.byteorder)
        elif kind == CTRL_ATTR_FAMILY_NAME:
            name = payload[a:b].split(b"\0", 1)[0].decode()
        elif kind == CTRL_ATTR_VERSION:
            version = _u32(payload, a)
        elif kind == CTRL_ATTR_MAXATTR:
            maxattr = _u32(payload, a)
        elif kind == CTRL_ATTR_OPS:
            for _t, oa, ob in codec.iter_attrs(payload, a, b):
                for ot, xa, _xb in codec.iter_attrs(payload, oa, ob):
                    if ot & codec.NLA_TYPE_MASK == CTRL_ATTR_OP_ID:
                        ops.add(_u32(payload, xa))
        elif kind == CTRL_ATTR_MCAST_GROUPS:
            for _t, ga, gb in codec.iter_attrs(payload, a, b):
                gname, gid = "", 0
                for gt, xa, xb in codec.iter_attrs(payload, ga, gb):
                    if gt & codec.NLA_TYPE_MASK == CTRL_ATTR_MCAST_GRP_NAME:
                        gname = payload[xa:xb].split(b"\0", 1)[0].decode()
                    elif gt & codec.NLA_TYPE_MASK == CTRL_ATTR_MCAST_GRP_ID:
                        gid = _u32(payload, xa)
                groups[gname] = gid
    if not fid:
        raise DecodeError("nlctrl reply without a family id")
    return FamilyInfo(name, fid, version, maxattr, frozenset(ops), groups)


class GenlSocket:
    """A generic netlink socket. Use :meth:`open`; close it (or use ``with``)."""

    def __init__(self, sock: socket.socket, netns: str | None = None) -> None:
        self._sock = sock
        self.netns = netns
        self._seq = 0
        self._buf = bytearray(_INITIAL_BUFSIZE)
        self._pending: collections.deque[Message] = collections.deque()
        self._notifications: collections.deque[Message] = collections.deque()
        # the unread rest of a datagram whose reply ended mid-way: (datagram, offset)
        self._leftover: list[tuple[bytes, int]] = []

    @classmethod
    def open(cls, netns: str | None = None) -> "GenlSocket":
        """Open a socket in the current namespace or in named namespace *netns*."""
        operation = "open a generic netlink socket" + (f" in netns {netns}" if netns else "")
        with entered(netns):
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
            except OSError as err:
                raise translate_oserror(err, operation) from err
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            sock.bind((0, 0))
        except OSError as err:
            sock.close()
            raise translate_oserror(err, operation) from err
        return cls(sock, netns)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "GenlSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- receive ----------------------------------------------------------

    def _recv_datagram(self) -> bytes:
        sock = self._sock
        while True:
            try:
                n = sock.recv_into(self._buf, len(self._buf), socket.MSG_PEEK | socket.MSG_TRUNC)
                if n > len(self._buf):
                    self._buf = bytearray(max(n, 2 * len(self._buf)))
                n = sock.recv_into(self._buf, len(self._buf))
            except InterruptedError:
                continue
            except TimeoutError:
                raise  # the timeout poll_notifications set: not an error
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    raise NotificationsLost(
                        "netlink receive queue overflowed (ENOBUFS): notifications were lost"
                    ) from err
                raise translate_oserror(err, "receive from a generic netlink socket") from err
            return bytes(self._buf[:n])

    def _next_message(self) -> Message:
        while not self._pending:
            if self._leftover:
                buf, pos = self._leftover.pop()
                self._pending.extend(codec.decode_messages(buf[pos:]))
            else:
                self._pending.extend(codec.decode_messages(self._recv_datagram()))
        return self._pending.popleft()

    # -- requests ---------------------------------------------------------

    def next_seq(self) -> int:
        self._seq = (self._seq % 0x7FFF_FFFF) + 1
        return self._seq

    def send(self, data: bytes) -> None:
        self._sock.send(data)

    def transact(self, request: bytes, seq: int, operation: str) -> list[Message]:
        """Send *request* and return its replies (without the final ACK/DONE).

        See :meth:`transact_rows`, which this is with one :class:`Message`
        made per reply.
        """
        return self.transact_rows(request, seq, operation, _message_at)

    def transact_rows(
        self,
        request: bytes,
        seq: int,
        operation: str,
        row: Callable[[bytes, int, int], T],
        skip: int = 0,
    ) -> list[T]:
        """Send *request*; call ``row(datagram, start, end)`` for each reply.

        ``datagram[start:end]`` is the reply's payload after its nlmsghdr and
        *skip* more bytes (a family header: 4 for generic netlink). This is
        the dump hot path: no intermediate objects or copies are made for a
        reply. Messages of other sequence numbers are set aside as
        notifications (sequence 0) or dropped (replies to an abandoned
        request). Raises :class:`ErrorReply` for an error reply,
        :class:`DumpInterrupted` for a dump flagged ``NLM_F_DUMP_INTR`` and
        :class:`DecodeError` for malformed data.
        """
        # Anything parsed before this request was sent cannot answer it.
        while self._pending:
            msg = self._pending.popleft()
            if msg.seq == 0:
                self._notifications.append(msg)
        self.send(request)
        out: list[T] = []
        add = out.append
        flags_seen = 0  # of the replies: NLM_F_DUMP_INTR on any of them interrupts the dump
        first_family_type = _FIRST_FAMILY_TYPE
        while True:
            buf, pos = self._leftover.pop() if self._leftover else (self._recv_datagram(), 0)
            for mtype, flags, mseq, start, end in codec.headers(buf, pos):
                if mseq == seq and mtype >= first_family_type:
                    # the common case: one reply of many (types below 16 are control)
                    flags_seen |= flags
                    add(row(buf, start + skip, end))
                elif mseq != seq:
                    if mseq == 0:
                        hdr = start - codec.NLMSGHDR_LEN
                        self._notifications.extend(codec.decode_messages(buf[hdr:end]))
                elif mtype in (codec.NLMSG_ERROR, codec.NLMSG_DONE):
                    if codec.align4(end) < len(buf):
                        self._leftover.append((buf, codec.align4(end)))
                    _raise_for_end(buf[start:end], mtype, flags, operation)
                    if (flags_seen | flags) & codec.NLM_F_DUMP_INTR:
                        raise DumpInterrupted(
                            f"{operation}: the kernel's object list changed during the dump"
                        )
                    return out

    # -- families and groups ------------------------------------------------

    def resolve_family(self, name: str) -> FamilyInfo:
        """Ask nlctrl for family *name*; :class:`UnsupportedError` if absent."""
        seq = self.next_seq()
        attrs = codec.encode_attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0")
        req = codec.encode_genl(
            codec.GENL_ID_CTRL,
            CTRL_CMD_GETFAMILY,
            1,
            codec.NLM_F_REQUEST | codec.NLM_F_ACK,
            seq,
            attrs,
        )
        try:
            replies = self.transact(req, seq, f"resolve generic netlink family {name!r}")
        except KernelError as err:
            if err.errno == errno.ENOENT:
                raise UnsupportedError(
                    f"this kernel has no {name!r} generic netlink family"
                ) from err
            raise
        if not replies:
            raise DecodeError(f"nlctrl sent no reply for family {name!r}")
        return parse_family_info(replies[0].payload)

    def join_group(self, group_id: int) -> None:
        """Join multicast group *group_id*; some groups need CAP_NET_ADMIN."""
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group_id)
        except OSError as err:
            operation = f"join generic netlink multicast group {group_id}"
            raise translate_oserror(err, operation, capability="CAP_NET_ADMIN") from err

    def leave_group(self, group_id: int) -> None:
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, group_id)
        except OSError as err:
            operation = f"leave generic netlink multicast group {group_id}"
            raise translate_oserror(err, operation) from err

    def poll_notifications(self, timeout: float | None) -> Iterator[Message]:
        """Yield queued notifications, then wait up to *timeout* for more."""
        q = self._notifications
        while q:
            yield q.popleft()
        self._sock.settimeout(timeout)
        try:
            while True:
                try:
                    msg = self._next_message()
                except TimeoutError:
                    return
                if msg.seq == 0:
                    yield msg
        finally:
            self._sock.settimeout(None)


def _message_at(buf: bytes, start: int, end: int) -> Message:
    """The :class:`Message` whose payload is ``buf[start:end]``."""
    (msg,) = codec.decode_messages(buf[start - codec.NLMSGHDR_LEN : end])
    return msg


def _raise_for_end(payload: bytes, mtype: int, flags: int, operation: str) -> None:
    """Raise :class:`ErrorReply` if the ACK or NLMSG_DONE that ends a reply carries an error."""
    if mtype == codec.NLMSG_ERROR:
        error = codec.decode_error(payload, flags)
        if error.error:
            raise ErrorReply(-error.error, operation, error.extack)
        return
    # NLMSG_DONE carries the dump's final status as an int, then extack TLVs.
    if len(payload) >= 4:
        err = int.from_bytes(payload[:4], sys.byteorder, signed=True)
        if err < 0:
            extack = (
                codec.decode_extack(payload, 4) if flags & codec.NLM_F_ACK_TLVS else codec.ExtAck()
            )
            raise ErrorReply(-err, operation, extack)
