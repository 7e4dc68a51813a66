"""uvicorn on netdevkit's loop against stock uvicorn: wrk in the testbed, paired rounds.

A Starlette hello-world (``starlette`` and ``uvicorn`` from the test extra) under uvicorn
in the server namespace of a 4-queue testbed, wrk in the client namespace. Cells:

- one worker, one wrk connection: stock uvicorn (``--loop asyncio``, ``--loop uvloop``,
  NAPI untuned) and netdevkit's loop in each mode (``--loop
  netdevkit.integrations.uvicorn:NAME``, with the mode's NAPI half applied to the server
  veth while the cell runs);
- four workers, 16 connections, the base, napibusy and suspend presets: one shared
  listener (``--workers 4``) against one listener per worker steered by rx queue
  (``netdevkit.integrations.reuseport --raw-queue``).

Each round runs every cell once, in an order rotated by one per round; a cell's numbers are
the median over rounds, and its ratio to stock asyncio (one worker) or to the shared
listener (four workers) is the median of the per-round ratios. Server CPU is the server
processes' utime + stime over the wrk run, in cores.

Usage (root; a quiet machine for numbers worth quoting)::

    sudo .venv/bin/python benchmarks/bench_servers.py --rounds 3 --duration 5

Writes ``benchmarks/results/<out>.json`` and ``<out>.md`` (``--out``, default ``servers``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netdevkit.procfs import descendants
from netdevkit.testbed import Testbed, TestbedConfig
from netdevkit.tuning.context import tuned

RESULTS = Path(__file__).resolve().parent / "results"
PORT = 18_580
APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def hello(request):
    return PlainTextResponse("hello")

app = Starlette(routes=[Route("/", hello)])
"""
ND = "netdevkit.integrations.uvicorn:"


@dataclass(frozen=True)
class Cell:
    name: str
    loop: str  # uvicorn --loop
    napi: str  # the preset whose NAPI half applies ("base": untuned)
    workers: int = 1
    steered: bool = False
    conns: int = 1
    baseline: str = "asyncio"


CELLS = (
    Cell("asyncio", "asyncio", "base"),
    Cell("uvloop", "uvloop", "base"),
    Cell("nd-base", ND + "base", "base"),
    Cell("nd-napibusy", ND + "napibusy", "napibusy"),
    Cell("nd-fullbusy", ND + "fullbusy", "fullbusy"),
    Cell("nd-suspend", ND + "suspend", "suspend"),
    Cell("nd-adaptive-window", ND + "adaptive_window", "suspend"),
    Cell("nd-hybrid", ND + "hybrid", "base"),
    Cell("nd-hot-spin", ND + "hot_spin", "base"),
    Cell("4w-shared-suspend", ND + "suspend", "suspend", 4, False, 16, "4w-shared-suspend"),
    Cell("4w-steered-suspend", ND + "suspend", "suspend", 4, True, 16, "4w-shared-suspend"),
    Cell("4w-shared-napibusy", ND + "napibusy", "napibusy", 4, False, 16, "4w-shared-napibusy"),
    Cell("4w-steered-napibusy", ND + "napibusy", "napibusy", 4, True, 16, "4w-shared-napibusy"),
    Cell("4w-shared-base", ND + "base", "base", 4, False, 16, "4w-shared-base"),
    Cell("4w-steered-base", ND + "base", "base", 4, True, 16, "4w-shared-base"),
)


def _argv(cell: Cell) -> list[str]:
    uvicorn = [sys.executable, "-m", "uvicorn", "hello_app:app", "--no-access-log"]
    uvicorn += ["--loop", cell.loop, "--log-level", "warning"]
    if not cell.steered:
        extra = ["--workers", str(cell.workers)] if cell.workers > 1 else []
        return [*uvicorn, "--host", "0.0.0.0", "--port", str(PORT), *extra]
    launcher = [sys.executable, "-m", "netdevkit.integrations.reuseport", "--raw-queue"]
    launcher += ["--workers", str(cell.workers), "--port", str(PORT), "--"]
    return [*launcher, *uvicorn, "--fd", "{fd}"]


@contextlib.contextmanager
def serving(tb: Testbed, cell: Cell, cwd: str) -> Iterator[subprocess.Popen[bytes]]:
    argv = ["ip", "netns", "exec", tb.server_ns, *_argv(cell)]
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not _listening(tb):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{cell.name}: the server did not start")
            time.sleep(0.2)
        yield proc
    finally:
        kids = descendants(proc.pid)
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        for pid in [proc.pid, *kids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        proc.wait()


def _listening(tb: Testbed) -> bool:
    with contextlib.closing(tb.socket("client")) as s:
        s.settimeout(1)
        return s.connect_ex((tb.server_addr, PORT)) == 0


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(text: str) -> dict[str, float]:
    """p50/p99 (us) and requests/s from ``wrk --latency`` output."""
    out: dict[str, float] = {}
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m:
            out[key] = float(m.group(1)) * _UNITS[m.group(2)]
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    return out


def _wrk(tb: Testbed, conns: int, seconds: int) -> dict[str, float]:
    url = f"http://{tb.server_addr}:{PORT}/"
    argv = ["ip", "netns", "exec", tb.client_ns, "wrk", f"-t{min(conns, 2)}", f"-c{conns}"]
    argv += [f"-d{seconds}s", "--latency", url]
    run = subprocess.run(argv, capture_output=True, text=True, check=False)
    result = parse_wrk(run.stdout)
    if run.returncode != 0 or "rps" not in result or "Socket errors" in run.stdout:
        raise SystemExit(f"wrk failed: {run.stdout[-300:]} {run.stderr[-300:]}")
    return result


def _cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


def measure(tb: Testbed, cell: Cell, duration: int, cwd: str) -> dict[str, float]:
    with (
        tuned(tb.if_of("server"), preset=cell.napi, netns=tb.server_ns),
        serving(tb, cell, cwd) as proc,
    ):
        _wrk(tb, cell.conns, 1)  # warm up
        pids = [proc.pid, *descendants(proc.pid)]
        cpu0, t0 = _cpu_seconds(pids), time.monotonic()
        result = _wrk(tb, cell.conns, duration)
        result["server_cpu"] = (_cpu_seconds(pids) - cpu0) / (time.monotonic() - t0)
        return result


def summarise(rounds: list[dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    rows = []
    for cell in CELLS:
        done = [r for r in rounds if cell.name in r]
        if not done:
            continue
        row: dict[str, Any] = {"cell": cell.name, "rounds": len(done)}
        for key in ("p50_us", "p99_us", "rps", "server_cpu"):
            row[key] = statistics.median(r[cell.name][key] for r in done)
            paired = [
                r[cell.name][key] / r[cell.baseline][key]
                for r in done
                if cell.baseline in r and r[cell.baseline].get(key)
            ]
            row[f"{key}_ratio"] = statistics.median(paired) if paired else None
        rows.append(row)
    return rows


def _f(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# uvicorn on netdevkit's loop ({meta['when']}, {meta['rounds']} rounds of "
        f"{meta['duration']} s, Linux {meta['kernel']}, {meta['cpus']} CPUs)",
        "",
        meta["note"],
        "",
        "| cell | p50 us | p99 us | req/s | server CPU | p50 / base | p99 / base | req/s / base |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['cell']} | {_f(r['p50_us'])} | {_f(r['p99_us'])} | {_f(r['rps'])} | "
            f"{_f(r['server_cpu'], 2)} | {_f(r['p50_us_ratio'], 2)} | "
            f"{_f(r['p99_us_ratio'], 2)} | {_f(r['rps_ratio'], 2)} |"
        )
    lines += ["", "base: stock asyncio for one worker, the shared listener for four.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds of wrk per cell")
    ap.add_argument("--cells", default="", help="comma list of cell names (default: all)")
    ap.add_argument("--out", default="servers")
    ap.add_argument("--note", default="", help="a sentence for the results (e.g. the load)")
    args = ap.parse_args(argv)
    wanted = [c for c in CELLS if not args.cells or c.name in args.cells.split(",")]
    rounds: list[dict[str, dict[str, float]]] = []
    with (
        tempfile.TemporaryDirectory() as cwd,
        Testbed(TestbedConfig(name=f"bsrv{os.getpid()}", queues=4)) as tb,
    ):
        Path(cwd, "hello_app.py").write_text(APP)
        for i in range(args.rounds):
            order = wanted[i % len(wanted) :] + wanted[: i % len(wanted)]
            rounds.append({c.name: measure(tb, c, args.duration, cwd) for c in order})
            print(f"round {i + 1}: {json.dumps(rounds[-1])}", flush=True)
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rounds": args.rounds,
        "duration": args.duration,
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "note": args.note,
    }
    rows = summarise(rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "rounds": rounds}, indent=1) + "\n"
    )
    (RESULTS / f"{args.out}.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
