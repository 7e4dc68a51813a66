"""The load sweep: find each server's knee open loop, then load it from light to near the knee.

Every run sweeps open-loop rates per server, so that the claims about a busy server are
judged where the server is busy. The rates are not fixed numbers picked for one machine:
before the first round the run *probes* each server in ``base`` mode (the driver's NAPI
defaults) and takes fractions of the knee it found.

Why not the ping-pong rate (what this module used to call the capacity): one request in
flight measures how fast *one connection* is served back to back, a wake-up per request.
On the 2-vCPU testbed Debian's C sockperf server answered 9-16k/s ping-pong but every
request of an open-loop load up to 80k/s (``../shared/KERNEL.md``). Fractions of the
ping-pong rate never load the server, so every curve was flat.

The probe (:func:`next_rate`, :func:`knee`; pure, the I/O is the runner's):

1. a ping-pong sample: its rate is reported beside the knee, and half of it starts the ramp;
2. open-loop samples at rates rising by :data:`RAMP_FACTOR` until a rate is *past the
   knee*: the server answered under :data:`ANSWERED_FRACTION` of what was offered, or its
   p50 rose above :data:`P50_FACTOR` times the lightest step's; then rates half-way
   (geometrically) between the last good and the first bad one, until they are within
   :data:`REFINE_RATIO` of each other;
3. the knee is the highest rate that was neither past the knee nor client-limited.

If the generator saturates first (its samples are ``client_limited``: it could not send on
schedule), the ramp stops there: the capacity is then the generator's, ``limited_by`` is
``"client"``, and the report says that the server's knee lies above it. To reach the knee
of a fast server from one client core, give the server real work per request
(``--work-us``, docs/bench.md "Which load, and why").

:func:`sweep_loads` turns a knee and fractions into rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .results import Capacity

__all__ = [
    "ANSWERED_FRACTION",
    "P50_FACTOR",
    "RAMP_FACTOR",
    "SWEEP_FULL",
    "SWEEP_QUICK",
    "RampStep",
    "knee",
    "next_rate",
    "nice_rate",
    "past_knee",
    "sweep_loads",
    "sweeps",
]

#: fractions of the knee the default run sweeps (light to near the knee)
SWEEP_FULL = (0.1, 0.3, 0.6, 0.9)
#: --quick: light, half and near the knee
SWEEP_QUICK = (0.1, 0.5, 0.9)
#: no sweep rate below this (a rate that low says nothing about a busy server)
MIN_RATE = 200
#: each ramp step offers this much more than the last
RAMP_FACTOR = 1.5
#: the ramp's first rate, as a fraction of the ping-pong rate
RAMP_START = 0.5
#: a step answered under this share of what it offered is past the knee
ANSWERED_FRACTION = 0.95
#: a step whose p50 is this many times the lightest step's is past the knee
P50_FACTOR = 4.0
#: past the knee, bisect (geometrically) while the last good and first bad rate differ by more
REFINE_RATIO = 1.15
#: the most ramp steps (refinement included)
MAX_STEPS = 12
#: no ramp beyond this rate (requests/s)
MAX_RATE = 2_000_000


@dataclass(frozen=True, slots=True)
class RampStep:
    """One open-loop sample of the probe."""

    offered: int
    answered: float
    p50: float
    client_limited: bool = False
    #: the validity rules' reasons (:mod:`.validity`): such a step is tried once more and
    #: never counts as the knee or past it
    disturbed: tuple[str, ...] = ()


def sweeps(workload: str) -> bool:
    """True when *workload*'s client can drive an open-loop rate (wrk, for http, cannot)."""
    return workload != "http"


def nice_rate(rate: float) -> int:
    """*rate* rounded to two significant digits (12345 -> 12000), at least MIN_RATE."""
    if rate <= MIN_RATE:
        return MIN_RATE
    digits = math.floor(math.log10(rate)) - 1
    step = 10**digits
    return max(MIN_RATE, int(round(rate / step) * step))


def sweep_loads(capacity: float, fractions: Sequence[float]) -> tuple[int, ...]:
    """Open-loop rates at *fractions* of *capacity*, rounded, ascending, distinct."""
    if capacity <= 0:
        return ()
    return tuple(sorted({nice_rate(capacity * f) for f in fractions if f > 0}))


def past_knee(step: RampStep, light_p50: float) -> str:
    """Why *step* is past the server's knee ('' when it is not)."""
    if step.answered < ANSWERED_FRACTION * step.offered:
        return f"answered {step.answered:.0f}/s of {step.offered}/s"
    if light_p50 > 0 and step.p50 > P50_FACTOR * light_p50:
        return f"p50 {step.p50:.0f} us, over {P50_FACTOR:g}x the light load's {light_p50:.1f} us"
    return ""


def _clean(steps: Sequence[RampStep]) -> list[RampStep]:
    return [s for s in steps if not s.disturbed]


def _good(steps: Sequence[RampStep]) -> list[RampStep]:
    clean = _clean(steps)
    light = clean[0].p50 if clean else 0.0
    return [s for s in clean if not s.client_limited and not past_knee(s, light)]


def next_rate(steps: Sequence[RampStep], ping_pong_rate: float) -> int | None:
    """The next rate the probe should offer after *steps*, or None when it is done.

    A disturbed step is offered once more; a second disturbed step at the same rate ends
    the probe (the machine is busy: :func:`knee` says so). A client-limited step is offered
    once more too (a single late burst of the generator, e.g. a softirq it had to run, is
    not its ceiling); a second one ends the ramp at the generator's limit."""
    if not steps:
        return nice_rate(max(MIN_RATE, RAMP_START * ping_pong_rate))
    last = steps[-1]
    if len(steps) >= MAX_STEPS:
        return None
    if last.disturbed:
        again = [s for s in steps if s.offered == last.offered and s.disturbed]
        return last.offered if len(again) < 2 else None
    steps = _clean(steps)
    if last.client_limited:  # once more: one late burst of the generator is not its limit
        again = [s for s in steps if s.offered == last.offered and s.client_limited]
        return last.offered if len(again) < 2 else None
    light = steps[0].p50
    beyond = [s for s in steps if past_knee(s, light)]
    if not beyond:
        nxt = nice_rate(last.offered * RAMP_FACTOR)
        return nxt if nxt <= MAX_RATE and nxt > last.offered else None
    good = _good(steps)
    if not good:
        return None
    lo = max(s.offered for s in good)
    tried = {s.offered for s in steps}
    bad = min((s.offered for s in steps if s.offered > lo), default=0)
    if not bad:
        return None
    mid = nice_rate(math.sqrt(lo * bad))
    if bad / lo > REFINE_RATIO and lo < mid < bad and mid not in tried:
        return mid
    return None


def knee(
    workload: str,
    server: str,
    steps: Sequence[RampStep],
    ping_pong_rate: float,
    fractions: Sequence[float],
    *,
    ping_pong_p50: float = 0.0,
    ping_pong_p99: float = 0.0,
) -> Capacity:
    """The :class:`Capacity` the probe's *steps* give (pure: the probe ran elsewhere)."""
    rows = tuple((float(s.offered), round(s.answered, 1), round(s.p50, 1)) for s in steps)
    pp = f"ping-pong {ping_pong_rate:.0f}/s"
    n_disturbed = sum(1 for s in steps if s.disturbed)
    # the probe stops on a step disturbed twice (next_rate): the knee is above what it
    # reached, and neither the server nor the generator is why the ramp ended
    stopped_at = steps[-1].offered if steps and steps[-1].disturbed else None
    steps = _clean(steps)
    if n_disturbed and not steps:
        pp = f"every probe step was disturbed ({n_disturbed}); {pp}"
    elif n_disturbed:
        pp += f"; {n_disturbed} probe step(s) disturbed and not counted"
    if not steps:
        how = f"no usable open-loop ramp, the ping-pong rate stands in ({pp})"
        return Capacity(
            workload,
            server,
            round(ping_pong_rate, 1),
            how,
            sweep_loads(ping_pong_rate, fractions),
            ping_pong_p50,
            ping_pong_p99,
            False,
            ping_pong_rate,
            "",
            rows,
        )
    good = _good(steps)
    light = steps[0].p50
    limited = steps[-1].client_limited  # the ramp ended on the generator's limit
    bad = [s for s in steps if past_knee(s, light)]
    if good:
        top = max(good, key=lambda s: s.offered)
        rate = float(top.offered)
    else:
        top = steps[0]
        rate = top.answered
    if bad and (not limited or min(b.offered for b in bad) < max(s.offered for s in steps)):
        first_bad = min((b for b in bad if b.offered > rate), key=lambda s: s.offered, default=None)
        why = past_knee(first_bad, light) if first_bad is not None else "the lightest step"
        how = (
            f"open-loop knee in base mode: {rate:.0f}/s answered in full; past it "
            f"{first_bad.offered if first_bad else top.offered}/s: {why} ({pp})"
        )
        by = "server"
    elif limited:
        how = (
            f"the load generator saturated at {steps[-1].offered}"
            f"/s before the server's knee: the knee is above {rate:.0f}/s ({pp})"
        )
        by = "client"
    elif stopped_at is not None:
        how = (
            f"the probe stopped at {stopped_at}/s, disturbed twice: the knee is above "
            f"{rate:.0f}/s ({pp})"
        )
        by = "disturbed"
    else:
        how = f"the ramp ended at {rate:.0f}/s without reaching the knee ({pp})"
        by = "client"
    return Capacity(
        workload,
        server,
        rate,
        how,
        sweep_loads(rate, fractions),
        top.p50,
        0.0,
        limited and by == "client",
        ping_pong_rate,
        by,
        rows,
    )
