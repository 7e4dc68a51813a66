"""The bench's workloads: which server to start, which client drives it, how it is read.

=========  ======================================  ==========================================
workload   servers (in the server namespace)       client (in the client namespace)
=========  ======================================  ==========================================
sockperf   Debian's ``sockperf server`` (epoll)    ``sockperf ping-pong`` / ``under-load``
echo       :mod:`.servers.napiecho` on             the same sockperf client (the servers
           netdevkit's loop; the same handler on   speak sockperf's framing)
           stock asyncio and on uvloop
memcached  Debian's ``memcached -N`` (1 thread)    :mod:`.loadgen.mcload`, open loop
redis      Debian's ``redis-server``               ``redis-benchmark -c 1 -t get`` (closed
                                                   loop: ping-pong only)
=========  ======================================  ==========================================

How each server gets the epoll half of a mode: netdevkit's own loop takes the
preset on its command line (``--preset``); every other server is unmodified
and is configured from outside with :func:`netdevkit.attach.attach` once it
listens (its epoll contexts exist by then).

Timing of the CPU window: the server's CPU is sampled when the client says
its measured window opens and closes (sockperf's "Starting test..." and
"Test end" lines, mcload's ``--markers``), so start-up does not dilute it. redis-benchmark has no
warm-up and no fixed duration; its window is the whole run.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._os import affinity_of, format_cpu_list
from ..errors import NetdevkitError, RequestError, ToolError
from . import sockperf
from .cpu import CpuSnapshot, Watch, snapshot
from .results import Latency
from .site import Site

__all__ = [
    "PEERS",
    "WORKLOADS",
    "ClientResult",
    "ServerSpec",
    "missing_peers",
    "run_client",
    "server_specs",
]

WORKLOADS = ("echo", "sockperf", "memcached", "redis")

#: workload -> (program, Debian package) it needs
PEERS: dict[str, tuple[tuple[str, str], ...]] = {
    "echo": (("sockperf", "sockperf"),),
    "sockperf": (("sockperf", "sockperf"),),
    "memcached": (("memcached", "memcached"),),
    "redis": (("redis-server", "redis-server"), ("redis-benchmark", "redis-tools")),
    "http": (("wrk", "wrk"),),
}

ECHO_SERVERS = ("netdevkit", "asyncio", "uvloop", "fast")
#: every server name a workload can start (for --servers)
SERVERS: dict[str, tuple[str, ...]] = {
    "echo": ECHO_SERVERS,
    "sockperf": ("sockperf",),
    "memcached": ("memcached",),
    "redis": ("redis",),
}
_REDIS_PCT = re.compile(r"([\d.]+)% <= ([\d.]+) milliseconds \(cumulative count (\d+)\)")
_REDIS_RPS = re.compile(r"throughput summary: ([\d.]+) requests per second")


def missing_peers(workloads: tuple[str, ...]) -> list[str]:
    """One line per program the workloads need that is not installed."""
    out = []
    for w in workloads:
        for prog, pkg in PEERS.get(w, ()):
            if shutil.which(prog) is None:
                out.append(f"{w} needs {prog}: install the Debian package '{pkg}'")
    return sorted(set(out))


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """A server to start: argv inside the server namespace and how to configure it."""

    workload: str
    server: str
    argv: list[str]
    port: int
    #: True: unmodified, gets the epoll half through netdevkit attach
    attach: bool
    #: loads this server is measured at
    loads: tuple[int, ...]
    #: the client that drives it ("" : the workload's own)
    client: str = ""
    #: connections of the open-loop generator (0: the workload's default)
    connections: int = 0


def server_specs(
    workload: str,
    tb: Site,
    port: int,
    mode: str,
    loads: tuple[int, ...],
    tmpdir: str,
    work_us: float = 0.0,
) -> list[ServerSpec]:
    """The server(s) of *workload* for *mode*, and the loads each is driven at; the echo
    ``fast`` server does *work_us* of CPU work per answer."""
    addr = tb.server_addr
    if workload == "sockperf":
        feed = sockperf.write_feed_file(tmpdir, addr, port)
        argv = sockperf.server_argv(addr, port, feed_file=feed)
        return [ServerSpec(workload, "sockperf", argv, port, True, loads)]
    if workload == "echo":
        py = sys.executable
        nd = [py, "-m", "netdevkit.bench.servers.napiecho", "--protocol", "sockperf"]
        nd += ["--host", addr]
        nd += ["--port", str(port), "--preset", mode, "--mode", "thread"]
        specs = [ServerSpec(workload, "netdevkit", nd, port, False, loads)]
        for loop in ("asyncio", "uvloop"):
            argv = [py, "-m", "netdevkit.bench.servers.stockecho", "--loop", loop]
            argv += ["--host", addr, "--port", str(port)]
            specs.append(ServerSpec(workload, loop, argv, port, True, loads))
        # netdevkit's FastLoop runs every mode, its own included (see bench.modes)
        from .modes import get_mode

        fast = [py, "-m", "netdevkit.bench.servers.rr", "--loop", "fast", "--host", addr]
        fast += ["--port", str(port), *get_mode(mode).loop_args]
        if work_us:
            fast += ["--work-us", f"{work_us:g}"]
        specs.append(ServerSpec(workload, "fast", fast, port, False, loads))
        return specs
    if workload == "memcached":
        argv = [shutil.which("memcached") or "memcached", "-u", "nobody", "-l", addr]
        argv += ["-p", str(port), "-U", "0", "-t", "1", "-N", "1", "-c", "4096"]
        return [ServerSpec(workload, "memcached", argv, port, True, loads)]
    if workload == "redis":
        argv = [shutil.which("redis-server") or "redis-server", "--bind", addr]
        argv += ["--port", str(port), "--save", "", "--appendonly", "no"]
        argv += ["--protected-mode", "no", "--io-threads", "1"]
        return [ServerSpec(workload, "redis", argv, port, True, loads)]
    raise RequestError(f"no servers for workload {workload!r}")


@dataclass(frozen=True, slots=True)
class ClientResult:
    """What a client measured, and the server CPU over its window."""

    latency: Latency
    achieved_rate: float
    cpu_before: CpuSnapshot
    cpu_after: CpuSnapshot
    client_ceiling: float | None = None
    client_limited: bool = False
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    #: CPUs the server and client could run on, read back while the client measured
    placement: dict[str, str] = field(default_factory=dict)
    #: the client spins by design (the open-loop generator): its CPU is evidence
    spins: bool = False


def _read_placement(server_pid: int, client_pid: int) -> dict[str, str]:
    """Cpus_allowed_list (all threads) of the server and the client, as cpulists."""
    out: dict[str, str] = {}
    for role, pid in (("server", server_pid), ("client", client_pid)):
        try:
            out[role] = format_cpu_list(affinity_of(pid))
        except (OSError, NetdevkitError):
            continue  # exited
    return out


def _drive(
    tb: Site,
    argv: list[str],
    server_pid: int,
    markers: tuple[str, str] | None,
    timeout: float,
    watch: Watch | None = None,
) -> tuple[str, CpuSnapshot, CpuSnapshot, dict[str, str]]:
    """Run a client, reading its output as it comes; sample the server's CPU when a
    line contains ``markers[0]`` (measuring starts) and ``markers[1]`` (it ends).
    Without markers the window is the whole run.

    sockperf idles for a while before "Starting test..." (with or without
    --dontwarmup; docs/bench.md), so a window timed from the client's start
    would dilute the run; hence the markers.
    """
    proc = tb.popen("client", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines: list[str] = []
    w = watch or Watch()
    w = Watch(proc.pid, w.kthreads, w.ksoftirqd)

    def snap() -> CpuSnapshot:
        return snapshot(server_pid, w)

    before = snap() if markers is None else None
    placement = _read_placement(server_pid, proc.pid) if markers is None else {}
    after: CpuSnapshot | None = None
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            if markers is None:
                continue
            if before is None and markers[0] in line:
                before = snap()
                placement = _read_placement(server_pid, proc.pid)
            elif before is not None and after is None and markers[1] in line:
                after = snap()
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        watchdog.cancel()
        if proc.stdout is not None:
            proc.stdout.close()
    text = "".join(lines)
    if proc.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-6:])
        killed = " (killed: no answer in time)" if proc.returncode == -9 else ""
        raise ToolError(f"client {argv[0]} exited with status {proc.returncode}{killed}:\n{tail}")
    if before is None:
        raise ToolError(f"client {argv[0]} never reported that it started measuring")
    if after is None:
        after = snap()
    return text, before, after, placement


def _sockperf_client(
    tb: Site,
    spec: ServerSpec,
    server_pid: int,
    load: int,
    duration: float,
    watch: Watch | None = None,
) -> ClientResult:
    # sockperf measures from 0.4 s after start to just before the end (-t whole seconds)
    seconds = max(1, math.ceil(duration + 0.45))
    argv = sockperf.client_argv(tb.server_addr, spec.port, seconds, mps=load)
    stdbuf = shutil.which("stdbuf")  # line-buffered stdout, so the markers arrive in time
    if stdbuf is not None:
        argv = [stdbuf, "-oL", *argv]
    markers = ("Starting test", "Test end")
    text, before, after, placement = _drive(tb, argv, server_pid, markers, seconds + 30, watch)
    rep = sockperf.parse_report(text)
    notes = []
    limited = rep.rate_too_high
    if limited:
        notes.append("sockperf: requested rate too high for the client")
    elif load and rep.received_rate < 0.95 * load:
        notes.append(f"answered {rep.received_rate:.0f}/s of {load}/s asked")
    if rep.dropped or rep.out_of_order:
        notes.append(f"{rep.dropped} dropped, {rep.out_of_order} out of order")
    return ClientResult(
        rep.latency(),
        rep.received_rate,
        before,
        after,
        client_limited=limited,
        notes=tuple(notes),
        extra={"sockperf_observations": rep.observations},
        placement=placement,
    )


def parse_redis_benchmark(text: str) -> tuple[Latency, float]:
    """Percentiles (us, from the cumulative distribution) and the throughput of
    ``redis-benchmark`` (non-CSV output)."""
    rows = [(float(ms) * 1000.0, int(n)) for _, ms, n in _REDIS_PCT.findall(text)]
    rps = _REDIS_RPS.search(text)
    if not rows or rps is None:
        tail = "\n".join(text.strip().splitlines()[-6:])
        raise ToolError(f"redis-benchmark printed no latency distribution:\n{tail}")
    total = rows[-1][1]

    def pct(p: float) -> float:
        need = p / 100.0 * total
        return next(us for us, n in rows if n >= need)

    lat = Latency(pct(50), pct(90), pct(99), pct(99.9), "rtt", total, None, rows[-1][0])
    return lat, float(rps.group(1))


def _redis_client(
    tb: Site,
    spec: ServerSpec,
    server_pid: int,
    load: int,
    duration: float,
    watch: Watch | None = None,
) -> ClientResult:
    requests = max(2000, int(duration * 15000))  # about *duration* s at veth ping-pong speed
    argv = [shutil.which("redis-benchmark") or "redis-benchmark", "-h", tb.server_addr]
    argv += ["-p", str(spec.port), "-t", "get", "-n", str(requests), "-c", "1", "--precision", "3"]
    text, before, after, placement = _drive(tb, argv, server_pid, None, duration * 10 + 30, watch)
    lat, rps = parse_redis_benchmark(text)
    notes = ("redis-benchmark -c 1 (closed loop)",)
    return ClientResult(lat, rps, before, after, notes=notes, placement=placement)


def _http_client(
    tb: Site,
    spec: ServerSpec,
    server_pid: int,
    load: int,
    duration: float,
    watch: Watch | None = None,
) -> ClientResult:
    """wrk, one thread and one connection (closed loop): HTTP ping-pong."""
    from .byo import parse_wrk

    seconds = max(1, math.ceil(duration))
    url = f"http://{tb.server_addr}:{spec.port}/"
    argv = [shutil.which("wrk") or "wrk", "-t", "1", "-c", "1", "-d", f"{seconds}s"]
    argv += ["--latency", url]
    text, before, after, placement = _drive(tb, argv, server_pid, None, seconds + 30, watch)
    pct, rps = parse_wrk(text)
    lat = Latency(pct[50], pct.get(90, pct[99]), pct[99], pct[99], "rtt", int(rps * seconds))
    notes = ("wrk -c 1 (closed loop); p99.9 not reported by wrk (shown as p99)",)
    return ClientResult(lat, rps, before, after, notes=notes, placement=placement)


#: the open-loop generator's protocol and default connections, per client
OPEN_LOOP: dict[str, tuple[str, int]] = {
    "sockperf": ("sockperf", 1),
    "echo": ("sockperf", 1),
    "memcached": ("memcached", 8),
    "redis": ("resp", 8),
}
#: markers the open-loop generator prints as its measured window opens and closes
_OPENLOOP_MARKERS = ("openloop: window start", "openloop: window end")


def openloop_argv(
    addr: str, port: int, protocol: str, rate: int, duration: float, connections: int
) -> list[str]:
    """argv of :mod:`netdevkit.bench.loadgen.openloop` with window markers and JSON."""
    argv = [sys.executable, "-m", "netdevkit.bench.loadgen.openloop", "--host", addr]
    argv += ["--port", str(port), "--protocol", protocol, "--rate", str(rate)]
    argv += ["--duration", f"{duration:g}", "--connections", str(connections)]
    return [*argv, "--warmup", "0.3", "--drain", "0.5", "-j", "--markers"]


def _openloop_client(
    tb: Site,
    spec: ServerSpec,
    server_pid: int,
    load: int,
    duration: float,
    watch: Watch | None = None,
) -> ClientResult:
    """The spinning open-loop generator (:mod:`.loadgen.openloop`) at *load* requests/s."""
    protocol, default_conns = OPEN_LOOP[spec.client or spec.workload]
    # ping-pong (load 0) is one request in flight: one connection (the generator refuses more)
    conns = 1 if load == 0 else spec.connections or default_conns
    argv = openloop_argv(tb.server_addr, spec.port, protocol, load, duration, conns)
    text, before, after, placement = _drive(
        tb, argv, server_pid, _OPENLOOP_MARKERS, duration + 30, watch
    )
    try:
        rep = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = "\n".join(text.strip().splitlines()[-4:])
        raise ToolError(f"the open-loop generator printed no report:\n{tail}") from None
    lat = Latency(
        rep["p50"],
        rep["p90"],
        rep["p99"],
        rep["p999"],
        "half-rtt" if rep["half_rtt"] else "rtt",
        rep["count"],
        rep["mean"],
        rep["max"],
    )
    notes = [f"client-limited: {r}" for r in rep["reasons"]]
    if rep["timeouts"]:
        notes.append(f"{rep['timeouts']} requests unanswered")
    elif rep["achieved_rate"] < 0.95 * load and not rep["client_limited"]:
        notes.append(f"answered {rep['achieved_rate']:.0f}/s of {load}/s asked")
    extra = {
        "client_lag_p99_us": rep["lag_p99"],
        "client_busy_share": rep["busy_share"],
        "client_cpu": rep["client_cpu"],
        "client_connections": conns,
    }
    return ClientResult(
        lat,
        float(rep["achieved_rate"]),
        before,
        after,
        client_limited=bool(rep["client_limited"]),
        notes=tuple(notes),
        extra=extra,
        placement=placement,
        spins=True,
    )


_Client = Callable[[Site, ServerSpec, int, int, float, Watch | None], ClientResult]
#: ping-pong (load 0) clients per client name; open-loop loads use :func:`_openloop_client`
_PING_PONG: dict[str, _Client] = {
    "sockperf": _sockperf_client,
    "echo": _sockperf_client,
    "memcached": _openloop_client,
    "redis": _redis_client,
    "http": _http_client,
}


def run_client(
    tb: Site,
    spec: ServerSpec,
    server_pid: int,
    load: int,
    duration: float,
    watch: Watch | None = None,
) -> ClientResult:
    """Drive *spec*'s server at *load* (0: ping-pong) for about *duration* seconds."""
    client = spec.client or spec.workload
    if load > 0 and client in OPEN_LOOP:
        return _openloop_client(tb, spec, server_pid, load, duration, watch)
    return _PING_PONG[client](tb, spec, server_pid, load, duration, watch)
