"""``netdevkit monitor``: netdev notifications as they arrive."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..observe.monitor import Event

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

HELP = "print netdev notifications (devices, page pools) as they arrive"
DESCRIPTION = """\
Subscribe to the netdev family's "mgmt" (devices) and "page-pool" multicast
groups and print each notification as it arrives: dev-add-ntf, dev-del-ntf,
dev-change-ntf, page-pool-add-ntf, page-pool-del-ntf, page-pool-change-ntf.
(The kernel sends no notifications for NAPI or queue changes.)

If the kernel had to drop notifications because they came faster than they
were read (ENOBUFS), an "overrun" line says so and a fresh dump of every
device and page pool follows ("resync" lines, closed by "resynced"), so the
output never silently misses a change.

Each device or pool is named by ifindex and, as `ip monitor` does, by its
interface name in that namespace (a device already deleted keeps the name it
was last seen with, or shows only its index).

If the --netns namespace is deleted, a "gone" line says so and monitor lets
go of it (its socket would keep the namespace alive) and waits; when a
namespace of that name exists again, a "back" line and a dump of its devices
and page pools ("resync" lines, then "resynced") follow.

With -j each line is a JSON object: {"time", "event" (notification, overrun,
resync, resynced, gone, back), "name" (for gone and back: the namespace),
"object" (with "ifname" beside "ifindex")}. Stops on Ctrl-C or after --duration.

example:
  netdevkit monitor --netns ns1
  netdevkit monitor -j | jq 'select(.name == "dev-del-ntf")'
"""


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "monitor",
        help=HELP,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--netns", metavar="NAME", help="watch inside network namespace NAME")
    p.add_argument("-j", "--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--duration",
        metavar="SECONDS",
        type=float,
        help="stop after SECONDS (default: run until Ctrl-C)",
    )
    p.set_defaults(func=run)


class Names:
    """ifindex -> interface name in *netns*, as `ip monitor` shows it: looked up when an
    event names the index, remembered, so that a device already gone (dev-del-ntf, a
    pool released after its device) keeps the name it had; None if never seen."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._seen: dict[int, str] = {}

    def __call__(self, ifindex: int, *, gone: bool = False) -> str | None:
        from ..errors import NetdevkitError
        from ..netdev.client import ifname_of

        if not gone:
            # gone already (or its namespace is): the name it was last seen with
            with contextlib.suppress(NetdevkitError, OSError):
                self._seen[ifindex] = ifname_of(ifindex, self.netns)
        return self._seen.get(ifindex)


def event_json(e: Event, names: Names | None = None) -> dict[str, Any]:
    """*e* as the JSON object `monitor -j` prints; with *names*, "ifname" after "ifindex"."""
    import enum

    obj: dict[str, Any] | None = None
    if e.obj is not None:
        obj = {}
        for name, value in e.obj._asdict().items():
            if name == "extra":
                continue
            if isinstance(value, enum.IntFlag):
                from .show import flag_names

                obj[name] = flag_names(value)
            else:
                obj[name] = value
            if name == "ifindex" and names is not None and isinstance(value, int) and value:
                obj["ifname"] = names(value, gone=e.name == "dev-del-ntf")
    return {"time": round(e.time, 6), "event": e.kind, "name": e.name, "object": obj}


def event_line(e: Event, names: Names | None = None) -> str:
    """The human line `netdevkit monitor` prints for *e* (time, event, the object)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(e.time)) + f".{int(e.time * 1000) % 1000:03d}"
    if e.kind == "overrun":
        return f"{stamp} OVERRUN notifications were lost (ENOBUFS): resynchronising"
    if e.kind == "gone":
        return f"{stamp} GONE network namespace {e.name!r} was deleted: waiting for it to come back"
    if e.kind == "back":
        return f"{stamp} BACK network namespace {e.name!r} exists again: resynchronising"
    if e.kind == "resynced":
        return f"{stamp} resynced: the lines above are the current state"
    obj = event_json(e, names)["object"] or {}
    detail = " ".join(
        f"{k}={','.join(v) if isinstance(v, list) else v}"
        for k, v in obj.items()
        if v not in (None, [], False)
    )
    return f"{stamp} {e.name} {detail}"


def run(args: argparse.Namespace) -> int:
    from ..observe.monitor import Monitor

    if args.duration is not None and args.duration <= 0:
        from ..errors import RequestError

        raise RequestError(f"--duration {args.duration}: must be positive")
    deadline = None if args.duration is None else time.monotonic() + args.duration
    names = Names(args.netns)
    with Monitor(args.netns) as mon:
        try:
            while deadline is None or time.monotonic() < deadline:
                timeout = None if deadline is None else max(deadline - time.monotonic(), 0.001)
                for e in mon.events(timeout):
                    if args.json:
                        sys.stdout.write(json.dumps(event_json(e, names)) + "\n")
                    else:
                        sys.stdout.write(event_line(e, names) + "\n")
                    sys.stdout.flush()
                    if deadline is not None and time.monotonic() >= deadline:
                        break
        except KeyboardInterrupt:
            return 0
    return 0
