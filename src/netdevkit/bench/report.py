"""Write a run's report files: ``tradeoff.png`` and the other plots, then ``report.md``.

The pieces: the verdicts are :mod:`netdevkit.bench.claims` and
:mod:`netdevkit.bench.recommend` (pure), the table :mod:`netdevkit.bench.table` (pure);
the renderers are :mod:`netdevkit.bench.markdown`, :mod:`netdevkit.bench.plots` and, for
the terminal, :mod:`netdevkit.bench.terminal`. Values are medians over rounds;
comparisons are paired per round. Nothing here measures.
"""

from __future__ import annotations

import os

from .markdown import markdown_report
from .results import Results

__all__ = ["write_report"]


def write_report(
    res: Results, outdir: str, target_us: float | None = None
) -> tuple[str, list[str]]:
    """Plots and report.md into *outdir*; returns (report path, plot paths)."""
    from .plots import plot_all, plot_tradeoff

    os.makedirs(outdir, exist_ok=True)
    target = target_us or res.config.target_p99_us or 100.0
    plots = [plot_tradeoff(res, outdir, target), *plot_all(res, outdir)]
    path = os.path.join(outdir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown_report(res, plots, target))
    return path, plots
