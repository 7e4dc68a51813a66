"""``netdevkit top``: per-queue and per-NAPI activity, refreshed in place.

The numbers come from :mod:`netdevkit.observe` (sources, rates, top); this
module draws them with rich and reads the sort/pause keys from a terminal.
At top level it imports the standard library only (start-up time).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..observe.rates import Rates
    from ..observe.top import Sample

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

HELP = "live per-queue and per-NAPI rates, settings and busy-poll activity"
DESCRIPTION = """\
A live view of one network namespace, refreshed in place every --interval:

  INTERFACES  packets/s and bytes/s in and out, drops/s and allocation
              failures/s. SOURCE says where the numbers come from: "qstats"
              (the driver's queue statistics, netdev family) or "link"
              (rtnetlink link counters, for drivers without qstats, e.g. veth).
  QUEUES      the same per queue: from qstats, or from the driver's ethtool
              statistics ("ethtool": veth counts the packets each queue's NAPI
              polls). Drivers with neither have no queue rows.
  NAPIS       per-NAPI settings (DEFER = napi_defer_hard_irqs, GRO-FLUSH,
              IRQ-SUSPEND, THREADED) and, for threaded NAPIs, the kthread's
              CPU use in % of one core.
  PAGE POOLS  pages in flight and the Device Memory TCP dmabuf binding.
  BUSY POLL   packets/s delivered by busy polling (TcpExt BusyPollRxPackets)
              and their share of all received packets; the busy_poll and
              busy_read sysctls; softirq time squeezes/s per CPU
              (softnet_stat); epoll contexts `netdevkit attach` configured
              in processes of this namespace.

With --ifname, INTERFACES, QUEUES, NAPIS and PAGE POOLS show that interface
only; the busy-poll figures stay those of the whole namespace.

Rows are sorted by rate, largest first. Keys (on a terminal): p packets/s,
b bytes/s, d drops/s, n name, space pauses/resumes, q quits. When stdout is
not a terminal, one view is printed after the other.
--once prints one sample taken over one interval and exits; -j prints JSON
(with --once one object, otherwise one object per line and interval).
An interface or namespace that vanishes is reported in the view, which keeps
running (and picks the namespace up again if it comes back).

example:
  netdevkit top --netns ns1
  netdevkit top --netns ns1 --ifname eth0 --once -j | jq '.queues'
"""

_QUEUE_ROWS = 16
_NAPI_ROWS = 8


def register(sub: SubParsers) -> None:
    from .show import add_target_options

    p = sub.add_parser(
        "top",
        help=HELP,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_options(p, json_option=False)
    p.add_argument(
        "--interval", default="1s", metavar="DURATION", help="refresh every DURATION (default 1s)"
    )
    p.add_argument("--once", action="store_true", help="one sample over one interval, then exit")
    p.add_argument("-j", "--json", action="store_true", help="JSON instead of the live view")
    p.set_defaults(func=run)


def parse_interval(text: str) -> float:
    """``"1s"``/``"500ms"``/``"2"`` (seconds) -> seconds; at least 10 ms."""
    from ..errors import RequestError
    from ..units import parse_duration_ns

    seconds = parse_duration_ns(text, default_unit="s") / 1e9
    if seconds < 0.01:
        raise RequestError(f"--interval {text}: must be at least 10ms")
    return seconds


def run(args: argparse.Namespace) -> int:
    from ..observe.sources import NamespaceReader
    from .show import resolve_target

    interval = parse_interval(args.interval)
    target = resolve_target(args)
    reader = NamespaceReader(target.netns, ethtool_queues=True, ifindex=target.ifindex)
    with reader:
        reader.open()
        if args.once:
            from ..observe.top import once, rates_json

            sample = once(reader, interval)
            if args.json:
                sys.stdout.write(json.dumps(rates_json(sample)) + "\n")
            else:
                from rich.console import Console

                Console(highlight=False).print(render(sample, "packets", False), soft_wrap=True)
            return 0
        if args.json:
            return _json_lines(reader, interval)
        if not sys.stdout.isatty():
            return _printed(reader, interval)
        return _live(reader, interval)


class _Samples:
    """The samples of a namespace that may vanish and come back (docs/observe.md): each
    :meth:`next` is a sample, or a line saying the namespace is gone (once, when it went)
    or back (once, when a namespace of that name exists again), or None while it stays gone.
    The reader lets go of a deleted namespace at once (see ``NamespaceReader.read``)."""

    def __init__(self, reader: Any) -> None:
        from ..observe.top import Sampler

        self.netns: str | None = reader.netns
        self.sampler = Sampler(reader)
        self.sampler.first()
        self.gone = False

    def next(self) -> Sample | str | None:
        from ..errors import NamespaceGone

        try:
            if not self.gone:
                return self.sampler.next()
            self.sampler.first()  # back: rates again from the next interval on
        except NamespaceGone as err:
            if self.gone:
                return None
            self.gone = True
            self.sampler.reset()
            return f"{err}: waiting for it to come back"
        self.gone = False
        return f"network namespace {self.netns!r} exists again: reopened it"


def _json_lines(reader: Any, interval: float) -> int:
    from ..observe.top import rates_json

    samples = _Samples(reader)
    try:
        while True:
            time.sleep(interval)
            got = samples.next()
            if isinstance(got, str):
                line = {"netns": samples.netns, "netns_gone": samples.gone, "message": got}
                sys.stdout.write(json.dumps(line) + "\n")
            elif got is not None:
                sys.stdout.write(json.dumps(rates_json(got)) + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 0


def _printed(reader: Any, interval: float) -> int:
    """Not on a terminal: one view per interval, one after the other."""
    from rich.console import Console

    console = Console(highlight=False)
    samples = _Samples(reader)
    try:
        while True:
            time.sleep(interval)
            got = samples.next()
            if isinstance(got, str):
                console.print(got, style="bold red", soft_wrap=True)
            elif got is not None:
                console.print(render(got, "packets", False), soft_wrap=True)
                console.print()
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 0


@contextmanager
def _cbreak() -> Iterator[bool]:
    """Single-key input from a terminal stdin; False (no keys) otherwise."""
    if not sys.stdin.isatty():
        yield False
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _wait_key(keys: bool, timeout: float) -> str | None:
    """A key pressed within *timeout* s (sleeps the whole time without keys)."""
    if not keys:
        time.sleep(timeout)
        return None
    ready, _, _ = select.select([sys.stdin], [], [], max(timeout, 0.0))
    return os.read(sys.stdin.fileno(), 1).decode(errors="replace") if ready else None


def _live(reader: Any, interval: float) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from ..observe.top import SORT_KEYS

    samples = _Samples(reader)
    sort, paused = "packets", False
    last: Any = Text("first sample in progress ...")
    console = Console(highlight=False)
    with _cbreak() as keys, Live(last, console=console, auto_refresh=False) as live:
        deadline = time.monotonic() + interval
        while True:
            key = _wait_key(keys, deadline - time.monotonic())
            if key is not None:
                if key in ("q", "Q"):
                    return 0
                if key == " ":
                    paused = not paused
                elif key in SORT_KEYS:
                    sort = SORT_KEYS[key][0]
                live.update(
                    last if isinstance(last, Text) else render(last, sort, paused), refresh=True
                )
                continue
            deadline = time.monotonic() + interval
            if paused:
                continue
            got = samples.next()
            if got is None:
                continue  # still gone: the line saying so stays
            if isinstance(got, str):
                last = Text(got + (" (q quits)" if samples.gone else ""), style="bold red")
                live.update(last, refresh=True)
                continue
            last = got
            live.update(render(last, sort, paused), refresh=True)


# -- drawing --------------------------------------------------------------------------


def _n(v: float | None) -> str:
    if v is None:
        return "-"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.1f}{unit}"
    return f"{v:.0f}" if v >= 10 or v == 0 else f"{v:.1f}"


def _header(r: Rates, sort: str, paused: bool) -> str:
    where = f"netns {r.netns}" if r.netns else "this namespace"
    bp = r.sysctls
    share = "-" if r.busy_poll_share is None else f"{100 * r.busy_poll_share:.0f}%"
    squeeze = " ".join(f"cpu{s.cpu}:{_n(s.time_squeeze_ps)}" for s in r.softnet)
    state = "PAUSED  " if paused else ""
    return (
        f"{state}{where}  every {r.interval:.2f}s  sorted by {sort}  "
        f"[p]ackets [b]ytes [d]rops [n]ame [space] pause [q]uit\n"
        f"busy poll: {_n(r.busy_poll_rx_pps)} pkt/s ({share} of rx)  "
        f"net.core.busy_poll={bp.get('net.core.busy_poll', '-')}us "
        f"busy_read={bp.get('net.core.busy_read', '-')}us  "
        f"epoll contexts attached: {sum(e.alive for e in r.epolls)}  "
        f"time squeeze/s: {squeeze or '-'}"
    )


def _rows(
    title: str, head: Sequence[str], widths: Sequence[int], rows: list[list[str]]
) -> list[str]:
    """Fixed-width lines (negative width: left-aligned): cheap to draw every second."""

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c[: abs(w)].ljust(-w) if w < 0 else c[:w].rjust(w)
            for c, w in zip(cells, widths, strict=True)
        )

    return [title, line(head), *(line(r) for r in rows), ""]


def _more(total: int, shown: int) -> str:
    return f" (top {shown} of {total})" if total > shown else ""


def _links_section(r: Rates, sort: str) -> list[str]:
    from ..observe.top import sorted_links

    return _rows(
        "INTERFACES",
        ["IFNAME", "SOURCE", "RX PKT/S", "TX PKT/S", "RX B/S", "TX B/S", "DROP/S", "ALLOCFAIL/S"],
        [-15, -7, 9, 9, 9, 9, 8, 11],
        [
            [
                x.ifname,
                x.source,
                _n(x.rx_pps),
                _n(x.tx_pps),
                _n(x.rx_bps),
                _n(x.tx_bps),
                _n(x.drops_ps),
                _n(x.alloc_fail_ps),
            ]
            for x in sorted_links(r.links, sort)
        ],
    )


def _queues_section(r: Rates, sort: str) -> list[str]:
    from ..observe.top import sorted_queues

    return _rows(
        f"QUEUES{_more(len(r.queues), _QUEUE_ROWS)}",
        ["IFNAME", "TYPE", "QUEUE", "SOURCE", "PKT/S", "B/S", "DROP/S", "ALLOCFAIL/S"],
        [-15, -4, 5, -7, 9, 9, 8, 11],
        [
            [
                q.ifname,
                q.queue_type,
                str(q.queue_id),
                q.source,
                _n(q.pps),
                _n(q.bps),
                _n(q.drops_ps),
                _n(q.alloc_fail_ps),
            ]
            for q in sorted_queues(r.queues, sort, _QUEUE_ROWS)
        ],
    )


def _napis_section(r: Rates) -> list[str]:
    from ..observe.top import sorted_napis
    from ..units import format_duration_ns
    from .show import enum_name

    return _rows(
        f"NAPIS{_more(len(r.napis), _NAPI_ROWS)}",
        ["IFNAME", "NAPI", "DEFER", "GRO-FLUSH", "IRQ-SUSPEND", "THREADED", "PID", "CPU%"],
        [-15, 7, 6, 9, 11, -9, 7, 6],
        [
            [
                n.ifname,
                str(n.napi.id),
                _s(n.napi.defer_hard_irqs),
                format_duration_ns(n.napi.gro_flush_timeout),
                format_duration_ns(n.napi.irq_suspend_timeout),
                enum_name(n.napi.threaded) or "-",
                _s(n.napi.pid),
                "-" if n.kthread_cpu is None else f"{100 * n.kthread_cpu:.1f}",
            ]
            for n in sorted_napis(r.napis, _NAPI_ROWS)
        ],
    )


def _pools_section(r: Rates) -> list[str]:
    return _rows(
        f"PAGE POOLS ({len(r.pools)})",
        ["ID", "IFINDEX", "NAPI", "INFLIGHT", "INFLIGHT-MEM", "DMABUF"],
        [7, 7, 7, 9, 12, 7],
        [
            [
                str(p.id),
                _s(p.ifindex),
                _s(p.napi_id),
                _s(p.inflight),
                _s(p.inflight_mem),
                _s(p.dmabuf),
            ]
            for p in r.pools[:_NAPI_ROWS]
        ],
    )


def render(sample: Sample, sort: str, paused: bool) -> Any:
    """The rich renderable of one sample: one Text, bold section titles.

    Plain fixed-width lines instead of rich tables: at a 1 s refresh the
    tables alone cost more CPU than reading the kernel.
    """
    from rich.text import Text

    r = sample.rates
    lines: list[str] = [*_header(r, sort, paused).split("\n"), ""]
    lines += _links_section(r, sort)
    if r.queues:
        lines += _queues_section(r, sort)
    if r.napis:
        lines += _napis_section(r)
    if r.pools:
        lines += _pools_section(r)
    text = Text("\n".join(lines))
    for title in ("INTERFACES", "QUEUES", "NAPIS", "PAGE POOLS"):
        text.highlight_regex(rf"(?m)^{title}.*$", "bold")
    if sample.target_gone:
        text.append("\nthe interface asked for is gone", style="bold red")
    for e in r.errors:
        text.append(f"\n{e}", style="red")
    for note in r.notes:
        text.append(f"\n{note}", style="yellow")
    return text


def _s(value: object) -> str:
    return "-" if value is None else str(value)
