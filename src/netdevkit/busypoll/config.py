"""One busy-poll configuration: every knob of every netdevkit loop, validated once.

:class:`BusyPollConfig` is what the selector, the asyncio loop, :class:`FastLoop`, the NAPI
dispatcher's workers, ``attach`` and the tuning presets take. Each knob has one name and
means the same thing wherever it is accepted:

=====================  ==========================================================================
``busy_poll_usecs``    how long an ``epoll_wait`` that finds nothing busy polls the context's
                       NAPI before it sleeps (``struct epoll_params``)
``busy_poll_budget``   packets per NAPI poll, 0..65535 (0: the kernel default, 8; above 64
                       needs CAP_NET_ADMIN, checked when the parameters are set)
``prefer_busy_poll``   keep the NAPI's IRQs masked while the application polls (the
                       prerequisite for IRQ suspension)
``adaptive_us``        the adaptive in-kernel window: the context carries ``busy_poll_usecs =
                       adaptive_us`` while blocking waits end within it (0: off; see
                       :mod:`.adaptive`)
``hybrid``             sleep-then-poll for paced traffic: sleep until the next event is due,
                       then open the adaptive window (needs ``adaptive_us``)
``hot_spin_us``        hot-socket spin: after a socket's read callback ran, read that socket
                       again (without ``epoll_wait``) until ``hot_spin_us`` pass without data;
                       each such nonblocking read polls the socket's NAPI once when the socket
                       has ``SO_BUSY_POLL`` (0: off)
=====================  ==========================================================================

The first three are the *epoll parameters* (:attr:`BusyPollConfig.params`); the last three
are *loop knobs*: only a loop netdevkit runs can honour them. Which knobs exclude which is
written here and nowhere else (:meth:`BusyPollConfig.__post_init__`); which knobs an entry
point can honour is checked by :meth:`BusyPollConfig.check_knobs`, called by each of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from .._argcheck import fail
from ..errors import RequestError
from .epoll import S32_MAX, U16_MAX, EpollParams, validate_params

__all__ = ["LOOP_KNOBS", "BusyPollConfig", "checked"]

#: The knobs only netdevkit's own loops can honour (not foreign loops or processes).
LOOP_KNOBS = ("adaptive_us", "hybrid", "hot_spin_us")


def _int_in(name: str, value: object, high: int) -> None:
    # bool is an int subclass; True as a microsecond count is almost surely a bug.
    if not isinstance(value, int) or isinstance(value, bool):
        raise fail(name, "an int", value)
    if not 0 <= value <= high:
        raise RequestError(f"{name}={value} is out of range: must be 0..{high}")


@dataclasses.dataclass(frozen=True, slots=True)
class BusyPollConfig:
    """How a loop (or a process's epoll contexts) busy polls; see the module docstring.

    Validated on construction (and by ``dataclasses.replace``): a bad type, a value out of
    range or knobs that exclude each other raise :class:`~netdevkit.errors.RequestError`
    naming the knob. ``BusyPollConfig()`` is the kernel default: no busy polling.
    """

    busy_poll_usecs: int = 0
    busy_poll_budget: int = 0
    prefer_busy_poll: bool = False
    adaptive_us: int = 0
    hybrid: bool = False
    hot_spin_us: int = 0

    def __post_init__(self) -> None:
        _int_in("busy_poll_usecs", self.busy_poll_usecs, S32_MAX)
        _int_in("busy_poll_budget", self.busy_poll_budget, U16_MAX)
        prefer: object = self.prefer_busy_poll
        if prefer not in (0, 1) or not isinstance(prefer, int):
            raise RequestError(
                f"prefer_busy_poll={prefer!r} is out of range: must be 0/1 or a bool"
            )
        _int_in("adaptive_us", self.adaptive_us, S32_MAX)
        if not isinstance(self.hybrid, bool):
            raise RequestError(f"hybrid must be a bool, got {type(self.hybrid).__name__}")
        # SO_BUSY_POLL (set to hot_spin_us on the spun sockets) is an int in the kernel.
        _int_in("hot_spin_us", self.hot_spin_us, S32_MAX)
        # The rules between knobs, all of them.
        if self.hybrid and not self.adaptive_us:
            raise RequestError(
                "hybrid=True needs the adaptive window (adaptive_us > 0) it opens after the sleep"
            )
        if self.hot_spin_us and (self.adaptive_us or self.hybrid):
            raise RequestError(
                f"hot_spin_us={self.hot_spin_us} excludes adaptive_us and hybrid: the spin "
                "reads the sockets instead of waiting in epoll, so the window would see no waits"
            )
        # Normalise a 0/1 prefer to the bool the kernel reads back.
        object.__setattr__(self, "prefer_busy_poll", bool(prefer))

    @classmethod
    def from_params(cls, params: EpollParams, **loop_knobs: int | bool) -> BusyPollConfig:
        """The config with *params* as its epoll parameters (plus any *loop_knobs*)."""
        if not isinstance(params, EpollParams):
            raise fail("params", "an EpollParams", params)
        return cls(
            params.busy_poll_usecs,
            params.busy_poll_budget,
            params.prefer_busy_poll,
            **loop_knobs,  # type: ignore[arg-type]
        )

    @property
    def params(self) -> EpollParams:
        """The epoll parameters (``struct epoll_params``) this config carries."""
        return EpollParams(self.busy_poll_usecs, self.busy_poll_budget, self.prefer_busy_poll)

    @property
    def enabled(self) -> bool:
        """Whether the epoll parameters busy poll at all (usecs > 0 or prefer)."""
        return self.busy_poll_usecs > 0 or self.prefer_busy_poll

    @property
    def loop_knobs(self) -> dict[str, int | bool]:
        """The loop knobs that are on, by name."""
        return {k: v for k in LOOP_KNOBS if (v := getattr(self, k))}

    def check_knobs(self, where: str, honours: Collection[str] = ()) -> None:
        """Raise :class:`RequestError` if a loop knob is on that *where* cannot honour.

        *honours* names the loop knobs *where* implements; the epoll parameters are
        honoured everywhere.
        """
        refused = [f"{k}={v}" for k, v in self.loop_knobs.items() if k not in honours]
        if refused:
            can = f" (it honours {', '.join(honours)})" if honours else ""
            raise RequestError(
                f"{where} cannot apply {', '.join(refused)}{can}: "
                f"{_WHO_DOES[refused[0].split('=')[0]]}"
            )


_WHO_DOES = {
    "adaptive_us": "the adaptive window needs a netdevkit loop that sees its waits "
    "(BusyPollSelector, BusyPollEventLoop, FastLoop)",
    "hybrid": "hybrid polling needs a netdevkit loop that sees its waits "
    "(BusyPollSelector, BusyPollEventLoop, FastLoop)",
    "hot_spin_us": "the hot-socket spin needs a netdevkit loop that reads the sockets "
    "(BusyPollEventLoop, FastLoop)",
}


def checked(config: object, where: str, honours: Collection[str] = ()) -> BusyPollConfig:
    """*config* (None: ``BusyPollConfig()``) checked for entry point *where*.

    Refuses anything but a :class:`BusyPollConfig`, loop knobs *where* does not honour, and
    (:func:`~netdevkit.busypoll.epoll.validate_params`) a budget above 64 without
    CAP_NET_ADMIN -- before anything is created.
    """
    if config is None:
        return BusyPollConfig()
    if not isinstance(config, BusyPollConfig):
        raise fail("config", f"a BusyPollConfig ({where} takes one)", config)
    config.check_knobs(where, honours)
    validate_params(config.params)
    return config
