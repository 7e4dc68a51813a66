"""The report generator on a recorded results file with known verdicts.

tests/data/bench_results_fixture.json is constructed (not measured) so that
each verdict is known: on sockperf every claim holds; on memcached suspend is
twice fullbusy's p50 (a: NOT SHOWN), fullbusy runs at 0.6 cores (b: NOT
SHOWN), defer was never run (c: NOT MEASURED), and the fullbusy samples at
20000/s are client-limited and must not be used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netdevkit.bench.claims import MEASURED_NOT, NOT_SHOWN, SHOWN, evaluate_claims
from netdevkit.bench.markdown import markdown_report
from netdevkit.bench.report import write_report
from netdevkit.bench.results import Results
from netdevkit.bench.terminal import rich_table

FIXTURE = Path(__file__).parent / "data" / "bench_results_fixture.json"


@pytest.fixture(scope="module")
def results() -> Results:
    return Results.load(str(FIXTURE))


def test_claims_verdicts(results: Results) -> None:
    got = {(c.workload, c.key): c for c in evaluate_claims(results)}
    assert {k: c.verdict for k, c in got.items()} == {
        ("sockperf", "a"): SHOWN,
        ("sockperf", "b"): SHOWN,
        ("sockperf", "c"): SHOWN,
        ("sockperf", "d"): SHOWN,
        ("memcached", "a"): NOT_SHOWN,
        ("memcached", "b"): NOT_SHOWN,
        ("memcached", "c"): MEASURED_NOT,
        ("memcached", "d"): MEASURED_NOT,
        ("sockperf", "e"): SHOWN,
        ("memcached", "e"): NOT_SHOWN,
    }
    # each claim says at which load it was judged, with paired per-round ratios
    a = got[("sockperf", "a")]
    assert a.load == "20000/s"  # (a) is about a loaded server: the highest rate
    assert "suspend/fullbusy p50 1.12x (median of 2 paired rounds), within 1.20x" in a.evidence
    assert "10000/s: 14.3 vs 12.8 us" in a.evidence  # every load is listed
    c = got[("sockperf", "c")]
    assert c.load == "10000/s"  # (c) is about light load: the lowest rate
    assert "defer 120.1 us, base 37.6 us, defer/base p50 3.19x" in c.evidence
    # (b) judges the open-loop curve
    assert "10000/s: suspend 0.40, fullbusy 0.99" in got[("sockperf", "b")].evidence
    # napibusy has no open-loop sample, so (d) falls back to ping-pong and says so
    d = got[("sockperf", "d")]
    assert d.load == "ping-pong" and "not the load the claim is about" in d.evidence
    # (e) names the loads where suspend is within 20% at under half the CPU
    e = got[("sockperf", "e")]
    assert e.load == "10000/s" and "20000/s: p50 1.12x, CPU 0.71x (misses on CPU)" in e.evidence
    assert "defer was not run" in got[("memcached", "c")].evidence
    # client-limited fullbusy at 20000/s is ignored: only 5000/s is compared
    assert "20000/s" not in got[("memcached", "b")].evidence
    assert "fullbusy under 0.8 cores" in got[("memcached", "b")].evidence


def test_all_client_limited_is_not_measured(results: Results) -> None:
    limited = Results(
        results.config,
        tuple(s for s in results.samples if s.workload == "memcached" and s.load_target == 20000),
    )
    claims = {c.key: c for c in evaluate_claims(limited)}
    assert claims["a"].verdict == MEASURED_NOT
    assert "no clean fullbusy sample (0 of 2 disturbed, 2 client-limited)" in claims["a"].evidence


def test_report_files(results: Results, tmp_path: Path) -> None:
    path, plots = write_report(results, str(tmp_path))
    names = sorted(Path(p).name for p in plots)
    assert names == [
        "cpu_by_mode.png",
        "latency_by_mode.png",
        "latency_vs_load.png",
        "tradeoff.png",
    ]
    for p in plots:
        data = Path(p).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    text = Path(path).read_text()
    assert "**SHOWN**" in text and "**NOT SHOWN**" in text and "**NOT MEASURED**" in text
    assert "half the round trip" in text
    assert "redis: constructed fixture" in text
    assert "client-limited 2/2" in text  # the flagged group is labelled in the table


def test_table_and_empty_results(results: Results) -> None:
    table = rich_table(results)
    assert table.row_count == len(results.groups())
    empty = Results(results.config)
    assert "NOT MEASURED" in markdown_report(empty)
    assert evaluate_claims(empty) == []


def test_report_on_a_recorded_quick_run(tmp_path: Path) -> None:
    """A real ``netdevkit bench --quick`` results.json from the development VM."""
    res = Results.load(str(FIXTURE.parent / "bench_results_quick_recorded.json"))
    assert res.config.quick and len(res.samples) == 24
    claims = evaluate_claims(res)
    assert {(c.workload, c.server) for c in claims} == {
        ("echo", "netdevkit"),
        ("echo", "asyncio"),
        ("echo", "uvloop"),
        ("sockperf", "sockperf"),
    }
    # every mode ran; ping-pong only, so (b) says there is no curve and (e), which is
    # about an open-loop load, is not measured
    assert all(c.verdict in (SHOWN, NOT_SHOWN) for c in claims if c.key != "e")
    assert all("one load level only" in c.evidence for c in claims if c.key == "b")
    assert all(c.verdict == MEASURED_NOT for c in claims if c.key == "e")
    path, plots = write_report(res, str(tmp_path))
    assert all(Path(p).stat().st_size > 5000 for p in plots)
    text = Path(path).read_text()
    assert "## Claims" in text
    assert text.index("## Which mode") < text.index("## Claims")  # the report leads with it
