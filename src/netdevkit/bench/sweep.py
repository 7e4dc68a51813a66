"""The load sweep: find what each server can answer, then load it from light to near that.

Every run sweeps open-loop rates per server, so that the claims about a busy
server are judged where the server is busy. The rates are not fixed numbers
picked for one machine: before the first round the run *probes* each server
(with the default NAPI settings, the ``base`` mode) and takes fractions of
what it found.

How the capacity is found, per client:

- sockperf framing (``sockperf``, ``echo``, a ``--server`` driven by sockperf):
  one closed-loop ``sockperf ping-pong`` sample; its answered rate is the rate
  at which one connection is served back to back; open-loop ``under-load`` at
  that rate is at the knee (``docs/bench.md``, "What a run does", has the
  measurement), so 0.9 of it is "near capacity".
- memcached (mcload): one open-loop sample at :data:`MC_PROBE_RATE`; the
  capacity is the smaller of what was answered and 60% of mcload's own
  ceiling (above that mcload marks samples client-limited), so the sweep
  measures the server, not the generator.
- redis (``redis-benchmark -c 1``): closed loop only; no sweep (ping-pong).

:func:`sweep_loads` (pure) turns a capacity and fractions into rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .results import PING_PONG, Capacity

__all__ = [
    "MC_PROBE_RATE",
    "PROBE_CLIENT_SHARE",
    "SWEEP_FULL",
    "SWEEP_QUICK",
    "capacity_from_probe",
    "nice_rate",
    "sweep_loads",
    "sweeps",
]

#: fractions of the capacity the default run sweeps (light to near capacity)
SWEEP_FULL = (0.1, 0.3, 0.6, 0.9)
#: --quick: light and near capacity
SWEEP_QUICK = (0.1, 0.5, 0.9)
#: mcload's probe rate: above what one generator core can send on small VMs, so the
#: answer says how far the client and the server get
MC_PROBE_RATE = 40_000
#: mcload marks a sample client-limited above 60% of its ceiling: stay under it
PROBE_CLIENT_SHARE = 0.6
#: no sweep rate below this (a rate that low says nothing about a busy server)
MIN_RATE = 200


def sweeps(workload: str) -> bool:
    """True when *workload*'s client can drive an open-loop rate (redis-benchmark cannot)."""
    return workload not in ("redis", "http")


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


def capacity_from_probe(
    workload: str,
    server: str,
    achieved: float,
    fractions: Sequence[float],
    *,
    client_ceiling: float | None = None,
    client_limited: bool = False,
    p50: float = 0.0,
    p99: float = 0.0,
    method: str = "",
) -> Capacity:
    """The :class:`Capacity` a probe's numbers give (pure: the probe ran elsewhere)."""
    rate = achieved
    how = method or "closed-loop ping-pong rate (one request in flight)"
    if client_ceiling is not None and client_ceiling > 0:
        limit = PROBE_CLIENT_SHARE * client_ceiling
        if limit < rate:
            rate = limit
            how = (
                f"{PROBE_CLIENT_SHARE:.0%} of the load generator's ceiling "
                f"({client_ceiling:.0f}/s; it answered {achieved:.0f}/s at the probe rate)"
            )
        else:
            how = f"answered at a {MC_PROBE_RATE}/s probe (client ceiling {client_ceiling:.0f}/s)"
    return Capacity(
        workload,
        server,
        round(rate, 1),
        how,
        sweep_loads(rate, fractions),
        p50,
        p99,
        client_limited,
    )


def probe_load(workload: str) -> int:
    """The load a probe of *workload* runs at (ping-pong for sockperf framing)."""
    return MC_PROBE_RATE if workload == "memcached" else PING_PONG
