"""Busy polling for Python programs: one configuration, a selector, asyncio, a callback loop.

- :mod:`.config` - :class:`BusyPollConfig`: every busy-poll knob, validated once, accepted
  by every loop below, by :class:`netdevkit.dispatch.NapiDispatcher` and by
  :func:`netdevkit.attach.attach`.
- :mod:`.epoll` - ``struct epoll_params`` on any epoll fd (Linux 6.9+), validated like the
  kernel and read back.
- :mod:`.sockopt` - ``SO_BUSY_POLL``, ``SO_PREFER_BUSY_POLL``, ``SO_BUSY_POLL_BUDGET`` and
  ``SO_INCOMING_NAPI_ID``.
- :mod:`.selector` - :class:`BusyPollSelector`, a drop-in ``selectors`` epoll selector.
- :mod:`.aio` - :class:`BusyPollEventLoop`, :func:`loop_factory` and :func:`apply_to_loop`
  for stock asyncio and uvloop.
- :mod:`.adaptive` - the adaptive in-kernel busy-poll window (:class:`AdaptiveWindow`) and
  hybrid sleep-then-poll (:class:`GapPredictor`) that the loops use.
- :mod:`.fastloop` - :class:`FastLoop`, a minimal callback loop on one busy-polling epoll.

The sockperf-compatible request/response servers on every loop live in the bench:
:mod:`netdevkit.bench.servers`.

Which one to use, and why: ``docs/busypoll.md``. Names are imported on first use, so
``import netdevkit.busypoll.config`` (as the tuning presets do) does not import asyncio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "AdaptiveWindow": ".adaptive",
    "GapPredictor": ".adaptive",
    "BusyPollEventLoop": ".aio",
    "apply_to_loop": ".aio",
    "apply_to_running_loop": ".aio",
    "epoll_fds_watching": ".aio",
    "loop_factory": ".aio",
    "BusyPollConfig": ".config",
    "EPIOCGPARAMS": ".epoll",
    "EPIOCSPARAMS": ".epoll",
    "EpollParams": ".epoll",
    "ParamsMismatchError": ".epoll",
    "get_params": ".epoll",
    "has_cap_net_admin": ".epoll",
    "is_epoll_fd": ".epoll",
    "set_params": ".epoll",
    "validate_params": ".epoll",
    "FastLoop": ".fastloop",
    "BusyPollSelector": ".selector",
    "SO_BUSY_POLL": ".sockopt",
    "SO_BUSY_POLL_BUDGET": ".sockopt",
    "SO_INCOMING_NAPI_ID": ".sockopt",
    "SO_PREFER_BUSY_POLL": ".sockopt",
    "SocketBusyPoll": ".sockopt",
    "get_busy_poll": ".sockopt",
    "get_incoming_napi_id": ".sockopt",
    "get_prefer_busy_poll": ".sockopt",
    "set_busy_poll": ".sockopt",
    "set_busy_poll_budget": ".sockopt",
    "set_prefer_busy_poll": ".sockopt",
    "socket_busy_poll": ".sockopt",
}

if TYPE_CHECKING:
    from .adaptive import AdaptiveWindow, GapPredictor
    from .aio import (
        BusyPollEventLoop,
        apply_to_loop,
        apply_to_running_loop,
        epoll_fds_watching,
        loop_factory,
    )
    from .config import BusyPollConfig
    from .epoll import (
        EPIOCGPARAMS,
        EPIOCSPARAMS,
        EpollParams,
        ParamsMismatchError,
        get_params,
        has_cap_net_admin,
        is_epoll_fd,
        set_params,
        validate_params,
    )
    from .fastloop import FastLoop
    from .selector import BusyPollSelector
    from .sockopt import (
        SO_BUSY_POLL,
        SO_BUSY_POLL_BUDGET,
        SO_INCOMING_NAPI_ID,
        SO_PREFER_BUSY_POLL,
        SocketBusyPoll,
        get_busy_poll,
        get_incoming_napi_id,
        get_prefer_busy_poll,
        set_busy_poll,
        set_busy_poll_budget,
        set_prefer_busy_poll,
        socket_busy_poll,
    )

__all__ = [
    "EPIOCGPARAMS",
    "EPIOCSPARAMS",
    "SO_BUSY_POLL",
    "SO_BUSY_POLL_BUDGET",
    "SO_INCOMING_NAPI_ID",
    "SO_PREFER_BUSY_POLL",
    "AdaptiveWindow",
    "BusyPollConfig",
    "BusyPollEventLoop",
    "BusyPollSelector",
    "EpollParams",
    "FastLoop",
    "GapPredictor",
    "ParamsMismatchError",
    "SocketBusyPoll",
    "apply_to_loop",
    "apply_to_running_loop",
    "epoll_fds_watching",
    "get_busy_poll",
    "get_incoming_napi_id",
    "get_params",
    "get_prefer_busy_poll",
    "has_cap_net_admin",
    "is_epoll_fd",
    "loop_factory",
    "set_busy_poll",
    "set_busy_poll_budget",
    "set_params",
    "set_prefer_busy_poll",
    "socket_busy_poll",
    "validate_params",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'netdevkit.busypoll' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
