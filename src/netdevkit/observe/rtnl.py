"""Link counters from one rtnetlink dump (``RTM_GETLINK``), in any namespace.

Why not pyroute2 here: its synchronous ``IPRoute`` (0.9) keeps one socket
per *thread*, created lazily on first use in that thread, so an ``IPRoute``
made inside a namespace answers from the namespace of whichever thread
calls it later [seen: a call from a second thread listed the host's links].
The exporter serves scrapes from a thread per request, so it needs a socket
that stays in its namespace: this one, made inside the namespace and owned
by the reader. The framing and attribute walking are the netlink codec's.

Kernel facts relied on (include/uapi/linux/rtnetlink.h, if_link.h):

- ``RTM_NEWLINK`` = 16, ``RTM_GETLINK`` = 18 on a ``NETLINK_ROUTE`` (0)
  socket; a dump request carries a 16-byte ``struct ifinfomsg`` {u8 family,
  u8 pad, u16 type, s32 index, u32 flags, u32 change}; each reply starts
  with one.
- Attributes: ``IFLA_IFNAME`` 3 (string), ``IFLA_OPERSTATE`` 16 (u8: 0
  unknown ... 2 down ... 6 up), ``IFLA_LINKINFO`` 18 (nest; ``IFLA_INFO_KIND``
  1, string: "veth", "bridge" ...), ``IFLA_IFALIAS`` 20 (string, absent when
  unset), ``IFLA_STATS64`` 23 (struct
  rtnl_link_stats64: u64 rx_packets, tx_packets, rx_bytes, tx_bytes,
  rx_errors, tx_errors, rx_dropped, tx_dropped, ...).
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass

from ..errors import KernelError
from ..netlink import codec
from ..netns import entered

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
RTM_GETLINK = 18
IFLA_IFNAME = 3
IFLA_OPERSTATE = 16
IFLA_IFALIAS = 20
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_STATS64 = 23
IFINFOMSG = struct.Struct("=BxHiII")
#: the first eight u64 of rtnl_link_stats64, in kernel order
STATS64_NAMES = (
    "rx_packets",
    "tx_packets",
    "rx_bytes",
    "tx_bytes",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
)
_STATS = struct.Struct("=8Q")
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
_RETRIES = 3


@dataclass(frozen=True, slots=True)
class LinkRow:
    ifindex: int
    ifname: str
    kind: str | None
    operstate: str
    counters: dict[str, int]
    alias: str = ""


def _string(buf: bytes, a: int, b: int) -> str:
    return buf[a:b].split(b"\0", 1)[0].decode(errors="replace")


def parse_link(payload: bytes) -> LinkRow:
    """One ``RTM_NEWLINK`` payload (ifinfomsg + attributes) -> :class:`LinkRow`."""
    _family, _type, ifindex, _flags, _change = IFINFOMSG.unpack_from(payload, 0)
    name, kind, oper, alias = "", None, "UNKNOWN", ""
    counters: dict[str, int] = {}
    for raw_type, a, b in codec.iter_attrs(payload, IFINFOMSG.size):
        t = raw_type & codec.NLA_TYPE_MASK
        if t == IFLA_IFNAME:
            name = _string(payload, a, b)
        elif t == IFLA_IFALIAS:
            alias = _string(payload, a, b)
        elif t == IFLA_OPERSTATE and b > a:
            v = payload[a]
            oper = OPERSTATES[v] if v < len(OPERSTATES) else str(v)
        elif t == IFLA_STATS64 and b - a >= _STATS.size:
            counters = dict(zip(STATS64_NAMES, _STATS.unpack_from(payload, a), strict=True))
        elif t == IFLA_LINKINFO:
            for it, ia, ib in codec.iter_attrs(payload, a, b):
                if it & codec.NLA_TYPE_MASK == IFLA_INFO_KIND:
                    kind = _string(payload, ia, ib)
    return LinkRow(ifindex, name, kind, oper, counters, alias)


class LinkDumper:
    """A rtnetlink socket made in *netns* (None: the current namespace)."""

    def __init__(self, netns: str | None) -> None:
        with entered(netns):
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def dump(self) -> list[LinkRow]:
        for attempt in range(_RETRIES):
            rows, interrupted = self._dump_once()
            if not interrupted or attempt == _RETRIES - 1:
                return rows
        raise AssertionError("unreachable")

    def _dump_once(self) -> tuple[list[LinkRow], bool]:
        self._seq += 1
        seq = self._seq
        req = codec.encode_message(
            RTM_GETLINK,
            codec.NLM_F_REQUEST | codec.NLM_F_DUMP,
            seq,
            IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0),
        )
        self._sock.send(req)
        rows: list[LinkRow] = []
        interrupted = False
        while True:
            data = self._sock.recv(1 << 20)
            for msg in codec.decode_messages(data):
                if msg.seq != seq:
                    continue
                if msg.flags & codec.NLM_F_DUMP_INTR:
                    interrupted = True
                if msg.type == codec.NLMSG_DONE:
                    return rows, interrupted
                if msg.type == codec.NLMSG_ERROR:
                    err = -int.from_bytes(msg.payload[:4], sys.byteorder, signed=True)
                    if err:
                        raise KernelError(err, "rtnetlink link dump")
                    return rows, interrupted
                if msg.type == RTM_NEWLINK:
                    rows.append(parse_link(msg.payload))
