"""``netdevkit bench compare A B`` on two recorded runs, and its bad input.

A is tests/data/bench_results_quick_recorded.json (a real --quick run, ping-pong,
unpinned, 1 repeat); B is the sockperf part of the earlier published full run (commit 5e6e204)
(tests/data/bench_modes_sockperf.json: 3 repeats, --cpus auto). Both are real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdevkit.bench.compare import compare
from netdevkit.bench.results import Results
from netdevkit.cli.main import main

DATA = Path(__file__).parent / "data"
A = DATA / "bench_results_quick_recorded.json"
B = DATA / "bench_modes_sockperf.json"


def test_compare_two_recorded_runs() -> None:
    a, b = Results.load(str(A)), Results.load(str(B))
    c = compare(a, b)
    setup = {k: (va, vb) for k, va, vb in c.setup}
    assert setup["repeat"] == ("1", "3") and setup["quick"] == ("True", "False")
    assert setup["placement"] == ("", "server=1,client=0,napi=1")
    # sockperf at ping-pong was measured in both, for every mode
    rows = {(r.mode, r.workload, r.server, r.load_a): r for r in c.rows}
    assert {m for m, w, _, load in rows if w == "sockperf" and load == 0} == {
        "base",
        "defer",
        "napibusy",
        "fullbusy",
        "suspend",
        "threaded",
    }
    full = rows[("fullbusy", "sockperf", "sockperf", 0)]
    assert full.cpu_ratio == pytest.approx(full.cpu_b / full.cpu_a)
    # what fullbusy bought over base inside each run, paired by round
    assert full.vs_base_a is not None and full.vs_base_a.rounds == 1
    assert full.vs_base_b is not None and full.vs_base_b.rounds == 3
    assert rows[("base", "sockperf", "sockperf", 0)].vs_base_a is None
    # echo only in A, the open-loop sockperf rates only in B
    assert any("echo/netdevkit" in x for x in c.only_a)
    assert any("sockperf/sockperf at 30000" in x for x in c.only_b)


def test_compare_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "compare", str(A), str(B)]) == 0
    out = capsys.readouterr().out
    assert "repeat: 1 -> 3" in out and "fullbusy" in out and "only in B" in out
    assert main(["bench", "compare", str(A), str(B), "-j"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"setup", "napi", "rows", "only_a", "only_b"} <= set(data)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["compare", str(A)], "compare A/results.json B/results.json"),
        (["frobnicate", str(A), str(B)], "compare A/results.json B/results.json"),
        (["compare", str(A), "/nonexistent/results.json"], "B (/nonexistent/results.json)"),
        (["compare", "/nonexistent/a.json", str(B)], "A (/nonexistent/a.json)"),
        (["compare", str(A), str(DATA)], str(DATA)),
        (["compare", str(A), str(A)], "A and B are the same file"),
    ],
)
def test_compare_bad_input(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_compare_names_an_unknown_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(A.read_text())
    data["samples"][0]["latency"]["p99_us"] = 1.0
    data["samples"][1]["p99_us"] = 1.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    assert main(["bench", "compare", str(A), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"B ({bad})" in err and "unknown field(s) p99_us" in err
    assert "Sample.__init__" not in err and len(err.strip().splitlines()) == 1
