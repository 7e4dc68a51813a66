"""Before/after check of the busy-poll benchmark: two checkouts, paired interleaved rounds.

Runs ``benchmarks/bench_busypoll.py`` of checkout A and of checkout B one round at a time,
alternating which goes first (A B, B A, A B, ...), each with that checkout's own Python (its
``.venv``), so each side runs its own library and servers against the same kernel and
sockperf client. For every cell both sides ran, each round gives one B/A ratio of p50, p99
and server CPU; the table shows the median over rounds of each side and of the paired ratios
(latency here drifts twofold between runs, so only paired ratios are judged).

Usage::

    sudo .venv/bin/python benchmarks/bench_busypoll_ab.py --a /path/before --b . \\
        --cells 'c-lls50,nd-fullbusy,fast-*' --rounds 3

Writes ``benchmarks/results/<out>.json`` and ``<out>.md`` (``--out``, default
``busypoll-ab``) in the checkout this script lives in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ("p50_us", "p99_us", "server_cpu")


def run_side(tree: Path, cells: str, duration: float, tag: str) -> dict[str, dict[str, Any]]:
    """One round of *tree*'s bench over *cells*; its results by cell name."""
    python = tree / ".venv" / "bin" / "python"
    out = f"ab-{os.getpid()}-{tag}"
    argv = [str(python), "benchmarks/bench_busypoll.py", "--cells", cells, "--rounds", "1"]
    argv += ["--duration", str(duration), "--out", out]
    subprocess.run(argv, cwd=tree, check=True)
    written = [tree / "benchmarks" / "results" / f"{out}{suffix}" for suffix in (".json", ".md")]
    try:
        payload = json.loads(written[0].read_text())
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    return {r["name"]: r for r in payload["results"]}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def summarise(rounds: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per cell: each side's medians and the median of the paired B/A ratios."""
    names = [n for n in rounds[0][0] if n in rounds[0][1]]
    rows = []
    for name in names:
        row: dict[str, Any] = {"name": name, "label": rounds[0][1][name]["label"]}
        for field in FIELDS:
            a_vals, b_vals, ratios = [], [], []
            for a, b in rounds:
                av, bv = a[name].get(field), b[name].get(field)
                if av is not None:
                    a_vals.append(av)
                if bv is not None:
                    b_vals.append(bv)
                if av and bv:
                    ratios.append(bv / av)
            row[field] = {"a": _median(a_vals), "b": _median(b_vals), "b/a": _median(ratios)}
        rows.append(row)
    return rows


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:g}"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Busy-poll benchmark: before (A) and after (B), paired interleaved rounds",
        "",
        f"{meta['date']} · Linux {meta['kernel']} · {meta['cpus']} CPUs · "
        f"{meta['rounds']} rounds (order alternating) · {meta['duration']} s per cell · "
        f"A = {meta['a']} · B = {meta['b']}",
        "",
        "Medians over rounds; B/A is the median of the per-round ratios.",
        "",
        "| cell | p50 A | p50 B | p50 B/A | p99 A | p99 B | p99 B/A | CPU A | CPU B | CPU B/A |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cols = [r["name"]]
        for field in FIELDS:
            cols += [_f(r[field]["a"]), _f(r[field]["b"]), _f(r[field]["b/a"])]
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--a", type=Path, required=True, help="checkout A (before)")
    ap.add_argument("--b", type=Path, default=Path("."), help="checkout B (after)")
    ap.add_argument("--cells", default="c-lls50,nd-fullbusy,fast-fullbusy", help="fnmatch list")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--out", default="busypoll-ab")
    args = ap.parse_args(argv)
    trees = (args.a.resolve(), args.b.resolve())
    for tree in trees:
        if not (tree / ".venv" / "bin" / "python").exists():
            print(f"bench_busypoll_ab: {tree} has no .venv (run make venv there)", file=sys.stderr)
            return 2
    rounds = []
    for i in range(args.rounds):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        got: list[dict[str, Any]] = [{}, {}]
        for side in order:
            got[side] = run_side(trees[side], args.cells, args.duration, f"{i}{'ab'[side]}")
        rounds.append((got[0], got[1]))
    rows = summarise(rounds)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "duration": args.duration,
        "a": str(trees[0]),
        "b": str(trees[1]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "rounds": rounds}, indent=2) + "\n"
    )
    text = markdown(rows, meta)
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
