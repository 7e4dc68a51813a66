"""Turn a ``results.json`` into a terminal table, PNG plots and a Markdown report.

The report checks three claims of the IRQ-suspension work (Damato, Kahn,
Karsten, "Enhancing Network Stack Efficiency with IRQ Suspension") against
*this* run, per workload, and says for each one SHOWN, NOT SHOWN or NOT
MEASURED with the numbers that decided it:

(a) ``suspend`` reaches busy-poll latency: suspend's p50 is within 20% of
    ``fullbusy``'s p50 at the lowest load measured;
(b) suspend's CPU follows the load where full busy polling does not:
    ``fullbusy`` keeps the server near a whole core (>= 0.8) at every load,
    and ``suspend`` uses less than half of fullbusy's CPU at the lowest
    load (with two or more load levels, suspend must also use less than
    fullbusy at every level); the loads are the open-loop rates when any
    were measured (ping-pong is then only quoted);
(c) ``defer`` alone adds latency at low load: defer's p50 is more than 10%
    above ``base``'s p50 at the lowest load;
(d) ``base`` is the slowest at the tail: its p99 is at least that of every
    busy-polling mode run (``napibusy``, ``fullbusy``, ``suspend``) at the
    lowest load (the evidence also lists ``defer`` and ``threaded``).

"The lowest load" for (a), (c) and (d) is the lowest open-loop rate measured
by every mode the claim compares (the published evaluation's low load is a
low request rate, not a closed loop); only without one is it ping-pong,
whose numbers are added to the evidence when both exist.

Values are medians across repeats. Samples flagged client-limited never
count: a claim whose samples are all client-limited is NOT MEASURED.

Plots use matplotlib's Agg backend (no display needed). Everything here
reads a :class:`~netdevkit.bench.results.Results` and does no measuring.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .results import PING_PONG, Results, Sample, Spread

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "MEASURED_NOT",
    "NOT_SHOWN",
    "SHOWN",
    "Claim",
    "evaluate_claims",
    "markdown_report",
    "plot_all",
    "rich_table",
    "write_report",
]

SHOWN = "SHOWN"
NOT_SHOWN = "NOT SHOWN"
MEASURED_NOT = "NOT MEASURED"

SUSPEND_P50_TOLERANCE = 1.20
FULLBUSY_NEAR_CORE = 0.8
SUSPEND_CPU_FRACTION = 0.5
DEFER_MARGIN = 1.10

MODE_ORDER = ("base", "defer", "napibusy", "fullbusy", "suspend", "threaded", "busy-poll-thread")


@dataclass(frozen=True, slots=True)
class Claim:
    """The verdict on one claim for one workload (and server program)."""

    key: str
    title: str
    workload: str
    server: str
    verdict: str
    evidence: str


# --- helpers -------------------------------------------------------------------


def _mode_rank(mode: str) -> tuple[int, str]:
    return (MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER), mode)


def _load_label(load: int) -> str:
    return "ping-pong" if load == PING_PONG else f"{load}/s"


def _median(samples: Sequence[Sample], metric: Callable[[Sample], float]) -> float | None:
    vals = [metric(s) for s in samples if not s.client_limited]
    return Spread.of(vals).median if vals else None


def _p50(s: Sample) -> float:
    return s.latency.p50


def _cpu(s: Sample) -> float:
    return s.server_cpu


def _targets(res: Results) -> list[tuple[str, str]]:
    """(workload, server) pairs in first-seen order."""
    out: list[tuple[str, str]] = []
    for s in res.samples:
        if (s.workload, s.server) not in out:
            out.append((s.workload, s.server))
    return out


def _loads(res: Results, workload: str, server: str, mode: str) -> list[int]:
    """Loads with at least one usable (not client-limited) sample, ascending."""
    return sorted({s.load_target for s in res.select(mode=mode, workload=workload, server=server)})


def _value(
    res: Results,
    mode: str,
    workload: str,
    server: str,
    load: int,
    metric: Callable[[Sample], float],
) -> float | None:
    return _median(
        res.select(mode=mode, workload=workload, server=server, load_target=load), metric
    )


def _low_load(res: Results, workload: str, server: str, modes: Sequence[str]) -> int | None:
    """The lowest open-loop rate every mode in *modes* measured, else ping-pong
    if they all have it, else None."""
    common: set[int] | None = None
    for m in modes:
        loads = set(_loads(res, workload, server, m))
        common = loads if common is None else common & loads
    if not common:
        return None
    rates = sorted(x for x in common if x != PING_PONG)
    return rates[0] if rates else PING_PONG


def _also_ping_pong(res: Results, workload: str, server: str, modes: Sequence[str]) -> bool:
    return all(PING_PONG in _loads(res, workload, server, m) for m in modes)


def _missing(res: Results, workload: str, server: str, modes: Sequence[str]) -> str:
    parts = []
    for m in modes:
        if not res.select(mode=m, workload=workload, server=server, include_client_limited=True):
            parts.append(f"{m} was not run")
        elif not res.select(mode=m, workload=workload, server=server):
            parts.append(f"every {m} sample was client-limited")
    return "; ".join(parts) or "no load level measured in all of " + ", ".join(modes)


# --- claims --------------------------------------------------------------------


def _claim_a(res: Results, workload: str, server: str) -> Claim:
    title = "suspend reaches busy-poll latency (p50 within 20% of fullbusy)"
    modes = ("suspend", "fullbusy")
    load = _low_load(res, workload, server, modes)
    if load is None:
        return Claim(
            "a", title, workload, server, MEASURED_NOT, _missing(res, workload, server, modes)
        )

    def at(x: int) -> tuple[float, float, float]:
        sus = _value(res, "suspend", workload, server, x, _p50)
        full = _value(res, "fullbusy", workload, server, x, _p50)
        assert sus is not None and full is not None
        return sus, full, sus / full if full > 0 else float("inf")

    sus, full, ratio = at(load)
    verdict = SHOWN if ratio <= SUSPEND_P50_TOLERANCE else NOT_SHOWN
    ev = (
        f"at {_load_label(load)}: suspend p50 {sus:.1f} us, fullbusy p50 {full:.1f} us "
        f"(ratio {ratio:.2f}, needs <= {SUSPEND_P50_TOLERANCE:.2f})"
    )
    if load != PING_PONG and _also_ping_pong(res, workload, server, modes):
        sus, full, ratio = at(PING_PONG)
        ev += f"; ping-pong: suspend {sus:.1f} us, fullbusy {full:.1f} us (ratio {ratio:.2f})"
    return Claim("a", title, workload, server, verdict, ev)


def _claim_b(res: Results, workload: str, server: str) -> Claim:
    title = "suspend's CPU follows the load; fullbusy stays near 100%"
    modes = ("suspend", "fullbusy")
    common = sorted(
        set(_loads(res, workload, server, "suspend"))
        & set(_loads(res, workload, server, "fullbusy"))
    )
    if not common:
        return Claim(
            "b", title, workload, server, MEASURED_NOT, _missing(res, workload, server, modes)
        )
    # The load curve is the open-loop rates; ping-pong (as fast as one request in
    # flight allows) is not a point on it, so it is judged only without rates.
    rates = [x for x in common if x != PING_PONG]
    pp_note = ""
    if rates and PING_PONG in common:
        sus_pp = _value(res, "suspend", workload, server, PING_PONG, _cpu)
        full_pp = _value(res, "fullbusy", workload, server, PING_PONG, _cpu)
        assert sus_pp is not None and full_pp is not None
        pp_note = f" (ping-pong, not judged: suspend {sus_pp:.2f}, fullbusy {full_pp:.2f} cores)"
    common = rates or common
    rows = []
    full_near_core = True
    suspend_below = True
    for load in common:
        sus = _value(res, "suspend", workload, server, load, _cpu)
        full = _value(res, "fullbusy", workload, server, load, _cpu)
        assert sus is not None and full is not None
        rows.append(f"{_load_label(load)}: suspend {sus:.2f}, fullbusy {full:.2f} cores")
        full_near_core &= full >= FULLBUSY_NEAR_CORE
        suspend_below &= sus < full
    low = common[0]
    sus_low = _value(res, "suspend", workload, server, low, _cpu)
    full_low = _value(res, "fullbusy", workload, server, low, _cpu)
    assert sus_low is not None and full_low is not None
    low_ok = sus_low < SUSPEND_CPU_FRACTION * full_low
    shown = full_near_core and low_ok and suspend_below
    why = []
    if not full_near_core:
        why.append(f"fullbusy below {FULLBUSY_NEAR_CORE} cores at some load")
    if not low_ok:
        why.append(f"suspend not under {SUSPEND_CPU_FRACTION:.0%} of fullbusy at the lowest load")
    if not suspend_below:
        why.append("suspend not below fullbusy at every load")
    ev = "; ".join(rows) + pp_note
    if len(common) == 1:
        ev += " (one load level only: the trend with load is not measured)"
    if why:
        ev += " -- " + ", ".join(why)
    return Claim("b", title, workload, server, SHOWN if shown else NOT_SHOWN, ev)


def _claim_c(res: Results, workload: str, server: str) -> Claim:
    title = "defer alone adds latency at low load (defer p50 > base p50)"
    modes = ("defer", "base")
    load = _low_load(res, workload, server, modes)
    if load is None:
        return Claim(
            "c", title, workload, server, MEASURED_NOT, _missing(res, workload, server, modes)
        )

    def at(x: int) -> tuple[float, float]:
        defer = _value(res, "defer", workload, server, x, _p50)
        base = _value(res, "base", workload, server, x, _p50)
        assert defer is not None and base is not None
        return defer, base

    defer, base = at(load)
    verdict = SHOWN if defer > DEFER_MARGIN * base else NOT_SHOWN
    ev = (
        f"at {_load_label(load)}: defer p50 {defer:.1f} us, base p50 {base:.1f} us "
        f"(needs defer > {DEFER_MARGIN:.2f} x base)"
    )
    if load != PING_PONG and _also_ping_pong(res, workload, server, modes):
        defer, base = at(PING_PONG)
        ev += f"; ping-pong: defer {defer:.1f} us, base {base:.1f} us"
    return Claim("c", title, workload, server, verdict, ev)


POLLING_MODES = ("napibusy", "fullbusy", "suspend")


def _claim_d(res: Results, workload: str, server: str) -> Claim:
    title = "base is the slowest at the tail (p99 >= every busy-polling mode's)"
    run = [m for m in POLLING_MODES if _loads(res, workload, server, m)]
    modes = ("base", *run)
    load = _low_load(res, workload, server, modes) if run else None
    if load is None:
        why = _missing(res, workload, server, modes) if run else "no busy-polling mode was run"
        return Claim("d", title, workload, server, MEASURED_NOT, why)
    p99 = {
        m: _value(res, m, workload, server, load, lambda s: s.latency.p99)
        for m in MODE_ORDER
        if load in _loads(res, workload, server, m)
    }
    base = p99["base"]
    assert base is not None
    slower = [m for m in run if (p99[m] or 0.0) > base]
    verdict = NOT_SHOWN if slower else SHOWN
    listed = ", ".join(f"{m} {v:.1f}" for m, v in p99.items() if v is not None)
    ev = f"p99 at {_load_label(load)} (us): {listed}"
    if slower:
        ev += f" -- {', '.join(slower)} slower than base"
    worst = max((m for m in p99 if p99[m] is not None), key=lambda m: p99[m] or 0.0)
    ev += f"; slowest of all modes run: {worst}"
    return Claim("d", title, workload, server, verdict, ev)


def evaluate_claims(res: Results) -> list[Claim]:
    """Every claim for every (workload, server) in the results, in that order."""
    out: list[Claim] = []
    for workload, server in _targets(res):
        out += [f(res, workload, server) for f in (_claim_a, _claim_b, _claim_c, _claim_d)]
    return out


# --- the table -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
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


def _rows(res: Results) -> list[_Row]:
    rows = []
    groups = res.groups()
    for key in sorted(groups, key=lambda k: (k[1], k[2], _mode_rank(k[0]), k[3])):
        samples = groups[key]
        limited = sum(s.client_limited for s in samples)
        flags = []
        if limited:
            flags.append(f"client-limited {limited}/{len(samples)}")
        for note in sorted({n for s in samples for n in s.notes}):
            flags.append(note)

        def sp(
            metric: Callable[[Sample], float], key: tuple[str, str, str, int] = key
        ) -> Spread | None:
            return res.spread(key, metric)

        rows.append(
            _Row(
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
                sleeps=_napi_spread(res, key, "server_sleeps_per_s"),
                busy_polled=_napi_spread(res, key, "busy_polled_share", 100.0),
                kind=samples[0].latency.kind,
                flags="; ".join(flags),
            )
        )
    return rows


def _napi_spread(
    res: Results, key: tuple[str, str, str, int], name: str, scale: float = 1.0
) -> Spread | None:
    """Spread of one ``Sample.napi`` value (absent in files from older runs)."""
    vals = [
        s.napi[name] * scale
        for s in res.groups().get(key, [])
        if not s.client_limited and name in s.napi
    ]
    return Spread.of(vals) if vals else None


def _fmt(sp: Spread | None, digits: int = 1) -> str:
    if sp is None:
        return "-"
    if sp.n == 1 or sp.min == sp.max:
        return f"{sp.median:.{digits}f}"
    return f"{sp.median:.{digits}f} [{sp.min:.{digits}f}-{sp.max:.{digits}f}]"


_HEADERS = (
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


def _cells(r: _Row) -> list[str]:
    return [
        f"{r.workload}/{r.server}",
        r.mode,
        _load_label(r.load),
        _fmt(r.achieved, 0),
        _fmt(r.p50),
        _fmt(r.p90),
        _fmt(r.p99),
        _fmt(r.p999),
        _fmt(r.cpu, 2),
        _fmt(r.softirq, 2),
        _fmt(r.sleeps, 0),
        _fmt(r.busy_polled, 0),
        r.flags,
    ]


def rich_table(res: Results) -> Table:
    """The results as a rich table: medians, [min-max] across repeats when repeated."""
    from rich.table import Table

    table = Table(title="netdevkit bench (CPU in cores; sockperf latency is half round trip)")
    for h in _HEADERS:
        table.add_column(
            h, justify="left" if h in ("workload/server", "mode", "notes") else "right"
        )
    for r in _rows(res):
        table.add_row(*_cells(r))
    return table


# --- plots ---------------------------------------------------------------------


def _lowest_load_samples(res: Results, workload: str, server: str) -> tuple[int, list[str]]:
    loads = sorted({s.load_target for s in res.select(workload=workload, server=server)})
    load = loads[0] if loads else PING_PONG
    modes = sorted(
        {s.mode for s in res.select(workload=workload, server=server, load_target=load)},
        key=_mode_rank,
    )
    return load, modes


def plot_all(res: Results, outdir: str) -> list[str]:
    """Write latency_by_mode.png, cpu_by_mode.png and latency_vs_load.png; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = _targets(res) or [("none", "none")]
    paths = []

    # Latency percentiles by mode, at each target's lowest load.
    fig, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 4.2), squeeze=False)
    for ax, (workload, server) in zip(axes[0], targets, strict=True):
        load, modes = _lowest_load_samples(res, workload, server)
        pcts = (
            ("p50", lambda s: s.latency.p50),
            ("p90", lambda s: s.latency.p90),
            ("p99", lambda s: s.latency.p99),
            ("p99.9", lambda s: s.latency.p999),
        )
        width = 0.8 / len(pcts)
        for i, (name, metric) in enumerate(pcts):
            vals = [_value(res, m, workload, server, load, metric) or 0.0 for m in modes]
            ax.bar([x + i * width for x in range(len(modes))], vals, width, label=name)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(modes))], modes)
        ax.set_yscale("log")
        ax.set_ylabel("latency (us, log)")
        ax.set_title(f"{workload}/{server} at {_load_label(load)}")
        ax.legend(fontsize="small")
    fig.tight_layout()
    paths.append(_save(fig, outdir, "latency_by_mode.png"))
    plt.close(fig)

    # CPU by mode: server process and softirq, stacked.
    fig, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 4.2), squeeze=False)
    for ax, (workload, server) in zip(axes[0], targets, strict=True):
        load, modes = _lowest_load_samples(res, workload, server)
        proc = [_value(res, m, workload, server, load, _cpu) or 0.0 for m in modes]
        soft = [
            _value(res, m, workload, server, load, lambda s: s.softirq_cpu) or 0.0 for m in modes
        ]
        ax.bar(modes, proc, label="server user+sys")
        ax.bar(modes, soft, bottom=proc, label="softirq (all CPUs)")
        ax.set_ylabel("cores")
        ax.set_title(f"{workload}/{server} at {_load_label(load)}")
        ax.legend(fontsize="small")
    fig.tight_layout()
    paths.append(_save(fig, outdir, "cpu_by_mode.png"))
    plt.close(fig)

    # Latency against load: x is the achieved rate, never the requested one.
    fig, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 4.2), squeeze=False)
    for ax, (workload, server) in zip(axes[0], targets, strict=True):
        drawn = False
        modes = sorted(
            {s.mode for s in res.select(workload=workload, server=server)}, key=_mode_rank
        )
        for m in modes:
            loads = [x for x in _loads(res, workload, server, m) if x != PING_PONG]
            if len(loads) < 2:
                continue
            xs = [
                _value(res, m, workload, server, x, lambda s: s.achieved_rate) or 0.0 for x in loads
            ]
            p50 = [_value(res, m, workload, server, x, _p50) or 0.0 for x in loads]
            p99 = [
                _value(res, m, workload, server, x, lambda s: s.latency.p99) or 0.0 for x in loads
            ]
            (line,) = ax.plot(xs, p50, marker="o", label=f"{m} p50")
            ax.plot(xs, p99, marker="x", linestyle="--", color=line.get_color(), label=f"{m} p99")
            drawn = True
        if drawn:
            ax.set_yscale("log")
            ax.legend(fontsize="x-small", ncol=2)
        else:
            ax.text(
                0.5,
                0.5,
                "no load curve measured\n(needs two or more --load rates)",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set_xlabel("achieved rate (requests/s)")
        ax.set_ylabel("latency (us)")
        ax.set_title(f"{workload}/{server}")
    fig.tight_layout()
    paths.append(_save(fig, outdir, "latency_vs_load.png"))
    plt.close(fig)
    return paths


def _save(fig: object, outdir: str, name: str) -> str:
    path = os.path.join(outdir, name)
    fig.savefig(path, dpi=110)  # type: ignore[attr-defined]
    return path


# --- Markdown ------------------------------------------------------------------


def markdown_report(res: Results, plots: Sequence[str] = ()) -> str:
    """The Markdown report: setup, claims with verdicts and numbers, the table, caveats."""
    cfg = res.config
    lines = [
        "# netdevkit bench report",
        "",
        f"Kernel {cfg.kernel or '?'}, {cfg.cpus or '?'} CPUs, started {cfg.started or '?'}; "
        f"modes {', '.join(cfg.modes)}; workloads {', '.join(cfg.workloads)}; "
        f"loads {', '.join(_load_label(x) for x in cfg.loads)}; {cfg.duration:g} s per sample, "
        f"{cfg.repeat} repeat(s){' (--quick)' if cfg.quick else ''}; "
        f"CPU placement: {cfg.placement or 'none (the scheduler decides)'}.",
        "",
        "## Claims of the IRQ-suspension work, checked on this run",
        "",
        "| claim | workload | verdict | numbers |",
        "|---|---|---|---|",
    ]
    for c in evaluate_claims(res):
        lines.append(
            f"| ({c.key}) {c.title} | {c.workload}/{c.server} | **{c.verdict}** | {c.evidence} |"
        )
    if not res.samples:
        lines.append("| (all) | - | **NOT MEASURED** | no samples in this run |")
    lines += ["", "## Results", "", "Medians across repeats, [min-max] when repeated.", ""]
    lines.append("| " + " | ".join(_HEADERS) + " |")
    lines.append("|" + "---|" * len(_HEADERS))
    for r in _rows(res):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |")
    lines += ["", "## How to read this", ""]
    kinds = {s.latency.kind for s in res.samples}
    if "half-rtt" in kinds:
        lines.append(
            "- sockperf and echo latencies are **half the round trip**, as sockperf reports them."
        )
    if "rtt" in kinds:
        lines.append(
            "- memcached (mcload) and redis latencies are whole round trips, measured from each "
            "request's scheduled send time (open loop: no coordinated omission)."
        )
    lines += [
        "- *load* is what was asked for; *achieved/s* is what the server answered. "
        "Samples whose load generator could not keep up are flagged client-limited and count "
        "for no claim.",
        "- Server CPU is user+system of the server process tree; softirq is summed over all CPUs "
        "(on veth the sender's napi_schedule raises it, so it includes the client side).",
        "- *sleeps/s*: the server's voluntary context switches (it blocked, e.g. in epoll_wait "
        "after a busy poll found nothing); *busy-polled %*: share of the packets received in "
        "the server namespace that busy polling delivered (TcpExt BusyPollRxPackets / Ip "
        "InReceives).",
        "- This machine's veth has no hardware IRQs: deferral and suspension hold back the "
        "sender's napi_schedule instead. Client, server and softirq share the same few cores, "
        "so CPU numbers are upper bounds compared with a dedicated-core setup.",
    ]
    if res.skipped:
        lines += ["", "## Not measured", ""]
        lines += [f"- {k.mode} / {k.workload}: {k.reason}" for k in res.skipped]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(res: Results, outdir: str) -> tuple[str, list[str]]:
    """Plots and report.md into *outdir*; returns (report path, plot paths)."""
    os.makedirs(outdir, exist_ok=True)
    plots = plot_all(res, outdir)
    path = os.path.join(outdir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown_report(res, plots))
    return path, plots
