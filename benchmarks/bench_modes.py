"""The publishable full run of ``netdevkit bench``: every mode, every workload, a load sweep.

What it runs (one testbed, servers pinned apart from their clients with ``--cpus auto``:
server programs and threaded-NAPI kthreads on the last CPU, clients on CPU 0):

- modes: the kernel presets (base, defer, napibusy, fullbusy, suspend, threaded;
  busy-poll-thread where the kernel has it) and netdevkit's own (adaptive-window,
  hot-spin, hybrid: on the FastLoop echo server only);
- echo on netdevkit's FastLoop (every mode) with ``--work-us`` of CPU work per request
  (default 20: docs/bench.md, "Which load, and why"), sockperf's C server, memcached and
  redis: each server's knee is found open loop first (base mode), then swept open loop at
  10%, 50% and 90% of it (``--sweep``); the testbed's noise floor is measured first;
- ``--repeat 3`` rounds; every round runs every mode once, so modes are compared on
  per-round paired ratios (median over rounds).

Usage::

    sudo .venv/bin/python benchmarks/bench_modes.py                 # ~10 min, writes results
    sudo .venv/bin/python benchmarks/bench_modes.py --repeat 1 --out /tmp/m

Writes results.json, tradeoff.png and the other plots and report.md (recommendation
first) to ``benchmarks/results/modes/`` (or ``--out``), and appends the command line
and the wall time to report.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from netdevkit.bench import runner
from netdevkit.bench.claims import evaluate_claims
from netdevkit.bench.recommend import parse_target, recommend
from netdevkit.bench.report import write_report
from netdevkit.testbed import CpuPlacement

OUT = Path(__file__).resolve().parent / "results" / "modes"


def _options(args: argparse.Namespace) -> runner.BenchOptions:
    return runner.BenchOptions(
        modes=runner.parse_modes(args.modes),
        workloads=("echo", "sockperf", "memcached", "redis"),
        servers=("fast", "sockperf", "memcached", "redis"),
        loads=(),
        sweep=runner.parse_sweep(args.sweep),
        duration=args.duration,
        repeat=args.repeat,
        cpus=None if args.cpus == "none" else CpuPlacement.parse(args.cpus),
        target_p99_us=parse_target(args.target_p99),
        work_us=args.work_us,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--modes", default=",".join(runner.MODES))
    p.add_argument("--sweep", default="0.1,0.5,0.9", help="fractions of each server's knee")
    p.add_argument("--work-us", type=float, default=20.0, help="echo fast: work per request")
    p.add_argument("--target-p99", default="100us", help="the recommendation's p99 target")
    p.add_argument("--duration", type=float, default=0.5, help="seconds per sample (0.5)")
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
    for r in recommend(res):
        print(r.text)
    for c in evaluate_claims(res):
        print(f"({c.key}) {c.workload}/{c.server}: {c.verdict} at {c.load or '-'} - {c.evidence}")
    print(f"wall time {wall:.0f} s; report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
