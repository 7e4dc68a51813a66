"""The plots of a run: the trade-off picture first, then latency, CPU and load curves.

``tradeoff.png`` (:func:`plot_tradeoff`) has one row per (workload, server): p50
against server CPU on the left, p99 against server CPU on the right (log latency). Each
mode has a colour, each load of the sweep a marker size (larger is more load); the p99
target is a dashed line, and at each load the mode the recommendation picks
(the cheapest meeting the target) is ringed in black. A point further left is
cheaper, further down is faster: the modes worth having form the lower-left
edge.

:func:`plot_all` writes the three others: ``latency_by_mode.png`` (p50 to p99.9 per mode
at each server's lowest load), ``cpu_by_mode.png`` (server and softirq CPU, stacked) and
``latency_vs_load.png`` (p50 and p99 against the achieved rate, for modes with two or more
open-loop loads).

Pure apart from writing the PNGs (matplotlib's Agg backend, no display).
"""

from __future__ import annotations

import os
from typing import Any

from .paired import Metric, cpu, loads_of, median_of, p50, p99, targets
from .recommend import recommend
from .results import PING_PONG, Results, Sample
from .table import mode_rank, rate_label

__all__ = ["plot_all", "plot_tradeoff"]


def plot_tradeoff(res: Results, outdir: str, target_us: float) -> str:
    """Write ``tradeoff.png`` into *outdir*; return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = targets(res) or [("none", "none")]
    fig, axes = plt.subplots(len(pairs), 2, figsize=(12, 4.4 * len(pairs)), squeeze=False)
    best = {
        (r.workload, r.server, r.load): r.best.mode for r in recommend(res, target_us) if r.best
    }
    modes = list(dict.fromkeys(s.mode for s in res.samples))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(modes)}
    for row, (workload, server) in zip(axes, pairs, strict=True):
        loads = sorted({x for m in modes for x in loads_of(res, workload, server, m)})
        sizes = {x: 30 + 110 * i / max(1, len(loads) - 1) for i, x in enumerate(loads)}
        for ax, metric, name in ((row[0], p50, "p50"), (row[1], p99, "p99")):
            for mode in modes:
                xs, ys, ss = [], [], []
                for load in loads_of(res, workload, server, mode):
                    c = median_of(res, mode, workload, server, load, cpu)
                    y = median_of(res, mode, workload, server, load, metric)
                    if c is None or y is None:
                        continue
                    xs.append(c)
                    ys.append(y)
                    ss.append(sizes[load])
                    if best.get((workload, server, load)) == mode:
                        ax.scatter([c], [y], s=sizes[load] * 2.2, facecolors="none",
                                   edgecolors="black", linewidths=1.6, zorder=3)  # fmt: skip
                if xs:
                    ax.scatter(xs, ys, s=ss, color=colours[mode], label=mode, alpha=0.85)
            if name == "p99":
                ax.axhline(target_us, color="grey", linestyle="--", linewidth=1)
                label = f" target {target_us:g} us"
                ax.text(0.01, target_us, label, color="grey", va="bottom", fontsize="small",
                        transform=ax.get_yaxis_transform())  # fmt: skip
            ax.set_yscale("log")
            ax.set_xlabel("server CPU (cores)")
            kind = "half round trip" if workload in ("echo", "sockperf") else "round trip"
            ax.set_ylabel(f"{name} latency (us, {kind})")
            ax.set_title(f"{workload}/{server}: {name} vs CPU")
            ax.grid(True, which="both", alpha=0.3)
        row[0].legend(fontsize="x-small", ncol=2, title="mode", title_fontsize="x-small")
        labels = [("ping-pong" if x == PING_PONG else f"{x}/s") for x in loads]
        row[1].text(0.99, 0.01, "marker size = load: " + ", ".join(labels), ha="right",
                    va="bottom", fontsize="x-small", transform=row[1].transAxes)  # fmt: skip
    fig.suptitle("Latency against server CPU; black ring: cheapest mode meeting the target")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.04 / len(pairs)))  # room for the title
    path = os.path.join(outdir, "tradeoff.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_all(res: Results, outdir: str) -> list[str]:
    """Write latency_by_mode.png, cpu_by_mode.png and latency_vs_load.png; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = targets(res) or [("none", "none")]
    paths = []
    for name, draw in (
        ("latency_by_mode.png", _latency_by_mode),
        ("cpu_by_mode.png", _cpu_by_mode),
        ("latency_vs_load.png", _latency_vs_load),
    ):
        fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.2), squeeze=False)
        for ax, (workload, server) in zip(axes[0], pairs, strict=True):
            draw(ax, res, workload, server)
        fig.tight_layout()
        path = os.path.join(outdir, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


_PERCENTILES: tuple[tuple[str, Metric], ...] = (
    ("p50", p50),
    ("p90", lambda s: s.latency.p90),
    ("p99", p99),
    ("p99.9", lambda s: s.latency.p999),
)


def _value(res: Results, mode: str, workload: str, server: str, load: int, metric: Metric) -> float:
    return median_of(res, mode, workload, server, load, metric) or 0.0


def _lowest_load(res: Results, workload: str, server: str) -> tuple[int, list[str]]:
    """The lowest load of a server, and the modes measured at it."""
    loads = sorted({s.load_target for s in res.select(workload=workload, server=server)})
    load = loads[0] if loads else PING_PONG
    measured = res.select(workload=workload, server=server, load_target=load)
    return load, sorted({s.mode for s in measured}, key=mode_rank)


def _latency_by_mode(ax: Any, res: Results, workload: str, server: str) -> None:
    """Latency percentiles by mode, at the server's lowest load."""
    load, modes = _lowest_load(res, workload, server)
    width = 0.8 / len(_PERCENTILES)
    for i, (name, metric) in enumerate(_PERCENTILES):
        vals = [_value(res, m, workload, server, load, metric) for m in modes]
        ax.bar([x + i * width for x in range(len(modes))], vals, width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(modes))], modes)
    ax.set_yscale("log")
    ax.set_ylabel("latency (us, log)")
    ax.set_title(f"{workload}/{server} at {rate_label(load)}")
    ax.legend(fontsize="small")


def _softirq(s: Sample) -> float:
    return s.softirq_cpu


def _cpu_by_mode(ax: Any, res: Results, workload: str, server: str) -> None:
    """CPU by mode: server process and softirq, stacked, at the server's lowest load."""
    load, modes = _lowest_load(res, workload, server)
    proc = [_value(res, m, workload, server, load, cpu) for m in modes]
    soft = [_value(res, m, workload, server, load, _softirq) for m in modes]
    ax.bar(modes, proc, label="server user+sys")
    ax.bar(modes, soft, bottom=proc, label="softirq (all CPUs)")
    ax.set_ylabel("cores")
    ax.set_title(f"{workload}/{server} at {rate_label(load)}")
    ax.legend(fontsize="small")


def _achieved(s: Sample) -> float:
    return s.achieved_rate


def _latency_vs_load(ax: Any, res: Results, workload: str, server: str) -> None:
    """Latency against load: x is the achieved rate, never the requested one."""
    drawn = False
    modes = sorted({s.mode for s in res.select(workload=workload, server=server)}, key=mode_rank)
    for m in modes:
        loads = [x for x in loads_of(res, workload, server, m) if x != PING_PONG]
        if len(loads) < 2:
            continue
        xs = [_value(res, m, workload, server, x, _achieved) for x in loads]
        lo = [_value(res, m, workload, server, x, p50) for x in loads]
        hi = [_value(res, m, workload, server, x, p99) for x in loads]
        (line,) = ax.plot(xs, lo, marker="o", label=f"{m} p50")
        ax.plot(xs, hi, marker="x", linestyle="--", color=line.get_color(), label=f"{m} p99")
        drawn = True
    if drawn:
        ax.set_yscale("log")
        ax.legend(fontsize="x-small", ncol=2)
    else:
        ax.text(0.5, 0.5, "no load curve measured\n(needs two or more --load rates)",
                ha="center", va="center", transform=ax.transAxes)  # fmt: skip
    ax.set_xlabel("achieved rate (requests/s)")
    ax.set_ylabel("latency (us)")
    ax.set_title(f"{workload}/{server}")
