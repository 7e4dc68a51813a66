"""Measure the measurement: the bench's load generators against one server, on the testbed.

Debian's C sockperf server (epoll, base NAPI settings) on the testbed's server side, pinned
to the last CPU; every client pinned to CPU 0. In paired, interleaved rounds (the order of
the clients alternates), per rate:

- ``pp``: ``sockperf ping-pong`` (one request in flight): the reference tail;
- ``sockperf-ul``: ``sockperf under-load --mps R`` (what the bench used before): a
  spinning pacer thread and a receiver thread on one CPU;
- ``openloop``: ``netdevkit.bench.loadgen.openloop`` (one spinning thread, latency from the
  intended send time), what the bench uses now.

Then the generator's own ceiling: ``openloop`` at rising rates until it is client-limited
(its own rules: send lag, busy share), with its busy share and send lag at each rate.

Usage::

    sudo .venv/bin/python benchmarks/bench_loadgen.py [--rounds 3] [--rates 2000,5000,15000]

Writes ``benchmarks/results/loadgen.json`` and ``loadgen.md``. Medians over rounds; every
sample also carries the bench's validity verdict (another task on a CPU, steal, ...), and a
disturbed sample is shown as such and left out of the medians.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

from netdevkit.bench import runner, validity, workloads
from netdevkit.bench.cpu import Watch, ksoftirqd_pids
from netdevkit.bench.results import PING_PONG
from netdevkit.bench.workloads import ServerSpec, server_specs
from netdevkit.testbed import CpuPlacement, Testbed, TestbedConfig
from netdevkit.tuning.presets import PRESETS

RESULTS = Path(__file__).resolve().parent / "results"


def _one(
    tb: Testbed, spec: ServerSpec, pid: int, kind: str, rate: int, dur: float
) -> dict[str, Any]:
    """One sample of client *kind* ("pp", "sockperf-ul", "openloop") at *rate*."""
    soft = Watch(ksoftirqd=ksoftirqd_pids())
    if kind == "sockperf-ul":  # the old open-loop client: sockperf under-load
        res = workloads._sockperf_client(tb, spec, pid, rate, dur, soft)
        usage = res.cpu_after.usage_since(res.cpu_before)
        ev = validity.evidence(
            usage, server_cpus=tb.cpus_of("server"), client_cpus=tb.cpus_of("client")
        )
        disturbed, extra, client_cores = validity.judge(ev, "base"), {}, usage.client_cores
    else:  # ping-pong (sockperf's own) or the open-loop generator, as the bench runs them
        m = runner._measure(tb, spec, "base", pid, PING_PONG if kind == "pp" else rate, dur, soft)
        res, disturbed, extra = m.res, m.disturbed, dict(m.res.extra)
        client_cores = m.evidence.generator_cores
    lat = res.latency
    return {
        "client": kind,
        "rate": rate if kind != "pp" else PING_PONG,
        "achieved": round(res.achieved_rate, 1),
        "p50": lat.p50,
        "p90": lat.p90,
        "p99": lat.p99,
        "p999": lat.p999,
        "client_limited": res.client_limited,
        "disturbed": list(disturbed),
        "client_cores": client_cores,
        "lag_p99_us": extra.get("client_lag_p99_us"),
        "busy_share": extra.get("client_busy_share"),
    }


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if not r["disturbed"] and r.get(key) is not None]
    return round(float(statistics.median(vals)), 2) if vals else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rates", default="2000,5000,15000")
    p.add_argument("--ceiling", default="20000,30000,40000,50000,60000,80000")
    p.add_argument("--duration", type=float, default=1.0)
    p.add_argument("--out", default="loadgen")
    args = p.parse_args(argv)
    rates = [int(x) for x in args.rates.split(",")]
    ceiling = [int(x) for x in args.ceiling.split(",")]
    cfg = TestbedConfig(name="ndkloadgen", queues=1, cpus=CpuPlacement.parse("auto"))
    rows: list[dict[str, Any]] = []
    with Testbed(cfg) as tb:
        spec = server_specs("sockperf", tb, runner.SERVER_PORT, "base", (), tb.tmpdir)[0]
        with runner._server(tb, spec, PRESETS["base"]) as (pid, _notes):
            for rnd in range(args.rounds):
                order = ["sockperf-ul", "openloop"]
                if rnd % 2:
                    order.reverse()
                rows.append({**_one(tb, spec, pid, "pp", 0, args.duration), "round": rnd})
                for rate in rates:
                    for kind in order:
                        r = _one(tb, spec, pid, kind, rate, args.duration)
                        rows.append({**r, "round": rnd})
                        why = "; ".join(r["disturbed"])
                        print(f"round {rnd + 1} {kind} {rate}/s p99 {r['p99']:.0f} us {why}",
                              file=sys.stderr)  # fmt: skip
            for rate in ceiling:
                r = {**_one(tb, spec, pid, "openloop", rate, args.duration), "round": 0}
                r["client"] = "openloop-ceiling"
                rows.append(r)
                print(f"ceiling {rate}/s -> {r['achieved']:.0f}/s limited={r['client_limited']}",
                      file=sys.stderr)  # fmt: skip
    summary = []
    for client in ("pp", "sockperf-ul", "openloop"):
        for rate in [PING_PONG] if client == "pp" else rates:
            sel = [r for r in rows if r["client"] == client and r["rate"] == rate]
            summary.append(
                {
                    "client": client,
                    "rate": rate,
                    "rounds": len(sel),
                    "clean": sum(1 for r in sel if not r["disturbed"]),
                    **{k: _median(sel, k) for k in ("achieved", "p50", "p99", "p999")},
                }
            )
    payload = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "args": vars(args),
        "summary": summary,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Load generators against Debian's C sockperf server (base, testbed, pinned)",
        "",
        f"{payload['date']}, Linux {payload['kernel']}, Python {payload['python']}; "
        f"{args.rounds} rounds of {args.duration:g} s, medians over clean rounds "
        "(half round trips, us).",
        "",
        "| client | rate | clean rounds | answered/s | p50 | p99 | p99.9 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['client']} | {s['rate'] or 'ping-pong'} | {s['clean']}/{s['rounds']} | "
            f"{s['achieved']} | {s['p50']} | {s['p99']} | {s['p999']} |"
        )
    lines += ["", "## The open-loop generator's ceiling", ""]
    lines += [
        "| offered | answered/s | client-limited | busy share | send lag p99 us | p50 | p99 "
        "| disturbed |",
        "|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["client"] == "openloop-ceiling":
            lines.append(
                f"| {r['rate']} | {r['achieved']:.0f} | {r['client_limited']} | "
                f"{r['busy_share']} | {r['lag_p99_us']} | {r['p50']:.1f} | {r['p99']:.1f} | "
                f"{'; '.join(r['disturbed']) or '-'} |"
            )
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
