"""Per-queue counters from the ethtool statistics ioctl (``ethtool -S``).

Drivers without queue statistics in the netdev family (veth on 6.18) often
keep per-queue counters in their ethtool statistics, named
``rx_queue_N_<what>`` / ``tx_queue_N_<what>``. This module reads them with
the ``SIOCETHTOOL`` ioctl, without the ``ethtool`` binary.

Kernel facts relied on (include/uapi/linux/ethtool.h, include/uapi/linux/sockios.h):

- ``SIOCETHTOOL`` = 0x8946 on any socket; ``struct ifreq`` is the 16-byte
  name followed by a pointer to the command structure (40 bytes in all).
- ``ETHTOOL_GSSET_INFO`` = 0x37: ``{u32 cmd; u32 reserved; u64 sset_mask;
  u32 data[]}`` answers the number of strings of each set in the mask.
- ``ETHTOOL_GSTRINGS`` = 0x1b: ``{u32 cmd; u32 string_set; u32 len; u8
  data[len * 32]}``; ``ETH_SS_STATS`` = 1; each name is ``ETH_GSTRING_LEN``
  = 32 bytes, NUL padded.
- ``ETHTOOL_GSTATS`` = 0x1d: ``{u32 cmd; u32 n_stats; u64 data[]}`` in the
  order of the names.
- The names depend only on the device's queue counts, so they are read once
  and read again only when the count of statistics changes.
- veth (drivers/net/veth.c) counts every packet its NAPI polls, XDP or not,
  under ``rx_queue_N_xdp_packets``/``xdp_bytes`` [seen on 6.18 with plain
  UDP: one count per datagram, bytes without the Ethernet header]. Packets
  that bypass the NAPI (a sender with TSO on, or GRO off) are not counted.
"""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import re
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import translate_oserror
from ..netns import entered

SIOCETHTOOL = 0x8946
ETHTOOL_GSTRINGS = 0x1B
ETHTOOL_GSTATS = 0x1D
ETHTOOL_GSSET_INFO = 0x37
ETH_SS_STATS = 1
ETH_GSTRING_LEN = 32
IFNAMSIZ = 16
_IFREQ = struct.Struct("16sP")
_IFREQ_SIZE = 40

_QUEUE_STAT = re.compile(r"^(rx|tx)_queue_(\d+)_(.+)$")

#: driver-specific names of the per-queue packet and byte counters
ALIASES: Mapping[str, Mapping[str, str]] = {
    "veth": {"xdp_packets": "packets", "xdp_bytes": "bytes"},
}

#: per queue: (queue type, queue id, ((index into the statistics, counter name), ...))
Plan = tuple[tuple[str, int, tuple[tuple[int, str], ...]], ...]


@dataclass(frozen=True, slots=True)
class EthtoolQueueStats:
    """The per-queue counters of one queue found in the ethtool statistics."""

    queue_type: str
    queue_id: int
    counters: Mapping[str, int]


def _ioctl(sock: socket.socket, ifname: str, cmd: bytearray) -> None:
    holder = (ctypes.c_char * len(cmd)).from_buffer(cmd)
    req = bytearray(_IFREQ_SIZE)
    _IFREQ.pack_into(req, 0, ifname.encode(), ctypes.addressof(holder))
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, req)
    except OSError as err:
        raise translate_oserror(
            err,
            f"SIOCETHTOOL on {ifname}",
            gone={errno.ENODEV: f"interface {ifname!r} is gone"},
            unsupported={errno.EOPNOTSUPP: f"{ifname}: the driver has no ethtool statistics"},
        ) from err
    finally:
        del holder


def stat_count(sock: socket.socket, ifname: str) -> int:
    cmd = bytearray(struct.pack("=IIQI", ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_STATS, 0))
    _ioctl(sock, ifname, cmd)
    mask = struct.unpack_from("=Q", cmd, 8)[0]
    return struct.unpack_from("=I", cmd, 16)[0] if mask & (1 << ETH_SS_STATS) else 0


def _room(count: int) -> int:
    # The kernel writes as many entries as the device has *now*, whatever
    # the caller asked for: leave room for a count that grew in between.
    return 2 * count + 64


def stat_names(sock: socket.socket, ifname: str, count: int) -> list[str]:
    cmd = bytearray(12 + _room(count) * ETH_GSTRING_LEN)
    struct.pack_into("=III", cmd, 0, ETHTOOL_GSTRINGS, ETH_SS_STATS, count)
    _ioctl(sock, ifname, cmd)
    n = min(struct.unpack_from("=I", cmd, 8)[0], _room(count))
    raw = bytes(cmd[12:])
    return [
        raw[i * ETH_GSTRING_LEN : (i + 1) * ETH_GSTRING_LEN].split(b"\0", 1)[0].decode()
        for i in range(n)
    ]


def stat_values(sock: socket.socket, ifname: str, count: int) -> array.array[int]:
    cmd = bytearray(8 + _room(count) * 8)
    struct.pack_into("=II", cmd, 0, ETHTOOL_GSTATS, count)
    _ioctl(sock, ifname, cmd)
    n = min(struct.unpack_from("=I", cmd, 4)[0], _room(count))
    values = array.array("Q")  # host byte order, as the kernel writes them
    values.frombytes(bytes(cmd[8 : 8 + 8 * n]))
    return values


def queue_plan(names: list[str], kind: str | None, wanted: frozenset[str] | None = None) -> Plan:
    """Which statistics are per-queue counters, under their normalised names
    (only those in *wanted*, if given), grouped by queue."""
    alias = ALIASES.get(kind or "", {})
    queues: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for i, name in enumerate(names):
        m = _QUEUE_STAT.match(name)
        if m:
            what = alias.get(m.group(3), m.group(3))
            if wanted is None or what in wanted:
                queues.setdefault((m.group(1), int(m.group(2))), []).append((i, what))
    return tuple((t, q, tuple(items)) for (t, q), items in queues.items())


def group_queues(plan: Plan, values: array.array[int]) -> list[EthtoolQueueStats]:
    """The values of *plan*, one row per queue (pure)."""
    n = len(values)
    return [
        EthtoolQueueStats(qtype, qid, {name: values[i] for i, name in items if i < n})
        for qtype, qid, items in plan
    ]


class EthtoolReader:
    """Reads per-queue ethtool statistics of interfaces in one namespace.

    Keeps one socket (made inside the namespace) and each interface's name
    plan while its count of statistics stays the same.
    """

    def __init__(self, netns: str | None, wanted: frozenset[str] | None = None) -> None:
        self.netns = netns
        self.wanted = wanted
        with entered(netns):
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._plans: dict[str, tuple[int, Plan]] = {}

    def close(self) -> None:
        self._sock.close()

    def queues(self, ifname: str, kind: str | None) -> list[EthtoolQueueStats]:
        """Per-queue counters of *ifname*; [] when the driver keeps none."""
        count = stat_count(self._sock, ifname)
        cached = self._plans.get(ifname)
        if cached is None or cached[0] != count:
            cached = (count, queue_plan(stat_names(self._sock, ifname, count), kind, self.wanted))
            self._plans[ifname] = cached
        plan = cached[1]
        if not plan:
            return []
        values = stat_values(self._sock, ifname, count)
        if len(values) != count:  # the device changed between the two calls
            self.forget(ifname)
            return []
        return group_queues(plan, values)

    def forget(self, ifname: str) -> None:
        """Drop the cached names of *ifname* (it changed or vanished)."""
        self._plans.pop(ifname, None)
