"""A run on the terminal: the recommendation, the results table, capacities and claims.

Rendered with rich (imported when called). :func:`rich_table` is the table alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .claims import evaluate_claims
from .recommend import recommend
from .results import Results
from .table import HEADERS, capacity_line, cells, rows
from .validity import noise_line, run_warning

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["print_run", "rich_table"]

_LEFT = ("workload/server", "mode", "notes")


def rich_table(res: Results) -> Table:
    """The results as a rich table: medians, [min-max] across repeats when repeated."""
    from rich.table import Table

    table = Table(title="netdevkit bench (CPU in cores; sockperf latency is half round trip)")
    for h in HEADERS:
        table.add_column(h, justify="left" if h in _LEFT else "right")
    for r in rows(res):
        table.add_row(*cells(r))
    return table


def print_run(console: Console, res: Results, target_us: float | None = None) -> None:
    """The recommendation first, what was not measured, the table, capacities, claims."""
    from rich.markup import escape

    recs = recommend(res, target_us)
    target = recs[0].target_us if recs else (target_us or res.config.target_p99_us or 100.0)
    warning = run_warning(res.samples)
    if warning:
        console.print(f"[bold red]{escape(warning)}[/bold red]")
    console.print(f"[bold]Which mode: least server CPU with p99 <= {target:g} us[/bold]")
    for r in recs:
        console.print("  " + escape(r.text))
    if not recs:
        console.print("  no samples in this run")
    for k in res.skipped:
        console.print(f"[yellow]not measured[/yellow] {k.mode} {k.workload}: {escape(k.reason)}")
    console.print()
    console.print(rich_table(res))
    if res.config.ifname:
        console.print(escape(f"where: {res.config.where()}"))
    for cap in res.capacities:
        console.print(escape(capacity_line(cap)))
    if res.noise_floor is not None:
        console.print(escape(noise_line(res.noise_floor)))
    for c in evaluate_claims(res):
        at = f" at {c.load}" if c.load else ""
        console.print(
            f"({c.key}) {c.workload}/{c.server}: [bold]{c.verdict}[/bold]{escape(at)} - "
            + escape(c.evidence)
        )
