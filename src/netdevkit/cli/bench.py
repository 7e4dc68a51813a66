"""``netdevkit bench``: what each NAPI/busy-poll mode buys, measured on this kernel.

Builds a two-namespace veth testbed, runs every (mode, workload, server, load,
repeat) and writes ``results.json``, three PNG plots and ``report.md`` to
``--out`` (default ``./bench-out/TIMESTAMP``). Everything it changes is put
back, also on Ctrl-C and SIGTERM. ``--report FILE`` regenerates the table,
plots and report from an earlier results.json without measuring.

Only the standard library is imported at top level (start-up time).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

from ..errors import RequestError, ToolError

DESCRIPTION = """\
Which mode, what it buys, at what CPU, for this workload - measured on this kernel,
without touching your interfaces: a veth testbed in two network namespaces, servers
in one, clients in the other. The output leads with the recommendation: per workload
and load, the mode meeting the p99 target (--target-p99) with the least server CPU.

modes      kernel presets: base, defer, napibusy, fullbusy, suspend, threaded
             (`netdevkit presets`), and busy-poll-thread (NAPI threaded=2, Linux 6.19+;
             reported as absent on older kernels)
           netdevkit's own, on netdevkit's loop only (the echo 'fast' server):
             adaptive-window  IRQ suspension + an adaptive 50 us busy-poll window
             hot-spin         re-read the hot socket for 50 us (SO_BUSY_POLL)
             hybrid           sleep until the next request is due, then busy poll
workloads  echo       sockperf-framing echo servers: netdevkit (NapiDispatcher),
                      asyncio, uvloop, fast (netdevkit's FastLoop: every mode)
           sockperf   Debian's sockperf server and client (ping-pong, under-load)
           memcached  Debian's memcached -N, open-loop mcload client
           redis      Debian's redis-server, redis-benchmark -c 1 (ping-pong only)
loads      every run measures the testbed's noise floor, finds each server's knee
           open loop (base mode: rates rising until the server falls behind), then
           sweeps open-loop rates at fractions of it (--sweep, default
           10%,30%,60%,90%; --quick 10%,50%,90%); --load adds fixed rates, 0 (or
           pp) is ping-pong. The load comes from one spinning client thread timing
           each answer from its intended send time (docs/bench.md)
validity   every sample records whether another task took the server's or client's
           CPUs, steal time, run-queue delay, whether the generator and a
           busy-polling server got their cores; a disturbed sample is flagged and
           used by no claim or recommendation
rounds     --repeat N runs N rounds; each round runs every mode once, so modes are
           compared on per-round paired ratios (median over rounds)

sockperf/echo latencies are half the round trip (sockperf's convention);
memcached/redis/http latencies are whole round trips. The p99 target applies to
the latency as reported.

Your own server (--server): started in the server namespace with {addr} and {port}
filled in; each mode's epoll half reaches its epoll contexts through attach. Drive it
with --client sockperf (sockperf framing), memcached, redis or http (Debian's wrk).

A real NIC, the load from a peer host (--ifname IF --peer [USER@]HOST): the servers
run here bound to IF's address, the clients on the peer over the system ssh (your
keys and ~/.ssh/config, BatchMode); every mode's NAPI half goes on IF's NAPIs and is
put back (Ctrl-C too; `netdevkit restore` after a SIGKILL); nothing is changed on the
peer and every process started there ends with the run. Checked first: the peer
answers, imports netdevkit (--peer-python) and has the client programs, traffic
crosses IF. --cpus server=irq / server=not-irq: on or off IF's interrupt CPUs.
The report names IF's driver, firmware, link speed, interrupt CPUs and the peer.

CPU placement (default: none, the scheduler decides):
  --cpus server=1,client=0,napi=1   server programs on CPU 1, clients on CPU 0,
                                    threaded-NAPI kthreads on CPU 1
  --cpus server=2-3,client=0,1      a role takes a cpulist; "0,1" after client= is {0, 1}
  --cpus auto                       server and NAPI on the last CPU, client on CPU 0
  Softirq has no placement on veth: the "IRQ" is the sender's napi_schedule, so a NAPI
  that is not threaded or busy polled is polled on the sending process's CPU.

examples:
  netdevkit bench --quick
  netdevkit bench --quick --target-p99 50us
  netdevkit bench --modes base,fullbusy,suspend --workload sockperf,memcached \\
      --repeat 3 --cpus auto --out bench-out/full
  netdevkit bench --server 'python3 my_server.py --host {addr} --port {port}' \\
      --client sockperf --modes base,napibusy,fullbusy,suspend
  netdevkit bench --ifname eth1 --peer me@host2 --modes base,defer,suspend \\
      --workload sockperf --cpus server=not-irq
  netdevkit bench --report bench-out/full/results.json --target-p99 200us
  netdevkit bench compare bench-out/before/results.json bench-out/after/results.json
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure latency and CPU of each NAPI/busy-poll mode in a veth testbed",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "compare",
        nargs="*",
        metavar="compare A B",
        help="compare two runs: `netdevkit bench compare A/results.json B/results.json`",
    )
    _add_run_args(p)
    _add_own_server_args(p)
    _add_nic_args(p)
    p.add_argument(
        "--out", help="output directory (default ./bench-out/TIMESTAMP); checked before the run"
    )
    p.add_argument("--report", metavar="RESULTS_JSON", help="only re-render an earlier run")
    p.add_argument(
        "--testbed-name",
        metavar="NAME",
        help="name of the bench's testbed (default ndkbench-PID; `netdevkit testbed show`)",
    )
    p.add_argument("-j", "--json", action="store_true", help="print results.json to stdout")
    p.set_defaults(func=run_bench_cmd)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """What to measure: modes, workloads, loads, placement, durations."""
    p.add_argument("--modes", help="comma-separated modes (default: all)")
    p.add_argument(
        "--workload",
        "--workloads",
        dest="workloads",
        help="comma-separated (default: echo,sockperf)",
    )
    p.add_argument("--load", help="fixed rates/s besides the sweep, comma-separated; 0 = ping-pong")
    p.add_argument(
        "--load-for",
        action="append",
        metavar="WORKLOAD=LOADS",
        help="loads for one workload, replacing --load for it (repeatable)",
    )
    p.add_argument(
        "--cpus",
        metavar="PLACEMENT",
        help="pin server,client,napi: e.g. server=1,client=0,napi=1 or auto (default: no pinning)",
    )
    p.add_argument("--duration", type=float, help="seconds per sample (default 3; quick 0.5)")
    p.add_argument("--repeat", type=int, help="repeats per point (default 1)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="every mode on netdevkit's FastLoop echo server (20 us of work per request), "
        "swept at 10/50/90%% of its knee: under 2 min",
    )
    p.add_argument(
        "--sweep",
        metavar="FRACTIONS",
        help="open-loop rates as fractions of each server's knee, e.g. "
        "0.1,0.5,0.9 or 10%%,90%%; 'off' for none (default 10%%,30%%,60%%,90%%)",
    )
    p.add_argument(
        "--servers", help="only these servers, e.g. fast,sockperf (default: every server)"
    )
    p.add_argument(
        "--target-p99",
        metavar="LATENCY",
        help="p99 target of the recommendation, e.g. 50us, 0.2ms (default 100us)",
    )
    p.add_argument(
        "--work-us",
        type=float,
        metavar="US",
        help="CPU work per request of the echo 'fast' server, in microseconds (default 0; "
        "--quick 20): a server that does something per request, so that one client core "
        "reaches its knee",
    )
    p.add_argument(
        "--connections",
        type=int,
        metavar="N",
        help="connections of the open-loop load generator (default: 1 for echo and "
        "sockperf, 8 for memcached and redis)",
    )


def _add_own_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        dest="server_cmd",
        metavar="'CMD {addr} {port}'",
        help="bench your own server: its command line with {port} (and {addr})",
    )
    p.add_argument(
        "--client",
        choices=("sockperf", "memcached", "redis", "http"),
        help="what drives --server (default sockperf)",
    )


def _add_nic_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("a real NIC, the load from a peer host (instead of the veth testbed)")
    g.add_argument(
        "--ifname", metavar="IF", help="run the servers here on IF's address (needs --peer)"
    )
    g.add_argument(
        "--peer",
        metavar="[USER@]HOST",
        help="run the clients there over ssh (BatchMode, your own keys and ~/.ssh/config)",
    )
    g.add_argument(
        "--peer-addr",
        metavar="ADDR",
        help="the peer's address on IF's network (default: the address ssh connects to)",
    )
    g.add_argument(
        "--peer-python",
        metavar="PATH",
        help="the peer's Python, which must import netdevkit (default python3)",
    )
    g.add_argument("--ssh-config", metavar="FILE", help="ssh -F FILE (default: your own)")
    g.add_argument(
        "--ssh-option",
        action="append",
        metavar="K=V",
        help="ssh -o K=V (repeatable)",
    )
    g.add_argument(
        "--netns",
        metavar="NAME",
        help="IF is in this network namespace: servers and ssh run there",
    )


def _nic_options(args: argparse.Namespace) -> object:
    """``--ifname``/``--peer`` and their options as a NicOptions (None: neither given)."""
    extra = (args.peer_addr, args.peer_python, args.ssh_config, args.ssh_option, args.netns)
    if not args.ifname and not args.peer:
        if any(x is not None for x in extra):
            raise RequestError(
                "--peer-addr, --peer-python, --ssh-* and --netns go with --ifname and --peer"
            )
        return None
    if not (args.ifname and args.peer):
        raise RequestError(
            "--ifname and --peer go together: the servers on IF here, the clients on the peer"
        )
    from ..bench.remote import Peer, peer_address
    from ..bench.site import NicOptions

    if args.netns:
        from ..netns import list_names

        if args.netns not in list_names():
            raise RequestError(f"--netns {args.netns}: no such network namespace")
    if args.ssh_config and not os.path.isfile(args.ssh_config):
        raise RequestError(f"--ssh-config {args.ssh_config}: no such file")
    for opt in args.ssh_option or ():
        if "=" not in opt or opt.startswith("="):
            raise RequestError(f"--ssh-option {opt!r}: KEY=VALUE, e.g. Port=2222")
    peer = Peer(
        args.peer,
        "",
        args.ssh_config or "",
        tuple(args.ssh_option or ()),
        args.peer_python or "python3",
        args.netns,
    )
    import dataclasses

    addr = args.peer_addr or peer_address(args.peer, peer)
    return NicOptions(args.ifname, dataclasses.replace(peer, addr=addr), args.netns)


def _irq_placement(text: str, args: argparse.Namespace) -> str:
    """``server=irq`` / ``server=not-irq`` (and napi=) become the CPUs IF's queue
    interrupts are affine to, or every other CPU."""
    if "irq" not in text:
        return text
    if not args.ifname:
        raise RequestError("--cpus ...=irq names IF's interrupt CPUs: give --ifname")
    from .._os import format_cpu_list
    from ..bench.nic import nic_info
    from ..errors import UnsupportedError

    irq = nic_info(args.ifname, args.netns).irq_cpus
    if not irq:
        raise UnsupportedError(f"--cpus ...=irq: {args.ifname}'s NAPIs have no interrupts")
    others = frozenset(os.sched_getaffinity(0)) - irq
    if "not-irq" in text and not others:
        raise RequestError(f"--cpus ...=not-irq: every CPU takes {args.ifname}'s interrupts")
    text = text.replace("not-irq", format_cpu_list(others))
    return text.replace("irq", format_cpu_list(irq))


def _options(args: argparse.Namespace) -> object:
    from ..bench import runner

    base = runner.QUICK if args.quick else runner.BenchOptions()
    changes: dict[str, object] = {}
    if args.modes:
        changes["modes"] = runner.parse_modes(args.modes)
    if args.workloads:
        changes["workloads"] = runner.parse_workloads(args.workloads)
    if args.load:
        changes["loads"] = runner.parse_loads(args.load)
    if args.duration is not None:
        changes["duration"] = args.duration
    if args.repeat is not None:
        changes["repeat"] = args.repeat
    if args.load_for:
        changes["workload_loads"] = tuple(runner.parse_workload_loads(x) for x in args.load_for)
    if args.cpus:
        from ..testbed import CpuPlacement

        changes["cpus"] = CpuPlacement.parse(_irq_placement(args.cpus, args))
    elif args.quick and not args.peer and len(os.sched_getaffinity(0)) >= 2:
        # CPU is what the recommendation weighs: keep the client off the server's core
        from ..testbed import CpuPlacement

        changes["cpus"] = CpuPlacement.parse("auto")
    if args.testbed_name:
        from ..testbed import TestbedConfig

        TestbedConfig(name=args.testbed_name)  # validates the name before anything runs
        changes["testbed_name"] = args.testbed_name
    if args.sweep:
        changes["sweep"] = runner.parse_sweep(args.sweep)
    if args.work_us is not None:
        changes["work_us"] = args.work_us
    if args.connections is not None:
        changes["connections"] = args.connections
    if args.servers:
        changes["servers"] = runner.parse_servers(args.servers)
    if args.target_p99:
        from ..bench.recommend import parse_target

        changes["target_p99_us"] = parse_target(args.target_p99)
    if args.client and not args.server_cmd:
        raise RequestError("--client drives --server: give --server 'CMD {addr} {port}' too")
    if args.server_cmd:
        changes["server_cmd"] = args.server_cmd
        changes["client"] = args.client or "sockperf"
        if not args.modes:  # netdevkit's loop modes do not apply to another program
            from ..bench.modes import KERNEL_MODES

            changes["modes"] = KERNEL_MODES
        if args.workloads:
            raise RequestError("--server replaces the workloads: drop --workload")
    nic = _nic_options(args)
    if nic is not None:
        changes["nic"] = nic
    import dataclasses

    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _render(res: object, out: str, as_json: bool, target_us: float | None = None) -> int:
    from rich.console import Console

    from ..bench.report import write_report
    from ..bench.results import Results
    from ..bench.terminal import print_run

    assert isinstance(res, Results)
    os.makedirs(out, exist_ok=True)
    res.save(os.path.join(out, "results.json"))
    path, _plots = write_report(res, out, target_us)
    if as_json:
        print(res.to_json())
        return 0
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)  # a log file or pipe: do not squeeze the table
    print_run(console, res, target_us)
    console.print(f"results, plots (tradeoff.png first) and report: {out}  (report: {path})")
    return 0


def _compare(paths: list[str], as_json: bool) -> int:
    import dataclasses
    import json

    from ..bench.compare import compare, render_text
    from ..bench.results import Results

    if len(paths) != 3 or paths[0] != "compare":
        raise RequestError(
            "bench takes no positional arguments except `compare A/results.json B/results.json`"
        )
    if os.path.realpath(paths[1]) == os.path.realpath(paths[2]):
        raise RequestError(f"bench compare: A and B are the same file ({paths[1]})")
    loaded = []
    for which, path in zip("AB", paths[1:], strict=True):
        try:
            loaded.append(_load(path))
        except RequestError as err:
            raise RequestError(f"bench compare: {which} ({path}): {err}") from None
    a, b = loaded
    assert isinstance(a, Results) and isinstance(b, Results)
    c = compare(a, b)
    if as_json:
        print(json.dumps(dataclasses.asdict(c), indent=2))
    else:
        print("\n".join(render_text(c, paths[1], paths[2])))
    return 0


def _load(path: str) -> object:
    from ..bench.results import Results

    return Results.load(path)  # every bad file is one RequestError line


def _check_out(out: str) -> None:
    """Make sure the results can be written to *out* before any work starts, creating
    nothing: the directory is made when there is something to write, so an interrupted
    run leaves no empty folder behind."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise RequestError(f"--out {out}: exists and is not a directory (name a directory)")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise RequestError(f"--out {out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        what = "the directory" if parent == os.path.abspath(out) else f"{parent}"
        raise RequestError(f"--out {out}: {what} is not writable")


def _prepare_out(out: str) -> None:
    """:func:`_check_out`, then create *out*."""
    _check_out(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise RequestError(f"--out {out}: cannot create the directory: {err.strerror}") from None


def run_bench_cmd(args: argparse.Namespace) -> int:
    from ..bench import runner
    from ..bench.results import Results

    target: float | None = None
    if args.target_p99:
        from ..bench.recommend import parse_target

        target = parse_target(args.target_p99)
    if args.compare:
        return _compare(args.compare, args.json)
    if args.report:
        res = _load(args.report)
        assert isinstance(res, Results)
        out = args.out or os.path.dirname(os.path.abspath(args.report))
        _prepare_out(out)
        return _render(res, out, args.json, target)
    opts = _options(args)
    assert isinstance(opts, runner.BenchOptions)
    runner.validate(opts)  # before any output directory or testbed exists
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join("bench-out", stamp)
    _check_out(out)  # a bad --out fails now, not after the measurement
    res = _measure_with_progress(opts, quiet=args.json)
    assert isinstance(res, Results)
    if not res.samples:
        why = "; ".join(f"{k.mode} {k.workload}: {k.reason}" for k in res.skipped)
        raise ToolError(f"bench measured nothing: {why or 'no server could be measured'}")
    _prepare_out(out)
    return _render(res, out, args.json, target)


def _measure_with_progress(opts: object, quiet: bool) -> object:
    """Run the bench with a progress bar on a terminal (stderr): the step (mode, load,
    round), how many are done and the time left; nothing when stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ..bench import runner

    assert isinstance(opts, runner.BenchOptions)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        transient=True,
        disable=quiet or not sys.stderr.isatty(),
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task("testbed up", total=runner.count_steps(opts))

        def on_step(step: runner.Step) -> None:
            desc = step.label
            if step.sample is not None:
                s = step.sample
                desc += f" {s.load_target}/s p50 {s.latency.p50:.1f} us"
            progress.update(task, completed=step.done, total=step.total, description=desc)

        return runner.run_bench(opts, on_step)
