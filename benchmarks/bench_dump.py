"""How fast netdevkit reads a big netdev family dump, against a bare decoder.

Builds one network namespace holding a veth pair with 1024 RX and 1024 TX
queues on each end and GRO on one end (veth has one NAPI per RX queue while
GRO is on), so the namespace has 1024 NAPI instances and 4096 queues. Then
times, in one run:

- ``Netdev.queue_dump()`` and ``Netdev.napi_dump()`` (the typed API:
  NamedTuples with enums);
- the same two dumps through a bare decoder written here: a raw generic
  netlink socket and a ``struct.unpack_from`` loop that yields plain tuples.
  It is the yardstick: what Python can do at best with the same bytes;
- ``netdevkit napi show -j --netns NS`` end to end (a new process);
- ``python -c pass`` (interpreter start-up, the floor of any CLI run).

Targets: the typed API within 1.5x of the bare decoder (medians), the CLI
under 0.1 s. Results go to ``benchmarks/results/dump.json`` and ``dump.md``.

Run as root: ``.venv/bin/python benchmarks/bench_dump.py [--repeat N]``.
The namespace is removed on every exit path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from netdevkit.netdev.client import Netdev
from netdevkit.netns import entered
from netdevkit.testbed import set_offloads

QUEUES = 1024
IF_GRO, IF_PEER = "ndkb-gro", "ndkb-peer"
RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 1.5
TARGET_CLI_S = 0.1

# -- the bare decoder (the yardstick) -------------------------------------------
#
# Kernel facts: nlmsghdr "=IHHII", genlmsghdr "=BBH", attributes "=HH" padded
# to 4; NLMSG_ERROR 2, NLMSG_DONE 3; queue attrs id 1, ifindex 2, type 3,
# napi-id 4 (u32); napi attrs ifindex 1, id 2, irq 3, pid 4, defer 5 (u32),
# gro-flush-timeout 6 and irq-suspend-timeout 7 (uint: 4 or 8 bytes), threaded 8.

NETLINK_GENERIC = 16
HDR = struct.Struct("=IHHII")
GENL = struct.Struct("=BBH")
NLA = struct.Struct("=HH")
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")
CMD_QUEUE_GET, CMD_NAPI_GET = 10, 11
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300

QueueRow = tuple[int, int, int, int | None]
NapiRow = tuple[int, int, int | None, int | None, int, int, int, int]


def _uint(buf: bytearray, a: int, length: int) -> int:
    return int(U32.unpack_from(buf, a)[0] if length == 8 else U64.unpack_from(buf, a)[0])


def _queue_row(buf: bytearray, a: int, b: int) -> QueueRow:
    qid = ifindex = qtype = 0
    napi: int | None = None
    u32 = U32.unpack_from
    nla = NLA.unpack_from
    while a < b:
        length, t = nla(buf, a)
        t &= 0x3FFF
        if t == 1:
            qid = u32(buf, a + 4)[0]
        elif t == 2:
            ifindex = u32(buf, a + 4)[0]
        elif t == 3:
            qtype = u32(buf, a + 4)[0]
        elif t == 4:
            napi = u32(buf, a + 4)[0]
        a += (length + 3) & ~3
    return (qid, ifindex, qtype, napi)


def _napi_row(buf: bytearray, a: int, b: int) -> NapiRow:
    ifindex = nid = defer = gro = suspend = threaded = 0
    irq: int | None = None
    pid: int | None = None
    u32 = U32.unpack_from
    nla = NLA.unpack_from
    while a < b:
        length, t = nla(buf, a)
        t &= 0x3FFF
        if t == 1:
            ifindex = u32(buf, a + 4)[0]
        elif t == 2:
            nid = u32(buf, a + 4)[0]
        elif t == 3:
            irq = u32(buf, a + 4)[0]
        elif t == 4:
            pid = u32(buf, a + 4)[0]
        elif t == 5:
            defer = u32(buf, a + 4)[0]
        elif t == 6:
            gro = _uint(buf, a + 4, length)
        elif t == 7:
            suspend = _uint(buf, a + 4, length)
        elif t == 8:
            threaded = u32(buf, a + 4)[0]
        a += (length + 3) & ~3
    return (ifindex, nid, irq, pid, defer, gro, suspend, threaded)


class BareDumper:
    """A raw generic netlink socket that dumps and decodes into tuples."""

    def __init__(self, netns: str, family_id: int) -> None:
        with entered(netns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.bind((0, 0))
        self.family_id = family_id
        self.buf = bytearray(1 << 20)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def dump(self, cmd: int, row: Callable[[bytearray, int, int], Any]) -> list[Any]:
        self.seq += 1
        seq = self.seq
        req = HDR.pack(HDR.size + GENL.size, self.family_id, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        self.sock.send(req + GENL.pack(cmd, 1, 0))
        rows: list[Any] = []
        buf = self.buf
        hdr = HDR.unpack_from
        start = HDR.size + GENL.size
        while True:
            n = self.sock.recv_into(buf)
            pos = 0
            while pos < n:
                length, mtype, _flags, mseq, _pid = hdr(buf, pos)
                if mseq == seq:
                    if mtype == 3:  # NLMSG_DONE
                        return rows
                    if mtype == 2:  # NLMSG_ERROR
                        raise OSError(-struct.unpack_from("=i", buf, pos + 16)[0], "dump failed")
                    rows.append(row(buf, pos + start, pos + length))
                pos += (length + 3) & ~3


# -- the namespace -------------------------------------------------------------


def build_namespace(ns: str) -> tuple[int, int]:
    """veth pair with QUEUES rx/tx queues per end, GRO on one end; both up."""
    pr_netns.create(ns)
    with IPRoute(netns=ns) as ipr:
        ipr.link(
            "add",
            ifname=IF_GRO,
            kind="veth",
            num_rx_queues=QUEUES,
            num_tx_queues=QUEUES,
            peer={"ifname": IF_PEER, "num_rx_queues": QUEUES, "num_tx_queues": QUEUES},
        )
        (gro,) = ipr.link_lookup(ifname=IF_GRO)
        (peer,) = ipr.link_lookup(ifname=IF_PEER)
    set_offloads(ns, IF_GRO)  # while down: the NAPIs appear once, at open
    with IPRoute(netns=ns) as ipr:
        ipr.link("set", index=peer, state="up")
        ipr.link("set", index=gro, state="up")
    return gro, peer


def remove_namespace(ns: str) -> None:
    if os.path.exists(f"/run/netns/{ns}"):
        pr_netns.remove(ns)


# -- timing --------------------------------------------------------------------


def timed(fn: Callable[[], object], repeat: int, warmup: int = 2) -> dict[str, float]:
    """Best and median wall time of *fn*, in ms, after *warmup* untimed runs."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return {
        "best_ms": round(min(samples), 3),
        "median_ms": round(statistics.median(samples), 3),
        "runs": repeat,
    }


def run_process(argv: list[str], env: dict[str, str]) -> Callable[[], object]:
    def go() -> None:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)

    return go


def process_envs(cache_dir: str) -> tuple[dict[str, str], dict[str, str]]:
    """(installed, no bytecode) environments for the CLI runs.

    An installed package has its bytecode cached; a checkout run with
    PYTHONDONTWRITEBYTECODE=1 (as the development sessions are) compiles every
    module on every start. The first is what a user sees and what the target
    is about; the second is measured too because that is what a developer sees.
    The bytecode goes to a temporary PYTHONPYCACHEPREFIX, not into the tree.
    """
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cached = {**base, "PYTHONPYCACHEPREFIX": cache_dir}
    cold = {**base, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": cache_dir + "-none"}
    return cached, cold


def measure(ns: str, repeat: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    with Netdev.open(ns) as nd:
        napis, queues = nd.napi_dump(), nd.queue_dump()
        bare = BareDumper(ns, nd.info.id)
        try:
            bare_q = bare.dump(CMD_QUEUE_GET, _queue_row)
            bare_n = bare.dump(CMD_NAPI_GET, _napi_row)
            assert len(bare_q) == len(queues) and len(bare_n) == len(napis)
            assert sorted(n.id for n in napis) == sorted(r[1] for r in bare_n)
            res["typed_queue_dump"] = timed(nd.queue_dump, repeat)
            res["bare_queue_dump"] = timed(lambda: bare.dump(CMD_QUEUE_GET, _queue_row), repeat)
            res["typed_napi_dump"] = timed(nd.napi_dump, repeat)
            res["bare_napi_dump"] = timed(lambda: bare.dump(CMD_NAPI_GET, _napi_row), repeat)
        finally:
            bare.close()
    cli = [sys.executable, "-m", "netdevkit", "napi", "show", "-j", "--netns", ns]
    with tempfile.TemporaryDirectory(prefix="ndk-pycache-") as cache:
        cached, cold = process_envs(cache)
        out = subprocess.run(cli, check=True, capture_output=True, text=True, env=cached)
        assert len(json.loads(out.stdout)) == len(napis)
        runs = max(repeat // 2, 5)
        res["cli_napi_show_json"] = timed(run_process(cli, cached), runs, warmup=1)
        res["cli_napi_show_json_no_bytecode"] = timed(run_process(cli, cold), runs, warmup=1)
        pass_ = [sys.executable, "-c", "pass"]
        res["python_startup"] = timed(run_process(pass_, cached), repeat)
    res["counts"] = {"napis": len(napis), "queues": len(queues)}
    return res


def verdict(res: dict[str, Any]) -> dict[str, Any]:
    def ratio(kind: str, stat: str) -> float:
        typed: float = res[f"typed_{kind}_dump"][stat]
        bare: float = res[f"bare_{kind}_dump"][stat]
        return round(typed / bare, 2)

    ratios = {f"{k}_{s}": ratio(k, s) for k in ("queue", "napi") for s in ("median_ms", "best_ms")}
    cli_ms = res["cli_napi_show_json"]["median_ms"]
    return {
        "typed_vs_bare": ratios,
        "typed_within_1_5x": all(
            ratios[f"{k}_median_ms"] <= TARGET_RATIO for k in ("queue", "napi")
        ),
        "cli_under_100ms": cli_ms < TARGET_CLI_S * 1000,
    }


def write_results(res: dict[str, Any], meta: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "dump", **meta, "results": res, "verdict": verdict(res)}
    (RESULTS / "dump.json").write_text(json.dumps(doc, indent=2) + "\n")
    v = doc["verdict"]
    lines = [
        "# netdev dump benchmark",
        "",
        f"{meta['kernel']}, Python {meta['python']}, {meta['cpus']} CPUs, {meta['date']}.",
        f"Namespace: {res['counts']['napis']} NAPIs, {res['counts']['queues']} queues "
        f"(veth pair, {QUEUES} rx/tx queues per end, GRO on one end).",
        "",
        "| what | best ms | median ms |",
        "|---|---:|---:|",
    ]
    labels = {
        "typed_queue_dump": "typed API `queue_dump()`",
        "bare_queue_dump": "bare decoder, queue dump",
        "typed_napi_dump": "typed API `napi_dump()`",
        "bare_napi_dump": "bare decoder, NAPI dump",
        "cli_napi_show_json": "`netdevkit napi show -j --netns NS` (process)",
        "cli_napi_show_json_no_bytecode": "the same with PYTHONDONTWRITEBYTECODE=1, no cache",
        "python_startup": "`python -c pass` (process)",
    }
    for key, label in labels.items():
        lines.append(f"| {label} | {res[key]['best_ms']:.1f} | {res[key]['median_ms']:.1f} |")
    r = v["typed_vs_bare"]
    lines += [
        "",
        f"Typed/bare (median): queue {r['queue_median_ms']}x, NAPI {r['napi_median_ms']}x "
        f"(target <= {TARGET_RATIO}x: {'met' if v['typed_within_1_5x'] else 'MISSED'}).",
        f"CLI end to end (bytecode cached, as installed): "
        f"{res['cli_napi_show_json']['median_ms']:.1f} ms median "
        f"(target < {TARGET_CLI_S * 1000:.0f} ms: {'met' if v['cli_under_100ms'] else 'MISSED'}).",
        "",
    ]
    (RESULTS / "dump.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per measurement")
    parser.add_argument("--no-write", action="store_true", help="print, do not write results/")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_dump: needs root (creates a network namespace)", file=sys.stderr)
        return 2
    ns = f"ndkbench-{os.getpid()}"
    t0 = time.monotonic()
    try:
        build_namespace(ns)
        setup_s = time.monotonic() - t0
        res = measure(ns, args.repeat)
    finally:
        remove_namespace(ns)
    res["setup_s"] = round(setup_s, 2)
    meta = {
        "kernel": f"Linux {platform.release()}",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps({"results": res, "verdict": verdict(res)}, indent=2))
    if not args.no_write:
        write_results(res, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
