"""Rates between two :class:`~netdevkit.observe.sources.Snapshot` objects (pure).

No I/O here: ``top`` and ``qstats balance`` call :func:`compute` with the
previous and the current snapshot and get frozen rows back.

How the awkward cases are handled:

- Counter wrap: a counter that went down wrapped if it was in the upper
  half of the 32-bit range and is now small (a 32-bit counter), or in the
  upper half of the 64-bit range; any other decrease is a reset (the device
  was re-created, the driver cleared its counters) and gives no rate for
  that interval (``None``), never a negative or huge one.
- An interface, queue or namespace that vanished has no current row and so
  no rate; one that appeared has no previous row and gets its first rate
  one interval later. Rows are keyed by ifindex, not name: a device
  re-created under the same name is a new device.
- NAPI ids change (veth renumbers them on every GRO/XDP toggle or link
  down/up): NAPI rows are never matched by id across snapshots. The only
  per-NAPI rate, the kthread's CPU use, is keyed by the kthread's pid.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from ..netdev.client import Napi, PagePool
from .sources import EpollContext, QueueCounters, Snapshot, SoftnetCpu

U32_SPAN = 1 << 32
U64_SPAN = 1 << 64

#: counters of queue rows whose rates ``top`` shows (qstats names without rx/tx)
DROP_COUNTERS = ("drops", "hw_drops", "hw_drop_overruns", "hw_drop_ratelimits", "hw_drop_errors")


def delta(prev: int, cur: int) -> int | None:
    """``cur - prev`` for a monotonic counter, across a wrap; None after a reset."""
    if cur >= prev:
        return cur - prev
    if prev < U32_SPAN and prev >= U32_SPAN // 2 and cur < U32_SPAN // 2:
        return cur + U32_SPAN - prev
    if prev >= U64_SPAN // 2 and cur < U64_SPAN // 2:
        return cur + U64_SPAN - prev
    return None


def rate(prev: Mapping[str, int], cur: Mapping[str, int], name: str, dt: float) -> float | None:
    """Per-second rate of counter *name*; None when either side lacks it or it reset."""
    a, b = prev.get(name), cur.get(name)
    if a is None or b is None or dt <= 0:
        return None
    d = delta(a, b)
    return None if d is None else d / dt


def _sum(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) if vals else None


@dataclass(frozen=True, slots=True)
class LinkRate:
    """Per-interface rates. ``source``: "qstats" (driver) or "link" (rtnetlink)."""

    ifindex: int
    ifname: str
    source: str
    rx_pps: float | None
    tx_pps: float | None
    rx_bps: float | None
    tx_bps: float | None
    drops_ps: float | None
    alloc_fail_ps: float | None

    @property
    def pps(self) -> float:
        return (self.rx_pps or 0.0) + (self.tx_pps or 0.0)


class QueueRate(NamedTuple):
    """Per-queue rates. ``source``: "qstats" or "ethtool". ``bps`` is bytes/s.

    A NamedTuple, not a frozen dataclass: ``top`` makes one per queue per
    frame, and a NamedTuple is the cheaper of the two to build.
    """

    ifindex: int
    ifname: str
    queue_type: str
    queue_id: int
    source: str
    pps: float | None
    bps: float | None
    drops_ps: float | None
    alloc_fail_ps: float | None


class NapiRow(NamedTuple):
    """A NAPI's settings now, and its kthread's CPU use (share of one core).
    (A NamedTuple for the same reason as :class:`QueueRate`.)"""

    napi: Napi
    ifname: str
    kthread_cpu: float | None


@dataclass(frozen=True, slots=True)
class SoftnetRate:
    cpu: int
    processed_ps: float | None
    dropped_ps: float | None
    time_squeeze_ps: float | None


@dataclass(frozen=True, slots=True)
class Rates:
    netns: str | None
    #: seconds between the two snapshots
    interval: float
    links: tuple[LinkRate, ...]
    queues: tuple[QueueRate, ...]
    napis: tuple[NapiRow, ...]
    pools: tuple[PagePool, ...]
    softnet: tuple[SoftnetRate, ...]
    #: packets/s that busy polling delivered (TcpExt BusyPollRxPackets)
    busy_poll_rx_pps: float | None
    #: that rate over all packets/s received by the namespace's links (0..1)
    busy_poll_share: float | None
    sysctls: Mapping[str, int]
    epolls: tuple[EpollContext, ...]
    errors: tuple[str, ...]
    notes: tuple[str, ...]


def _rate_row(
    ifindex: int, ifname: str, source: str, p: Mapping[str, int], c: Mapping[str, int], dt: float
) -> LinkRate:
    """One interface's rates from its qstats (*source* "qstats") or link counters ("link")."""
    if source == "qstats":
        drops = _sum(rate(p, c, f"{d}_{n}", dt) for d in ("rx", "tx") for n in DROP_COUNTERS)
        alloc_fail = rate(p, c, "rx_alloc_fail", dt)
    else:
        drops = _sum((rate(p, c, "rx_dropped", dt), rate(p, c, "tx_dropped", dt)))
        alloc_fail = None
    return LinkRate(
        ifindex,
        ifname,
        source,
        rate(p, c, "rx_packets", dt),
        rate(p, c, "tx_packets", dt),
        rate(p, c, "rx_bytes", dt),
        rate(p, c, "tx_bytes", dt),
        drops,
        alloc_fail,
    )


def link_rates(prev: Snapshot, cur: Snapshot, dt: float) -> list[LinkRate]:
    """One row per interface present in both snapshots: qstats where the
    driver reports them, the rtnetlink link counters otherwise."""
    out = []
    for ifindex, link in cur.links.items():
        before = prev.links.get(ifindex)
        if before is None:
            continue
        if ifindex in cur.dev_qstats and ifindex in prev.dev_qstats:
            p, c = prev.dev_qstats[ifindex], cur.dev_qstats[ifindex]
            out.append(_rate_row(ifindex, link.ifname, "qstats", p, c, dt))
        else:
            out.append(_rate_row(ifindex, link.ifname, "link", before.counters, link.counters, dt))
    return out


def _drops(p: Mapping[str, int], c: Mapping[str, int], dt: float) -> float | None:
    """Sum of the drop counters both sides have (usually one or none)."""
    total: float | None = None
    for name in DROP_COUNTERS:
        if name in c and name in p:
            r = rate(p, c, name, dt)
            if r is not None:
                total = r if total is None else total + r
    return total


def _same_queue(a: QueueCounters, b: QueueCounters) -> bool:
    return (
        a.queue_id == b.queue_id
        and a.ifindex == b.ifindex
        and a.queue_type == b.queue_type
        and a.source == b.source
    )


def _fast_rate(p: Mapping[str, int], c: Mapping[str, int], name: str, dt: float) -> float | None:
    a, b = p.get(name), c.get(name)
    if a is not None and b is not None and b >= a and dt > 0:
        return (b - a) / dt  # the common case, without a call
    return rate(p, c, name, dt)


def queue_rates(prev: Snapshot, cur: Snapshot, dt: float) -> list[QueueRate]:
    # The hot loop of `top` on a namespace with thousands of queues. Two reads
    # of the same devices list the queues in the same order, so each queue is
    # first compared with the one at its position; a dict lookup is the
    # fallback when queues came or went.
    before: dict[tuple[int, str, int, str], QueueCounters] | None = None
    previous = prev.queues
    names = {i: link.ifname for i, link in cur.links.items()}
    out = []
    for i, q in enumerate(cur.queues):
        pq = previous[i] if i < len(previous) else None
        if pq is None or not _same_queue(pq, q):
            if before is None:
                before = {(x.ifindex, x.queue_type, x.queue_id, x.source): x for x in previous}
            pq = before.get((q.ifindex, q.queue_type, q.queue_id, q.source))
        ifname = names.get(q.ifindex)
        if pq is None or ifname is None:
            continue
        p, c = pq.counters, q.counters
        out.append(
            QueueRate(
                q.ifindex,
                ifname,
                q.queue_type,
                q.queue_id,
                q.source,
                _fast_rate(p, c, "packets", dt),
                _fast_rate(p, c, "bytes", dt),
                _drops(p, c, dt),
                rate(p, c, "alloc_fail", dt) if "alloc_fail" in c else None,
            )
        )
    return out


def napi_rows(prev: Snapshot, cur: Snapshot, dt: float) -> list[NapiRow]:
    out = []
    for n in cur.napis:
        cpu: float | None = None
        if n.pid and n.pid in cur.kthread_cpu and n.pid in prev.kthread_cpu and dt > 0:
            cpu = max(0.0, (cur.kthread_cpu[n.pid] - prev.kthread_cpu[n.pid]) / dt)
        link = cur.links.get(n.ifindex)
        out.append(NapiRow(n, link.ifname if link else f"#{n.ifindex}", cpu))
    return out


def softnet_rates(
    prev: tuple[SoftnetCpu, ...], cur: tuple[SoftnetCpu, ...], dt: float
) -> list[SoftnetRate]:
    before = {s.cpu: s for s in prev}
    out = []
    for s in cur:
        p = before.get(s.cpu)
        if p is None or dt <= 0:
            continue

        def r(a: int, b: int) -> float | None:
            d = delta(a, b)
            return None if d is None else d / dt

        out.append(
            SoftnetRate(
                s.cpu,
                r(p.processed, s.processed),
                r(p.dropped, s.dropped),
                r(p.time_squeeze, s.time_squeeze),
            )
        )
    return out


def busy_poll(
    prev: Snapshot, cur: Snapshot, links: list[LinkRate], dt: float
) -> tuple[float | None, float | None]:
    """(busy-polled packets/s, their share of the packets the links received)."""
    a, b = prev.busy_poll_rx_packets, cur.busy_poll_rx_packets
    if a is None or b is None or dt <= 0:
        return None, None
    d = delta(a, b)
    if d is None:
        return None, None
    pps = d / dt
    rx = sum(lr.rx_pps or 0.0 for lr in links if lr.ifname != "lo")
    share = min(1.0, pps / rx) if rx > 0 else None
    return pps, share


def compute(prev: Snapshot, cur: Snapshot, epolls: Iterable[EpollContext] = ()) -> Rates:
    """The rates of *cur* against *prev* (two reads of the same namespace)."""
    dt = cur.taken - prev.taken
    links = link_rates(prev, cur, dt)
    bp_pps, share = busy_poll(prev, cur, links, dt)
    return Rates(
        cur.netns,
        dt,
        tuple(links),
        tuple(queue_rates(prev, cur, dt)),
        tuple(napi_rows(prev, cur, dt)),
        cur.pools,
        tuple(softnet_rates(prev.softnet, cur.softnet, dt)),
        bp_pps,
        share,
        cur.sysctls,
        tuple(epolls),
        cur.errors,
        cur.notes,
    )
