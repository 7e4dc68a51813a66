"""The claims of the IRQ-suspension work, each judged at the load where it applies (pure).

Damato, Kahn and Karsten ("Enhancing Network Stack Efficiency with IRQ
Suspension") make claims about a *busy* server and about a *lightly loaded*
one. Each claim here is judged at the load of the sweep it is about, on paired
per-round ratios (:mod:`netdevkit.bench.paired`), and its evidence says at
which load and why it holds or not:

(a) under load, suspend reaches busy-poll latency: at the highest open-loop
    load (near the knee the probe found) suspend's p50 is within 20% of fullbusy's;
(b) suspend's CPU follows the load while fullbusy stays near a core: fullbusy
    >= 0.8 cores at every load, suspend under half of fullbusy at the lightest
    load and not decreasing from the lightest to the highest;
(c) at light load, deferral alone adds latency: defer's p50 more than 10%
    above base's at the lightest open-loop load;
(d) under load, base has the worst tail: base's p99 at least that of every
    busy-polling mode (napibusy, fullbusy, suspend) at the highest load;
(e) the published headline (memcached at 200K qps: suspend 58 us average at
    30% CPU against fullbusy 46 us at 100%): the loads at which suspend's p50
    is within 20% of fullbusy's at under half its CPU.

Without open-loop loads (redis, or an old ping-pong-only run) a claim is
judged at ping-pong and says that this is not the load it is about. Samples
flagged client-limited or disturbed (:mod:`netdevkit.bench.validity`) never count,
and a load where any mode compared has clean samples in fewer than half of its rounds
is not judged; a claim without samples is NOT MEASURED.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .paired import (
    Paired,
    common_loads,
    cpu,
    load_label,
    loads_of,
    median_of,
    open_loads,
    p50,
    p99,
    ratio,
    targets,
)
from .results import PING_PONG, Results

__all__ = ["MEASURED_NOT", "NOT_SHOWN", "SHOWN", "Claim", "evaluate_claims"]

SHOWN = "SHOWN"
NOT_SHOWN = "NOT SHOWN"
MEASURED_NOT = "NOT MEASURED"

SUSPEND_P50_TOLERANCE = 1.20
FULLBUSY_NEAR_CORE = 0.8
SUSPEND_CPU_FRACTION = 0.5
DEFER_MARGIN = 1.10
POLLING_MODES = ("napibusy", "fullbusy", "suspend")


@dataclass(frozen=True, slots=True)
class Claim:
    """The verdict on one claim for one workload (and server program)."""

    key: str
    title: str
    workload: str
    server: str
    verdict: str
    evidence: str
    #: the load the verdict was judged at ("" when not measured)
    load: str = ""


def _missing(res: Results, workload: str, server: str, modes: tuple[str, ...]) -> str:
    parts = []
    for m in modes:
        every = res.select(
            mode=m,
            workload=workload,
            server=server,
            include_client_limited=True,
            include_disturbed=True,
        )
        if not every:
            parts.append(f"{m} was not run on {workload}/{server}")
        elif not res.select(mode=m, workload=workload, server=server):
            limited = sum(s.client_limited for s in every)
            disturbed = sum(bool(s.disturbed) for s in every)
            parts.append(
                f"no clean {m} sample ({disturbed} of {len(every)} disturbed, "
                f"{limited} client-limited)"
            )
    return "; ".join(parts) or "no load measured by all of " + ", ".join(modes)


def too_few_clean(
    res: Results, workload: str, server: str, load: int, modes: tuple[str, ...]
) -> str:
    """Why the samples at *load* are too few to judge on ('' when they are enough): every
    mode needs clean (not disturbed, not client-limited) samples in at least half of the
    rounds it ran."""
    why = []
    for m in modes:
        every = res.select(
            mode=m,
            workload=workload,
            server=server,
            load_target=load,
            include_client_limited=True,
            include_disturbed=True,
        )
        clean = [s for s in every if s.usable]
        if every and 2 * len(clean) < len(every):
            why.append(f"{m} clean in {len(clean)} of {len(every)} rounds")
    return "too few clean samples at this load: " + ", ".join(why) if why else ""


def _pick(loads: list[int], highest: bool) -> tuple[int, str]:
    """The load a claim is judged at, and a note when it is ping-pong only."""
    rates = open_loads(loads)
    if rates:
        return (rates[-1] if highest else rates[0]), ""
    return PING_PONG, " (ping-pong only: no open-loop load was measured, so not the load " + (
        "the claim is about)"
    )


def _ratio_text(pr: Paired) -> str:
    return pr.describe()


Judge = Callable[[Results, str, str], Claim]


def _claim_a(res: Results, workload: str, server: str) -> Claim:
    title = "under load, suspend reaches busy-poll latency (p50 within 20% of fullbusy)"
    loads = common_loads(res, workload, server, ("suspend", "fullbusy"))
    if not loads:
        why = _missing(res, workload, server, ("suspend", "fullbusy"))
        return Claim("a", title, workload, server, MEASURED_NOT, why)
    load, note = _pick(loads, highest=True)
    few = too_few_clean(res, workload, server, load, ("suspend", "fullbusy"))
    if few:
        label = load_label(res, workload, server, load)
        return Claim("a", title, workload, server, MEASURED_NOT, f"at {label}: {few}", label)
    pr = ratio(res, workload, server, load, "suspend", "fullbusy", p50)
    rows = []
    for x in open_loads(loads) or loads:
        r = ratio(res, workload, server, x, "suspend", "fullbusy", p50)
        sus = median_of(res, "suspend", workload, server, x, p50)
        full = median_of(res, "fullbusy", workload, server, x, p50)
        rows.append(
            f"{load_label(res, workload, server, x)}: {sus:.1f} vs {full:.1f} us ({_ratio_text(r)})"
        )
    ok = pr.ratio <= SUSPEND_P50_TOLERANCE
    label = load_label(res, workload, server, load)
    why = "within" if ok else "not within"
    ev = (
        f"judged at {label}{note}: suspend/fullbusy p50 {pr.describe()}, {why} "
        f"{SUSPEND_P50_TOLERANCE:.2f}x. Every load: " + "; ".join(rows)
    )
    return Claim("a", title, workload, server, SHOWN if ok else NOT_SHOWN, ev, label)


def _claim_b(res: Results, workload: str, server: str) -> Claim:
    title = "suspend's CPU follows the load; fullbusy stays near a core"
    loads = common_loads(res, workload, server, ("suspend", "fullbusy"))
    if not loads:
        why = _missing(res, workload, server, ("suspend", "fullbusy"))
        return Claim("b", title, workload, server, MEASURED_NOT, why)
    curve = open_loads(loads) or loads
    rows, full_ok = [], True
    sus_cpu = []
    for x in curve:
        sus = median_of(res, "suspend", workload, server, x, cpu) or 0.0
        full = median_of(res, "fullbusy", workload, server, x, cpu) or 0.0
        sus_cpu.append(sus)
        full_ok &= full >= FULLBUSY_NEAR_CORE
        rows.append(
            f"{load_label(res, workload, server, x)}: suspend {sus:.2f}, fullbusy {full:.2f}"
        )
    low = curve[0]
    pr = ratio(res, workload, server, low, "suspend", "fullbusy", cpu)
    low_ok = pr.ratio < SUSPEND_CPU_FRACTION
    follows = len(curve) > 1 and sus_cpu[-1] > sus_cpu[0]
    problems: list[str] = []
    if not full_ok:
        problems.append(f"fullbusy under {FULLBUSY_NEAR_CORE} cores at some load")
    if not low_ok:
        problems.append(
            f"suspend not under {SUSPEND_CPU_FRACTION:.0%} of fullbusy at the lightest load"
        )
    if len(curve) == 1:
        problems.append("one load level only: no curve to follow")
    elif not follows:
        problems.append("suspend's CPU did not rise from the lightest to the highest load")
    ev = (
        f"cores by load: {'; '.join(rows)}; at the lightest load suspend/fullbusy CPU "
        f"{pr.describe()}"
    )
    if problems:
        ev += " -- " + ", ".join(problems)
    verdict = SHOWN if not problems else NOT_SHOWN
    return Claim("b", title, workload, server, verdict, ev, "every load")


def _claim_c(res: Results, workload: str, server: str) -> Claim:
    title = "at light load, deferral alone adds latency (defer p50 > 1.1x base)"
    loads = common_loads(res, workload, server, ("defer", "base"))
    if not loads:
        return Claim(
            "c",
            title,
            workload,
            server,
            MEASURED_NOT,
            _missing(res, workload, server, ("defer", "base")),
        )
    load, note = _pick(loads, highest=False)
    few = too_few_clean(res, workload, server, load, ("defer", "base"))
    if few:
        label = load_label(res, workload, server, load)
        return Claim("c", title, workload, server, MEASURED_NOT, f"at {label}: {few}", label)
    pr = ratio(res, workload, server, load, "defer", "base", p50)
    d = median_of(res, "defer", workload, server, load, p50)
    b = median_of(res, "base", workload, server, load, p50)
    ok = pr.ratio > DEFER_MARGIN
    label = load_label(res, workload, server, load)
    ev = (
        f"judged at {label}{note}: defer {d:.1f} us, base {b:.1f} us, defer/base p50 "
        f"{pr.describe()} ({'above' if ok else 'not above'} {DEFER_MARGIN:.2f}x)"
    )
    return Claim("c", title, workload, server, SHOWN if ok else NOT_SHOWN, ev, label)


def _claim_d(res: Results, workload: str, server: str) -> Claim:
    title = "under load, base has the worst tail (p99 >= every busy-polling mode's)"
    run = tuple(m for m in POLLING_MODES if loads_of(res, workload, server, m))
    loads = common_loads(res, workload, server, ("base", *run)) if run else []
    if not loads:
        why = _missing(res, workload, server, ("base", *run)) if run else "no busy-polling mode ran"
        return Claim("d", title, workload, server, MEASURED_NOT, why)
    load, note = _pick(loads, highest=True)
    few = too_few_clean(res, workload, server, load, ("base", *run))
    if few:
        label = load_label(res, workload, server, load)
        return Claim("d", title, workload, server, MEASURED_NOT, f"at {label}: {few}", label)
    worse = []
    parts = []
    for m in run:
        pr = ratio(res, workload, server, load, "base", m, p99)
        parts.append(f"base/{m} p99 {pr.describe()}")
        if pr.ratio < 1.0:
            worse.append(m)
    label = load_label(res, workload, server, load)
    base99 = median_of(res, "base", workload, server, load, p99)
    ev = f"judged at {label}{note}: base p99 {base99:.1f} us; " + "; ".join(parts)
    if worse:
        ev += f" -- {', '.join(worse)} had a worse tail than base"
    return Claim("d", title, workload, server, NOT_SHOWN if worse else SHOWN, ev, label)


def _claim_e(res: Results, workload: str, server: str) -> Claim:
    title = (
        "suspend within 20% of fullbusy's p50 at under half its CPU (published: memcached "
        "200K qps, 58 us at 30% vs 46 us at 100%)"
    )
    loads = open_loads(common_loads(res, workload, server, ("suspend", "fullbusy")))
    if not loads:
        why = _missing(res, workload, server, ("suspend", "fullbusy"))
        if common_loads(res, workload, server, ("suspend", "fullbusy")):
            why = "ping-pong only: the claim is about an open-loop load"
        return Claim("e", title, workload, server, MEASURED_NOT, why)
    held, rows = [], []
    for x in loads:
        few = too_few_clean(res, workload, server, x, ("suspend", "fullbusy"))
        if few:
            rows.append(f"{load_label(res, workload, server, x)}: not judged, {few}")
            continue
        lat = ratio(res, workload, server, x, "suspend", "fullbusy", p50)
        cores = ratio(res, workload, server, x, "suspend", "fullbusy", cpu)
        ok_lat, ok_cpu = lat.ratio <= SUSPEND_P50_TOLERANCE, cores.ratio < SUSPEND_CPU_FRACTION
        label = load_label(res, workload, server, x)
        fail = [] if ok_lat else ["latency"]
        fail += [] if ok_cpu else ["CPU"]
        rows.append(
            f"{label}: p50 {lat.ratio:.2f}x, CPU {cores.ratio:.2f}x"
            + (f" (misses on {' and '.join(fail)})" if fail else " (holds)")
        )
        if not fail:
            held.append(label)
    judged = [
        x for x in loads if not too_few_clean(res, workload, server, x, ("suspend", "fullbusy"))
    ]
    if not judged:
        return Claim("e", title, workload, server, MEASURED_NOT, "; ".join(rows))
    n = ratio(res, workload, server, judged[0], "suspend", "fullbusy", p50).rounds
    ev = f"suspend/fullbusy, paired over {n} round(s): " + "; ".join(rows)
    where = ", ".join(held) if held else ""
    return Claim("e", title, workload, server, SHOWN if held else NOT_SHOWN, ev, where)


def evaluate_claims(res: Results) -> list[Claim]:
    """Every claim for every (workload, server) in *res*, in that order."""
    judges: tuple[Judge, ...] = (_claim_a, _claim_b, _claim_c, _claim_d, _claim_e)
    return [f(res, w, s) for w, s in targets(res) for f in judges]
