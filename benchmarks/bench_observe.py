"""How much the exporter and ``netdevkit top`` cost on a big namespace.

Builds one network namespace holding a veth pair with 1024 RX and 1024 TX
queues on each end and GRO on both ends (veth has one NAPI per RX queue
while GRO is on): 2048 NAPIs and 4096 queues (plus lo). Then, in one run:

1. Scrape against dumps, in interleaved rounds (median over rounds):
   - "dumps": the reads one scrape needs, through netdevkit's clients: NAPI
     dump, qstats dumps (per device and per queue), page-pool dump, rtnetlink
     link dump, /proc/net/netstat, softnet_stat, the busy-poll sysctls and the
     attach records' directory;
   - "scrape": an HTTP GET of /metrics from a running ``netdevkit exporter``
     process over one kept-alive connection, as Prometheus scrapes (reads,
     metric families and exposition text: 8192 NAPI samples and more).
   Target: scrape <= 1.5x dumps.
2. ``netdevkit top --netns NS --interval 1s`` on a pseudo-terminal (so the
   live view really draws), its process CPU time (utime + stime from
   /proc/PID/stat) over a 30 s window after a 5 s warm-up.
   Target: under 2% of one core.

Results go to ``benchmarks/results/observe.json`` and ``observe.md``.
Run as root, under the shared lock:
``flock /tmp/netdevkit-heavy.lock .venv/bin/python benchmarks/bench_observe.py``.
The namespace and the processes are removed on every exit path.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import pty
import select
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from netdevkit.journal import state_dir
from netdevkit.netdev.client import Netdev
from netdevkit.netns import entered
from netdevkit.observe.rtnl import LinkDumper
from netdevkit.observe.sources import read_attached_epolls, read_softnet, read_sysctls
from netdevkit.testbed import set_offloads

QUEUES = 1024
IF_A, IF_B = "ndko-a", "ndko-b"
RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 1.5
TARGET_TOP_CPU = 0.02


def build_namespace(ns: str) -> None:
    """veth pair with QUEUES rx/tx queues per end, GRO on both ends; both up."""
    pr_netns.create(ns)
    with IPRoute(netns=ns) as ipr:
        ipr.link(
            "add",
            ifname=IF_A,
            kind="veth",
            num_rx_queues=QUEUES,
            num_tx_queues=QUEUES,
            peer={"ifname": IF_B, "num_rx_queues": QUEUES, "num_tx_queues": QUEUES},
        )
        (a,) = ipr.link_lookup(ifname=IF_A)
        (b,) = ipr.link_lookup(ifname=IF_B)
    set_offloads(ns, IF_A)  # while down: the NAPIs appear once, at open
    set_offloads(ns, IF_B)
    with IPRoute(netns=ns) as ipr:
        ipr.link("set", index=a, state="up")
        ipr.link("set", index=b, state="up")


def remove_namespace(ns: str) -> None:
    if os.path.exists(f"/run/netns/{ns}"):
        pr_netns.remove(ns)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _netstat_fd(ns: str) -> int:
    with entered(ns):
        return os.open("/proc/thread-self/net/netstat", os.O_RDONLY)


def _reread(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 1 << 16)


def measure_scrape(ns: str, rounds: int) -> dict[str, Any]:
    port = _free_port()
    argv = [sys.executable, "-m", "netdevkit", "exporter", "--netns", ns]
    proc = subprocess.Popen([*argv, "--listen", f"127.0.0.1:{port}"], stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        assert b"serving" in proc.stderr.readline()
        nd = Netdev.open(ns)
        links = LinkDumper(ns)
        netstat = _netstat_fd(ns)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def dumps() -> int:
            n = len(nd.napi_dump()) + len(nd.qstats_dump()) + len(nd.qstats_dump(per_queue=True))
            n += len(nd.page_pool_dump()) + len(links.dump())
            _reread(netstat)
            read_softnet()
            read_sysctls()
            read_attached_epolls(state_dir())
            return n

        def scrape() -> int:
            # one kept-alive connection, as Prometheus scrapes
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            assert resp.status == 200
            return len(resp.read())

        napis = len(nd.napi_dump())
        size = scrape()
        for _ in range(3):  # warm-up
            dumps()
            scrape()
        d_ms: list[float] = []
        s_ms: list[float] = []
        for _ in range(rounds):
            for fn, out in ((dumps, d_ms), (scrape, s_ms)):
                t0 = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t0) * 1000)
        ratios = [s / d for s, d in zip(s_ms, d_ms, strict=True)]
        nd.close()
        links.close()
        os.close(netstat)
        conn.close()
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "napis": napis,
        "scrape_bytes": size,
        "dumps_ms": _stats(d_ms),
        "scrape_ms": _stats(s_ms),
        "ratio_median_of_rounds": round(statistics.median(ratios), 3),
        "ratio_of_medians": round(statistics.median(s_ms) / statistics.median(d_ms), 3),
        "rounds": rounds,
    }


def _stats(ms: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(ms), 3), "best_ms": round(min(ms), 3)}


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def _drain(fd: int, seconds: float) -> int:
    """Read the pty for *seconds* (the view must not block on a full terminal)."""
    got = 0
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                got += len(os.read(fd, 65536))
            except OSError:
                break
    return got


def measure_top(ns: str, warmup: float, window: float) -> dict[str, Any]:
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "50", "TERM": "xterm-256color"}
    argv = [sys.executable, "-m", "netdevkit", "top", "--netns", ns, "--interval", "1s"]
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    try:
        _drain(master, warmup)
        c0, t0 = _cpu_s(proc.pid), time.monotonic()
        drawn = _drain(master, window)
        c1, t1 = _cpu_s(proc.pid), time.monotonic()
        assert proc.poll() is None, "top exited"
        os.write(master, b"q")
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    share = (c1 - c0) / (t1 - t0)
    return {
        "cpu_seconds": round(c1 - c0, 3),
        "window_s": round(t1 - t0, 2),
        "cpu_share_of_one_core": round(share, 4),
        "terminal_bytes_drawn": drawn,
        "exit_code_after_q": proc.returncode,
    }


def write_results(res: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "observe.json").write_text(json.dumps(res, indent=2) + "\n")
    s, t = res["scrape"], res["top"]
    lines = [
        "# observe benchmark (exporter scrape, netdevkit top)",
        "",
        f"{res['kernel']}, Python {res['python']}, {res['cpus']} CPUs, {res['date']}"
        f"{' (machine shared with other work)' if res['shared'] else ''}.",
        f"Namespace: {s['napis']} NAPIs, veth pair with {QUEUES} rx/tx queues per end, "
        "GRO on both ends.",
        "",
        f"Scrape vs the dumps it needs, {s['rounds']} interleaved rounds:",
        "",
        "| what | median ms | best ms |",
        "|---|---:|---:|",
        f"| dumps and reads (NAPI, qstats x2, page pools, links, netstat, softnet, sysctls) "
        f"| {s['dumps_ms']['median_ms']:.1f} | {s['dumps_ms']['best_ms']:.1f} |",
        f"| HTTP scrape of `netdevkit exporter` ({s['scrape_bytes'] // 1024} KiB) "
        f"| {s['scrape_ms']['median_ms']:.1f} | {s['scrape_ms']['best_ms']:.1f} |",
        "",
        f"Scrape/dumps: median of per-round ratios {s['ratio_median_of_rounds']}x, ratio of "
        f"medians {s['ratio_of_medians']}x (target <= {TARGET_RATIO}x: "
        f"{'met' if s['ratio_median_of_rounds'] <= TARGET_RATIO else 'MISSED'}).",
        "",
        f"`netdevkit top --interval 1s` on a pty: {t['cpu_seconds']} s CPU over "
        f"{t['window_s']} s = {100 * t['cpu_share_of_one_core']:.2f}% of one core "
        f"(target < {100 * TARGET_TOP_CPU:.0f}%: "
        f"{'met' if t['cpu_share_of_one_core'] < TARGET_TOP_CPU else 'MISSED'}).",
        "",
    ]
    (RESULTS / "observe.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21, help="interleaved scrape/dump rounds")
    parser.add_argument("--top-window", type=float, default=30.0, help="seconds of top measured")
    parser.add_argument("--shared", action="store_true", help="note: other work ran meanwhile")
    parser.add_argument("--no-write", action="store_true", help="print, do not write results/")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_observe: needs root (creates a network namespace)", file=sys.stderr)
        return 2
    ns = f"ndkobs-{os.getpid()}"
    try:
        build_namespace(ns)
        res: dict[str, Any] = {
            "benchmark": "observe",
            "kernel": f"Linux {platform.release()}",
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "shared": args.shared,
            "scrape": measure_scrape(ns, args.rounds),
            "top": measure_top(ns, 5.0, args.top_window),
        }
    finally:
        remove_namespace(ns)
    print(json.dumps(res, indent=2))
    if not args.no_write:
        write_results(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
