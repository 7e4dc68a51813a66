"""What ``netdevkit top`` shows, without the terminal: sampling, sorting, JSON.

:class:`Sampler` turns successive reads of a namespace into
:class:`~.rates.Rates`; :func:`rates_json` is the ``-j`` form;
:func:`sorted_queues` / :func:`sorted_links` / :func:`sorted_napis` give
the order of the rows for each sort key. The CLI (``netdevkit.cli.top``)
only draws and reads keys.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..netdev.client import PagePool
from .rates import LinkRate, NapiRow, QueueRate, Rates, SoftnetRate, compute
from .sources import EpollContext, NamespaceReader, Snapshot, gc_paused

#: key -> (sort name, description); the sort orders rows by that, largest first
SORT_KEYS: dict[str, tuple[str, str]] = {
    "p": ("packets", "packets/s"),
    "b": ("bytes", "bytes/s"),
    "d": ("drops", "drops/s"),
    "n": ("name", "interface and queue"),
}
SORT_NAMES = tuple(name for name, _ in SORT_KEYS.values())


def _pps(r: LinkRate | QueueRate) -> float:
    if isinstance(r, LinkRate):
        return r.pps
    return r.pps or 0.0


def _bps(r: LinkRate | QueueRate) -> float:
    if isinstance(r, LinkRate):
        return (r.rx_bps or 0.0) + (r.tx_bps or 0.0)
    return r.bps or 0.0


_KEYS: dict[str, Callable[[Any], Any]] = {
    "packets": lambda r: -_pps(r),
    "bytes": lambda r: -_bps(r),
    "drops": lambda r: -(r.drops_ps or 0.0),
}


def sorted_links(links: tuple[LinkRate, ...], sort: str) -> list[LinkRate]:
    if sort == "name":
        return sorted(links, key=lambda r: r.ifname)
    return sorted(links, key=lambda r: (_KEYS[sort](r), r.ifname))


def _queue_key(sort: str) -> Callable[[QueueRate], Any]:
    if sort == "name":
        return lambda r: (r.ifname, r.queue_type, r.queue_id)
    by = _KEYS[sort]
    return lambda r: (by(r), r.ifname, r.queue_type, r.queue_id)


def _napi_key(r: NapiRow) -> Any:
    return (-(r.kthread_cpu or 0.0), r.ifname, r.napi.id)


def sorted_queues(
    queues: tuple[QueueRate, ...], sort: str, first: int | None = None
) -> list[QueueRate]:
    """Queues in *sort* order; only the *first* ones if given (cheaper than sorting all)."""
    if first is not None:
        return heapq.nsmallest(first, queues, key=_queue_key(sort))
    return sorted(queues, key=_queue_key(sort))


def sorted_napis(napis: tuple[NapiRow, ...], first: int | None = None) -> list[NapiRow]:
    """Busiest kthreads first, then by interface and id (only the *first* ones if given)."""
    if first is not None:
        return heapq.nsmallest(first, napis, key=_napi_key)
    return sorted(napis, key=_napi_key)


@dataclass(frozen=True, slots=True)
class Sample:
    rates: Rates
    #: the interface asked for (``--ifname``) is gone
    target_gone: bool


class Sampler:
    """Reads a namespace each :meth:`next` and returns the rates since the last read."""

    def __init__(self, reader: NamespaceReader) -> None:
        self.reader = reader
        self._prev: Snapshot | None = None

    def first(self) -> None:
        self._prev = self.reader.read()

    def next(self) -> Sample:
        with gc_paused():
            cur = self.reader.read()
            prev = self._prev if self._prev is not None else cur
            self._prev = cur
            epolls: list[EpollContext] = self.reader.epolls()
            target = self.reader.ifindex
            rates = compute(prev, cur, epolls)
            if target is not None:  # --ifname: its link only (all are read, for the ethtool names)
                rates = replace(rates, links=tuple(x for x in rates.links if x.ifindex == target))
            return Sample(rates, target is not None and target not in cur.links)

    def reset(self) -> None:
        """Forget the previous read (after the namespace came back)."""
        self._prev = None


def once(reader: NamespaceReader, interval: float) -> Sample:
    """Two reads *interval* seconds apart, and the rates between them."""
    s = Sampler(reader)
    s.first()
    time.sleep(interval)
    return s.next()


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _link_json(x: LinkRate) -> dict[str, Any]:
    return {
        "ifindex": x.ifindex,
        "ifname": x.ifname,
        "source": x.source,
        "rx_packets_per_s": _r(x.rx_pps),
        "tx_packets_per_s": _r(x.tx_pps),
        "rx_bytes_per_s": _r(x.rx_bps),
        "tx_bytes_per_s": _r(x.tx_bps),
        "drops_per_s": _r(x.drops_ps),
        "alloc_fail_per_s": _r(x.alloc_fail_ps),
    }


def _queue_json(q: QueueRate) -> dict[str, Any]:
    return {
        "ifindex": q.ifindex,
        "ifname": q.ifname,
        "type": q.queue_type,
        "queue": q.queue_id,
        "source": q.source,
        "packets_per_s": _r(q.pps),
        "bytes_per_s": _r(q.bps),
        "drops_per_s": _r(q.drops_ps),
        "alloc_fail_per_s": _r(q.alloc_fail_ps),
    }


def _napi_json(n: NapiRow) -> dict[str, Any]:
    return {
        "id": n.napi.id,
        "ifindex": n.napi.ifindex,
        "ifname": n.ifname,
        "defer_hard_irqs": n.napi.defer_hard_irqs,
        "gro_flush_timeout": n.napi.gro_flush_timeout,
        "irq_suspend_timeout": n.napi.irq_suspend_timeout,
        "threaded": None if n.napi.threaded is None else int(n.napi.threaded),
        "pid": n.napi.pid,
        "kthread_cpu": _r(n.kthread_cpu),
    }


def _pool_json(p: PagePool) -> dict[str, Any]:
    return {
        "id": p.id,
        "ifindex": p.ifindex,
        "napi_id": p.napi_id,
        "inflight": p.inflight,
        "inflight_mem": p.inflight_mem,
        "dmabuf": p.dmabuf,
        "detached": bool(p.detach_time),
    }


def _epoll_json(e: EpollContext) -> dict[str, Any]:
    return {
        "pid": e.pid,
        "tid": e.tid,
        "fd": e.fd,
        "busy_poll_usecs": e.busy_poll_usecs,
        "busy_poll_budget": e.busy_poll_budget,
        "prefer_busy_poll": e.prefer_busy_poll,
        "napi_ids": list(e.napi_ids),
        "alive": e.alive,
    }


def _softnet_json(s: SoftnetRate) -> dict[str, Any]:
    return {
        "cpu": s.cpu,
        "processed_per_s": _r(s.processed_ps),
        "dropped_per_s": _r(s.dropped_ps),
        "time_squeeze_per_s": _r(s.time_squeeze_ps),
    }


def rates_json(sample: Sample) -> dict[str, Any]:
    """The ``top -j`` object: rates per second, settings as the kernel reports them."""
    r = sample.rates
    return {
        "netns": r.netns,
        "interval_s": round(r.interval, 6),
        "interfaces": [_link_json(x) for x in sorted_links(r.links, "name")],
        "queues": [_queue_json(q) for q in sorted_queues(r.queues, "name")],
        "napis": [_napi_json(n) for n in sorted(r.napis, key=lambda n: (n.ifname, n.napi.id))],
        "page_pools": [_pool_json(p) for p in r.pools],
        "busy_poll": {
            "rx_packets_per_s": _r(r.busy_poll_rx_pps),
            "share": _r(r.busy_poll_share),
            "sysctls": dict(r.sysctls),
            "epoll_contexts": [_epoll_json(e) for e in r.epolls],
        },
        "softnet": [_softnet_json(s) for s in r.softnet],
        "interface_gone": sample.target_gone,
        "errors": list(r.errors),
        "notes": list(r.notes),
    }
