"""How long a person waits for ``netdevkit napi show`` on a big machine.

Builds one network namespace holding a veth pair with 1024 RX and 1024 TX
queues on each end and GRO on both ends (veth has one NAPI per RX queue while
GRO is on): 2048 NAPI instances. Then runs, as new processes, in interleaved
rounds (every command once per round, so drift hits all alike), medians:

- ``netdevkit napi show --netns NS`` (the table, stdout not a terminal);
- ``netdevkit napi show -j --netns NS`` (the JSON array);
- ``python -c "<import what napi show -j needs>"`` (start-up: the CLI's parser
  as ``napi show -j`` builds it, parsing that command line, the netdev client
  and the units module);
- ``python -c pass`` (the interpreter alone).

Each ``--tree LABEL=SRC`` adds a source tree (a ``src`` directory) to compare,
run from the same rounds; by default only this checkout's ``src``. Bytecode
is cached in a temporary ``PYTHONPYCACHEPREFIX`` (as after ``pip install``).
Before timing, the table and the JSON of every tree are checked to be the
same bytes as the first tree's.

Targets: the table within 2x of ``-j``; importing what ``-j`` needs at most
30 ms over ``python -c pass``. Results go to ``benchmarks/results/cli.json``
and ``cli.md``.

Run as root (and, on a shared machine, under the heavy lock)::

    flock /tmp/netdevkit-heavy.lock .venv/bin/python benchmarks/bench_cli.py \\
        [--rounds N] [--tree before=/tmp/old/src]

The namespace is removed on every exit path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_dump import IF_PEER, build_namespace, remove_namespace

from netdevkit.testbed import set_offloads

RESULTS = Path(__file__).resolve().parent / "results"
SRC = Path(__file__).resolve().parent.parent / "src"
TARGET_TABLE_VS_JSON = 2.0
TARGET_IMPORT_MS = 30.0
# the parser as `napi show -j` builds it: a tree whose build_parser takes the command
# line registers that command only, an older one every command
IMPORTS = (
    "from netdevkit.cli.main import build_parser; argv = ['napi', 'show', '-j']; "
    "p = build_parser(argv) if build_parser.__code__.co_argcount else build_parser(); "
    "p.parse_args(argv); import netdevkit.netdev.client, netdevkit.units"
)


def commands(ns: str) -> dict[str, list[str]]:
    py = sys.executable
    cli = [py, "-m", "netdevkit", "napi", "show", "--netns", ns]
    return {
        "napi_show_table": cli,
        "napi_show_json": [*cli, "-j"],
        "import_for_json": [py, "-c", IMPORTS],
        "python_pass": [py, "-c", "pass"],
    }


def env_for(src: str, cache: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**base, "PYTHONPATH": src, "PYTHONPYCACHEPREFIX": cache}


def run_once(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return (time.perf_counter() - t0) * 1000


def check_same_output(cmds: dict[str, list[str]], envs: dict[str, dict[str, str]]) -> int:
    """Every tree prints the same table and JSON; returns the number of NAPIs."""
    outputs: dict[str, tuple[bytes, bytes]] = {}
    for label, env in envs.items():
        table = subprocess.run(cmds["napi_show_table"], check=True, capture_output=True, env=env)
        js = subprocess.run(cmds["napi_show_json"], check=True, capture_output=True, env=env)
        outputs[label] = (table.stdout, js.stdout)
    first = next(iter(outputs.values()))
    for label, out in outputs.items():
        if out != first:
            raise SystemExit(f"bench_cli: tree {label!r} prints different output")
    return len(json.loads(first[1]))


def measure(ns: str, trees: dict[str, str], rounds: int) -> dict[str, Any]:
    cmds = commands(ns)
    with tempfile.TemporaryDirectory(prefix="ndk-pycache-") as cache:
        envs = {label: env_for(src, f"{cache}/{label}") for label, src in trees.items()}
        napis = check_same_output(cmds, envs)  # also the warm-up (fills the caches)
        samples: dict[str, dict[str, list[float]]] = {
            label: {name: [] for name in cmds} for label in trees
        }
        for _ in range(rounds):
            for label, env in envs.items():
                for name, argv in cmds.items():
                    samples[label][name].append(run_once(argv, env))
    res: dict[str, Any] = {"napis": napis, "rounds": rounds, "trees": {}}
    for label, by_name in samples.items():
        med = {name: round(statistics.median(s), 1) for name, s in by_name.items()}
        res["trees"][label] = {
            "median_ms": med,
            "best_ms": {name: round(min(s), 1) for name, s in by_name.items()},
            "table_vs_json": round(med["napi_show_table"] / med["napi_show_json"], 2),
            "import_over_pass_ms": round(med["import_for_json"] - med["python_pass"], 1),
        }
    return res


def write_results(res: dict[str, Any], meta: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "cli", **meta, "results": res}
    (RESULTS / "cli.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# netdevkit napi show: how long a person waits",
        "",
        f"{meta['kernel']}, Python {meta['python']}, {meta['cpus']} CPUs, {meta['date']}.",
        f"Namespace: {res['napis']} NAPIs (veth pair, 1024 rx/tx queues per end, GRO on both).",
        f"{res['rounds']} interleaved rounds, medians in ms (new process each run, bytecode "
        "cached).",
        "",
        "| tree | table | -j | table / -j | import for -j | python -c pass | import over pass |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in res["trees"].items():
        m = r["median_ms"]
        lines.append(
            f"| {label} | {m['napi_show_table']} | {m['napi_show_json']} | "
            f"{r['table_vs_json']}x | {m['import_for_json']} | {m['python_pass']} | "
            f"{r['import_over_pass_ms']} |"
        )
    lines += [
        "",
        f"Targets: table within {TARGET_TABLE_VS_JSON}x of -j; import for -j at most "
        f"{TARGET_IMPORT_MS:.0f} ms over `python -c pass`.",
        "",
    ]
    (RESULTS / "cli.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="LABEL=SRC",
        help="also time the source tree SRC (a src/ directory) under LABEL",
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not write results/")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_cli: needs root (creates a network namespace)", file=sys.stderr)
        return 2
    trees: dict[str, str] = {}
    for spec in args.tree:
        label, sep, src = spec.partition("=")
        if not sep or not Path(src, "netdevkit").is_dir():
            print(f"bench_cli: --tree {spec!r}: want LABEL=SRC with SRC/netdevkit", file=sys.stderr)
            return 2
        trees[label] = src
    trees["this"] = str(SRC)
    ns = f"ndkbench-cli-{os.getpid()}"
    try:
        build_namespace(ns)
        set_offloads(ns, IF_PEER)  # GRO on the second end too: 2048 NAPIs
        res = measure(ns, trees, args.rounds)
    finally:
        remove_namespace(ns)
    meta = {
        "kernel": f"Linux {platform.release()}",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps(res, indent=2))
    if not args.no_write:
        write_results(res, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
