"""``netdevkit doctor``: readiness report for the 2024 features on this machine.

Exit status 0 even when lines say MISSING (it is a report); 1 when the
interface or the network namespace does not exist.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..doctor import Check

HELP = "readiness report: kernel, config, netdev family, NAPIs, busy poll, devmem"
DESCRIPTION = """\
Check, line by line, whether this kernel and (with --ifname) this interface are
ready for per-NAPI tuning, epoll busy polling, IRQ suspension, queue statistics
and Device Memory TCP. Each line is OK, WARN or MISSING and says what to do.
Nothing is changed. Exit status is 0 even with MISSING lines; 1 when the
interface or the namespace does not exist.
"""

_STYLE = {"OK": "green", "WARN": "yellow", "MISSING": "bold red"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor",
        help=HELP,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-i", "--ifname", help="also check this interface")
    p.add_argument("--netns", help="the interface lives in this named network namespace")
    p.add_argument("-j", "--json", action="store_true", help="JSON: the checks and a summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..doctor import report, run_checks

    checks = run_checks(ifname=args.ifname, netns=args.netns)
    if args.json:
        json.dump(report(checks, args.ifname, args.netns), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _render(checks, args.ifname, args.netns)
    return 0


def _render(checks: list[Check], ifname: str | None, netns: str | None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..doctor import summary

    where = ""
    if ifname:
        where = f" for {ifname}" + (f" in netns {netns}" if netns else "")
    table = Table(title=f"netdevkit doctor{where}", box=box.SIMPLE_HEAD, show_lines=False)
    table.add_column("feature", style="bold", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail / what to do")
    previous = None
    for c in checks:
        if previous is not None and c.feature != previous:
            table.add_section()
        text = Text(c.detail)
        if c.remedy:
            text.append("\n-> " + c.remedy, style="cyan")
        status = Text(c.status.value, style=_STYLE[c.status.value])
        table.add_row(c.feature if c.feature != previous else "", c.name, status, text)
        previous = c.feature
    console = Console()
    console.print(table)
    counts = summary(checks)
    console.print(
        f"{counts['OK']} OK, {counts['WARN']} WARN, {counts['MISSING']} MISSING",
        highlight=False,
    )
