"""The IRQ-suspension claims as pure tables: measured values in, verdict out.

Each row is a run built in memory (mode -> load -> (p50, p99, server CPU)), one round
unless said otherwise; the claim's verdict and the load it was judged at come out.
"""

from __future__ import annotations

import pytest

from netdevkit.bench.claims import MEASURED_NOT, NOT_SHOWN, SHOWN, evaluate_claims
from netdevkit.bench.results import PING_PONG, Latency, Results, RunConfig, Sample

Point = tuple[float, float, float]  # p50 us, p99 us, server CPU (cores)
Run = dict[str, dict[int, Point]]


def results(run: Run, rounds: int = 1) -> Results:
    config = RunConfig(modes=tuple(run), workloads=("sockperf",), loads=(), duration=1.0)
    samples = tuple(
        Sample(
            mode=mode,
            workload="sockperf",
            server="sockperf",
            load_target=load,
            achieved_rate=float(load),
            latency=Latency(p50, p50, p99, p99, kind="half-rtt"),
            server_cpu=cpu,
            softirq_cpu=0.0,
            repeat=r,
        )
        for mode, by_load in run.items()
        for load, (p50, p99, cpu) in by_load.items()
        for r in range(rounds)
    )
    return Results(config, samples)


def verdict(key: str, run: Run) -> tuple[str, str]:
    (claim,) = [c for c in evaluate_claims(results(run)) if c.key == key]
    return claim.verdict, claim.load


# (a) under load suspend's p50 is within 20% of fullbusy's, judged at the highest load
CLAIM_A: list[tuple[Run, tuple[str, str]]] = [
    (
        {
            "suspend": {1000: (30, 90, 0.2), 9000: (12, 40, 0.6)},
            "fullbusy": {1000: (10, 30, 1), 9000: (10, 30, 1)},
        },
        (SHOWN, "9000/s"),
    ),
    ({"suspend": {9000: (12.1, 40, 0.6)}, "fullbusy": {9000: (10, 30, 1)}}, (NOT_SHOWN, "9000/s")),
    (
        {"suspend": {PING_PONG: (11, 40, 0.6)}, "fullbusy": {PING_PONG: (10, 30, 1)}},
        (SHOWN, "ping-pong"),
    ),
    ({"suspend": {9000: (12, 40, 0.6)}}, (MEASURED_NOT, "")),
]

# (b) fullbusy near a core everywhere; suspend under half of it at the lightest load, rising
CLAIM_B: list[tuple[Run, str]] = [
    (
        {
            "suspend": {1000: (20, 60, 0.3), 9000: (12, 40, 0.7)},
            "fullbusy": {1000: (10, 30, 0.9), 9000: (10, 30, 1.0)},
        },
        SHOWN,
    ),
    (
        {
            "suspend": {1000: (20, 60, 0.3), 9000: (12, 40, 0.7)},
            "fullbusy": {1000: (10, 30, 0.7), 9000: (10, 30, 1.0)},
        },
        NOT_SHOWN,
    ),
    (
        {
            "suspend": {1000: (20, 60, 0.5), 9000: (12, 40, 0.7)},
            "fullbusy": {1000: (10, 30, 0.9), 9000: (10, 30, 1.0)},
        },
        NOT_SHOWN,
    ),
    (
        {
            "suspend": {1000: (20, 60, 0.3), 9000: (12, 40, 0.2)},
            "fullbusy": {1000: (10, 30, 0.9), 9000: (10, 30, 1.0)},
        },
        NOT_SHOWN,
    ),
    ({"suspend": {1000: (20, 60, 0.3)}, "fullbusy": {1000: (10, 30, 0.9)}}, NOT_SHOWN),
]

# (c) at light load deferral alone adds latency: defer's p50 above 1.1x base's, lowest load
CLAIM_C: list[tuple[Run, tuple[str, str]]] = [
    (
        {
            "defer": {1000: (12, 50, 0.1), 9000: (10, 50, 0.5)},
            "base": {1000: (10, 40, 0.1), 9000: (10, 40, 0.5)},
        },
        (SHOWN, "1000/s"),
    ),
    ({"defer": {1000: (11, 50, 0.1)}, "base": {1000: (10, 40, 0.1)}}, (NOT_SHOWN, "1000/s")),
    ({"base": {1000: (10, 40, 0.1)}}, (MEASURED_NOT, "")),
]

# (d) under load base has the worst tail: base's p99 >= every busy-polling mode's
CLAIM_D: list[tuple[Run, str]] = [
    (
        {
            "base": {9000: (10, 100, 0.5)},
            "napibusy": {9000: (10, 60, 0.9)},
            "suspend": {9000: (10, 100, 0.6)},
        },
        SHOWN,
    ),
    ({"base": {9000: (10, 100, 0.5)}, "fullbusy": {9000: (10, 101, 1.0)}}, NOT_SHOWN),
    ({"base": {9000: (10, 100, 0.5)}}, MEASURED_NOT),
]

# (e) the published headline: suspend within 20% of fullbusy's p50 at under half its CPU
CLAIM_E: list[tuple[Run, tuple[str, str]]] = [
    (
        {
            "suspend": {1000: (11, 40, 0.3), 9000: (11, 40, 0.6)},
            "fullbusy": {1000: (10, 30, 1), 9000: (10, 30, 1)},
        },
        (SHOWN, "1000/s"),
    ),
    ({"suspend": {1000: (13, 40, 0.3)}, "fullbusy": {1000: (10, 30, 1)}}, (NOT_SHOWN, "")),
    (
        {"suspend": {PING_PONG: (11, 40, 0.3)}, "fullbusy": {PING_PONG: (10, 30, 1)}},
        (MEASURED_NOT, ""),
    ),
]


@pytest.mark.parametrize(("run", "want"), CLAIM_A)
def test_claim_a(run: Run, want: tuple[str, str]) -> None:
    assert verdict("a", run) == want


@pytest.mark.parametrize(("run", "want"), CLAIM_B)
def test_claim_b(run: Run, want: str) -> None:
    assert verdict("b", run)[0] == want


@pytest.mark.parametrize(("run", "want"), CLAIM_C)
def test_claim_c(run: Run, want: tuple[str, str]) -> None:
    assert verdict("c", run) == want


@pytest.mark.parametrize(("run", "want"), CLAIM_D)
def test_claim_d(run: Run, want: str) -> None:
    assert verdict("d", run)[0] == want


@pytest.mark.parametrize(("run", "want"), CLAIM_E)
def test_claim_e(run: Run, want: tuple[str, str]) -> None:
    assert verdict("e", run) == want


def test_claims_are_judged_per_round() -> None:
    """Paired rounds: the verdict takes the median of per-round ratios."""
    run: Run = {"suspend": {9000: (11, 40, 0.6)}, "fullbusy": {9000: (10, 30, 1.0)}}
    (a,) = [c for c in evaluate_claims(results(run, rounds=3)) if c.key == "a"]
    assert a.verdict == SHOWN and "median of 3 paired rounds" in a.evidence


def test_one_claim_set_per_server() -> None:
    run: Run = {"suspend": {9000: (11, 40, 0.6)}}
    assert [c.key for c in evaluate_claims(results(run))] == ["a", "b", "c", "d", "e"]
    assert evaluate_claims(results({})) == []
