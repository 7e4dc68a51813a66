"""The knee probe as pure functions on recorded steps (netdevkit.bench.sweep)."""

from __future__ import annotations

from netdevkit.bench import sweep
from netdevkit.bench.sweep import RampStep, knee, next_rate
from netdevkit.bench.table import capacity_line


def _ramp(answer: dict[int, tuple[float, float, bool]], pp: float) -> list[RampStep]:
    """Run the probe's decisions against a table rate -> (answered share, p50, limited)."""
    steps: list[RampStep] = []
    while (rate := next_rate(steps, pp)) is not None:
        share, p50, limited = answer.get(rate, answer[max(k for k in answer if k <= rate)])
        steps.append(RampStep(rate, rate * share, p50, limited))
    return steps


def test_ramp_starts_at_half_the_ping_pong_rate_and_rises() -> None:
    assert next_rate([], 10_000) == 5000
    steps = [RampStep(5000, 5000, 20.0)]
    assert next_rate(steps, 10_000) == 7500  # x1.5, two significant digits


def test_knee_is_where_answers_fall_short_then_refined() -> None:
    # the server answers everything up to 40k/s, then 80% of what it is offered
    table = {5000: (1.0, 20.0, False), 40001: (0.8, 900.0, False)}
    steps = _ramp(table, 10_000)
    offered = [s.offered for s in steps]
    # x1.5 each step (two significant digits): 36k answered in full, 54k past the knee,
    # then geometric midpoints until the two are within 15%: 44k (past), 40k (good)
    assert offered == [5000, 7500, 11000, 16000, 24000, 36000, 54000, 44000, 40000]
    cap = knee("echo", "fast", steps, 10_000, (0.1, 0.5, 0.9))
    assert cap.rate == 40000 and cap.limited_by == "server"
    assert cap.loads == (4000, 20000, 36000)
    assert cap.ping_pong_rate == 10_000 and len(cap.steps) == len(steps)
    assert "knee" in cap.method and "answered" in cap.method


def test_knee_by_latency_rise() -> None:
    # every request answered, but the p50 goes from 20 us to 100 us at 17k/s: queueing
    table = {5000: (1.0, 20.0, False), 17000: (1.0, 100.0, False)}
    steps = _ramp(table, 10_000)
    assert [s.offered for s in steps][-3:] == [24000, 20000, 18000]
    cap = knee("echo", "fast", steps, 10_000, (0.9,))
    assert cap.rate == 16000 and cap.limited_by == "server"
    assert "p50" in cap.method


def test_generator_limit_is_not_called_the_knee() -> None:
    table = {5000: (1.0, 20.0, False), 26000: (1.0, 22.0, True)}
    steps = _ramp(table, 10_000)
    # the first client-limited step is offered once more, the second ends the ramp
    assert [s.offered for s in steps][-2:] == [36000, 36000]
    assert steps[-1].client_limited
    cap = knee("echo", "fast", steps, 10_000, (0.5,))
    assert cap.limited_by == "client" and cap.rate == 24000
    assert "above 24000/s" in cap.method


def test_disturbed_step_is_retried_once_and_never_counted() -> None:
    d = ("other tasks used 0.5 cores of the server's CPUs",)
    steps = [RampStep(5000, 5000, 20.0), RampStep(7500, 3000, 900.0, disturbed=d)]
    assert next_rate(steps, 10_000) == 7500  # once more
    steps.append(RampStep(7500, 3000, 900.0, disturbed=d))
    assert next_rate(steps, 10_000) is None  # twice: the probe stops
    cap = knee("echo", "fast", steps, 10_000, (0.9,))
    assert cap.rate == 5000  # the disturbed step is neither the knee nor past it
    assert "2 probe step(s) disturbed and not counted" in cap.method
    # neither the server's knee nor the generator's limit ended it (seen in a full suite
    # run: 27000/s disturbed twice after 18000/s, called "the load generator's limit")
    assert cap.limited_by == "disturbed" and not cap.client_limited
    assert "the probe stopped at 7500/s, disturbed twice: the knee is above 5000/s" in cap.method
    assert "at least 5000/s (the probe stopped on a disturbed step)" in capacity_line(cap)


def test_no_ramp_falls_back_to_ping_pong_and_says_so() -> None:
    cap = knee("sockperf", "sockperf", [], 12_000, (0.5,))
    assert cap.rate == 12_000 and cap.limited_by == "" and "stands in" in cap.method
    every = knee("echo", "fast", [RampStep(5000, 0, 900.0, disturbed=("x",))], 9000, (0.5,))
    assert every.rate == 9000 and "every probe step was disturbed (1)" in every.method


def test_ramp_is_bounded() -> None:
    table = {200: (1.0, 10.0, False)}  # a server that never saturates
    steps = _ramp(table, 1000)
    assert len(steps) <= sweep.MAX_STEPS


def test_one_late_burst_of_the_generator_does_not_end_the_ramp() -> None:
    steps = [RampStep(19000, 19000, 30.0), RampStep(28000, 28000, 29.0, client_limited=True)]
    assert next_rate(steps, 37000) == 28000
    steps.append(RampStep(28000, 28000, 29.0))
    assert next_rate(steps, 37000) == 42000  # clean the second time: the ramp goes on
