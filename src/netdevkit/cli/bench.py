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

DESCRIPTION = """\
Measure what each mode buys on this kernel, without touching your interfaces:
a veth testbed in two network namespaces, servers in one, clients in the other.

modes      base, defer, napibusy, fullbusy, suspend, threaded (`netdevkit presets`),
           busy-poll-thread (Linux 6.19+: a busy-polling kthread per NAPI)
workloads  echo       sockperf-framing echo server on netdevkit's loop, stock asyncio, uvloop
           sockperf   Debian's sockperf server and client (ping-pong, under-load)
           memcached  Debian's memcached -N, open-loop mcload client at fixed rates
           redis      Debian's redis-server, redis-benchmark -c 1 (ping-pong only)
loads      0 (or pp) is ping-pong: one request in flight; N or Nk is a fixed rate/s

sockperf/echo latencies are half the round trip (sockperf's convention);
memcached/redis latencies are whole round trips.

CPU placement (default: none, the scheduler decides):
  --cpus server=1,client=0,napi=1   server programs on CPU 1, clients on CPU 0,
                                    threaded-NAPI kthreads on CPU 1
  --cpus server=2-3,client=0,1      a role takes a cpulist; "0,1" after client= is {0, 1}
  --cpus auto                       server and NAPI on the last CPU, client on CPU 0
  Softirq has no placement on veth: the "IRQ" is the sender's napi_schedule, so a NAPI
  that is not threaded or busy polled is polled on the sending process's CPU.

examples:
  netdevkit bench --quick
  netdevkit bench --modes base,fullbusy,suspend --workload sockperf,memcached \\
      --load 0,5k,20k --duration 5 --repeat 3 --out bench-out/full
  netdevkit bench --workload echo,sockperf,memcached --load 0 \\
      --load-for sockperf=0,5k,20k --load-for memcached=5k,20k --cpus auto
  netdevkit bench --report bench-out/full/results.json
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure latency and CPU of each NAPI/busy-poll mode in a veth testbed",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--modes", help="comma-separated modes (default: all)")
    p.add_argument(
        "--workload",
        "--workloads",
        dest="workloads",
        help="comma-separated (default: echo,sockperf)",
    )
    p.add_argument("--load", help="comma-separated rates/s; 0 = ping-pong (default: 0)")
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
    p.add_argument("--quick", action="store_true", help="all modes, echo+sockperf, short: < 2 min")
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
        from ..testbed.core import CpuPlacement

        changes["cpus"] = CpuPlacement.parse(args.cpus)
    if args.testbed_name:
        from ..testbed import TestbedConfig

        TestbedConfig(name=args.testbed_name)  # validates the name before anything runs
        changes["testbed_name"] = args.testbed_name
    import dataclasses

    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _render(res: object, out: str, as_json: bool) -> int:
    from rich.console import Console

    from ..bench.report import evaluate_claims, rich_table, write_report
    from ..bench.results import Results

    assert isinstance(res, Results)
    os.makedirs(out, exist_ok=True)
    res.save(os.path.join(out, "results.json"))
    path, _plots = write_report(res, out)
    if as_json:
        print(res.to_json())
        return 0
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)  # a log file or pipe: do not squeeze the table
    console.print(rich_table(res))
    for c in evaluate_claims(res):
        console.print(f"({c.key}) {c.workload}/{c.server}: [bold]{c.verdict}[/bold] - {c.evidence}")
    for k in res.skipped:
        console.print(f"[yellow]not measured[/yellow] {k.mode} {k.workload}: {k.reason}")
    console.print(f"results, plots and report: {out}  (report: {path})")
    return 0


def _prepare_out(out: str) -> None:
    """Make sure the results can be written to *out* before any work starts."""
    from ..errors import RequestError

    if os.path.exists(out) and not os.path.isdir(out):
        raise RequestError(f"--out {out}: exists and is not a directory (name a directory)")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise RequestError(f"--out {out}: cannot create the directory: {err.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RequestError(f"--out {out}: the directory is not writable")


def run_bench_cmd(args: argparse.Namespace) -> int:
    from ..bench import runner
    from ..bench.results import Results

    if args.report:
        res = Results.load(args.report)
        out = args.out or os.path.dirname(os.path.abspath(args.report))
        _prepare_out(out)
        return _render(res, out, args.json)
    opts = _options(args)
    assert isinstance(opts, runner.BenchOptions)
    runner.validate(opts)  # before any output directory or testbed exists
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or os.path.join("bench-out", stamp)
    _prepare_out(out)  # a bad --out fails now, not after the measurement

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total = runner.count_steps(opts)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=True,
        disable=args.json or not sys.stderr.isatty(),
        console=None,
    ) as progress:
        task = progress.add_task("testbed up", total=total)

        def on_step(step: runner.Step) -> None:
            desc = step.label
            if step.sample is not None:
                s = step.sample
                desc += f" p50 {s.latency.p50:.1f} us"
            progress.update(task, completed=step.done, description=desc)

        res = runner.run_bench(opts, on_step)
    return _render(res, out, args.json)
