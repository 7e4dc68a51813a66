"""The bench results model: JSON round trip, schema check, spread across repeats."""

from __future__ import annotations

import json

import pytest

from netdevkit.bench.results import (
    SCHEMA_VERSION,
    Latency,
    Results,
    RunConfig,
    Sample,
    Skip,
    Spread,
)
from netdevkit.errors import RequestError


def _sample(mode: str, p50: float, repeat: int = 0, limited: bool = False) -> Sample:
    return Sample(
        mode=mode,
        workload="sockperf",
        server="sockperf",
        load_target=0,
        achieved_rate=20_000.0 + repeat,
        latency=Latency(p50, p50 * 1.2, p50 * 2, p50 * 4, kind="half-rtt", count=1000),
        server_cpu=0.4,
        softirq_cpu=0.1,
        repeat=repeat,
        client_ceiling=None,
        client_limited=limited,
        duration=2.0,
        napi={"softnet_processed": 1234, "defer_hard_irqs": 100},
        notes=("a note",),
    )


def _results() -> Results:
    cfg = RunConfig(
        modes=("base", "suspend"),
        workloads=("sockperf",),
        loads=(0,),
        duration=2.0,
        repeat=3,
        kernel="6.18.0",
        cpus=2,
    )
    samples = (
        *(_sample("base", 20.0 + r, r) for r in range(3)),
        _sample("suspend", 9.0, 0),
        _sample("suspend", 99.0, 1, limited=True),
    )
    return Results(cfg, samples, (Skip("base", "redis", "redis-server not installed"),))


def test_round_trip_is_exact() -> None:
    res = _results()
    again = Results.from_json(res.to_json())
    assert again == res
    assert json.loads(res.to_json())["schema"] == SCHEMA_VERSION


def test_other_schema_is_refused() -> None:
    data = _results().to_dict()
    data["schema"] = SCHEMA_VERSION + 1
    with pytest.raises(RequestError, match="schema"):
        Results.from_dict(data)


@pytest.mark.parametrize("text", ["not json", "[]", '{"schema": 1}'])
def test_malformed_files_raise_request_error(text: str) -> None:
    with pytest.raises(RequestError):
        Results.from_json(text)


def test_spread_ignores_client_limited_samples() -> None:
    res = _results()
    base = res.spread(("base", "sockperf", "sockperf", 0), lambda s: s.latency.p50)
    assert base == Spread(20.0, 21.0, 22.0, 3)
    susp = res.spread(("suspend", "sockperf", "sockperf", 0), lambda s: s.latency.p50)
    assert susp == Spread(9.0, 9.0, 9.0, 1)
    assert res.spread(("nope", "x", "y", 1), lambda s: s.server_cpu) is None
    assert len(res.select(mode="suspend")) == 1
    assert len(res.select(mode="suspend", include_client_limited=True)) == 2


def test_latency_ordered() -> None:
    assert Latency(1, 2, 3, 4).ordered()
    assert not Latency(5, 2, 3, 4).ordered()
