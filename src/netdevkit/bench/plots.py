"""The trade-off picture: latency against server CPU, one point per mode and load.

``tradeoff.png`` has one row per (workload, server): p50 against server CPU on
the left, p99 against server CPU on the right (log latency). Each mode has a
colour, each load of the sweep a marker size (larger is more load); the p99
target is a dashed line, and at each load the mode the recommendation picks
(the cheapest meeting the target) is ringed in black. A point further left is
cheaper, further down is faster: the modes worth having form the lower-left
edge.

Pure apart from writing the PNG (matplotlib's Agg backend, no display).
"""

from __future__ import annotations

import os

from .paired import cpu, loads_of, median_of, p50, p99, targets
from .recommend import recommend
from .results import PING_PONG, Results

__all__ = ["plot_tradeoff"]


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
