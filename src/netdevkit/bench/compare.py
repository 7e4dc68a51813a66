"""``netdevkit bench compare A/results.json B/results.json``: what changed between two runs.

Pure: two :class:`~netdevkit.bench.results.Results` in, a :class:`Comparison` out.

- **Setup**: every field of the run configuration that differs (kernel,
  netdevkit version, CPUs, placement, modes, workloads, sweep, durations...),
  and the NAPI settings each mode was read back with (``Sample.napi``) where
  they differ.
- **Numbers**: for every (mode, workload, server, load) measured in both runs,
  B's median over A's for p50, p99 and server CPU. The two runs' rounds ran at
  different times, so they are not paired with each other; what is paired is
  each mode against ``base`` *within* each run, round by round: the "vs base"
  columns show what the mode bought in A and in B, which machine drift between
  the runs does not move.
- Loads of a sweep are the capacity's fractions: when the two runs probed
  different capacities, rows are matched by their position in the sweep (the
  first, second... rate), and both rates are shown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .paired import Paired, cpu, median_of, p50, p99, paired
from .results import PING_PONG, Results

__all__ = ["Comparison", "Row", "compare"]

_NAPI_KEYS = ("defer_hard_irqs", "gro_flush_timeout", "irq_suspend_timeout", "threaded")
_SKIP_CONFIG = ("started",)


@dataclass(frozen=True, slots=True)
class Row:
    """One point measured in both runs."""

    mode: str
    workload: str
    server: str
    load_a: int
    load_b: int
    p50_a: float
    p50_b: float
    p99_a: float
    p99_b: float
    cpu_a: float
    cpu_b: float
    #: p50 over base's, paired per round inside each run (None for base or without base)
    vs_base_a: Paired | None
    vs_base_b: Paired | None

    @property
    def p50_ratio(self) -> float:
        return self.p50_b / self.p50_a if self.p50_a else float("inf")

    @property
    def p99_ratio(self) -> float:
        return self.p99_b / self.p99_a if self.p99_a else float("inf")

    @property
    def cpu_ratio(self) -> float:
        return self.cpu_b / self.cpu_a if self.cpu_a else float("inf")


@dataclass(frozen=True, slots=True)
class Comparison:
    """What differs between run A and run B."""

    setup: tuple[tuple[str, str, str], ...]
    napi: tuple[tuple[str, str, str], ...]
    rows: tuple[Row, ...]
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]


def _setup(a: Results, b: Results) -> list[tuple[str, str, str]]:
    da, db = asdict(a.config), asdict(b.config)
    out = []
    for key in dict.fromkeys([*da, *db]):
        if key in _SKIP_CONFIG:
            continue
        va, vb = da.get(key), db.get(key)
        if va != vb:
            out.append((key, str(va), str(vb)))
    return out


def _napi_of(res: Results) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for s in res.samples:
        got = {k: s.napi[k] for k in _NAPI_KEYS if k in s.napi}
        out.setdefault(s.mode, got)
    return out


def _level_map(res: Results, workload: str, server: str) -> dict[int, int]:
    """load -> its position among the run's open-loop loads of this server (ping-pong: -1)."""
    loads = sorted(
        {s.load_target for s in res.samples if (s.workload, s.server) == (workload, server)}
    )
    rates = [x for x in loads if x != PING_PONG]
    out = {x: i for i, x in enumerate(rates)}
    out[PING_PONG] = -1
    return out


def _match_load(a: Results, b: Results, workload: str, server: str, load_a: int) -> int | None:
    if any(
        s.load_target == load_a and (s.workload, s.server) == (workload, server) for s in b.samples
    ):
        return load_a
    if not (a.config.sweep and b.config.sweep):
        return None
    level = _level_map(a, workload, server).get(load_a)
    inverse = {v: k for k, v in _level_map(b, workload, server).items()}
    return inverse.get(level) if level is not None else None


def compare(a: Results, b: Results) -> Comparison:
    """Compare run *a* (before) with run *b* (after)."""
    napi_a, napi_b = _napi_of(a), _napi_of(b)
    napi = [
        (mode, str(napi_a[mode]), str(napi_b[mode]))
        for mode in napi_a
        if mode in napi_b and napi_a[mode] != napi_b[mode]
    ]
    rows: list[Row] = []
    keys_a = list(dict.fromkeys(s.key for s in a.samples))
    matched_b: set[tuple[str, str, str, int]] = set()
    only_a = []
    for mode, workload, server, load_a in keys_a:
        load_b = _match_load(a, b, workload, server, load_a)
        vals = []
        for res, load in ((a, load_a), (b, load_b)):
            for metric in (p50, p99, cpu):
                vals.append(
                    None if load is None else median_of(res, mode, workload, server, load, metric)
                )
        if load_b is None or any(v is None for v in vals):
            only_a.append(f"{mode} {workload}/{server} at {load_a}")
            continue
        matched_b.add((mode, workload, server, load_b))
        got = [float(v) for v in vals if v is not None]
        rows.append(
            Row(
                mode, workload, server, load_a, load_b,
                got[0], got[3], got[1], got[4], got[2], got[5],
                None if mode == "base" else paired(a, workload, server, load_a, mode, "base", p50),
                None if mode == "base" else paired(b, workload, server, load_b, mode, "base", p50),
            )
        )  # fmt: skip
    only_b = [
        f"{k[0]} {k[1]}/{k[2]} at {k[3]}"
        for k in dict.fromkeys(s.key for s in b.samples)
        if k not in matched_b
    ]
    return Comparison(tuple(_setup(a, b)), tuple(napi), tuple(rows), tuple(only_a), tuple(only_b))


def render_text(c: Comparison, name_a: str, name_b: str) -> list[str]:
    """Plain lines for a terminal."""
    out = [f"A: {name_a}", f"B: {name_b}", ""]
    out.append("setup that differs:" if c.setup else "setup: identical (apart from the start time)")
    out += [f"  {k}: {va} -> {vb}" for k, va, vb in c.setup]
    if c.napi:
        out.append("NAPI settings read back that differ:")
        out += [f"  {m}: {va} -> {vb}" for m, va, vb in c.napi]
    out += ["", "B/A of medians (rounds of different runs are not paired); vs base: p50 over "
            "base's, paired per round inside each run", ""]  # fmt: skip
    head = f"{'mode':16} {'workload/server':22} {'load A -> B':18} {'p50 B/A':>8} "
    head += f"{'p99 B/A':>8} {'CPU B/A':>8}  {'p50 vs base A':>14} {'-> B':>8}"
    out.append(head)
    for r in c.rows:
        load = "ping-pong" if r.load_a == PING_PONG else f"{r.load_a}->{r.load_b}/s"
        va = f"{r.vs_base_a.ratio:.2f}x" if r.vs_base_a else "-"
        vb = f"{r.vs_base_b.ratio:.2f}x" if r.vs_base_b else "-"
        out.append(
            f"{r.mode:16} {r.workload + '/' + r.server:22} {load:18} {r.p50_ratio:8.2f} "
            f"{r.p99_ratio:8.2f} {r.cpu_ratio:8.2f}  {va:>14} {vb:>8}"
        )
    if c.only_a:
        out.append(f"only in A: {', '.join(c.only_a)}")
    if c.only_b:
        out.append(f"only in B: {', '.join(c.only_b)}")
    return out
