"""The plots of a run: the trade-off picture first, then latency, CPU and load curves.

``tradeoff.png`` (:func:`plot_tradeoff`) has one row per (workload, server): p50
against server CPU on the left, p99 against server CPU on the right (log latency). Each
mode has a colour, each load of the sweep a marker size (larger is more load); the p99
target is a dashed line, and at each load the mode the recommendation picks
(the cheapest meeting the target) is ringed in black. A point further left is
cheaper, further down is faster: the modes worth having form the lower-left
edge.

:func:`plot_all` writes the three others: ``latency_by_mode.png`` (p50 to p99.9 per mode,
one panel per server and load), ``cpu_by_mode.png`` (the server's threads, its NAPI kthread
and softirq, stacked, one panel per server and load) and ``latency_vs_load.png`` (p50 above,
p99 below, against the achieved rate, one column per server, the base knee dashed).

Pure apart from writing the PNGs (matplotlib's Agg backend, no display).
"""

from __future__ import annotations

import os
from typing import Any

from .paired import Metric, cpu, load_label, loads_of, median_of, p50, p99, targets
from .recommend import recommend
from .results import PING_PONG, Results, Sample
from .table import mode_rank

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
        if row[0].get_legend_handles_labels()[0]:  # no usable sample: no legend
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
    ):
        grid = [(w, s, load) for w, s in pairs for load in _loads(res, w, s)] or [
            (pairs[0][0], pairs[0][1], PING_PONG)
        ]
        cols = min(3, len(grid))
        nrows = -(-len(grid) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(6.2 * cols, 4.6 * nrows), squeeze=False)
        for ax, (workload, server, load) in zip(axes.flat, grid, strict=False):
            draw(ax, res, workload, server, load)
        for ax in list(axes.flat)[len(grid) :]:
            ax.axis("off")
        fig.tight_layout()
        paths.append(_save(fig, outdir, name))
    fig, axes = plt.subplots(2, len(pairs), figsize=(7.5 * len(pairs), 8.4), squeeze=False)
    for col, (workload, server) in enumerate(pairs):
        _latency_vs_load(axes[0][col], res, workload, server, "p50", p50)
        _latency_vs_load(axes[1][col], res, workload, server, "p99", p99)
    fig.tight_layout()
    paths.append(_save(fig, outdir, "latency_vs_load.png"))
    return paths


def _save(fig: Any, outdir: str, name: str) -> str:
    import matplotlib.pyplot as plt

    path = os.path.join(outdir, name)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


_PERCENTILES: tuple[tuple[str, Metric], ...] = (
    ("p50", p50),
    ("p90", lambda s: s.latency.p90),
    ("p99", p99),
    ("p99.9", lambda s: s.latency.p999),
)


def _value(res: Results, mode: str, workload: str, server: str, load: int, metric: Metric) -> float:
    return median_of(res, mode, workload, server, load, metric) or 0.0


def _loads(res: Results, workload: str, server: str) -> list[int]:
    """Every load of a server that has a usable sample."""
    return sorted({s.load_target for s in res.select(workload=workload, server=server)})


def _modes_at(res: Results, workload: str, server: str, load: int) -> list[str]:
    measured = res.select(workload=workload, server=server, load_target=load)
    return sorted({s.mode for s in measured}, key=mode_rank)


def _bar_axes(ax: Any, modes: list[str], title: str) -> None:
    ax.set_xticks(range(len(modes)), modes, rotation=35, ha="right", fontsize="small")
    ax.set_title(title, fontsize="medium")


def _latency_by_mode(ax: Any, res: Results, workload: str, server: str, load: int) -> None:
    """Latency percentiles by mode at one load."""
    modes = _modes_at(res, workload, server, load)
    width = 0.8 / len(_PERCENTILES)
    for i, (name, metric) in enumerate(_PERCENTILES):
        vals = [_value(res, m, workload, server, load, metric) for m in modes]
        ax.bar([x - 0.4 + (i + 0.5) * width for x in range(len(modes))], vals, width, label=name)
    ax.set_yscale("log")
    kind = "half round trip" if workload in ("echo", "sockperf") else "round trip"
    ax.set_ylabel(f"latency (us, {kind}, log)")
    _bar_axes(ax, modes, f"{workload}/{server} at {load_label(res, workload, server, load)}")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _softirq(s: Sample) -> float:
    return s.softirq_cpu


def _kthread(s: Sample) -> float:
    return float(s.napi.get("napi_kthread_cores", 0.0))


def _process(s: Sample) -> float:
    return s.server_cpu - _kthread(s)


def _cpu_by_mode(ax: Any, res: Results, workload: str, server: str, load: int) -> None:
    """CPU by mode at one load: the server's threads, its NAPI kthread, softirq; stacked."""
    modes = _modes_at(res, workload, server, load)
    proc = [_value(res, m, workload, server, load, _process) for m in modes]
    kth = [_value(res, m, workload, server, load, _kthread) for m in modes]
    soft = [_value(res, m, workload, server, load, _softirq) for m in modes]
    x = list(range(len(modes)))
    ax.bar(x, proc, label="server threads (schedstat runtime)")
    ax.bar(x, kth, bottom=proc, label="NAPI kthread (threaded modes)")
    ax.bar(x, soft, bottom=[a + b for a, b in zip(proc, kth, strict=True)],
           label="softirq, all CPUs (tick-sampled)")  # fmt: skip
    ax.set_ylabel("cores")
    _bar_axes(ax, modes, f"{workload}/{server} at {load_label(res, workload, server, load)}")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _achieved(s: Sample) -> float:
    return s.achieved_rate


def _latency_vs_load(
    ax: Any, res: Results, workload: str, server: str, name: str, metric: Metric
) -> None:
    """One percentile against load: x is the achieved rate, never the requested one; the
    base knee the probe found is a dashed line."""
    drawn = False
    modes = sorted({s.mode for s in res.select(workload=workload, server=server)}, key=mode_rank)
    for m in modes:
        loads = [x for x in loads_of(res, workload, server, m) if x != PING_PONG]
        if len(loads) < 2:
            continue
        xs = [_value(res, m, workload, server, x, _achieved) for x in loads]
        ys = [_value(res, m, workload, server, x, metric) for x in loads]
        ax.plot(xs, ys, marker="o", label=m)
        drawn = True
    cap = next((c for c in res.capacities if (c.workload, c.server) == (workload, server)), None)
    if cap is not None and cap.rate > 0 and drawn:
        what = {"server": "knee (base)", "client": "generator's limit"}.get(
            cap.limited_by, "probed capacity"
        )
        ax.axvline(cap.rate, color="grey", linestyle="--", linewidth=1, label=what)
    if drawn:
        ax.set_yscale("log")
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        ax.text(0.5, 0.5, "no load curve measured\n(needs two or more open-loop loads)",
                ha="center", va="center", transform=ax.transAxes)  # fmt: skip
    ax.set_xlabel("achieved rate (requests/s)")
    kind = "half round trip" if workload in ("echo", "sockperf") else "round trip"
    ax.set_ylabel(f"{name} latency (us, {kind}, log)")
    ax.set_title(f"{workload}/{server}: {name} against load")
    ax.grid(True, which="both", alpha=0.3)
