"""``netdevkit qstats balance``: how evenly traffic spreads over the queues.

Registered by :mod:`netdevkit.cli.show` under the ``qstats`` word; the
numbers come from :mod:`netdevkit.observe.balance`.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..observe.balance import Balance

SUMMARY = "show how evenly traffic spreads over the queues"
BODY = """\
Count the packets each queue moves over --interval (default 1s) and report,
per interface and queue type:
  QUEUES     how many queues of that type the counters cover
  PKT/S      packets per second over all of them
  CV         coefficient of variation of the per-queue packet rates
             (standard deviation / mean): 0 is a perfectly even spread,
             sqrt(QUEUES - 1) is all traffic on one queue
  BUSIEST    the busiest queue, its packets/s and share of the traffic
  IDLEST     the idlest queue and its packets/s
  SOURCE     "qstats" (the driver's queue statistics, netdev family) or
             "ethtool" (the driver's per-queue ethtool statistics, used where
             it reports no qstats: veth counts the packets its NAPIs poll)
Interfaces with neither source are listed as having no per-queue counters.
In JSON each entry also lists every queue's rate under "queues".

example:
  netdevkit qstats balance --netns ns1 --ifname eth0 --interval 5s
"""


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--interval", default="1s", metavar="DURATION", help="measure over DURATION (default 1s)"
    )


def balance_json(b: Balance) -> dict[str, Any]:
    def q(x: Any) -> dict[str, Any] | None:
        return None if x is None else {"queue": x.queue_id, "packets_per_s": round(x.pps, 3)}

    return {
        "ifindex": b.ifindex,
        "ifname": b.ifname,
        "type": b.queue_type,
        "source": b.source,
        "interval_s": round(b.interval, 6),
        "queues": [q(x) for x in b.queues],
        "packets_per_s": round(b.total_pps, 3),
        "cv": None if b.cv is None else round(b.cv, 4),
        "busiest": q(b.busiest),
        "busiest_share": None if b.busiest_share is None else round(b.busiest_share, 4),
        "idlest": q(b.idlest),
    }


def run(args: argparse.Namespace) -> int:
    from ..observe.balance import balances
    from ..observe.sources import NamespaceReader
    from .show import print_json, print_table, resolve_target
    from .top import parse_interval

    interval = parse_interval(args.interval)
    t = resolve_target(args)
    with NamespaceReader(t.netns, ethtool_queues=True, ifindex=t.ifindex) as reader:
        prev = reader.read()
        time.sleep(interval)
        cur = reader.read()
    found = [b for b in balances(prev, cur) if b.ifname != "lo"]
    if args.json:
        print_json([balance_json(b) for b in found])
        return 0
    rows = [
        [
            b.ifname,
            b.queue_type,
            str(len(b.queues)),
            f"{b.total_pps:.0f}",
            "-" if b.cv is None else f"{b.cv:.2f}",
            "-"
            if b.busiest is None
            else f"{b.queue_type}{b.busiest.queue_id} "
            f"{b.busiest.pps:.0f}/s {100 * (b.busiest_share or 0):.0f}%",
            "-" if b.idlest is None else f"{b.queue_type}{b.idlest.queue_id} {b.idlest.pps:.0f}/s",
            b.source,
        ]
        for b in found
    ]
    columns = ["IFNAME", "TYPE", "QUEUES>", "PKT/S>", "CV>", "BUSIEST", "IDLEST", "SOURCE"]
    print_table(columns, rows, "no per-queue counters here")
    for ifname in sorted({b.ifname for b in found if b.source == "ethtool"}):
        print(
            f"{ifname}: the driver reports no queue statistics (qstats); the per-queue "
            "counters above are its ethtool statistics"
        )
    covered = {b.ifindex for b in found}
    for ifindex, link in sorted(cur.links.items()):
        if link.ifname == "lo" or ifindex in covered:
            continue
        if t.ifindex is not None and ifindex != t.ifindex:
            continue
        print(
            f"{link.ifname}: no per-queue counters (the driver reports neither queue "
            "statistics nor per-queue ethtool statistics)"
        )
    if rows and all(b.cv is None for b in found):
        print(f"no packets moved during the {interval:g}s interval: nothing to judge")
    for err in cur.errors:
        print(f"netdevkit: warning: {err}", file=sys.stderr)
    return 0
