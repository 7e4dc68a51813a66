"""The results table, without rendering: one row per mode, workload, server and load (pure).

Each value is a :class:`~netdevkit.bench.results.Spread` over the rounds that are not
client-limited (median, min, max); :func:`cells` turns a row into the text the terminal
table and the Markdown report both show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .results import PING_PONG, Capacity, Results, Sample, Spread

__all__ = ["HEADERS", "MODE_ORDER", "Row", "cells", "fmt", "mode_rank", "rate_label", "rows"]

#: the order modes are listed in (others after these, by name)
MODE_ORDER = (
    "base",
    "defer",
    "napibusy",
    "fullbusy",
    "suspend",
    "threaded",
    "busy-poll-thread",
    "adaptive-window",
    "hot-spin",
    "hybrid",
)

HEADERS = (
    "workload/server",
    "mode",
    "load",
    "achieved/s",
    "p50 us",
    "p90 us",
    "p99 us",
    "p99.9 us",
    "srv CPU",
    "softirq",
    "sleeps/s",
    "busy-polled %",
    "notes",
)


def mode_rank(mode: str) -> tuple[int, str]:
    """Sort key: :data:`MODE_ORDER` first, then any other mode by name."""
    return (MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER), mode)


def rate_label(load: int) -> str:
    """``ping-pong`` or ``5000/s``."""
    return "ping-pong" if load == PING_PONG else f"{load}/s"


@dataclass(frozen=True, slots=True)
class Row:
    """One (mode, workload, server, load) of a run, over its rounds."""

    mode: str
    workload: str
    server: str
    load: int
    achieved: Spread | None
    p50: Spread | None
    p90: Spread | None
    p99: Spread | None
    p999: Spread | None
    cpu: Spread | None
    softirq: Spread | None
    sleeps: Spread | None
    busy_polled: Spread | None
    kind: str
    flags: str


def rows(res: Results) -> list[Row]:
    """The table's rows, by workload, server, mode and load."""
    out = []
    groups = res.groups()
    for key in sorted(groups, key=lambda k: (k[1], k[2], mode_rank(k[0]), k[3])):
        samples = groups[key]
        limited = sum(s.client_limited for s in samples)
        flags = [f"client-limited {limited}/{len(samples)}"] if limited else []
        disturbed = [s for s in samples if s.disturbed]
        if disturbed:
            why = "; ".join(sorted({d for s in disturbed for d in s.disturbed}))
            flags.append(f"disturbed {len(disturbed)}/{len(samples)}: {why}")
        flags += sorted({n for s in samples for n in s.notes})

        def sp(
            metric: Callable[[Sample], float], key: tuple[str, str, str, int] = key
        ) -> Spread | None:
            return res.spread(key, metric)

        out.append(
            Row(
                mode=key[0],
                workload=key[1],
                server=key[2],
                load=key[3],
                achieved=sp(lambda s: s.achieved_rate),
                p50=sp(lambda s: s.latency.p50),
                p90=sp(lambda s: s.latency.p90),
                p99=sp(lambda s: s.latency.p99),
                p999=sp(lambda s: s.latency.p999),
                cpu=sp(lambda s: s.server_cpu),
                softirq=sp(lambda s: s.softirq_cpu),
                sleeps=_napi_spread(samples, "server_sleeps_per_s"),
                busy_polled=_napi_spread(samples, "busy_polled_share", 100.0),
                kind=samples[0].latency.kind,
                flags="; ".join(flags),
            )
        )
    return out


def _napi_spread(samples: list[Sample], name: str, scale: float = 1.0) -> Spread | None:
    """Spread of one ``Sample.napi`` value (absent in files from older runs)."""
    vals = [s.napi[name] * scale for s in samples if s.usable and name in s.napi]
    return Spread.of(vals) if vals else None


def fmt(sp: Spread | None, digits: int = 1) -> str:
    """``12.3``, or ``12.3 [11.0-14.2]`` when the rounds differ; ``-`` for no value."""
    if sp is None:
        return "-"
    if sp.n == 1 or sp.min == sp.max:
        return f"{sp.median:.{digits}f}"
    return f"{sp.median:.{digits}f} [{sp.min:.{digits}f}-{sp.max:.{digits}f}]"


def cells(r: Row) -> list[str]:
    """The row as text, one cell per :data:`HEADERS` entry."""
    return [
        f"{r.workload}/{r.server}",
        r.mode,
        rate_label(r.load),
        fmt(r.achieved, 0),
        fmt(r.p50),
        fmt(r.p90),
        fmt(r.p99),
        fmt(r.p999),
        fmt(r.cpu, 2),
        fmt(r.softirq, 2),
        fmt(r.sleeps, 0),
        fmt(r.busy_polled, 0),
        r.flags,
    ]


def capacity_line(cap: Capacity) -> str:
    """The knee a probe found, beside the ping-pong rate, and the rates swept from it."""
    swept = ", ".join(f"{x}/s" for x in cap.loads) or "nothing"
    if cap.limited_by == "server":
        what = f"knee {cap.rate:.0f}/s"
    elif cap.limited_by == "client":
        what = f"at least {cap.rate:.0f}/s (the load generator's limit, not the server's knee)"
    elif cap.limited_by == "disturbed":
        what = f"at least {cap.rate:.0f}/s (the probe stopped on a disturbed step)"
    else:
        what = f"{cap.rate:.0f}/s"
    pp = f", ping-pong {cap.ping_pong_rate:.0f}/s" if cap.ping_pong_rate else ""
    return f"capacity {cap.workload}/{cap.server}: {what}{pp} ({cap.method}); swept at {swept}"
