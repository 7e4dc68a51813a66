"""``netdevkit testbed up|show|down``: the two-namespace veth testbed from the shell.

``up`` builds a testbed and hands it over to its record (it stays up after the command
exits); ``show`` lists the testbeds of this state directory (``$NETDEVKIT_STATE_DIR``,
default ``/run/netdevkit``) with their status; ``down NAME`` removes one and ``down
--all`` every one whose owner is gone: namespaces, the processes still running inside
them, their temporary directories and records.

Only the standard library is imported at top level (start-up time).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

_FMT = argparse.RawDescriptionHelpFormatter

DESCRIPTION = """\
A testbed is two network namespaces, NAME-srv and NAME-cli, joined by one veth
pair (ndk-s in NAME-srv, 10.201.0.1; ndk-c in NAME-cli, 10.201.0.2) whose
traffic goes through NAPI (GRO on, TSO/GSO off): a safe place to try NAPI
settings, busy polling and the bench without touching your own interfaces.

  netdevkit testbed up --name lab --queues 4
  netdevkit napi show --netns lab-srv
  ip netns exec lab-srv sockperf server -i 10.201.0.1 &
  netdevkit testbed down lab

What a testbed owns, and removes when it goes: its namespaces (with the veth),
every process running inside them, its temporary directory
($NETDEVKIT_STATE_DIR/testbeds/NAME.d) and its record
($NETDEVKIT_STATE_DIR/testbeds/NAME.json). A program that built one and was
killed (SIGKILL) leaves it behind: `netdevkit testbed show` lists it as
leftover, `netdevkit testbed down --all` removes it (`netdevkit restore`
mentions it too).
"""


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "testbed",
        help="build, list and remove the two-namespace veth testbed (NAPI test device)",
        description=DESCRIPTION,
        formatter_class=_FMT,
    )
    tsub = p.add_subparsers(dest="testbed_command", metavar="ACTION")
    tsub.required = True

    up = tsub.add_parser(
        "up",
        help="build a testbed that stays up until `testbed down`",
        description="Build a testbed and leave it up after this command exits.\n\n" + DESCRIPTION,
        formatter_class=_FMT,
    )
    up.add_argument("--name", default="ndk", help="testbed name, 1-24 of [a-z0-9-] (ndk)")
    up.add_argument("--queues", type=int, default=1, help="rx/tx queues (NAPIs) per end, 1..1024")
    up.add_argument(
        "--cpus",
        metavar="PLACEMENT",
        help="record a CPU placement, e.g. server=1,client=0,napi=1 (checked against "
        "this machine); programs you start yourself are not pinned",
    )
    up.add_argument("-j", "--json", action="store_true", help="print JSON")
    up.set_defaults(func=run_up)

    show = tsub.add_parser(
        "show",
        help="list the testbeds of this state directory and their status",
        description="List testbeds with the processes still running inside their\n"
        "namespaces. STATUS is running (its owner process, OWNER, uses it and removes\n"
        "it when it ends), kept (made by `testbed up`: no process owns it, it stays\n"
        "up until `testbed down NAME`) or leftover (its owner was killed before\n"
        "removing it: `testbed down --all` removes it).",
        formatter_class=_FMT,
    )
    show.add_argument("name", nargs="?", help="only this testbed")
    show.add_argument("-j", "--json", action="store_true", help="print JSON")
    show.set_defaults(func=run_show)

    down = tsub.add_parser(
        "down",
        help="remove a testbed (NAME) or every leftover/kept one (--all)",
        description="Remove a testbed: end the processes inside its namespaces, remove the\n"
        "namespaces, its temporary directory and its record. A testbed whose owner\n"
        "process still runs (a bench, a test) is refused unless --force.",
        formatter_class=_FMT,
    )
    which = down.add_mutually_exclusive_group(required=True)
    which.add_argument("name", nargs="?", help="the testbed to remove")
    which.add_argument("--all", action="store_true", help="every testbed whose owner is gone")
    down.add_argument("--prefix", help="with --all: only testbeds whose name starts with it")
    down.add_argument("--force", action="store_true", help="also testbeds whose owner runs")
    down.add_argument("-j", "--json", action="store_true", help="print JSON")
    down.set_defaults(func=run_down)


def run_up(args: argparse.Namespace) -> int:
    from ..testbed import CpuPlacement, Testbed, TestbedConfig

    cpus = CpuPlacement.parse(args.cpus) if args.cpus else None
    cfg = TestbedConfig(name=args.name, queues=args.queues, cpus=cpus)
    tb = Testbed(cfg)
    tb.up()
    tb_info = {
        "name": cfg.name,
        "namespaces": [cfg.server_ns, cfg.client_ns],
        "server": {"netns": cfg.server_ns, "ifname": tb.server_if, "addr": cfg.server_addr},
        "client": {"netns": cfg.client_ns, "ifname": tb.client_if, "addr": cfg.client_addr},
        "queues": cfg.queues,
        "tmpdir": tb.tmpdir,
    }
    tb.keep()
    if args.json:
        print(json.dumps(tb_info))
        return 0
    print(
        f"testbed {cfg.name} is up: {cfg.server_ns} ({tb.server_if} {cfg.server_addr}) <-> "
        f"{cfg.client_ns} ({tb.client_if} {cfg.client_addr}), {cfg.queues} queue(s)"
    )
    print(f"remove it with: netdevkit testbed down {cfg.name}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ..testbed.journal import records_dir, testbeds

    found = [t for t in testbeds(args.name) if args.name is None or t.name == args.name]
    if args.json:
        print(json.dumps([t.to_json() for t in found]))
        return 0
    if args.name is not None and not found:
        from ..errors import NotFoundError

        raise NotFoundError(f"no testbed named {args.name!r} in {records_dir()}")
    from .show import print_table

    rows = [
        [
            t.name,
            t.status,
            str(t.owner_pid or "-") if t.status == "running" else "-",
            ", ".join(t.namespaces) or "(none left)",
            str(len(t.processes)),
            t.tmpdir or "-",
        ]
        for t in found
    ]
    cols = ("NAME", "STATUS", "OWNER", "NAMESPACES", "PROCESSES>", "TMPDIR")
    print_table(cols, rows, f"no testbeds in {records_dir()}")
    for status, meaning in STATUS_MEANING.items():
        if any(t.status == status for t in found):
            print(f"{status}: {meaning}", file=sys.stderr)
    return 0


#: what each STATUS of `testbed show` means, said under the table for those it shows
STATUS_MEANING = {
    "running": "its owner process (OWNER) is using it and removes it when it ends",
    "kept": "made by `netdevkit testbed up`, so no process owns it: it stays up "
    "until `netdevkit testbed down NAME` (or `--all`)",
    "leftover": "its owner was killed before removing it: remove with "
    "`netdevkit testbed down --all`",
}


def run_down(args: argparse.Namespace) -> int:
    from ..errors import RequestError
    from ..testbed.journal import down, down_all

    if args.prefix is not None and not args.all:
        raise RequestError("--prefix goes with --all")
    if args.all:
        removed = down_all(args.prefix, include_live=args.force)
    else:
        removed = down(args.name, force=args.force)
    if args.json:
        print(json.dumps({"removed_namespaces": removed}))
    elif removed:
        print(f"removed {', '.join(removed)}")
    else:
        print("nothing to remove")
    return 0
