"""The publishable full run of ``netdevkit bench``: every mode x every workload, with load curves.

What it runs (one testbed, servers pinned apart from their clients with ``--cpus auto``:
server programs and threaded-NAPI kthreads on the last CPU, clients on CPU 0):

- modes: base, defer, napibusy, fullbusy, suspend, threaded;
- echo (netdevkit loop, stock asyncio, uvloop) and redis: ping-pong;
- sockperf: ping-pong plus an open-loop load curve (``under-load``, default 5k, 15k, 30k/s);
- memcached: open-loop mcload at 2k, 5k, 10k/s (16 connections);
- ``--repeat 3`` by default; medians and [min-max] in the report.

Rates were picked for the 2-vCPU development VM, where the client has one core: sockperf's
server saturates above ~50k/s (p99 in the tens of ms at 50k) and mcload's send lag passes
its 2 ms limit near 20k/s. Samples whose client could not keep up are flagged
client-limited by the bench and never presented as the server's numbers.

Usage::

    sudo .venv/bin/python benchmarks/bench_modes.py                 # ~15 min, writes results
    sudo .venv/bin/python benchmarks/bench_modes.py --repeat 1 --duration 0.5 --out /tmp/m

Writes results.json, the three PNG plots and report.md to ``benchmarks/results/modes/``
(or ``--out``), and appends the command line and the wall time to report.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from netdevkit.bench import runner
from netdevkit.bench.report import evaluate_claims, write_report
from netdevkit.testbed.core import CpuPlacement

OUT = Path(__file__).resolve().parent / "results" / "modes"
SOCKPERF_LOADS = "0,5k,15k,30k"
MEMCACHED_LOADS = "2k,5k,10k"


def _options(args: argparse.Namespace) -> runner.BenchOptions:
    return runner.BenchOptions(
        modes=runner.parse_modes(args.modes),
        workloads=("echo", "sockperf", "memcached", "redis"),
        loads=(0,),
        workload_loads=(
            ("sockperf", runner.parse_loads(args.sockperf_loads)),
            ("memcached", runner.parse_loads(args.memcached_loads)),
        ),
        duration=args.duration,
        repeat=args.repeat,
        cpus=None if args.cpus == "none" else CpuPlacement.parse(args.cpus),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default=",".join(runner.MODES))
    p.add_argument("--sockperf-loads", default=SOCKPERF_LOADS)
    p.add_argument("--memcached-loads", default=MEMCACHED_LOADS)
    p.add_argument("--duration", type=float, default=1.0, help="seconds per sample (default 1)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cpus", default="auto", help="placement, or 'none' (default auto)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    opts = _options(args)
    runner.validate(opts)
    total = runner.count_steps(opts)
    print(f"{total} samples; writing to {args.out}", file=sys.stderr)
    start = time.monotonic()

    def progress(step: runner.Step) -> None:
        s = step.sample
        what = f"p50 {s.latency.p50:.1f} us cpu {s.server_cpu:.2f}" if s is not None else ""
        elapsed = time.monotonic() - start
        print(f"[{elapsed:6.0f} s] {step.done}/{step.total} {step.label} {what}", file=sys.stderr)

    res = runner.run_bench(opts, progress)
    wall = time.monotonic() - start
    os.makedirs(args.out, exist_ok=True)
    res.save(os.path.join(args.out, "results.json"))
    report, _plots = write_report(res, args.out)
    cmd = shlex.join(["benchmarks/bench_modes.py", *(argv if argv is not None else sys.argv[1:])])
    with open(report, "a", encoding="utf-8") as f:
        f.write(f"\n## This run\n\n`{cmd}`: {len(res.samples)} samples, wall time {wall:.0f} s.\n")
    for c in evaluate_claims(res):
        print(f"({c.key}) {c.workload}/{c.server}: {c.verdict} - {c.evidence}")
    print(f"wall time {wall:.0f} s; report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
