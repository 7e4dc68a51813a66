"""How evenly traffic spreads over the queues of an interface (pure).

The numbers ``netdevkit qstats balance`` prints, for each interface and
queue type, over one interval:

- the packet rate of every queue (idle queues included: a spread that
  leaves queues idle is uneven);
- the coefficient of variation (population standard deviation over mean)
  of those rates: 0 is a perfectly even spread, sqrt(N - 1) is all traffic
  on one of N queues;
- the busiest and the idlest queue and the busiest queue's share.

The per-queue counters come from the netdev family's qstats where the
driver reports them, else from the driver's ethtool statistics (veth);
each result says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .rates import delta
from .sources import Snapshot


@dataclass(frozen=True, slots=True)
class QueueLoad:
    queue_id: int
    pps: float


@dataclass(frozen=True, slots=True)
class Balance:
    ifindex: int
    ifname: str
    queue_type: str
    #: "qstats" or "ethtool"
    source: str
    interval: float
    queues: tuple[QueueLoad, ...]
    total_pps: float
    #: None when no packets moved (nothing to judge)
    cv: float | None
    busiest: QueueLoad | None
    idlest: QueueLoad | None
    #: the busiest queue's share of the packets (0..1), None without traffic
    busiest_share: float | None


def coefficient_of_variation(values: list[float]) -> float | None:
    """Population standard deviation over mean; None for no values or a zero mean."""
    if not values:
        return None
    mean = sum(values) / len(values)
    if mean <= 0:
        return None
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return math.sqrt(var) / mean


def balances(prev: Snapshot, cur: Snapshot) -> list[Balance]:
    """One :class:`Balance` per (interface, queue type, source) seen in both snapshots."""
    dt = cur.taken - prev.taken
    before = {(q.ifindex, q.queue_type, q.queue_id, q.source): q for q in prev.queues}
    groups: dict[tuple[int, str, str], list[QueueLoad]] = {}
    for q in cur.queues:
        p = before.get((q.ifindex, q.queue_type, q.queue_id, q.source))
        if p is None or "packets" not in q.counters or "packets" not in p.counters or dt <= 0:
            continue
        d = delta(p.counters["packets"], q.counters["packets"])
        if d is None:
            continue
        key = (q.ifindex, q.queue_type, q.source)
        groups.setdefault(key, []).append(QueueLoad(q.queue_id, d / dt))
    out = []
    for (ifindex, qtype, source), loads in sorted(groups.items()):
        loads.sort(key=lambda ql: ql.queue_id)
        total = sum(ql.pps for ql in loads)
        moving = total > 0
        busiest = max(loads, key=lambda ql: ql.pps) if moving else None
        idlest = min(loads, key=lambda ql: ql.pps) if moving else None
        link = cur.links.get(ifindex)
        out.append(
            Balance(
                ifindex,
                link.ifname if link else f"#{ifindex}",
                qtype,
                source,
                dt,
                tuple(loads),
                total,
                coefficient_of_variation([ql.pps for ql in loads]),
                busiest,
                idlest,
                busiest.pps / total if busiest is not None else None,
            )
        )
    return out
