"""Which mode to use: per workload and load, the one meeting a p99 target with least CPU.

Pure: reads a :class:`~netdevkit.bench.results.Results`, measures nothing.

For every (workload, server, load) of a run, each mode's p99 and server CPU
are the medians over its usable rounds (client-limited samples never count).
The modes whose p99 is at most the target *meet* it; the recommendation is the
one of them with the least CPU, and it says how much less CPU it used than the
next cheapest mode that also met the target, as the median of per-round paired
ratios. When no mode meets the target it says so and names the mode that came
closest (the lowest p99), with how far off it was.

The target compares with the latency as the workload reports it: half the round
trip for sockperf and echo (sockperf's convention), whole round trips for
memcached, redis and HTTP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import RequestError
from .paired import cpu, load_label, loads_of, median_of, p50, p99, paired, targets
from .results import Results

__all__ = ["Choice", "Recommendation", "parse_target", "recommend"]

_TARGET = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(us|µs|usec|ms|s)?\s*$", re.I)
_SCALE = {"us": 1.0, "µs": 1.0, "usec": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_target(text: str) -> float:
    """``50us``, ``50``, ``0.2ms`` -> microseconds; anything else is a RequestError."""
    m = _TARGET.match(text)
    if not m:
        raise RequestError(f"target {text!r}: a latency such as 50us, 0.2ms or 100 (microseconds)")
    value = float(m.group(1)) * _SCALE[(m.group(2) or "us").lower()]
    if not 0 < value < 1e9:
        raise RequestError(f"target {text!r}: must be above 0")
    return value


@dataclass(frozen=True, slots=True)
class Choice:
    """One mode's medians at one load."""

    mode: str
    p50: float
    p99: float
    cpu: float
    rounds: int


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The answer for one (workload, server, load)."""

    workload: str
    server: str
    load: int
    load_label: str
    target_us: float
    #: the cheapest mode meeting the target, or None
    best: Choice | None
    #: when none meets it: the mode with the lowest p99
    closest: Choice | None
    #: every mode that met the target, cheapest first
    met_by: tuple[str, ...]
    #: the modes compared
    compared: tuple[str, ...]
    #: the sentence a user reads
    text: str


def _choices(res: Results, workload: str, server: str, load: int) -> list[Choice]:
    out = []
    modes = dict.fromkeys(s.mode for s in res.select(workload=workload, server=server))
    for mode in modes:
        vals = [median_of(res, mode, workload, server, load, m) for m in (p50, p99, cpu)]
        if any(v is None for v in vals):
            continue
        n = len(res.select(mode=mode, workload=workload, server=server, load_target=load))
        lat50, lat99, cores = (float(v) for v in vals if v is not None)
        out.append(Choice(mode, lat50, lat99, cores, n))
    return out


def _one(res: Results, workload: str, server: str, load: int, target: float) -> Recommendation:
    label = load_label(res, workload, server, load)
    choices = _choices(res, workload, server, load)
    met = sorted((c for c in choices if c.p99 <= target), key=lambda c: (c.cpu, c.p99))
    compared = tuple(c.mode for c in choices)
    head = f"{workload}/{server} at {label}, target p99 <= {target:g} us"
    if met:
        best = met[0]
        text = (
            f"{head}: {best.mode} (p99 {best.p99:.1f} us, p50 {best.p50:.1f} us, "
            f"{best.cpu:.2f} cores)"
        )
        if len(met) > 1:
            nxt = met[1]
            ratio = paired(res, workload, server, load, best.mode, nxt.mode, cpu)
            vs = f"; CPU {ratio.describe()} of {nxt.mode}" if ratio else ""
            text += f"; {len(met)} of {len(choices)} modes meet it{vs}"
        else:
            text += f"; the only one of {len(choices)} modes that meets it"
        return Recommendation(
            workload, server, load, label, target, best, None, tuple(c.mode for c in met),
            compared, text,
        )  # fmt: skip
    closest = min(choices, key=lambda c: c.p99) if choices else None
    if closest is None:
        text = f"{head}: no usable sample (all client-limited, disturbed or skipped)"
    else:
        text = (
            f"{head}: none of {len(choices)} modes meets it; closest {closest.mode} at p99 "
            f"{closest.p99:.1f} us ({closest.p99 / target:.1f}x the target, "
            f"{closest.cpu:.2f} cores)"
        )
    return Recommendation(workload, server, load, label, target, None, closest, (), compared, text)


def recommend(res: Results, target_us: float | None = None) -> list[Recommendation]:
    """One :class:`Recommendation` per (workload, server, load) of *res*, loads ascending.

    *target_us* defaults to the run's ``config.target_p99_us`` (100 us when unset).
    """
    target = target_us or res.config.target_p99_us or 100.0
    out = []
    for workload, server in targets(res):
        loads = sorted(
            {x for m in {s.mode for s in res.samples} for x in loads_of(res, workload, server, m)}
        )
        out += [_one(res, workload, server, load, target) for load in loads]
    return out
