"""How long ``netdevkit attach`` and ``detach`` take on a process with many epoll fds.

A server with one epoll per connection has thousands of epoll contexts. For each N (default
500, 1000 and 5000) this starts a Python target holding N epoll fds (each watching one
listening socket) and times, as new processes with the journal in a temporary
``NETDEVKIT_STATE_DIR``:

- ``netdevkit attach --pid P --preset suspend -j`` (exits after attaching);
- ``netdevkit detach --pid P`` (restores every context from the journal);
- ``netdevkit attach --pid P --preset suspend --hold -j``: from start to its first output
  line (every context attached, through the watcher), then from SIGTERM to its exit (every
  context restored).

After each detach the target itself counts its contexts that are not back at the kernel
default (EPIOCGPARAMS on its own fds); any left over fails the run. Each ``--tree LABEL=SRC``
names a source tree (a ``src`` directory) to time instead of this checkout's ``src``
(name that too to include it), e.g. the commit before a fix and after it::

    git archive HEAD~1 src | tar -x -C /tmp/before
    flock /tmp/netdevkit-heavy.lock .venv/bin/python benchmarks/bench_attach_many.py \\
        --tree before=/tmp/before/src --tree after=src [--sizes 500,1000,5000] [--rounds 1]

``--limit S`` skips the remaining (larger) sizes of a tree once one command took longer than
S seconds. ``--merge FILE`` keeps the trees of an earlier results file (a slow "before"
measured once) in front of this run's, with their rounds and dates in the notes. Results:
``benchmarks/results/attach-many.json`` and ``attach-many.md``. Run as root (pidfd_getfd on
another process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SRC = Path(__file__).resolve().parent.parent / "src"
STEPS = ("attach", "detach", "hold_attach", "hold_detach")

# N epolls on one listener; "get" answers how many read back anything but (0, 0, 0).
TARGET = textwrap.dedent(
    """
    import fcntl, select, socket, struct, sys
    n = int(sys.argv[1])
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen()
    eps = [select.epoll() for _ in range(n)]
    for ep in eps:
        ep.register(ls.fileno(), select.EPOLLIN)
    print("ready", flush=True)
    for line in sys.stdin:
        bad = sum(
            1 for ep in eps
            if struct.unpack("=IHBB", fcntl.ioctl(ep.fileno(), 0x80088A02, bytes(8)))[:3]
            != (0, 0, 0)
        )
        print(bad, flush=True)
    """
)


class Target:
    def __init__(self, n: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TARGET, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.ask_line() == "ready"

    def ask_line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def not_default(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write("get\n")
        self.proc.stdin.flush()
        return int(self.ask_line())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _cli(pid: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "netdevkit", *args[:1], "--pid", str(pid), *args[1:]]


def one_round(n: int, env: dict[str, str]) -> dict[str, float]:
    """Seconds for each step on a fresh target with *n* epoll fds."""
    target = Target(n)
    out: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        subprocess.run(
            _cli(target.proc.pid, "attach", "--preset", "suspend", "-j"),
            check=True, stdout=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        out["attach"] = time.perf_counter() - t0
        if target.not_default() != n:
            raise SystemExit(f"bench_attach_many: attach left contexts untouched (N={n})")
        t0 = time.perf_counter()
        subprocess.run(
            _cli(target.proc.pid, "detach"), check=True, stdout=subprocess.DEVNULL, env=env
        )
        out["detach"] = time.perf_counter() - t0
        _check_restored(target, n, "detach")
        out.update(_hold(target, n, env))
    finally:
        target.close()
    return out


def _hold(target: Target, n: int, env: dict[str, str]) -> dict[str, float]:
    t0 = time.perf_counter()
    hold = subprocess.Popen(
        _cli(target.proc.pid, "attach", "--preset", "suspend", "--hold", "-j"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert hold.stdout is not None
        rows = json.loads(hold.stdout.readline())
        attached = time.perf_counter() - t0
        if len(rows) != n:
            raise SystemExit(f"bench_attach_many: --hold attached {len(rows)} of {n}")
        t0 = time.perf_counter()
        hold.send_signal(signal.SIGTERM)
        hold.communicate()
        restored = time.perf_counter() - t0
    finally:
        if hold.poll() is None:
            hold.kill()
            hold.wait()
    _check_restored(target, n, "attach --hold")
    return {"hold_attach": attached, "hold_detach": restored}


def _check_restored(target: Target, n: int, what: str) -> None:
    left = target.not_default()
    if left:
        raise SystemExit(f"bench_attach_many: {what} left {left} of {n} contexts changed")


def measure(trees: dict[str, str], sizes: list[int], rounds: int, limit: float) -> dict[str, Any]:
    res: dict[str, Any] = {"sizes": sizes, "rounds": rounds, "trees": {}}
    for label, src in trees.items():
        with tempfile.TemporaryDirectory(prefix="ndk-attach-many-") as tmp:
            env = {**os.environ, "PYTHONPATH": src, "NETDEVKIT_STATE_DIR": tmp}
            by_n: dict[str, Any] = {}
            for n in sizes:
                samples = [one_round(n, env) for _ in range(rounds)]
                med = {s: round(statistics.median(x[s] for x in samples), 3) for s in STEPS}
                by_n[str(n)] = med
                print(f"{label} N={n}: {by_n[str(n)]}", file=sys.stderr, flush=True)
                if max(by_n[str(n)].values()) > limit:
                    break
            res["trees"][label] = by_n
    return res


def write_results(res: dict[str, Any], meta: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "attach-many", **meta, "results": res}
    (RESULTS / "attach-many.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# attach and detach on a process with N epoll fds",
        "",
        f"{meta['kernel']}, Python {meta['python']}, {meta['cpus']} CPUs, {meta['date']}.",
        f"Seconds, median of {res['rounds']} round(s), each command a new process; journal in a "
        "temporary directory. `--hold`: start to first output line (attached), SIGTERM to exit "
        "(restored). Every detach checked by the target itself: all N contexts back at (0, 0, 0).",
        "",
        "| tree | N | attach | detach --pid | attach --hold: attached | --hold: restored |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, by_n in res["trees"].items():
        for n in res["sizes"]:
            r = by_n.get(str(n))
            cells = [f"{r[s]:.2f}" for s in STEPS] if r else ["not run (--limit)"] + [""] * 3
            lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    (RESULTS / "attach-many.md").write_text("\n".join([*lines, *meta.get("notes", []), ""]))


def _trees(specs: list[str]) -> dict[str, str]:
    trees: dict[str, str] = {}
    for spec in specs:
        label, sep, src = spec.partition("=")
        if not sep or not Path(src, "netdevkit").is_dir():
            raise SystemExit(f"bench_attach_many: --tree {spec!r}: want LABEL=SRC/netdevkit")
        trees[label] = src
    return trees or {"this": str(SRC)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,1000,5000", help="numbers of epoll fds")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per size (median)")
    parser.add_argument("--limit", type=float, default=900.0, help="see the docstring (s)")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=SRC")
    parser.add_argument("--note", action="append", default=[], help="a line for the .md")
    parser.add_argument("--merge", metavar="FILE", help="keep the trees of an earlier .json")
    parser.add_argument("--no-write", action="store_true", help="print, do not write results/")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_attach_many: needs root (pidfd_getfd)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < max(sizes) + 100:
        print(f"bench_attach_many: RLIMIT_NOFILE {hard} < {max(sizes)} fds", file=sys.stderr)
        return 2
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by target and CLI
    res = measure(_trees(args.tree), sizes, args.rounds, args.limit)
    notes = list(args.note)
    if args.merge:
        old = json.loads(Path(args.merge).read_text())
        res["trees"] = {**old["results"]["trees"], **res["trees"]}
        notes = [*old.get("notes", [])[1:], *notes]
        notes.append(
            f"Trees {', '.join(old['results']['trees'])}: {old['results']['rounds']} round(s) "
            f"on {old['date']}; the others: {args.rounds} round(s) on this run's date."
        )
    meta = {
        "kernel": f"Linux {platform.release()}",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "notes": ["", *notes] if notes else [],
    }
    print(json.dumps(res, indent=2))
    if not args.no_write:
        write_results(res, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
