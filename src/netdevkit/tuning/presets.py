"""Named presets of the published IRQ-suspension evaluation.

The modes follow "Enhancing Network Stack Efficiency with IRQ Suspension"
(Damato, Kahn, Karsten; the kernel series that added irq-suspend-timeout):
each pairs per-NAPI settings with the epoll busy-poll parameters the
application is expected to use. The tuning commands apply the NAPI half; the
busy-poll loop, ``netdevkit attach`` and the bench apply the epoll half.

Durations are nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._argcheck import str_arg
from ..busypoll.config import BusyPollConfig
from ..errors import RequestError
from ..netdev.family import NapiThreaded
from ..suggest import did_you_mean

US = 1_000
MS = 1_000_000


@dataclass(frozen=True, slots=True)
class NapiSettings:
    """Per-NAPI values; ``None`` leaves a knob as it is."""

    defer_hard_irqs: int | None = None
    gro_flush_timeout: int | None = None
    irq_suspend_timeout: int | None = None
    #: off/on (False/True), or NapiThreaded.BUSY_POLL (a busy-polling kthread, 6.19+)
    threaded: bool | NapiThreaded | None = None


@dataclass(frozen=True, slots=True)
class Preset:
    """A named mode: *napi* for the tuning commands, *epoll* the busy-poll configuration
    the application's loop (or ``netdevkit attach``) uses -- its epoll parameters only."""

    name: str
    summary: str
    napi: NapiSettings
    epoll: BusyPollConfig


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "base",
            "interrupts as the driver does them: no deferral, no busy polling",
            NapiSettings(0, 0, 0, False),
            BusyPollConfig(),
        ),
        Preset(
            "defer",
            "interrupt deferral only: defer 100 polls, gro-flush-timeout 20us",
            NapiSettings(100, 20 * US, 0, False),
            BusyPollConfig(),
        ),
        Preset(
            "napibusy",
            "deferral with epoll busy polling: defer 100, gro 200us; epoll usecs 64, "
            "budget 64, prefer",
            NapiSettings(100, 200 * US, 0, False),
            BusyPollConfig(64, 64, True),
        ),
        Preset(
            "fullbusy",
            "full busy polling: defer 100, gro 5ms; epoll usecs 1000, budget 64, prefer",
            NapiSettings(100, 5 * MS, 0, False),
            BusyPollConfig(1000, 64, True),
        ),
        Preset(
            "suspend",
            "IRQ suspension: defer 100, gro 20us, irq-suspend 20ms; epoll usecs 0, "
            "budget 64, prefer",
            NapiSettings(100, 20 * US, 20 * MS, False),
            BusyPollConfig(0, 64, True),
        ),
        Preset(
            "threaded",
            "threaded NAPI: a kthread per NAPI polls instead of softirq; no busy polling",
            NapiSettings(0, 0, 0, True),
            BusyPollConfig(),
        ),
        Preset(
            "busy-poll-thread",
            "threaded busy polling (Linux 6.19+): a kthread per NAPI busy polls without "
            "pause, a core each; the application needs no busy polling",
            NapiSettings(0, 0, 0, NapiThreaded.BUSY_POLL),
            BusyPollConfig(),
        ),
    )
}


def get_preset(name: str) -> Preset:
    str_arg("name", name)
    try:
        return PRESETS[name]
    except KeyError:
        raise RequestError(
            f"unknown preset {name!r}{did_you_mean(name, PRESETS)} (known: {', '.join(PRESETS)})"
        ) from None
