"""The sample-validity rules as pure functions (netdevkit.bench.validity), and their effect:
a disturbed sample is shown but used by no claim and no recommendation."""

from __future__ import annotations

import dataclasses

import pytest

from netdevkit.bench import validity
from netdevkit.bench.claims import MEASURED_NOT, evaluate_claims
from netdevkit.bench.cpu import CpuUsage
from netdevkit.bench.recommend import recommend
from netdevkit.bench.results import Latency, Results, RunConfig, Sample
from netdevkit.bench.validity import Evidence, evidence, judge


def _usage(**kw: object) -> CpuUsage:
    base: dict[str, object] = {
        "wall": 1.0,
        "process_cores": 0.3,
        "softirq_cores": 0.0,
        "softirq_per_cpu": {},
        "counters": {},
        "busy_per_cpu": {0: 1.0, 1: 0.32},
        "steal_per_cpu": {0: 0.0, 1: 0.0},
        "run_delay_share": 0.001,
        "client_cores": 0.98,
        "kthread_cores": 0.0,
        "ksoftirqd_cores": {},
    }
    base.update(kw)
    return CpuUsage(**base)  # type: ignore[arg-type]


def test_clean_pinned_sample() -> None:
    ev = evidence(_usage(), server_cpus={1}, client_cpus={0}, generator_spins=True)
    assert ev.others_server_cores == pytest.approx(0.02)
    assert ev.others_client_cores == pytest.approx(0.02)
    assert ev.generator_cores == pytest.approx(0.98)
    assert judge(ev, "base") == ()


def test_hog_on_the_server_cpu() -> None:
    u = _usage(busy_per_cpu={0: 1.0, 1: 1.0}, run_delay_share=0.3)
    why = judge(evidence(u, server_cpus={1}, client_cpus={0}), "suspend")
    assert any("0.70 cores of the server's CPUs" in w for w in why)
    assert any("waited for a CPU 30%" in w for w in why)


def test_generator_that_did_not_get_its_core() -> None:
    u = _usage(client_cores=0.5, busy_per_cpu={0: 1.0, 1: 0.3})
    why = judge(evidence(u, server_cpus={1}, client_cpus={0}, generator_spins=True), "base")
    assert "the load generator got 0.50 of its core" in why
    assert any("client's CPUs" in w for w in why)
    # a client that does not spin (sockperf ping-pong) is not judged by its CPU
    ok = evidence(u, server_cpus={1}, client_cpus={0}, generator_spins=False)
    assert ok.generator_cores is None


def test_busy_polling_mode_must_spin() -> None:
    ev = Evidence(server_cores=0.4)
    assert judge(ev, "fullbusy") == ("busy-polling fullbusy got 0.40 of its core",)
    assert judge(ev, "suspend") == ()


def test_threaded_kthread_counts_as_the_servers() -> None:
    # threaded NAPI: the kthread on the server CPU is the server's work, not another task
    u = _usage(process_cores=0.2, kthread_cores=0.3, busy_per_cpu={0: 1.0, 1: 0.52})
    ev = evidence(u, server_cpus={1}, client_cpus={0}, napi_cpus={1})
    assert ev.server_cores == pytest.approx(0.5)
    assert ev.others_server_cores == pytest.approx(0.02)


def test_ksoftirqd_is_the_benchs_own_work() -> None:
    u = _usage(busy_per_cpu={0: 1.0, 1: 0.6}, ksoftirqd_cores={1: 0.28})
    assert judge(evidence(u, server_cpus={1}, client_cpus={0}), "base") == ()


def test_unpinned_counts_every_cpu() -> None:
    u = _usage(busy_per_cpu={0: 0.9, 1: 0.9})
    ev = evidence(u, server_cpus=None, client_cpus=None)
    assert ev.others_client_cores is None
    assert ev.others_server_cores == pytest.approx(1.8 - 0.3 - 0.98)
    assert judge(ev, "base")


def test_steal() -> None:
    u = _usage(steal_per_cpu={0: 0.1, 1: 0.0})
    why = judge(evidence(u, server_cpus={1}, client_cpus={0}), "base")
    assert why == ("steal time 5%",)


def test_evidence_round_trips_through_a_mapping() -> None:
    ev = Evidence(0.01, 0.02, None, 0.0, 0.99, 0.5)
    assert Evidence.from_mapping(ev.to_mapping()) == ev


def _sample(mode: str, p50: float, cpu: float, disturbed: tuple[str, ...] = ()) -> Sample:
    lat = Latency(p50, p50, p50 * 2, p50 * 3, "half-rtt", 1000)
    return Sample(mode, "echo", "fast", 9000, 9000.0, lat, cpu, 0.0, disturbed=disturbed)


def test_disturbed_samples_are_kept_out_of_claims_and_recommendations() -> None:
    cfg = RunConfig(modes=("suspend", "fullbusy"), workloads=("echo",), loads=(), duration=0.5)
    clean = Results(cfg, (_sample("suspend", 20, 0.4), _sample("fullbusy", 18, 1.0)))
    claim_a = next(c for c in evaluate_claims(clean) if c.key == "a")
    assert claim_a.verdict != MEASURED_NOT
    hog = ("other tasks used 0.70 cores of the server's CPUs",)
    dirty = dataclasses.replace(
        clean, samples=(_sample("suspend", 20, 0.4), _sample("fullbusy", 1500, 0.2, hog))
    )
    claim_a = next(c for c in evaluate_claims(dirty) if c.key == "a")
    assert claim_a.verdict == MEASURED_NOT
    assert "no clean fullbusy sample (1 of 1 disturbed" in claim_a.evidence
    recs = recommend(dirty, 100.0)
    assert all(r.best is None or r.best.mode != "fullbusy" for r in recs)
    assert validity.run_warning(dirty.samples).startswith("WARNING: 1 of 2 samples")
    assert validity.run_warning(clean.samples) == ""


def test_a_load_clean_in_fewer_than_half_the_rounds_is_not_judged() -> None:
    cfg = RunConfig(modes=("suspend", "fullbusy"), workloads=("echo",), loads=(), duration=0.5)
    hog = ("steal time 9%",)
    samples = []
    for rnd in range(3):
        d = hog if rnd else ()  # fullbusy clean in 1 of 3 rounds
        samples += [
            dataclasses.replace(_sample("suspend", 20, 0.4), repeat=rnd),
            dataclasses.replace(_sample("fullbusy", 18, 1.0, d), repeat=rnd),
        ]
    res = Results(cfg, tuple(samples))
    claims = {c.key: c for c in evaluate_claims(res)}
    assert claims["a"].verdict == MEASURED_NOT
    assert "fullbusy clean in 1 of 3 rounds" in claims["a"].evidence
    assert claims["e"].verdict == MEASURED_NOT


def test_waiting_for_its_own_napi_kthread_is_not_a_disturbance() -> None:
    # threaded NAPI, kthread pinned beside the server: the server waits for it (29%),
    # which the kthread's 0.45 cores explain; a hog would not show as the server's helper
    u = _usage(process_cores=0.5, kthread_cores=0.45, run_delay_share=0.29,
               busy_per_cpu={0: 1.0, 1: 0.97})  # fmt: skip
    ev = evidence(u, server_cpus={1}, client_cpus={0}, napi_cpus={1})
    assert ev.own_helpers_cores == pytest.approx(0.45)
    assert judge(ev, "threaded") == ()
    # the same wait with the kthread on another CPU is a disturbance
    ev = evidence(u, server_cpus={1}, client_cpus={0}, napi_cpus={0})
    assert any("waited for a CPU 29%" in w for w in judge(ev, "threaded"))
