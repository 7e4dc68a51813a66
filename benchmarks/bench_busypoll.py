"""Busy polling side by side: C sockperf, stock asyncio, uvloop and netdevkit's loop.

Runs on a fresh one-queue veth testbed (NAPI live on both ends). The client is always
Debian's ``sockperf ping-pong --tcp`` in the client namespace; latency is sockperf's
half round trip (p50, p99 as sockperf reports them). Server CPU is the scheduler's runtime
of every server thread (``/proc/PID/task/*/schedstat`` field 1, ns; tick-sampled
utime+stime miss a server that runs in short bursts) over sockperf's own measuring window
(opened at its "Starting test" line, closed at "Test end"), in cores; busy polling inside
``epoll_wait``/``recv`` is the server's system time and counts.

Which NAPI matters: a request travels client -> server, so it is delivered by the
*server-side* veth NAPI (the veth "IRQ" is the client's napi_schedule on it); that is the
NAPI the server's epoll context busy polls and the one each cell tunes. The client-side
NAPI (answers) stays at the driver default (no deferral) in every cell, so every cell
pays the same for the return path. Server and client are pinned to different CPUs.

Loads:

- ``pp``: closed-loop ping-pong as fast as answers come (the latency targets);
- ``low``: ping-pong paced by sockperf at ``--mps`` with ``--burst`` messages per cycle:
  with --burst 1 (default) one request every 1/mps seconds (the low-CPU question).

Usage::

    python benchmarks/bench_busypoll.py                  # all cells, writes results
    python benchmarks/bench_busypoll.py --cells 'nd-*' --duration 3 --no-write

Writes ``benchmarks/results/busypoll.json`` and ``busypoll.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from netdevkit.bench import sockperf
from netdevkit.bench.cpu import process_cpu_seconds
from netdevkit.bench.servers.rr import default_adaptive_us
from netdevkit.busypoll import EpollParams
from netdevkit.errors import ToolError
from netdevkit.netdev.client import Netdev
from netdevkit.procs import stop
from netdevkit.testbed import Testbed, TestbedConfig
from netdevkit.tuning.presets import PRESETS, US, NapiSettings

RESULTS = Path(__file__).resolve().parent / "results"
#: Each server gets a fresh port: sockperf's server does not set SO_REUSEADDR, so the
#: previous cell's connections in TIME_WAIT would make its bind fail.
_PORTS = itertools.count(11111)
SERVER_CPU = "1"
CLIENT_CPU = "0"
MARKERS = ("Starting test", "Test end")  # sockperf's own measuring window

ServerKind = Literal["sockperf", "rr"]
Load = Literal["pp", "low"]

BASE_NAPI = NapiSettings(0, 0, 0, False)
#: The low-CPU mode: IRQ suspension with a short in-kernel spin after each event.
LOWCPU_NAPI = NapiSettings(100, 20 * US, 20_000_000, False)
LOWCPU_EPOLL = EpollParams(busy_poll_usecs=50, busy_poll_budget=64, prefer_busy_poll=True)
#: Hybrid (sleep-then-poll) on the FastLoop: NAPI at the driver default (IRQs on while the
#: loop sleeps), window 50 us with budget 64 and prefer while it polls.
HYBRID_EPOLL = EpollParams(busy_poll_usecs=0, busy_poll_budget=64, prefer_busy_poll=True)


@dataclass(frozen=True, slots=True)
class Cell:
    """One server configuration measured under one load."""

    name: str
    label: str
    server: ServerKind
    napi: NapiSettings = BASE_NAPI
    loop: str = ""
    params: EpollParams | None = None
    hot_spin_us: int = 0
    adaptive_us: int = 0
    hybrid: bool = False
    sock_busy_poll: int = 0
    lls: int = 0
    load: Load = "pp"
    group: str = ""


@dataclass(slots=True)
class Result:
    """What one cell measured."""

    name: str
    label: str
    group: str
    load: str
    p50_us: float | None = None
    p99_us: float | None = None
    avg_us: float | None = None
    observations: int = 0
    server_cpu: float | None = None
    cpu_us_per_rt: float | None = None
    seconds: float = 0.0
    loadavg: float | None = None
    error: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)
    cell: dict[str, Any] = field(default_factory=dict)


def preset_params(name: str) -> EpollParams | None:
    ep = PRESETS[name].epoll
    if not ep.enabled:
        return None
    return EpollParams(ep.busy_poll_usecs, ep.busy_poll_budget, ep.prefer_busy_poll)


def _rr(name: str, label: str, loop: str, preset: str, group: str, **kw: Any) -> Cell:
    """An rr-server cell on *loop* with *preset* (NAPI half on the server's NAPI, epoll half
    on the loop); netdevkit's loops get their default adaptive window unless told."""
    params = preset_params(preset)
    kw.setdefault("adaptive_us", default_adaptive_us(loop, params))
    return Cell(name, label, "rr", PRESETS[preset].napi, loop, params, group=group, **kw)


def all_cells() -> list[Cell]:
    """Every cell of the bench, in table order."""
    cells = [
        Cell("c-plain", "sockperf server (C)", "sockperf", group="C"),
        Cell("c-lls50", "sockperf server (C) --lls 50", "sockperf", lls=50, group="C"),
        Cell("asyncio", "stock asyncio rr", "rr", loop="asyncio", group="stock"),
        Cell("uvloop", "uvloop rr", "rr", loop="uvloop", group="stock"),
    ]
    for name in ("base", "defer", "napibusy", "fullbusy", "suspend"):
        adaptive = " (adaptive 50 us)" if name == "suspend" else ""
        cells += [
            _rr(f"asyncio-{name}", f"stock asyncio, {name} (naive)", "asyncio", name, "naive"),
            _rr(f"nd-{name}", f"netdevkit loop, {name}{adaptive}", "netdevkit", name, "nd"),
            _rr(f"uv-{name}", f"uvloop + netdevkit params, {name}", "uvloop", name, "uv"),
        ]
    for name in ("napibusy", "fullbusy", "suspend"):
        adaptive = " (adaptive 50 us)" if name == "suspend" else ""
        cells.append(
            _rr(f"fast-{name}", f"netdevkit FastLoop, {name}{adaptive}", "fast", name, "fast")
        )
    cells += [
        # SO_BUSY_POLL on the accepted socket instead of epoll parameters (C's --lls way).
        _rr(
            "fast-sockbp50",
            "netdevkit FastLoop, SO_BUSY_POLL 50",
            "fast",
            "base",
            "fast",
            sock_busy_poll=50,
        ),
        # FastLoop spinning on the hot socket: each nonblocking read polls its NAPI once.
        _rr(
            "fast-spin50",
            "netdevkit FastLoop, hot-socket spin 50 us (SO_BUSY_POLL 50)",
            "fast",
            "base",
            "fast",
            hot_spin_us=50,
        ),
        _rr(
            "nd-spin50",
            "netdevkit loop, hot-socket spin 50 us (SO_BUSY_POLL 50)",
            "netdevkit",
            "base",
            "nd",
            hot_spin_us=50,
        ),
        # sockperf's own way in Python: a thread per connection, blocking busy-polling reads.
        Cell(
            "thr-lls50",
            "netdevkit threads server, SO_BUSY_POLL 50 (like --lls 50)",
            "rr",
            BASE_NAPI,
            "threads",
            sock_busy_poll=50,
            group="threads",
        ),
        Cell(
            "fast-hybrid",
            "netdevkit FastLoop, hybrid sleep-then-poll (window 50 us)",
            "rr",
            BASE_NAPI,
            "fast",
            HYBRID_EPOLL,
            adaptive_us=50,
            hybrid=True,
            group="fast",
        ),
        Cell(
            "nd-hybrid",
            "netdevkit loop, hybrid sleep-then-poll (window 50 us)",
            "rr",
            BASE_NAPI,
            "netdevkit",
            HYBRID_EPOLL,
            adaptive_us=50,
            hybrid=True,
            group="nd",
        ),
        # What the adaptive window replaces: suspend as is, and a fixed in-kernel window.
        _rr(
            "nd-suspend-plain",
            "netdevkit loop, suspend (no adaptive window)",
            "netdevkit",
            "suspend",
            "nd",
            adaptive_us=0,
        ),
        Cell(
            "nd-lowcpu",
            "netdevkit loop, suspend NAPI + fixed usecs 50",
            "rr",
            LOWCPU_NAPI,
            "netdevkit",
            LOWCPU_EPOLL,
            group="fixed window",
        ),
        Cell(
            "uv-lowcpu",
            "uvloop + netdevkit params, suspend NAPI + fixed usecs 50",
            "rr",
            LOWCPU_NAPI,
            "uvloop",
            LOWCPU_EPOLL,
            group="fixed window",
        ),
    ]
    # Low (paced) load: the CPU question.
    for base in (
        "c-lls50",
        "nd-base",
        "nd-fullbusy",
        "nd-suspend",
        "nd-lowcpu",
        "fast-fullbusy",
        "fast-suspend",
        "fast-hybrid",
        "nd-hybrid",
        "thr-lls50",
        "uv-fullbusy",
    ):
        cell = next(c for c in cells if c.name == base)
        cells.append(replace(cell, name=f"low:{base}", load="low", group="low-load"))
    return cells


# -- running one cell --------------------------------------------------------------------


def set_server_napi(tb: Testbed, napi: NapiSettings) -> None:
    """Apply *napi* to every NAPI of the server-side veth."""
    with Netdev.open(tb.server_ns) as nd:
        for inst in nd.napi_dump(tb.server_ifindex):
            nd.napi_set(
                inst.id,
                defer_hard_irqs=napi.defer_hard_irqs,
                gro_flush_timeout=napi.gro_flush_timeout,
                irq_suspend_timeout=napi.irq_suspend_timeout,
            )


def server_argv(tb: Testbed, cell: Cell, ready_file: str, port: int) -> list[str]:
    pin = ["taskset", "-c", SERVER_CPU]
    if cell.server == "sockperf":
        return [*pin, *sockperf.server_argv(tb.server_addr, port, lls_usecs=cell.lls)]
    argv = [
        *pin,
        sys.executable,
        "-m",
        "netdevkit.bench.servers.rr",
        "--host",
        tb.server_addr,
        "--port",
        str(port),
        "--loop",
        cell.loop,
        "--ready-file",
        ready_file,
    ]
    if cell.params is not None:
        p = cell.params
        argv += ["--usecs", str(p.busy_poll_usecs), "--budget", str(p.busy_poll_budget)]
        if p.prefer_busy_poll:
            argv.append("--prefer")
    if cell.hot_spin_us:
        argv += ["--hot-spin-us", str(cell.hot_spin_us)]
    if cell.loop in ("netdevkit", "fast"):
        argv += ["--adaptive-us", str(cell.adaptive_us)]
    if cell.hybrid:
        argv.append("--hybrid")
    if cell.sock_busy_poll:
        argv += ["--sock-busy-poll", str(cell.sock_busy_poll)]
    return argv


def client_argv(
    tb: Testbed, cell: Cell, duration: float, mps: int, burst: int, port: int
) -> list[str]:
    argv = [
        "stdbuf",
        "-oL",  # line-buffered: the window lines arrive when printed
        "taskset",
        "-c",
        CLIENT_CPU,
        "sockperf",
        "ping-pong",
        "--tcp",
        "-i",
        tb.server_addr,
        "-p",
        str(port),
        "-t",
        str(max(1, round(duration))),
        "-m",
        "14",
    ]
    if cell.load == "low":
        argv += ["--mps", str(mps), "--burst", str(burst)]
    return argv


def wait_listening(
    tb: Testbed, proc: subprocess.Popen[bytes], ready_file: str | None, port: int
) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        if ready_file is not None:
            if os.path.exists(ready_file) and os.path.getsize(ready_file):
                return
        else:
            out = tb.run("server", ["ss", "-Hltn", f"sport = :{port}"], capture_output=True)
            if out.stdout.strip():
                return
        time.sleep(0.05)
    raise RuntimeError("server did not start listening within 10 s")


#: sockperf's whole run (warm-up included), as the CPU window between MARKERS spans it
_RUN = re.compile(r"\[Total Run\] RunTime=[\d.]+ sec; .*ReceivedMessages=(\d+)")


def parse_sockperf(text: str) -> tuple[sockperf.SockperfReport | None, int]:
    """The client's report (None if it printed none) and all answers of the whole run."""
    try:
        report: sockperf.SockperfReport | None = sockperf.parse_report(text)
    except ToolError:
        report = None
    run = _RUN.search(re.sub(r"\x1b\[[0-9;]*m", "", text))
    return report, int(run.group(1)) if run else 0


@contextlib.contextmanager
def server_running(tb: Testbed, cell: Cell, port: int) -> Iterator[subprocess.Popen[bytes]]:
    with tempfile.TemporaryDirectory(prefix="ndk-bench-") as tmp:
        ready = os.path.join(tmp, "ready") if cell.server == "rr" else None
        log = open(os.path.join(tmp, "server.log"), "w+b")  # noqa: SIM115 - closed below
        proc = tb.popen("server", server_argv(tb, cell, ready or "", port), stdout=log, stderr=log)
        try:
            try:
                wait_listening(tb, proc, ready, port)
            except RuntimeError as err:
                log.seek(0)
                raise RuntimeError(f"{err}: {log.read().decode(errors='replace')[-500:]}") from None
            yield proc
        finally:
            stop(proc)
            log.close()


def run_cell(tb: Testbed, cell: Cell, duration: float, mps: int, burst: int) -> Result:
    res = Result(cell.name, cell.label, cell.group, cell.load, cell=asdict(cell))
    with open("/proc/loadavg", encoding="ascii") as f:
        res.loadavg = float(f.read().split()[0])
    set_server_napi(tb, cell.napi)
    try:
        port = next(_PORTS)
        with server_running(tb, cell, port) as proc:
            argv = client_argv(tb, cell, duration, mps, burst, port)
            returncode, text, window = run_client(tb, argv, proc.pid, duration + 30)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        res.error = str(err)
        return res
    finally:
        set_server_napi(tb, BASE_NAPI)
    report, answers = parse_sockperf(text)
    if window is not None:
        (cpu0, t0), (cpu1, t1) = window
        res.seconds = round(t1 - t0, 3)
        res.server_cpu = round((cpu1 - cpu0) / (t1 - t0), 3)
        if answers:
            res.cpu_us_per_rt = round((cpu1 - cpu0) * 1e6 / answers, 2)
    if report is not None:
        res.p50_us, res.p99_us = report.percentiles.get(50.0), report.percentiles.get(99.0)
        res.avg_us, res.observations = report.avg, report.observations
    if returncode != 0 or res.p50_us is None or window is None:
        res.error = f"sockperf exit {returncode}: {text.strip()[-300:]}"
    return res


Sample = tuple[float, float]  # (server CPU seconds, time.monotonic())


def run_client(
    tb: Testbed, argv: list[str], server_pid: int, timeout: float
) -> tuple[int, str, tuple[Sample, Sample] | None]:
    """Run sockperf, reading its lines as they come; sample the server's CPU (schedstat
    runtime of all its threads) at sockperf's "Starting test" and "Test end" lines.

    [seen] sockperf 3.7 idles about 2 s before "Starting test...", so a window opened at
    process start would dilute the CPU figure.
    """
    proc = tb.popen("client", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines: list[str] = []
    start: Sample | None = None
    end: Sample | None = None
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            if start is None and MARKERS[0] in line:
                start = (process_cpu_seconds(server_pid), time.monotonic())
            elif start is not None and end is None and MARKERS[1] in line:
                end = (process_cpu_seconds(server_pid), time.monotonic())
        proc.wait(timeout=10)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    window = (start, end) if start is not None and end is not None else None
    return proc.returncode, "".join(lines), window


def combine(rounds: list[Result]) -> Result:
    """One row from several rounds of a cell: the median of each number (errors kept)."""
    ok = [r for r in rounds if not r.error and r.p50_us is not None]
    first = rounds[0]
    out = Result(first.name, first.label, first.group, first.load, cell=first.cell)
    out.rounds = [
        {
            k: getattr(r, k)
            for k in ("p50_us", "p99_us", "server_cpu", "cpu_us_per_rt", "loadavg", "error")
        }
        for r in rounds
    ]
    if not ok:
        out.error = first.error
        return out

    def med(name: str) -> float | None:
        vals = [v for r in ok if (v := getattr(r, name)) is not None]
        return round(statistics.median(vals), 3) if vals else None

    out.p50_us, out.p99_us, out.avg_us = med("p50_us"), med("p99_us"), med("avg_us")
    out.server_cpu, out.cpu_us_per_rt, out.loadavg = (
        med("server_cpu"),
        med("cpu_us_per_rt"),
        med("loadavg"),
    )
    out.observations = sum(r.observations for r in ok)
    out.seconds = sum(r.seconds for r in ok)
    return out


# -- report ------------------------------------------------------------------------------


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(results: list[Result], meta: dict[str, Any], verdicts: list[str]) -> str:
    limit = next((r for r in results if r.name == "c-lls50" and r.p50_us), None)
    lines = [
        "# Busy polling: request/response latency and server CPU",
        "",
        f"{meta['date']} · Linux {meta['kernel']} · {meta['cpus']} CPUs · "
        f"{meta['duration']} s per cell, median of {meta['rounds']} interleaved rounds · "
        "sockperf ping-pong --tcp, 14-byte messages, "
        "half round trip (us) · server CPU in cores (schedstat runtime of all server threads "
        "over sockperf's measuring window) · ratio = p50/p99 over "
        "the C busy-polling limit (sockperf server --lls 50) of the same run.",
        "",
        "| cell | load | p50 us | p99 us | server CPU (cores) | CPU us/round trip "
        "| p50 ratio | p99 ratio | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        r50 = r99 = None
        if limit and r.p50_us and r.p99_us and limit.p50_us and limit.p99_us:
            r50, r99 = r.p50_us / limit.p50_us, r.p99_us / limit.p99_us
        lines.append(
            f"| {r.label} | {r.load} | {_fmt(r.p50_us)} | {_fmt(r.p99_us)} | "
            f"{_fmt(r.server_cpu, 2)} | {_fmt(r.cpu_us_per_rt, 1)} | {_fmt(r50, 2)} | "
            f"{_fmt(r99, 2)} | {r.error[:80]} |"
        )
    lines += ["", "## Targets", "", *[f"- {v}" for v in verdicts], ""]
    return "\n".join(lines)


def paired_ratios(a: Result, b: Result, field: str = "p50_us") -> list[float]:
    """*field* of *a* over *field* of *b*, one per round in which both cells measured."""
    out = []
    for ra, rb in zip(a.rounds, b.rounds, strict=False):
        va, vb = ra.get(field), rb.get(field)
        if va and vb and not ra.get("error") and not rb.get("error"):
            out.append(va / vb)
    return out


def _paired_median(a: Result, b: Result, field: str = "p50_us") -> float | None:
    ratios = paired_ratios(a, b, field)
    return statistics.median(ratios) if ratios else None


def verdicts(results: list[Result]) -> list[str]:
    """The issue's three speed targets, each MET or NOT MET with its numbers.

    Every comparison is paired: the two cells ran in the same round, minutes apart at
    most, so each round gives one ratio, and the verdict takes the median of those ratios
    (this VM's latency drifts between rounds for every server, C included; a ratio of
    medians taken over different minutes mixes that drift into the comparison).
    """
    by = {r.name: r for r in results if r.p50_us is not None and r.p99_us is not None}
    out: list[str] = []
    lim = by.get("c-lls50")
    python = ("nd-", "uv-", "fast-", "thr-")
    py = [r for r in by.values() if r.load == "pp" and r.name.startswith(python)]
    if lim and py:
        # (1): the Python path with the lowest median per-round p50 ratio to C --lls 50;
        # then the same among event loops (the threads server does not multiplex).
        def ratio(r: Result) -> float:
            return _paired_median(r, lim) or 1e9

        loops = [r for r in py if not r.name.startswith("thr-")]
        for what, pool in (("fastest Python path", py), ("fastest event loop", loops)):
            if not pool:
                continue
            best = min(pool, key=ratio)
            r50, r99 = _paired_median(best, lim), _paired_median(best, lim, "p99_us")
            if r50 is None or r99 is None:
                continue
            ok = r50 <= 1.15 and r99 <= 1.2
            out.append(
                f"{'MET' if ok else 'NOT MET'}: (1) {what} ({best.label}): median per-round "
                f"ratio to C --lls 50 {r50:.2f}x p50 (<= 1.15), {r99:.2f}x p99 (<= 1.2); "
                f"medians {best.p50_us:.1f}/{best.p99_us:.1f} us vs "
                f"{lim.p50_us:.1f}/{lim.p99_us:.1f} us"
            )
    stock = by.get("asyncio")
    for name in ("napibusy", "fullbusy", "suspend"):
        nd, naive = by.get(f"nd-{name}"), by.get(f"asyncio-{name}")
        if not (nd and stock and naive):
            continue
        assert nd.p50_us and stock.p50_us and naive.p50_us
        # (2) "Beat stock asyncio instead of losing to it": faster than the untuned stock
        # loop, and faster than the naive application of the same preset round by round:
        # the median of the per-round p50 ratios below 1 and more wins than losses.
        ratios = paired_ratios(nd, naive)
        wins = sum(r < 1 for r in ratios)
        med = statistics.median(ratios) if ratios else nd.p50_us / naive.p50_us
        ok = nd.p50_us < stock.p50_us and med < 1 and 2 * wins > len(ratios)
        out.append(
            f"{'MET' if ok else 'NOT MET'}: (2) {nd.label}: p50 {nd.p50_us:.1f} us vs untuned "
            f"stock asyncio {stock.p50_us:.1f} us; vs the same preset applied naively to stock "
            f"asyncio {naive.p50_us:.1f} us: faster in {wins} of {len(ratios)} rounds, "
            f"median per-round ratio {med:.2f}"
        )
    for loop in ("fast", "nd"):
        full, low = by.get(f"low:{loop}-fullbusy"), by.get(f"low:{loop}-hybrid")
        if not (full and low):
            continue
        # (3) per round: the hybrid's p50 and CPU over full busy polling's on the same loop.
        lat, cpu = _paired_median(low, full), _paired_median(low, full, "server_cpu")
        if lat is None or cpu is None:
            continue
        ok = cpu < 0.7 and lat <= 1.2
        out.append(
            f"{'MET' if ok else 'NOT MET'}: (3) low-CPU mode under paced low load "
            f"({low.label}): median per-round ratio to full busy polling on the same loop "
            f"{lat:.2f}x p50 (<= 1.2), {cpu:.2f}x CPU (< 0.7); medians {low.p50_us:.1f} us at "
            f"{low.server_cpu:.2f} cores vs {full.p50_us:.1f} us at {full.server_cpu:.2f} cores"
        )
    return out


def load_results(path: Path) -> tuple[list[Result], dict[str, Any]]:
    """The results and meta of a written ``.json`` (to judge them again)."""
    payload = json.loads(path.read_text())
    results = []
    for d in payload["results"]:
        results.append(Result(**{k: v for k, v in d.items() if k in Result.__dataclass_fields__}))
    return results, payload["meta"]


def write(results: list[Result], meta: dict[str, Any], out: str) -> list[str]:
    """Judge *results* and write ``<out>.json`` and ``<out>.md``; returns the verdicts."""
    v = verdicts(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"version": 1, "meta": meta, "results": [asdict(r) for r in results], "targets": v}
    (RESULTS / f"{out}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{out}.md").write_text(markdown(results, meta, v))
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--cells", default="*", help="fnmatch pattern(s), comma-separated")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per cell")
    ap.add_argument("--mps", type=int, default=5000, help="low load: messages per second")
    ap.add_argument("--burst", type=int, default=1, help="low load: messages per burst")
    ap.add_argument("--rounds", type=int, default=5, help="rounds over all cells (median)")
    ap.add_argument("--no-write", action="store_true", help="print, do not write results")
    ap.add_argument(
        "--out", default="busypoll", help="results file name in benchmarks/results (no suffix)"
    )
    ap.add_argument(
        "--rejudge",
        action="store_true",
        help="run nothing: judge the rounds recorded in <out>.json again and rewrite it",
    )
    ap.add_argument("--name", default=f"bbp{os.getpid() % 100000}", help="testbed name")
    args = ap.parse_args(argv)
    if args.rejudge:
        results, meta = load_results(RESULTS / f"{args.out}.json")
        for line in write(results, meta, args.out):
            print(line)
        return 0
    for tool in ("sockperf", "taskset", "ss"):
        if shutil.which(tool) is None:
            print(f"bench_busypoll: {tool} not found", file=sys.stderr)
            return 2
    pats = args.cells.split(",")
    cells = [c for c in all_cells() if any(fnmatch.fnmatchcase(c.name, p) for p in pats)]
    per_cell: dict[str, list[Result]] = {c.name: [] for c in cells}
    with Testbed(TestbedConfig(name=args.name, queues=1)) as tb:
        for rnd in range(args.rounds):  # rounds interleave cells: drift hits all alike
            for cell in cells:
                r = run_cell(tb, cell, args.duration, args.mps, args.burst)
                per_cell[cell.name].append(r)
                print(
                    f"{rnd} {r.name:22} {r.load:4} p50 {_fmt(r.p50_us):>7} "
                    f"p99 {_fmt(r.p99_us):>7} cpu {_fmt(r.server_cpu, 2):>5} "
                    f"us/rt {_fmt(r.cpu_us_per_rt, 1):>5} load {r.loadavg} {r.error[:100]}",
                    flush=True,
                )
    results = [combine(rs) for rs in per_cell.values()]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "duration": args.duration,
        "rounds": args.rounds,
        "low_load": {"mps": args.mps, "burst": args.burst},
        "client": "sockperf ping-pong --tcp -m 14 (Debian 3.7), pinned to CPU " + CLIENT_CPU,
        "server_cpu": SERVER_CPU,
        "client_napi": "driver default (defer 0, gro 0)",
    }
    if args.no_write:
        for line in verdicts(results):
            print(line)
    else:
        for line in write(results, meta, args.out):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
