"""Busy polling for the Python servers people run: one module per server.

- ``uvicorn``: ``uvicorn app:app --loop netdevkit.integrations.uvicorn:suspend``
  (:mod:`netdevkit.integrations.uvicorn`);
- ``gunicorn`` with uvicorn workers: ``-k netdevkit.integrations.gunicorn.SuspendWorker``
  (:mod:`netdevkit.integrations.gunicorn`);
- hypercorn and aiohttp take :func:`~netdevkit.busypoll.aio.loop_factory` (docs/servers.md);
- granian (a Rust event loop) and anything else: ``netdevkit run``/``attach``.

This module holds what they share: the configuration a *name* stands for (a tuning
preset's epoll half, or one of the netdevkit loop modes the bench measures), and the
configuration an environment variable gives (:data:`ENV`) for anything else. docs/servers.md
has the table.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from ..busypoll.aio import BusyPollEventLoop, loop_factory
from ..busypoll.config import BusyPollConfig
from ..errors import NetdevkitError, RequestError
from ..suggest import did_you_mean
from ..tuning.presets import PRESETS

__all__ = [
    "ENV",
    "MODES",
    "config_from_env",
    "config_named",
    "env_loop_factory",
    "exit_with",
    "parse_config",
]

#: The environment variable the ``env`` entry points read: a name (a preset or a mode,
#: e.g. ``suspend``), ``key=value`` pairs (``busy_poll_usecs=0,busy_poll_budget=64,
#: prefer_busy_poll=1,adaptive_us=50``), or a name followed by pairs that change it
#: (``suspend,adaptive_us=50``). Keys are :class:`BusyPollConfig`'s fields.
ENV = "NETDEVKIT_BUSYPOLL"

#: Window and spin of the netdevkit modes (the bench's values, netdevkit.bench.modes).
_WINDOW_US = 50

#: netdevkit's loop modes (what only netdevkit's loop can do), by name.
MODES: dict[str, BusyPollConfig] = {
    "adaptive-window": dataclasses.replace(PRESETS["suspend"].epoll, adaptive_us=_WINDOW_US),
    "hot-spin": BusyPollConfig(hot_spin_us=_WINDOW_US),
    "hybrid": BusyPollConfig(0, 64, True, adaptive_us=_WINDOW_US, hybrid=True),
}

_FIELDS = tuple(f.name for f in dataclasses.fields(BusyPollConfig))
_BOOLS = ("prefer_busy_poll", "hybrid")


def config_named(name: str) -> BusyPollConfig:
    """The configuration of preset or mode *name* (``-`` and ``_`` alike)."""
    key = name.replace("_", "-")
    if key in MODES:
        return MODES[key]
    if key in PRESETS:
        return PRESETS[key].epoll
    known = [*PRESETS, *MODES]
    raise RequestError(
        f"unknown busy-poll name {name!r}{did_you_mean(key, known)} (known: {', '.join(known)})"
    )


def _value(key: str, text: str) -> int | bool:
    if key in _BOOLS:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise RequestError(f"{key}={text!r}: must be 0 or 1")
    try:
        return int(text)
    except ValueError:
        raise RequestError(f"{key}={text!r}: must be an integer") from None


def parse_config(text: str) -> BusyPollConfig:
    """``suspend``, ``suspend,adaptive_us=50`` or ``busy_poll_usecs=50,...`` -> the config."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise RequestError("empty busy-poll configuration")
    config = BusyPollConfig()
    if "=" not in items[0]:
        config = config_named(items.pop(0))
    changes: dict[str, int | bool] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in _FIELDS:
            raise RequestError(
                f"bad busy-poll setting {item!r}{did_you_mean(key, _FIELDS)}: expected "
                f"key=value with key one of {', '.join(_FIELDS)}"
            )
        changes[key] = _value(key, value.strip())
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


def config_from_env(default: str | None = None) -> BusyPollConfig:
    """The configuration :data:`ENV` gives (*default* where it is unset or empty; with no
    default, that is an error)."""
    text = os.environ.get(ENV, "").strip() or (default or "")
    if not text:
        raise RequestError(f"{ENV} is not set (e.g. {ENV}=suspend or {ENV}=busy_poll_usecs=50)")
    try:
        return parse_config(text)
    except RequestError as err:
        raise RequestError(f"{ENV}: {err}") from None


def exit_with(err: NetdevkitError) -> NoReturn:
    """One line on stderr and the CLI's exit status (2: bad input, 1: refused)."""
    print(f"netdevkit: {err}", file=sys.stderr, flush=True)
    raise SystemExit(2 if isinstance(err, RequestError) else 1)


def checked_call(make: Callable[[], BusyPollConfig]) -> BusyPollConfig:
    """``make()``, or exit with one line when the configuration is bad."""
    try:
        return make()
    except NetdevkitError as err:
        exit_with(err)


def env_loop_factory(default: str | None = None) -> Callable[[], BusyPollEventLoop]:
    """:func:`~netdevkit.busypoll.aio.loop_factory` for the configuration in :data:`ENV`
    (*default*, a name or settings, where it is unset): for servers started from Python
    (hypercorn's ``serve``, aiohttp's ``run_app``). A bad configuration (or a budget above
    64 without CAP_NET_ADMIN) ends the program with one line on stderr and exit 2 (1:
    refused)."""
    try:
        return loop_factory(config_from_env(default))
    except NetdevkitError as err:
        exit_with(err)
