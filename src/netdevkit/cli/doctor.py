"""``netdevkit doctor``: readiness report for the 2024 features on this machine.

Exit status 0 even when lines say MISSING (it is a report); 1 when the
interface or the network namespace does not exist.
"""

from __future__ import annotations

import argparse
import json
import os
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
    elif sys.stdout.isatty():
        _render(checks, args.ifname, args.netns)
    else:  # a file, a pipe, less: every word kept, lines wrapped at spaces
        sys.stdout.write("".join(line + "\n" for line in plain_report(checks, _title(args))))
    return 0


def _title(args: argparse.Namespace) -> str:
    where = ""
    if args.ifname:
        where = f" for {args.ifname}" + (f" in netns {args.netns}" if args.netns else "")
    return f"netdevkit doctor{where}"


def _plain_width() -> int:
    """$COLUMNS, else 100: the report's width when stdout is not a terminal."""
    try:
        return max(int(os.environ.get("COLUMNS", "")), 40)
    except ValueError:
        return 100


def plain_report(checks: list[Check], title: str, width: int | None = None) -> list[str]:
    """The report as plain lines, for a file or a pipe: no word is ever cut or elided.

    The table's columns with the detail (and "-> what to do") wrapped at spaces to *width*
    under its column; when that would leave it fewer than 30 columns, each feature is a
    heading and each detail wraps under its check, indented. A word longer than the room
    left stays whole on a line of its own.
    """
    from ..doctor import summary

    width = width or _plain_width()
    fw = max(len("feature"), *(len(c.feature) for c in checks))
    nw = max(len("check"), *(len(c.name) for c in checks))
    column = fw + nw + len("MISSING") + 9
    inline = width - column >= 30
    lines = [title, ""]
    if inline:
        lines.append(f"{'feature':<{fw}}   {'check':<{nw}}   {'status':<7}   detail / what to do")
        lines.append("\u2500" * width)
    previous = None
    for c in checks:
        if c.feature != previous:
            lines += [""] if previous is not None else []
            lines += [] if inline else [c.feature]
        wrapped = _wrapped(c, width - column if inline else width - 4)
        if inline:
            feature = c.feature if c.feature != previous else ""
            first = f"{feature:<{fw}}   {c.name:<{nw}}   {c.status.value:<7}   "
            lines.append((first + (wrapped.pop(0) if wrapped else "")).rstrip())
        else:
            lines.append(f"  {c.name:<{nw}}   {c.status.value}")
        lines += [" " * (column if inline else 4) + w for w in wrapped]
        previous = c.feature
    counts = summary(checks)
    lines += ["", f"{counts['OK']} OK, {counts['WARN']} WARN, {counts['MISSING']} MISSING"]
    return lines


def _wrapped(c: Check, room: int) -> list[str]:
    import textwrap

    out: list[str] = []
    for text in (c.detail, "-> " + c.remedy if c.remedy else ""):
        out += textwrap.wrap(text, room, break_long_words=False, break_on_hyphens=False)
    return out


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
    table.add_column("detail / what to do", overflow="fold")  # a long word folds, never "…"
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
