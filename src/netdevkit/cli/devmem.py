"""``netdevkit devmem setup|teardown|recv|send``: Device Memory TCP from one command.

``setup`` prepares a NIC (header split, RSS off the devmem queues, an ntuple
rule for the flow), every step printed and journaled; ``teardown`` (or
``netdevkit restore``) undoes it. ``recv`` and ``send`` do what the kernel
selftest ncdevmem does: set up, bind a dmabuf, receive or send, optionally
check every byte against a repeating pattern, report throughput and
fragment/linear counts, and undo everything on every exit path (Ctrl-C and
SIGTERM included).

Only the standard library is imported at top level; the library when a
command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from .argtypes import int_at_least

if TYPE_CHECKING:
    from ..devmem.nic import KernelNic
    from ..devmem.setup import Plan, Requirement, Step
    from ..journal import Record

_FMT = argparse.RawDescriptionHelpFormatter
HELP = "Device Memory TCP: prepare a NIC, receive into / send from a dmabuf"
DESCRIPTION = """\
Device Memory TCP (Linux 6.12 receive, 6.16 send) moves TCP payloads straight
into a dmabuf (GPU memory, a udmabuf) while the kernel processes the headers.
It needs a capable NIC (gve, mlx5, bnxt, fbnic, idpf) with header split, flow
steering and RSS kept off the devmem queues.

  setup     prepare the NIC (each change journaled; --dry-run shows the plan)
  teardown  undo what setup changed on an interface
  recv      setup + bind + receive: the ncdevmem server, with counts and checks
  send      bind-tx + send from a dmabuf: the ncdevmem client

veth, virtio_net and loopback cannot carry devmem: setup names each missing
requirement and changes nothing. `netdevkit doctor --ifname X` prints the same
lines.
"""

SETUP_EPILOG = """\
what setup changes (and journals first, so `netdevkit restore` undoes it even
after a crash), in this order:
  0. with --channels N: the combined channel count (ethtool -L combined N), so
     that the devmem queues exist
  1. header split: ethtool rings tcp-data-split on, hds-thresh 0
  2. ntuple filters on (feature rx-ntuple-filter) if they are off
  3. RSS: the default indirection table spread over the other queues only
  4. an ntuple rule steering the flow to the first devmem queue

By default setup refuses, changing nothing, unless the device meets every
requirement. --best-effort takes every step the device can take and names
the ones it cannot as skipped: for a driver netdevkit does not know, for
steering you set up by other means, or for a test NIC (netdevsim has header
split and channels but neither ntuple nor RSS). The queues must still fit.
Ctrl-C or SIGTERM during setup undoes the steps already taken.

examples:
  netdevkit devmem setup --ifname eth1 --queues 14-15 --flow 'tcp dst-port 5201' --dry-run
  netdevkit devmem setup --ifname eth1 --queues 15 --flow 'tcp dst-port 5201 src-ip 10.0.0.2'
  netdevkit devmem setup --ifname eth1 --queues 15 --channels 16 --flow 'tcp dst-port 5201'
  netdevkit devmem setup --ifname eth1 --queues 3 --flow 'tcp dst-port 5201' --best-effort
  netdevkit devmem teardown --ifname eth1
"""

RECV_EPILOG = """\
examples:
  netdevkit devmem recv --ifname eth1 --queues 15 --port 5201 --validate 256
  netdevkit devmem recv --ifname eth1 --queues 14-15 --dmabuf cuda --size 256M -j

the sender must send bytes k % N for --validate N (netdevkit devmem send does).
"""

SEND_EPILOG = """\
examples:
  netdevkit devmem send --ifname eth1 --to 10.0.0.1 --port 5201 --bytes 10G
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("devmem", help=HELP, description=DESCRIPTION, formatter_class=_FMT)
    dsub = p.add_subparsers(dest="devmem_command", metavar="ACTION")
    dsub.required = True

    s = dsub.add_parser(
        "setup", help="prepare a NIC for devmem", epilog=SETUP_EPILOG, formatter_class=_FMT
    )
    _target(s)
    s.add_argument("--queues", required=True, help="RX queues for devmem: 14-15 or 3,5")
    s.add_argument(
        "--flow", required=True, help="'tcp dst-port P [src-port P] [dst-ip A] [src-ip A]'"
    )
    s.add_argument(
        "--channels",
        type=int_at_least(1),
        metavar="N",
        help="set the combined channel count to N first (RX count on a device without "
        "combined channels)",
    )
    s.add_argument(
        "--best-effort",
        action="store_true",
        help="take the steps the device supports and name the ones it lacks as skipped, "
        "instead of refusing",
    )
    s.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    s.set_defaults(func=run_setup)

    t = dsub.add_parser("teardown", help="undo devmem setup on an interface", formatter_class=_FMT)
    _target(t)
    t.set_defaults(func=run_teardown)

    r = dsub.add_parser(
        "recv", help="receive into a dmabuf (ncdevmem server)", epilog=RECV_EPILOG,
        formatter_class=_FMT,
    )  # fmt: skip
    _target(r)
    r.add_argument("--queues", required=True, help="RX queues to bind: 14-15 or 3,5")
    r.add_argument("--port", type=int, default=5201, help="TCP port to listen on (5201)")
    r.add_argument("--listen", default="::", help="IP address to listen on (all: ::)")
    r.add_argument("--flow", help="flow to steer (default 'tcp dst-port PORT')")
    r.add_argument("--no-setup", action="store_true", help="the NIC is prepared already")
    r.add_argument("--rx-page-size", type=int, help="bytes per RX buffer (Linux 7.3)")
    r.add_argument("--limit", type=int, help="stop after this many bytes")
    _dmabuf_options(r)
    r.set_defaults(func=run_recv)

    x = dsub.add_parser(
        "send", help="send from a dmabuf (ncdevmem client)", epilog=SEND_EPILOG,
        formatter_class=_FMT,
    )  # fmt: skip
    _target(x)
    x.add_argument("--to", required=True, help="the peer's IPv4 or IPv6 address")
    x.add_argument("--port", type=int, default=5201, help="peer TCP port (5201)")
    x.add_argument("--bytes", default="1G", help="bytes to send (1G)")
    x.add_argument("--chunk", default="64K", help="bytes per sendmsg (64K)")
    _dmabuf_options(x)
    x.set_defaults(func=run_send)


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--ifname", required=True, help="the NIC")
    p.add_argument("--netns", metavar="NAME", help="the NIC lives in network namespace NAME")
    p.add_argument("-j", "--json", action="store_true", help="JSON output")


def _dmabuf_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dmabuf", choices=("udmabuf", "cuda"), default="udmabuf", help="memory (udmabuf)"
    )
    p.add_argument("--size", default="64M", help="dmabuf size (64M)")
    p.add_argument("--device", type=int, default=0, help="CUDA device (0)")
    p.add_argument("--validate", type=int, metavar="N", help="check byte k == k %% N (N 1..256)")


def parse_size(text: str) -> int:
    from ..errors import RequestError

    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = t.rstrip("KMGT"), t[len(t.rstrip("KMGT")) :]
    if not num.isdigit() or unit not in units:
        raise RequestError(f"size {text!r}: a number with an optional K, M, G or T suffix")
    return int(num) * units[unit]


def _emit(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, flush=True)


def _requirement_lines(requirements: Sequence[Requirement]) -> list[str]:
    word = {True: "OK", False: "MISSING", None: "UNKNOWN"}
    return [f"  {word[r.ok]:<8} {r.name:<13} {r.detail}" for r in requirements]


def _plan_json(p: Plan, applied: bool) -> dict[str, Any]:
    return {
        "ifname": p.ifname,
        "netns": p.netns,
        "queues": list(p.queues),
        "flow": p.flow.describe(),
        "channels": p.channels,
        "best_effort": p.best_effort,
        "ok": p.ok,
        "applied": applied,
        "requirements": [{"name": r.name, "ok": r.ok, "detail": r.detail} for r in p.requirements],
        "skipped": [{"name": r.name, "detail": r.detail} for r in p.skipped],
        "steps": [
            {"kind": s.record.kind, "description": s.description, "before": s.record.before}
            for s in p.steps
        ],
    }


def _make_plan(args: argparse.Namespace, nic: KernelNic, flow_text: str) -> Plan:
    from ..devmem.setup import parse_queues, plan
    from ..ethtool.ioctl import parse_flow

    queues = parse_queues(args.queues)
    flow = parse_flow(flow_text)
    nic.ifindex(args.ifname)  # NotFoundError for a missing interface
    return plan(
        nic,
        args.ifname,
        queues,
        flow,
        channels=getattr(args, "channels", None),
        best_effort=getattr(args, "best_effort", False),
    )


def _apply(args: argparse.Namespace, nic: KernelNic, p: Plan) -> list[Record]:
    from ..devmem.setup import apply

    n = len(p.steps)
    count = iter(range(1, n + 1))

    def show(step: Step) -> None:
        _emit(args, f"step {next(count)}/{n}: {step.description}")

    return apply(p, nic, on_step=show)


def run_setup(args: argparse.Namespace) -> int:
    from ..devmem.nic import KernelNic
    from ..errors import UnsupportedError
    from .main import command_finished

    with KernelNic(args.netns) as nic, _signals_as_interrupt():
        p = _make_plan(args, nic, args.flow)
        _emit(args, f"devmem setup of {args.ifname}, queues {list(p.queues)}:")
        for line in _requirement_lines(p.requirements):
            _emit(args, line)
        if not p.ok:
            if args.json:
                json.dump(_plan_json(p, False), sys.stdout, indent=2)
                sys.stdout.write("\n")
            raise UnsupportedError(p.refusal())
        for r in p.skipped:
            _emit(args, f"skipped (--best-effort): {r.name}: {r.detail}")
        if args.dry_run:
            for i, s in enumerate(p.steps, 1):
                _emit(args, f"would do {i}/{len(p.steps)}: {s.description}")
        else:
            written = _apply(args, nic, p)
            command_finished()  # done: a signal now would report a finished setup as cut short
            _emit(
                args,
                f"done: {len(written)} changes journaled; undo with "
                f"`netdevkit devmem teardown --ifname {args.ifname}` or `netdevkit restore`",
            )
        if args.json:
            json.dump(_plan_json(p, not args.dry_run), sys.stdout, indent=2)
            sys.stdout.write("\n")
    return 0


def run_teardown(args: argparse.Namespace) -> int:
    from ..devmem.nic import KernelNic
    from ..devmem.setup import teardown

    with KernelNic(args.netns) as nic:
        undone = teardown(nic, args.ifname)
    if args.json:
        rows = [{"kind": u.record.kind, "ok": u.ok, "message": u.message} for u in undone]
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        if not undone:
            print(f"nothing journaled for {args.ifname}: nothing to undo")
        for u in undone:
            print(("undone  " if u.ok else "FAILED  ") + u.message)
    return 0 if all(u.ok for u in undone) else 1


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise a KeyboardInterrupt (:class:`Interrupted`, carrying the
    signal), so every cleanup path runs."""
    from .._os import SignalScope
    from .._signals import Interrupted

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum, "")  # the exit status says which signal (128 + signum)

    with SignalScope((signal.SIGTERM, signal.SIGHUP), handler, keep_ignored=False):
        yield


def _dmabuf(args: argparse.Namespace) -> Any:
    from ..devmem.dmabuf import cuda, udmabuf

    size = parse_size(args.size)
    return cuda(size, args.device) if args.dmabuf == "cuda" else udmabuf(size)


def _check_validate(pattern: int | None) -> None:
    """The library's pattern check, worded for ``--validate``."""
    from ..devmem.tool import check_pattern
    from ..errors import RequestError

    try:
        check_pattern(pattern)
    except RequestError as err:
        raise RequestError(f"--validate {err}") from None


def _size_option(option: str, text: str) -> int:
    """``parse_size`` of option *option*: a positive size, or a RequestError naming it."""
    from ..errors import RequestError

    try:
        value = parse_size(text)
    except RequestError as err:
        raise RequestError(f"{option}: {err}") from None
    if value <= 0:
        raise RequestError(f"{option} {text}: must be at least 1 byte")
    return value


def _address_option(option: str, text: str) -> None:
    import ipaddress

    from ..errors import RequestError

    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise RequestError(f"{option} {text!r} is not an IPv4 or IPv6 address") from None


def _check_common(args: argparse.Namespace) -> None:
    """The options recv and send share: --port, --size, --device, --validate."""
    import mmap

    from ..errors import RequestError

    _check_validate(args.validate)
    if not 0 < args.port < 65536:
        raise RequestError(f"--port must be 1..65535, not {args.port}")
    size = _size_option("--size", args.size)
    if args.dmabuf == "udmabuf" and size % mmap.PAGESIZE:
        raise RequestError(
            f"--size {args.size}: a udmabuf is a whole number of {mmap.PAGESIZE}-byte pages"
        )
    if args.device < 0:
        raise RequestError(f"--device {args.device}: a CUDA device number is 0 or more")


def _check_recv(args: argparse.Namespace) -> tuple[int, ...]:
    """Every recv option, before anything is opened; returns the queues."""
    from ..devmem.setup import parse_queues
    from ..errors import RequestError

    _check_common(args)
    _address_option("--listen", args.listen)
    for option, value in (("--limit", args.limit), ("--rx-page-size", args.rx_page_size)):
        if value is not None and value <= 0:
            raise RequestError(f"{option} {value}: must be at least 1 byte")
    return parse_queues(args.queues)


def _check_send(args: argparse.Namespace) -> tuple[int, int]:
    """Every send option, before anything is opened; returns (total, chunk)."""
    from ..errors import RequestError

    _check_common(args)
    _address_option("--to", args.to)
    total, chunk = _size_option("--bytes", args.bytes), _size_option("--chunk", args.chunk)
    if args.dmabuf == "cuda":
        raise RequestError("send --dmabuf cuda: fill the GPU buffer from your own code")
    return total, chunk


def _check_send_device(args: argparse.Namespace) -> None:
    """What bind-tx needs of the device, one line each; UnsupportedError naming the missing."""
    from ..devmem.nic import KernelNic
    from ..devmem.setup import tx_requirements
    from ..errors import UnsupportedError
    from ..netdev.client import Netdev

    with KernelNic(args.netns) as nic:
        nic.ifindex(args.ifname)  # NotFoundError for a missing interface or namespace
        with Netdev.open(args.netns) as nd:
            reqs = tx_requirements(nic, args.ifname, nd.supports("bind-tx"))
    for line in _requirement_lines(reqs):
        _emit(args, line)
    missing = [f"{r.name}: {r.detail}" for r in reqs if not r.ok]
    if missing:
        raise UnsupportedError(
            f"devmem send refused for {args.ifname}, nothing was changed: " + "; ".join(missing)
        )


def run_recv(args: argparse.Namespace) -> int:
    from ..devmem.binding import bind_rx
    from ..devmem.nic import KernelNic
    from ..devmem.rx import DevmemReceiver
    from ..devmem.tool import receive
    from ..errors import UnsupportedError
    from ..netns import entered

    queues = _check_recv(args)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_signals_as_interrupt())
        nic = stack.enter_context(KernelNic(args.netns))
        if not args.no_setup:
            p = _make_plan(args, nic, args.flow or f"tcp dst-port {args.port}")
            for line in _requirement_lines(p.requirements):
                _emit(args, line)
            if not p.ok:
                raise UnsupportedError(p.refusal())
            written: list[Record] = []
            stack.callback(_undo_and_report, args, nic, written)
            written += _apply(args, nic, p)
        buf = stack.enter_context(_dmabuf(args))
        binding = stack.enter_context(
            bind_rx(args.ifname, queues, buf, rx_page_size=args.rx_page_size, netns=args.netns)
        )
        _emit(
            args,
            f"bound {buf.size} bytes of {args.dmabuf} to queues {list(queues)}: "
            f"binding {binding.id}",
        )
        with entered(args.netns):
            lsock = socket.socket(socket.AF_INET6 if ":" in args.listen else socket.AF_INET)
        stack.enter_context(lsock)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((args.listen, args.port))
        lsock.listen(1)
        _emit(args, f"listening on port {args.port}")
        conn, peer = lsock.accept()
        stack.enter_context(conn)
        rx = stack.enter_context(DevmemReceiver(conn, binding))
        report = receive(rx, buf, pattern=args.validate, limit=args.limit)
    out = {
        "peer": str(peer[0]),
        "bytes": report.bytes,
        "frags": report.frags,
        "linear_chunks": report.linear_chunks,
        "readable_bytes": report.readable_bytes,
        "seconds": round(report.seconds, 6),
        "gbit_s": round(report.gbit_s, 3),
        "validated": report.validated,
    }
    _print_report(args, out)
    return 0


def _undo_and_report(args: argparse.Namespace, nic: KernelNic, written: list[Record]) -> None:
    """Undo what this run's setup changed (an earlier `devmem setup` stays)."""
    from ..devmem.setup import undo

    for u in undo(nic, written):
        _emit(args, ("teardown: " if u.ok else "teardown FAILED: ") + u.message)


def run_send(args: argparse.Namespace) -> int:
    from ..devmem.binding import bind_tx
    from ..devmem.tool import fill_pattern, send
    from ..devmem.tx import DevmemSender
    from ..netns import entered

    # bad input first (exit 2), then what the device lacks (exit 1), then the dmabuf
    total, chunk = _check_send(args)
    pattern = 256 if args.validate is None else args.validate
    _check_send_device(args)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_signals_as_interrupt())
        buf = stack.enter_context(_dmabuf(args))
        with buf.cpu_access(read=False, write=True) as mem:
            fill_pattern(mem, pattern)
        binding = stack.enter_context(bind_tx(args.ifname, buf, netns=args.netns))
        with entered(args.netns):
            sock = socket.create_connection((args.to, args.port))
        stack.enter_context(sock)
        tx = DevmemSender(sock, binding)
        report = send(tx, buf.size, total, chunk=chunk, pattern=pattern)
    out = {
        "bytes": report.bytes,
        "sends": report.sends,
        "seconds": round(report.seconds, 6),
        "gbit_s": round(report.gbit_s, 3),
        "completions_pending": report.completions_pending,
        "copied": report.copied,
    }
    _print_report(args, out)
    return 0


def _print_report(args: argparse.Namespace, out: dict[str, Any]) -> None:
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("  ".join(f"{k}={v}" for k, v in out.items()))
