"""The modes the bench compares: the kernel's presets and netdevkit's own.

A mode has two halves. The NAPI half is applied to the server end's NAPI with
:class:`netdevkit.tuning.tuned` (a preset's per-NAPI settings); the server
half is what the server program does: the epoll parameters of a preset (set by
the server itself or from outside with :func:`netdevkit.attach.attach`), or
one of netdevkit's loop features, which only netdevkit's own loops have.

=====================  =====================================================  ==============
mode                   what it does                                           servers
=====================  =====================================================  ==============
base .. threaded       the kernel presets of ``netdevkit tune`` (NAPI half    every server
                       on the NAPI, epoll half on the server's contexts)
adaptive-window        IRQ suspension (the suspend preset) with netdevkit's   netdevkit's
                       adaptive in-kernel busy-poll window (50 us while       loops
                       requests come back to back, 0 once they thin out)
hot-spin               no NAPI tuning; after each request the loop re-reads   netdevkit's
                       the hot socket for 50 us with ``SO_BUSY_POLL`` (each   loops
                       nonblocking read polls the NAPI once)
hybrid                 no NAPI tuning; sleep-then-poll: the loop sleeps       netdevkit's
                       until just before the next request is due and busy     loops
                       polls (window 50 us, budget 64, prefer) from there
busy-poll-thread       NAPI ``threaded`` = 2: a kthread per NAPI that busy    every server
                       polls (Linux 6.19+; absent on older kernels)
=====================  =====================================================  ==============

Nothing here does I/O except :func:`kernel_has_threaded_busy_poll`, which
reads the running kernel's version.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import kver
from ..errors import RequestError
from ..netdev.family import THREADED_BUSY_POLL_SINCE
from ..tuning.presets import PRESETS

__all__ = [
    "ALL_MODES",
    "KERNEL_MODES",
    "NETDEVKIT_MODES",
    "THREADED_BUSY_POLL",
    "ModeSpec",
    "get_mode",
    "kernel_has_threaded_busy_poll",
    "parse_modes",
]

#: servers whose loop has netdevkit's features (adaptive window, hot spin, hybrid)
NETDEVKIT_LOOP_SERVERS = ("fast",)
#: the mode name of threaded busy polling (NAPI threaded = 2, Linux 6.19)
THREADED_BUSY_POLL = "busy-poll-thread"
_ADAPTIVE_US = 50
_HOT_SPIN_US = 50


@dataclass(frozen=True, slots=True)
class ModeSpec:
    """One mode: its NAPI half (a preset name) and what a netdevkit loop adds."""

    name: str
    summary: str
    #: the preset whose NAPI settings (and, for ``kind == "kernel"``, epoll half) apply
    napi_preset: str
    #: "kernel": a preset, on every server; "netdevkit": only on netdevkit's loops
    kind: str
    #: rr server arguments for netdevkit's loops (``python -m netdevkit.bench.servers.rr``)
    loop_args: tuple[str, ...] = ()

    def applies_to(self, server: str) -> bool:
        """True when *server* can run this mode (netdevkit's features need its loop)."""
        return self.kind == "kernel" or server in NETDEVKIT_LOOP_SERVERS


def _kernel_mode(name: str) -> ModeSpec:
    # The kernel's presets on netdevkit's loop run as the kernel has them: no adaptive
    # window (that is the adaptive-window mode), so the two can be told apart.
    preset = ("--preset", name) if PRESETS[name].epoll.enabled else ()
    return ModeSpec(name, PRESETS[name].summary, name, "kernel", (*preset, "--adaptive-us", "0"))


KERNEL_MODES = tuple(m for m in PRESETS if m != THREADED_BUSY_POLL)

_adaptive = ("--adaptive-us", str(_ADAPTIVE_US))
NETDEVKIT_MODES: dict[str, ModeSpec] = {
    m.name: m
    for m in (
        ModeSpec(
            "adaptive-window",
            f"IRQ suspension with netdevkit's adaptive busy-poll window ({_ADAPTIVE_US} us "
            "while requests come back to back, 0 once they thin out)",
            "suspend",
            "netdevkit",
            ("--preset", "suspend", "--adaptive-us", str(_ADAPTIVE_US)),
        ),
        ModeSpec(
            "hot-spin",
            f"no NAPI tuning; re-read the hot socket for {_HOT_SPIN_US} us after each request "
            "(SO_BUSY_POLL: each read polls the NAPI)",
            "base",
            "netdevkit",
            ("--hot-spin-us", str(_HOT_SPIN_US), "--adaptive-us", "0"),
        ),
        ModeSpec(
            "hybrid",
            "no NAPI tuning; sleep until the next request is due, then busy poll "
            f"(window {_ADAPTIVE_US} us, budget 64, prefer)",
            "base",
            "netdevkit",
            (*("--usecs", "0", "--budget", "64", "--prefer", "--hybrid"), *_adaptive),
        ),
    )
}


def _all_modes() -> dict[str, ModeSpec]:
    out = {name: _kernel_mode(name) for name in KERNEL_MODES}
    out.update(NETDEVKIT_MODES)
    # Threaded busy polling: a kernel preset once netdevkit's tuning declares it, else a
    # mode that is reported as absent (it cannot be applied by this netdevkit/kernel).
    if THREADED_BUSY_POLL in PRESETS:
        out[THREADED_BUSY_POLL] = _kernel_mode(THREADED_BUSY_POLL)
    else:
        out[THREADED_BUSY_POLL] = ModeSpec(
            THREADED_BUSY_POLL,
            "threaded NAPI busy polling (threaded = 2): a kthread per NAPI polls continuously",
            "",
            "kernel",
        )
    return out


ALL_MODES: dict[str, ModeSpec] = _all_modes()


def get_mode(name: str) -> ModeSpec:
    try:
        return ALL_MODES[name]
    except KeyError:
        raise RequestError(f"unknown mode {name!r} (known: {', '.join(ALL_MODES)})") from None


def parse_modes(value: str) -> tuple[str, ...]:
    """``base,hybrid`` -> ('base', 'hybrid'); unknown names raise RequestError listing the known."""
    items = tuple(x.strip() for x in value.split(",") if x.strip())
    unknown = [x for x in items if x not in ALL_MODES]
    if unknown or not items:
        bad = ", ".join(unknown) or "(empty)"
        raise RequestError(f"unknown mode {bad} (known: {', '.join(ALL_MODES)})")
    return items


def threaded_busy_poll_absent(release: str | None = None) -> str | None:
    """Why threaded busy polling cannot run here, or None when it can."""
    try:
        ver = kver.parse(release if release is not None else kver.release())
    except ValueError:
        ver = (0, 0, 0)
    if ver < kver.parse(THREADED_BUSY_POLL_SINCE):
        return (
            f"threaded busy polling (NAPI threaded = 2) needs Linux "
            f"{THREADED_BUSY_POLL_SINCE}; this kernel is "
            f"{ver[0]}.{ver[1]} (it answers ERANGE): not measured"
        )
    if THREADED_BUSY_POLL not in PRESETS:
        return (
            "threaded busy polling: this kernel has it, but this netdevkit's tuning cannot "
            "set threaded = 2 yet: not measured"
        )
    return None


def kernel_has_threaded_busy_poll(release: str | None = None) -> bool:
    return threaded_busy_poll_absent(release) is None
