"""Turn a ``results.json`` into a terminal table, PNG plots and a Markdown report.

The report leads with the recommendation (:mod:`netdevkit.bench.recommend`: per
workload and load, the mode meeting the p99 target with least CPU), then the
claims of the IRQ-suspension work judged at the load where each applies
(:mod:`netdevkit.bench.claims`), the capacity each server was found to have,
the trade-off plots (:mod:`netdevkit.bench.plots`) and the whole table for the
record. Values are medians over rounds; comparisons are paired per round.

Plots use matplotlib's Agg backend (no display needed). Everything here
reads a :class:`~netdevkit.bench.results.Results` and does no measuring.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .claims import MEASURED_NOT, NOT_SHOWN, SHOWN, Claim, evaluate_claims
from .recommend import recommend
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
    "recommend",
    "rich_table",
    "write_report",
]

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


def markdown_report(res: Results, plots: Sequence[str] = (), target_us: float | None = None) -> str:
    """The Markdown report: the recommendation first, then setup, capacities, claims
    with verdicts and numbers, the table and caveats."""
    cfg = res.config
    target = target_us or cfg.target_p99_us or 100.0
    lines = ["# netdevkit bench report", "", f"## Which mode (p99 target {target:g} us)", ""]
    recs = recommend(res, target)
    lines += [f"- {r.text}" for r in recs] or ["- no samples in this run"]
    sweep = ", ".join(f"{f:.0%}" for f in cfg.sweep) or "none"
    lines += [
        "",
        "## This run",
        "",
        f"Kernel {cfg.kernel or '?'}, {cfg.cpus or '?'} CPUs, netdevkit "
        f"{cfg.netdevkit_version or '?'}, started {cfg.started or '?'}; "
        f"modes {', '.join(cfg.modes)}; workloads {', '.join(cfg.workloads)}; "
        f"fixed loads {', '.join(_load_label(x) for x in cfg.loads) or 'none'}; "
        f"sweep {sweep} of each server's capacity; {cfg.duration:g} s per sample, "
        f"{cfg.repeat} round(s){' (--quick)' if cfg.quick else ''}; "
        f"CPU placement: {cfg.placement or 'none (the scheduler decides)'}"
        + (f"; --server `{cfg.server_cmd}` driven by {cfg.client}" if cfg.server_cmd else "")
        + ".",
        "",
    ]
    for cap in res.capacities:
        swept = ", ".join(f"{x}/s" for x in cap.loads)
        lines.append(
            f"- capacity of {cap.workload}/{cap.server}: {cap.rate:.0f}/s ({cap.method}; "
            f"probe p50 {cap.p50:.1f} us, p99 {cap.p99:.1f} us); swept at {swept}"
        )
    lines += [
        "",
        "## Claims of the IRQ-suspension work, each at the load it is about",
        "",
        "| claim | workload | verdict | judged at | numbers |",
        "|---|---|---|---|---|",
    ]
    for c in evaluate_claims(res):
        lines.append(
            f"| ({c.key}) {c.title} | {c.workload}/{c.server} | **{c.verdict}** | "
            f"{c.load or '-'} | {c.evidence} |"
        )
    if not res.samples:
        lines.append("| (all) | - | **NOT MEASURED** | - | no samples in this run |")
    lines += ["", "## Results", "", "Medians across rounds, [min-max] when repeated.", ""]
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


def write_report(
    res: Results, outdir: str, target_us: float | None = None
) -> tuple[str, list[str]]:
    """Plots and report.md into *outdir*; returns (report path, plot paths)."""
    from .plots import plot_tradeoff

    os.makedirs(outdir, exist_ok=True)
    target = target_us or res.config.target_p99_us or 100.0
    plots = [plot_tradeoff(res, outdir, target), *plot_all(res, outdir)]
    path = os.path.join(outdir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown_report(res, plots, target))
    return path, plots
