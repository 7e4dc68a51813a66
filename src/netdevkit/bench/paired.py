"""Medians over rounds and paired per-round ratios of a bench run (pure).

Every round of a run measures every mode once, so round *r* of mode A and
round *r* of mode B ran minutes apart at most. A comparison of two modes takes
one ratio per round in which both measured and the median of those ratios:
latency drifts between runs and between minutes (docs/bench.md), and a ratio of
medians taken at different times mixes that drift in.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from .results import PING_PONG, Results, Sample

__all__ = ["Paired", "load_label", "median_of", "open_loads", "paired", "targets"]

Metric = Callable[[Sample], float]


def p50(s: Sample) -> float:
    return s.latency.p50


def p99(s: Sample) -> float:
    return s.latency.p99


def cpu(s: Sample) -> float:
    return s.server_cpu


@dataclass(frozen=True, slots=True)
class Paired:
    """The median of per-round ratios a/b, and over how many rounds."""

    ratio: float
    rounds: int

    def describe(self) -> str:
        if self.rounds == 0:
            return f"{self.ratio:.2f}x (ratio of medians: no round measured both)"
        if self.rounds == 1:
            return f"{self.ratio:.2f}x (1 round)"
        return f"{self.ratio:.2f}x (median of {self.rounds} paired rounds)"


def targets(res: Results) -> list[tuple[str, str]]:
    """(workload, server) pairs in first-seen order."""
    out: list[tuple[str, str]] = []
    for s in res.samples:
        if (s.workload, s.server) not in out:
            out.append((s.workload, s.server))
    return out


def usable(res: Results, mode: str, workload: str, server: str, load: int) -> list[Sample]:
    return res.select(mode=mode, workload=workload, server=server, load_target=load)


def median_of(
    res: Results, mode: str, workload: str, server: str, load: int, metric: Metric
) -> float | None:
    """Median of *metric* over the usable (not client-limited, not disturbed) rounds."""
    vals = [metric(s) for s in usable(res, mode, workload, server, load)]
    return float(statistics.median(vals)) if vals else None


def paired(
    res: Results, workload: str, server: str, load: int, a: str, b: str, metric: Metric
) -> Paired | None:
    """Median over rounds of metric(a)/metric(b); None without a common usable round."""
    by_a = {s.repeat: metric(s) for s in usable(res, a, workload, server, load)}
    by_b = {s.repeat: metric(s) for s in usable(res, b, workload, server, load)}
    ratios = [by_a[r] / by_b[r] for r in sorted(by_a.keys() & by_b.keys()) if by_b[r] > 0]
    if not ratios:
        return None
    return Paired(float(statistics.median(ratios)), len(ratios))


def ratio(
    res: Results, workload: str, server: str, load: int, a: str, b: str, metric: Metric
) -> Paired:
    """:func:`paired`, or the ratio of the medians (``rounds`` 0) when no round has both;
    both modes must have a usable sample at *load*."""
    pr = paired(res, workload, server, load, a, b, metric)
    if pr is not None:
        return pr
    va = median_of(res, a, workload, server, load, metric)
    vb = median_of(res, b, workload, server, load, metric)
    if va is None or vb is None:
        raise ValueError(f"{a} or {b} has no usable sample at {load}")
    return Paired(va / vb if vb > 0 else float("inf"), 0)


def loads_of(res: Results, workload: str, server: str, mode: str) -> list[int]:
    """Loads with a usable sample of *mode*, ascending."""
    return sorted({s.load_target for s in res.select(mode=mode, workload=workload, server=server)})


def common_loads(res: Results, workload: str, server: str, modes: tuple[str, ...]) -> list[int]:
    common: set[int] | None = None
    for m in modes:
        got = set(loads_of(res, workload, server, m))
        common = got if common is None else common & got
    return sorted(common or ())


def open_loads(loads: list[int]) -> list[int]:
    return [x for x in loads if x != PING_PONG]


def load_label(res: Results, workload: str, server: str, load: int) -> str:
    """``27000/s (90% of the knee)``, ``ping-pong``, or ``5000/s``."""
    if load == PING_PONG:
        return "ping-pong"
    for c in res.capacities:
        if c.workload == workload and c.server == server and c.rate > 0:
            of = {"server": "the knee", "client": "the generator's limit"}.get(
                c.limited_by, "capacity"
            )
            return f"{load}/s ({load / c.rate:.0%} of {of})"
    return f"{load}/s"
