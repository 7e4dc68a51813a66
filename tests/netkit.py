"""netkit devices for the tests, made with a hand-built ``RTM_NEWLINK``.

Neither iproute2 6.1 nor pyroute2 0.9.7 can create a netkit device, so this packs the
request itself. The kernel (drivers/net/netkit.c, ``netkit_new_link``) makes a single
device (``IFLA_NETKIT_PAIRING`` NETKIT_DEVICE_SINGLE) or a pair: the peer (``primary``
false, named by ``IFLA_NETKIT_PEER_INFO``'s ``IFLA_IFNAME``, sized by its own
``IFLA_NUM_RX_QUEUES``) is registered first, then the primary. Deleting one end of a pair
deletes both. Each device starts with one real RX queue; ``IFLA_NUM_RX_QUEUES`` bounds
how many ``queue-create`` can add.

Constants from Linux 7.3 include/uapi/linux: netlink.h (nlmsghdr, NLM_F_*, NLMSG_ERROR,
NETLINK_CAP_ACK 10, NETLINK_EXT_ACK 11, NLMSGERR_ATTR_MSG 1), rtnetlink.h (RTM_NEWLINK 16,
RTM_DELLINK 17, struct ifinfomsg) and if_link.h (IFLA_IFNAME 3, IFLA_LINKINFO 18,
IFLA_NUM_RX_QUEUES 32, IFLA_INFO_KIND 1, IFLA_INFO_DATA 2, IFLA_NETKIT_PEER_INFO 1,
IFLA_NETKIT_MODE 5, IFLA_NETKIT_PAIRING 10, enum netkit_mode, enum netkit_pairing).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from netdevkit import netns

NETLINK_ROUTE, SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 0, 270, 10, 11
RTM_NEWLINK, RTM_DELLINK, NLMSG_ERROR = 16, 17, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS, NLMSGERR_ATTR_MSG = 0x100, 0x200, 1
NLA_F_NESTED = 0x8000
IFLA_IFNAME, IFLA_LINKINFO, IFLA_NUM_RX_QUEUES = 3, 18, 32
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_NETKIT_PEER_INFO, IFLA_NETKIT_MODE, IFLA_NETKIT_PAIRING = 1, 5, 10
NETKIT_L2, NETKIT_L3 = 0, 1
NETKIT_DEVICE_PAIR, NETKIT_DEVICE_SINGLE = 0, 1
NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
NLA = struct.Struct("=HH")  # len, type


class RtnlError(OSError):
    """The kernel refused the request: ``errno`` and the extack message (may be "")."""

    def __init__(self, err: int, extack: str) -> None:
        super().__init__(err, f"{os.strerror(err)}: {extack or '(no extack)'}")
        self.extack = extack


def _nla(kind: int, payload: bytes) -> bytes:
    raw = NLA.pack(NLA.size + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _u32(kind: int, value: int) -> bytes:
    return _nla(kind, struct.pack("=I", value))


def _name(ifname: str) -> bytes:
    return _nla(IFLA_IFNAME, ifname.encode() + b"\0")


def request(ns: str | None, msg_type: int, flags: int, body: bytes) -> None:
    """Send one rtnetlink request inside *ns* and wait for its ack; :class:`RtnlError`
    when the kernel refuses it."""
    with netns.entered(ns):  # the socket stays in the namespace it was created in
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    with sock:
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # no echo of the request
        head = NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, flags | NLM_F_REQUEST, 1, 0)
        sock.send(head + body)
        reply = sock.recv(65536)
    _length, rtype, rflags, _seq, _pid = NLMSGHDR.unpack_from(reply)
    assert rtype == NLMSG_ERROR, f"expected an ack, got message type {rtype}"
    (error,) = struct.unpack_from("=i", reply, NLMSGHDR.size)
    if error == 0:
        return
    extack = ""
    if rflags & NLM_F_ACK_TLVS:
        (echoed,) = struct.unpack_from("=I", reply, NLMSGHDR.size + 4)
        off = NLMSGHDR.size + 4 + (NLMSGHDR.size if rflags & NLM_F_CAPPED else echoed)
        off += -off % 4
        while off + NLA.size <= len(reply):
            length, kind = NLA.unpack_from(reply, off)
            if length < NLA.size:
                break
            if kind == NLMSGERR_ATTR_MSG:
                extack = reply[off + NLA.size : off + length].rstrip(b"\0").decode()
            off += length + (-length % 4)
    raise RtnlError(-error, extack)


def create(
    ns: str | None, name: str, *, rx_queues: int = 1, peer: str | None = None, mode: int = NETKIT_L2
) -> None:
    """A netkit device *name* in *ns* with *rx_queues* RX queues at most: single when
    *peer* is None, else a pair whose peer (the non-primary end) is *peer*."""
    data = _u32(IFLA_NETKIT_MODE, mode)
    if peer is None:
        data += _u32(IFLA_NETKIT_PAIRING, NETKIT_DEVICE_SINGLE)
    else:
        peer_info = IFINFOMSG.pack(0, 0, 0, 0, 0) + _name(peer)
        data += _nla(IFLA_NETKIT_PEER_INFO, peer_info + _u32(IFLA_NUM_RX_QUEUES, rx_queues))
        data += _u32(IFLA_NETKIT_PAIRING, NETKIT_DEVICE_PAIR)
    linkinfo = _nla(IFLA_INFO_KIND, b"netkit\0") + _nla(IFLA_INFO_DATA | NLA_F_NESTED, data)
    body = IFINFOMSG.pack(0, 0, 0, 0, 0) + _name(name) + _u32(IFLA_NUM_RX_QUEUES, rx_queues)
    body += _nla(IFLA_LINKINFO | NLA_F_NESTED, linkinfo)
    request(ns, RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)


def delete(ns: str | None, name: str) -> None:
    """``RTM_DELLINK`` of *name* in *ns* (a pair goes as a whole)."""
    request(ns, RTM_DELLINK, NLM_F_ACK, IFINFOMSG.pack(0, 0, 0, 0, 0) + _name(name))


def ifindex(ns: str | None, name: str) -> int:
    with netns.entered(ns):
        return socket.if_nametoindex(name)


def exists(ns: str | None, name: str) -> bool:
    with netns.entered(ns):
        return name in {n for _i, n in socket.if_nameindex()}


@contextmanager
def netkit(
    ns: str | None, name: str, *, rx_queues: int = 1, peer: str | None = None
) -> Iterator[int]:
    """:func:`create`, yielding the ifindex of *name*; deleted after unless already gone."""
    create(ns, name, rx_queues=rx_queues, peer=peer)
    try:
        yield ifindex(ns, name)
    finally:
        if exists(ns, name):
            delete(ns, name)
