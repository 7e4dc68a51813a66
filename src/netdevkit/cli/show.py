"""``netdevkit {dev,queue,napi,qstats,page-pool} show``: what the netdev family knows.

Each object word is a parser of its own with actions below it::

    netdevkit dev show        netdevkit napi show       netdevkit page-pool show
    netdevkit queue show      netdevkit qstats show     netdevkit page-pool stats

Every ``show`` prints a table (:mod:`netdevkit.cli.table`) or, with
``-j/--json``, a JSON array with stable snake_case keys, enums as lowercase
names and durations as integer nanoseconds. ``--ifname``/``--ifindex`` filter
on one interface, ``--netns`` looks inside a named network namespace.

Adding actions from another module (as ``napi set`` does)
---------------------------------------------------------
Call :func:`napi_subparsers` (or :func:`object_subparsers` for any other object
word) from your module's registering function and add your parser to what it
returns::

    def register_napi(sub):
        p = napi_subparsers(sub).add_parser("set", help="change NAPI settings", ...)
        add_target_options(p)
        p.set_defaults(func=run_set)

Whichever function runs first creates the ``napi`` parser; list yours for the
word in :data:`netdevkit.cli.main.COMMANDS` (after this module's, so ``show``
comes first in the word's help).
:func:`add_target_options` gives the same ``--netns/--ifname/--ifindex``
options and :func:`resolve_target` turns them into a :class:`Target` with the
same one-line errors. The JSON rows are built by the ``*_json`` functions here,
so ``napi diff`` can compare with what ``napi show -j`` prints.

Start-up time matters (a person waits for ``netdevkit napi show``): at
top level this module imports the standard library only; the netdev client is
imported by the command that runs, rich only by the table printer.
"""

from __future__ import annotations

import argparse
import enum
import errno
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from .argtypes import int_at_least

# re-exported: attach, balance and testbed import it from here
from .table import print_table as print_table  # noqa: PLC0414

if TYPE_CHECKING:
    from ..netdev.client import (
        Dev,
        Lease,
        Napi,
        Netdev,
        PagePool,
        PagePoolStats,
        QStats,
        Queue,
    )

    #: what ``parser.add_subparsers()`` returns
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
JsonRow = dict[str, Any]

_ACTIONS_ATTR = "_netdevkit_actions"
#: up to this many devices with NAPIs, ``napi show`` dumps their queues one by one
_FILTERED_QUEUE_DUMPS = 4
_FMT = argparse.RawDescriptionHelpFormatter

#: object word -> description of the word's parser (its one-line help is in main.COMMANDS)
OBJECTS: dict[str, str] = {
    "dev": "Network devices as the netdev family sees them: XDP and AF_XDP features.",
    "queue": "RX and TX queues of network devices, and the NAPI instance that serves each.",
    "napi": "NAPI instances (the kernel's per-queue polling contexts), their queues, IRQ,\n"
    "kthread and the per-NAPI settings that control IRQ deferral and suspension.",
    "qstats": "Queue statistics the driver reports through the netdev family (Linux 6.10+).",
    "page-pool": "Page pools (the per-queue page allocators of drivers) and their statistics.",
}

_COMMON_HELP = """
common options:
  -j/--json prints a JSON array (one object per row, stable snake_case keys,
  enums as lowercase names, durations as integer nanoseconds, "ifname" next to
  every "ifindex"). --ifname/--ifindex keep one interface; --netns NAME looks
  inside network namespace NAME (see `ip netns list`). Reading needs no
  privileges, but entering a namespace needs root.
"""

# -- parser plumbing shared with other CLI modules ------------------------------


def object_subparsers(sub: SubParsers, word: str) -> SubParsers:
    """The actions of object parser *word* (``napi`` ...), creating it on first use.

    The action holder is kept on the parser object itself, so two parsers built
    in one process (tests do that) never share state.
    """
    parser = sub.choices.get(word)
    if parser is None:
        from .main import COMMANDS

        help_, _registrars = COMMANDS[word]
        parser = sub.add_parser(word, help=help_, description=OBJECTS[word], formatter_class=_FMT)
        actions = parser.add_subparsers(dest="action", metavar="ACTION")
        actions.required = True
        setattr(parser, _ACTIONS_ATTR, actions)
    found: SubParsers | None = getattr(parser, _ACTIONS_ATTR, None)
    if found is None:
        raise RuntimeError(f"parser {word!r} was not created by object_subparsers()")
    return found


def napi_subparsers(sub: SubParsers) -> SubParsers:
    """The actions of ``netdevkit napi``; add ``set``, ``diff`` ... here."""
    return object_subparsers(sub, "napi")


def add_target_options(parser: argparse.ArgumentParser, *, json_option: bool = True) -> None:
    """``--netns``, mutually exclusive ``--ifname``/``--ifindex`` and (optionally) ``-j``."""
    parser.add_argument(
        "--netns", metavar="NAME", help="look inside network namespace NAME (see `ip netns list`)"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--ifname", metavar="NAME", help="only interface NAME")
    which.add_argument("--ifindex", metavar="N", type=int_at_least(1), help="only ifindex N")
    if json_option:
        parser.add_argument(
            "-j", "--json", action="store_true", help="print a JSON array instead of a table"
        )


class Target(NamedTuple):
    """Where a command looks: namespace, optional interface, and interface names."""

    netns: str | None
    #: the one interface asked for, or None for all
    ifindex: int | None
    #: ifindex -> name of every interface in the namespace
    names: Mapping[int, str]

    def ifname(self, ifindex: int | None) -> str | None:
        return None if ifindex is None else self.names.get(ifindex)

    def label(self, ifindex: int | None) -> str:
        """The interface's name for a table, its index if it has none here."""
        if ifindex is None:
            return "-"
        return self.names.get(ifindex) or f"#{ifindex}"


def resolve_target(args: argparse.Namespace) -> Target:
    """Check ``--netns``/``--ifname``/``--ifindex`` against the system.

    Raises :class:`~netdevkit.errors.NotFoundError` (a one-line message) for a
    namespace, interface name or ifindex that does not exist.
    """
    from ..errors import NotFoundError
    from ..netdev.client import ifnames

    netns: str | None = getattr(args, "netns", None)
    names = ifnames(netns)
    where = f" in network namespace {netns!r}" if netns else ""
    ifindex: int | None = getattr(args, "ifindex", None)
    ifname: str | None = getattr(args, "ifname", None)
    if ifname is not None:
        matches = [i for i, n in names.items() if n == ifname]
        if not matches:
            raise NotFoundError(f"no interface named {ifname!r}{where}")
        ifindex = matches[0]
    elif ifindex is not None and ifindex not in names:
        raise NotFoundError(f"no interface with ifindex {ifindex}{where}")
    return Target(netns, ifindex, names)


# -- JSON rows ------------------------------------------------------------------


def threaded_name(value: enum.Enum | int | None) -> str | None:
    """The kernel's name of a NAPI threading mode: disabled, enabled, busy-poll."""
    name = enum_name(value)
    return None if name is None else name.replace("_", "-")


def enum_name(value: enum.Enum | int | None) -> str | None:
    """``QueueType.RX`` -> ``"rx"``; a value no member names (newer kernel) -> ``"7"``."""
    if value is None:
        return None
    if isinstance(value, enum.Enum) and value.name is not None:
        return value.name.lower()
    return str(int(value))


def flag_names(value: enum.IntFlag) -> list[str]:
    """Set bits as lowercase member names; unknown bits as one hex string."""
    names = [m.name.lower() for m in type(value) if m.name and m in value]
    known = 0
    for m in type(value):
        known |= m.value
    if rest := int(value) & ~known:
        names.append(hex(rest))
    return names


def _snake(name: str) -> str:
    return name.replace("-", "_")


def dev_json(d: Dev, t: Target) -> JsonRow:
    return {
        "ifindex": d.ifindex,
        "ifname": t.ifname(d.ifindex),
        "xdp_features": flag_names(d.xdp_features),
        "xdp_zc_max_segs": d.xdp_zc_max_segs,
        "xdp_rx_metadata_features": flag_names(d.xdp_rx_metadata_features),
        "xsk_features": flag_names(d.xsk_features),
    }


def queue_json(q: Queue, t: Target) -> JsonRow:
    return {
        "ifindex": q.ifindex,
        "ifname": t.ifname(q.ifindex),
        "type": enum_name(q.type),
        "id": q.id,
        "napi_id": q.napi_id,
        "dmabuf": q.dmabuf,
        "io_uring": q.io_uring,
        "xsk": q.xsk,
        "lease": None if q.lease is None else lease_json(q.lease, t),
    }


def lease_json(lease: Lease, t: Target) -> JsonRow:
    same_ns = lease.netns_id is None
    return {
        "ifindex": lease.ifindex,
        "ifname": t.ifname(lease.ifindex) if same_ns else None,
        "type": enum_name(lease.queue_type),
        "id": lease.queue_id,
        "netns_id": lease.netns_id,
    }


def lease_text(lease: Lease, t: Target) -> str:
    """``lease eth0/rx3`` (``lease if5/rx3@nsid1`` for a device in another namespace)."""
    where = t.label(lease.ifindex) if lease.netns_id is None else f"if{lease.ifindex}"
    ns = "" if lease.netns_id is None else f"@nsid{lease.netns_id}"
    return f"lease {where}/{enum_name(lease.queue_type) or '?'}{_s(lease.queue_id)}{ns}"


def queues_by_napi(queues: Iterable[Queue]) -> dict[int, list[Queue]]:
    """NAPI id -> the queues whose ``napi_id`` is that id, rx before tx, by id.

    Only the kernel's own links count: drivers that do not report a queue's
    NAPI (veth on 6.18) leave their NAPIs without queues here.
    """
    out: dict[int, list[Queue]] = {}
    for q in sorted(queues, key=lambda q: (q.type, q.id)):
        if q.napi_id is not None:
            out.setdefault(q.napi_id, []).append(q)
    return out


def napi_json(n: Napi, t: Target, queues: Sequence[Queue] = ()) -> JsonRow:
    return {
        "ifindex": n.ifindex,
        "ifname": t.ifname(n.ifindex),
        "id": n.id,
        "queues": [{"type": enum_name(q.type), "id": q.id} for q in queues],
        "irq": n.irq,
        "pid": n.pid,
        "defer_hard_irqs": n.defer_hard_irqs,
        "gro_flush_timeout": n.gro_flush_timeout,
        "irq_suspend_timeout": n.irq_suspend_timeout,
        "threaded": threaded_name(n.threaded),
    }


def qstats_json(s: QStats, t: Target) -> JsonRow:
    return {
        "ifindex": s.ifindex,
        "ifname": t.ifname(s.ifindex),
        "queue_type": enum_name(s.queue_type),
        "queue_id": s.queue_id,
        "counters": {_snake(k): v for k, v in s.counters.items()},
    }


def page_pool_json(p: PagePool, t: Target) -> JsonRow:
    return {
        "id": p.id,
        "ifindex": p.ifindex,
        "ifname": t.ifname(p.ifindex),
        "napi_id": p.napi_id,
        "inflight": p.inflight,
        "inflight_mem": p.inflight_mem,
        "detach_time": p.detach_time,
        "dmabuf": p.dmabuf,
        "io_uring": p.io_uring,
    }


def page_pool_stats_json(s: PagePoolStats, t: Target) -> JsonRow:
    return {
        "id": s.id,
        "ifindex": s.ifindex,
        "ifname": t.ifname(s.ifindex),
        "counters": {_snake(k): v for k, v in s.counters.items()},
    }


# -- output ---------------------------------------------------------------------


def print_json(rows: list[JsonRow]) -> None:
    """One JSON array on one line (the C encoder: fast for thousands of rows)."""
    sys.stdout.write(json.dumps(rows) + "\n")


def _s(value: object) -> str:
    return "-" if value is None else str(value)


def _where(t: Target) -> str:
    scope = f"network namespace {t.netns!r}" if t.netns else "this network namespace"
    if t.ifindex is not None:
        return f"{t.label(t.ifindex)} in {scope}"
    return scope


def _open(t: Target) -> Netdev:
    from ..netdev.client import Netdev

    return Netdev.open(t.netns)


# -- commands -------------------------------------------------------------------


def run_dev_show(args: argparse.Namespace) -> int:
    t = resolve_target(args)
    with _open(t) as nd:
        devs = [nd.dev_get(t.ifindex)] if t.ifindex is not None else nd.dev_dump()
    devs.sort(key=lambda d: d.ifindex)
    if args.json:
        print_json([dev_json(d, t) for d in devs])
        return 0
    rows = [
        [
            str(d.ifindex),
            t.label(d.ifindex),
            " ".join(flag_names(d.xdp_features)) or "-",
            _s(d.xdp_zc_max_segs),
            " ".join(flag_names(d.xdp_rx_metadata_features)) or "-",
            " ".join(flag_names(d.xsk_features)) or "-",
        ]
        for d in devs
    ]
    columns = ["IFINDEX>", "IFNAME", "XDP", "XDP-ZC-SEGS>", "XDP-RX-METADATA", "XSK"]
    print_table(columns, rows, f"no network devices in {_where(t)}")
    return 0


def run_queue_show(args: argparse.Namespace) -> int:
    t = resolve_target(args)
    with _open(t) as nd:
        queues = nd.queue_dump(t.ifindex)
    queues.sort(key=lambda q: (q.ifindex, q.type, q.id))
    if args.json:
        print_json([queue_json(q, t) for q in queues])
        return 0
    rows = []
    for q in queues:
        extras = [name for name, on in (("io-uring", q.io_uring), ("xsk", q.xsk)) if on]
        if q.lease is not None:
            extras.append(lease_text(q.lease, t))
        rows.append(
            [
                t.label(q.ifindex),
                enum_name(q.type) or "-",
                str(q.id),
                _s(q.napi_id),
                _s(q.dmabuf),
                " ".join(extras) or "-",
            ]
        )
    columns = ["IFNAME", "TYPE", "QUEUE>", "NAPI>", "DMABUF>", "BOUND"]
    print_table(columns, rows, f"no queues in {_where(t)}")
    return 0


def _queues_of(nd: Netdev, ifindexes: set[int]) -> list[Queue]:
    """The queues of the devices that have NAPIs: the only ones a NAPI can list.

    A few devices: one filtered dump each, which skips the queues of the
    others (a namespace with a 1024-queue veth pair halves the work). Many: one
    dump of all. A device that vanished in between (ENODEV) has no queues.
    """
    from ..errors import KernelError

    if len(ifindexes) > _FILTERED_QUEUE_DUMPS:
        return nd.queue_dump()
    out: list[Queue] = []
    for ifindex in sorted(ifindexes):
        try:
            out += nd.queue_dump(ifindex)
        except KernelError as err:
            if err.errno != errno.ENODEV:
                raise
    return out


def run_napi_show(args: argparse.Namespace) -> int:
    from ..units import format_duration_ns

    t = resolve_target(args)
    with _open(t) as nd:
        napis = nd.napi_dump(t.ifindex)
        queues = queues_by_napi(_queues_of(nd, {n.ifindex for n in napis}))
    napis.sort(key=lambda n: (n.ifindex, n.id))
    if args.json:
        print_json([napi_json(n, t, queues.get(n.id, ())) for n in napis])
        return 0
    rows = [
        [
            t.label(n.ifindex),
            str(n.id),
            " ".join(f"{enum_name(q.type)}{q.id}" for q in queues.get(n.id, ())) or "-",
            _s(n.irq),
            _s(n.pid),
            _s(n.defer_hard_irqs),
            format_duration_ns(n.gro_flush_timeout),
            format_duration_ns(n.irq_suspend_timeout),
            threaded_name(n.threaded) or "-",
        ]
        for n in napis
    ]
    columns = [
        "IFNAME",
        "NAPI>",
        "QUEUES",
        "IRQ>",
        "PID>",
        "DEFER>",
        "GRO-FLUSH>",
        "IRQ-SUSPEND>",
        "THREADED",
    ]
    print_table(
        columns,
        rows,
        f"no NAPI instances in {_where(t)} (devices that are down, or veth without GRO, have none)",
    )
    return 0


def run_qstats_show(args: argparse.Namespace) -> int:
    from ..netdev.family import QSTATS_COUNTERS

    t = resolve_target(args)
    with _open(t) as nd:
        stats = nd.qstats_dump(t.ifindex, per_queue=args.per_queue)
    stats.sort(
        key=lambda s: (
            s.ifindex,
            -1 if s.queue_type is None else s.queue_type,
            -1 if s.queue_id is None else s.queue_id,
        )
    )
    if args.json:
        print_json([qstats_json(s, t) for s in stats])
        return 0
    present = {k for s in stats for k in s.counters}
    counters = [name for _id, name, _doc in QSTATS_COUNTERS if name in present]
    counters += sorted(present - set(counters))
    head = ["IFNAME", "TYPE", "QUEUE>"] if args.per_queue else ["IFNAME"]
    rows = []
    for s in stats:
        row = [t.label(s.ifindex)]
        if args.per_queue:
            row += [enum_name(s.queue_type) or "-", _s(s.queue_id)]
        rows.append(row + [_s(s.counters.get(c)) for c in counters])
    columns = head + [f"{c.upper()}>" for c in counters]
    print_table(
        columns,
        rows,
        f"no queue statistics in {_where(t)}: the drivers there report none (veth never does)",
    )
    return 0


def run_qstats_balance(args: argparse.Namespace) -> int:
    from .balance import run

    return run(args)


def run_page_pool_show(args: argparse.Namespace) -> int:
    t = resolve_target(args)
    with _open(t) as nd:
        pools = nd.page_pool_dump(t.ifindex)
    pools.sort(key=lambda p: p.id)
    if args.json:
        print_json([page_pool_json(p, t) for p in pools])
        return 0
    rows = [
        [
            str(p.id),
            t.label(p.ifindex),
            _s(p.napi_id),
            _s(p.inflight),
            _s(p.inflight_mem),
            _s(p.detach_time),
            _s(p.dmabuf),
            "yes" if p.io_uring else "-",
        ]
        for p in pools
    ]
    columns = ["ID>", "IFNAME", "NAPI>", "INFLIGHT>", "INFLIGHT-MEM>", "DETACHED>", "DMABUF>"]
    print_table([*columns, "IO-URING"], rows, f"no page pools in {_where(t)}")
    return 0


def run_page_pool_stats(args: argparse.Namespace) -> int:
    from ..netdev.family import PAGE_POOL_STATS_COUNTERS

    t = resolve_target(args)
    with _open(t) as nd:
        stats = nd.page_pool_stats_dump()
    stats = [s for s in stats if t.ifindex is None or s.ifindex == t.ifindex]
    stats.sort(key=lambda s: s.id)
    if args.json:
        print_json([page_pool_stats_json(s, t) for s in stats])
        return 0
    counters = [name for _id, name in PAGE_POOL_STATS_COUNTERS]
    rows = [
        [str(s.id), t.label(s.ifindex)] + [_s(s.counters.get(c)) for c in counters] for s in stats
    ]
    columns = ["ID>", "IFNAME"] + [f"{c.upper()}>" for c in counters]
    print_table(columns, rows, f"no page pools in {_where(t)}")
    return 0


# -- help texts -----------------------------------------------------------------

DEV_HELP = """\
One row per network device:
  IFINDEX, IFNAME   the device
  XDP               XDP actions the driver supports (basic, redirect, ndo_xmit,
                    xsk_zerocopy, hw_offload, rx_sg, ndo_xmit_sg)
  XDP-ZC-SEGS       most fragments in one AF_XDP zero-copy frame ("-": no zero copy)
  XDP-RX-METADATA   metadata XDP programs can read (timestamp, hash, vlan_tag)
  XSK               AF_XDP TX features (tx_timestamp, tx_checksum, ...)

example:
  netdevkit dev show --netns ns1
  netdevkit dev show -j --ifname eth0
"""

QUEUE_HELP = """\
One row per queue:
  TYPE, QUEUE   rx or tx, and the queue's index within that type
  NAPI          the NAPI instance that serves the queue ("-": the driver does
                not say; veth never does)
  DMABUF        id of a Device Memory TCP binding on the queue
  BOUND         io-uring (zero-copy receive) or xsk (AF_XDP socket) attached,
                or the queue it is leased to or from (Linux 7.1+: lease DEV/rxN)

example:
  netdevkit queue show --ifname eth0
  netdevkit queue show -j --netns ns1 | jq '.[] | select(.type == "rx")'
"""

NAPI_HELP = """\
One row per NAPI instance (a polling context, normally one per RX queue or
queue pair; its id is what SO_INCOMING_NAPI_ID reports on a socket):
  NAPI          the NAPI id
  QUEUES        queues the driver links to it, e.g. "rx0 tx0" ("-": the driver
                does not link them; veth does not)
  IRQ           its interrupt line ("-": none, e.g. veth)
  PID           its kthread ("napi/DEV-ID") while THREADED is enabled
  DEFER         napi_defer_hard_irqs: empty polls before IRQs are re-enabled
  GRO-FLUSH     gro_flush_timeout: timer that holds IRQs back after a poll
                (0: IRQs come back at once)
  IRQ-SUSPEND   irq_suspend_timeout: how long IRQs stay suspended while an
                epoll context with prefer_busy_poll keeps finding events
  THREADED      enabled: polled by its own kthread instead of softirq
In JSON the durations are integer nanoseconds (gro_flush_timeout,
irq_suspend_timeout) and "queues" is a list of {"type": "rx", "id": 0}.

example:
  netdevkit napi show --netns ns1
  netdevkit napi show -j --ifname eth0 | jq '.[].id'
"""

QSTATS_HELP = """\
Packet and byte counters the driver reports, one row per device, or per queue
with --per-queue. Only the counters the driver keeps are shown (rx-packets,
rx-bytes, tx-packets, tx-bytes, rx-alloc-fail, rx-hw-drops, tx-stop, tx-wake,
...). Some drivers report none at all (veth): their devices are left out, so
the table may be empty and the JSON output []; asking for such a device with
--ifname/--ifindex is an error (the kernel answers EOPNOTSUPP).
In JSON, counters sit under "counters" with snake_case names (rx_packets).

example:
  netdevkit qstats show --ifname eth0
  netdevkit qstats show --per-queue -j
"""

PAGE_POOL_HELP = """\
One row per page pool (the page allocator of one RX queue):
  NAPI           the NAPI instance the pool serves
  INFLIGHT       pages handed out and not yet returned; INFLIGHT-MEM their bytes
  DETACHED       seconds since boot when its device went away ("-": still attached;
                 a detached pool with pages in flight is a leak in progress)
  DMABUF         Device Memory TCP binding providing the memory
  IO-URING       memory provided by io_uring zero-copy receive

example:
  netdevkit page-pool show --netns ns1
"""

PAGE_POOL_STATS_HELP = """\
Allocation and recycling counters of every page pool (alloc-fast, alloc-slow,
recycle-cached, recycle-ring, ...). Needs a kernel built with
CONFIG_PAGE_POOL_STATS=y; otherwise this command says so and exits 1.

example:
  netdevkit page-pool stats -j
"""


def _add_show(
    sub: SubParsers,
    word: str,
    action: str,
    summary: str,
    body: str,
    run: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    p = object_subparsers(sub, word).add_parser(
        action,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}.\n\n{body}{_COMMON_HELP}",
        formatter_class=_FMT,
    )
    add_target_options(p)
    p.set_defaults(func=run)
    return p


def register_dev(sub: SubParsers) -> None:
    _add_show(sub, "dev", "show", "show network devices", DEV_HELP, run_dev_show)


def register_queue(sub: SubParsers) -> None:
    _add_show(sub, "queue", "show", "show queues", QUEUE_HELP, run_queue_show)


def register_napi(sub: SubParsers) -> None:
    _add_show(sub, "napi", "show", "show NAPI instances", NAPI_HELP, run_napi_show)


def register_qstats(sub: SubParsers) -> None:
    q = _add_show(sub, "qstats", "show", "show queue statistics", QSTATS_HELP, run_qstats_show)
    q.add_argument("--per-queue", action="store_true", help="one row per queue, not per device")
    from . import balance  # the standard library only at top level

    b = _add_show(sub, "qstats", "balance", balance.SUMMARY, balance.BODY, run_qstats_balance)
    balance.add_options(b)


def register_page_pool(sub: SubParsers) -> None:
    _add_show(sub, "page-pool", "show", "show page pools", PAGE_POOL_HELP, run_page_pool_show)
    _add_show(
        sub,
        "page-pool",
        "stats",
        "show page pool statistics",
        PAGE_POOL_STATS_HELP,
        run_page_pool_stats,
    )


def register(sub: SubParsers) -> None:
    """Add ``dev``, ``queue``, ``napi``, ``qstats`` and ``page-pool`` with their actions."""
    for add in (register_dev, register_queue, register_napi, register_qstats, register_page_pool):
        add(sub)
