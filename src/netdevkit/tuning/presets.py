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

from ..errors import RequestError
from ..netdev.family import NapiThreaded

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
class EpollSettings:
    """What the application's epoll context should carry (``struct epoll_params``)."""

    busy_poll_usecs: int = 0
    busy_poll_budget: int = 0
    prefer_busy_poll: bool = False

    @property
    def enabled(self) -> bool:
        return self.busy_poll_usecs > 0 or self.prefer_busy_poll


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    summary: str
    napi: NapiSettings
    epoll: EpollSettings


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "base",
            "interrupts as the driver does them: no deferral, no busy polling",
            NapiSettings(0, 0, 0, False),
            EpollSettings(),
        ),
        Preset(
            "defer",
            "interrupt deferral only: defer 100 polls, gro-flush-timeout 20us",
            NapiSettings(100, 20 * US, 0, False),
            EpollSettings(),
        ),
        Preset(
            "napibusy",
            "deferral with epoll busy polling: defer 100, gro 200us; epoll usecs 64, "
            "budget 64, prefer",
            NapiSettings(100, 200 * US, 0, False),
            EpollSettings(64, 64, True),
        ),
        Preset(
            "fullbusy",
            "full busy polling: defer 100, gro 5ms; epoll usecs 1000, budget 64, prefer",
            NapiSettings(100, 5 * MS, 0, False),
            EpollSettings(1000, 64, True),
        ),
        Preset(
            "suspend",
            "IRQ suspension: defer 100, gro 20us, irq-suspend 20ms; epoll usecs 0, "
            "budget 64, prefer",
            NapiSettings(100, 20 * US, 20 * MS, False),
            EpollSettings(0, 64, True),
        ),
        Preset(
            "threaded",
            "threaded NAPI: a kthread per NAPI polls instead of softirq; no busy polling",
            NapiSettings(0, 0, 0, True),
            EpollSettings(),
        ),
        Preset(
            "busy-poll-thread",
            "threaded busy polling (Linux 6.19+): a kthread per NAPI busy polls without "
            "pause, a core each; the application needs no busy polling",
            NapiSettings(0, 0, 0, NapiThreaded.BUSY_POLL),
            EpollSettings(),
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise RequestError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None
