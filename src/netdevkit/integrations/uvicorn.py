"""uvicorn on netdevkit's busy-polling asyncio loop.

    uvicorn app:app --loop netdevkit.integrations.uvicorn:suspend [--workers 4]

uvicorn 0.36.0 made ``--loop`` take ``module:function`` (``Config.get_loop_factory``
imports it and hands it to ``asyncio.Runner(loop_factory=...)``): each name below is such a
zero-argument function, and makes a :class:`~netdevkit.busypoll.aio.BusyPollEventLoop`.
With ``--workers N`` every worker process imports it and makes its own loop, each with its
own epoll context.

- one name per tuning preset (its epoll half): ``base``, ``defer``, ``napibusy``,
  ``fullbusy``, ``suspend``, ``threaded``, ``busy_poll_thread``;
- one per netdevkit loop mode: ``adaptive_window`` (suspend plus the 50 us adaptive window),
  ``hot_spin``, ``hybrid``;
- ``env``: the configuration in ``NETDEVKIT_BUSYPOLL`` (:data:`netdevkit.integrations.ENV`),
  e.g. ``NETDEVKIT_BUSYPOLL=suspend,adaptive_us=30``.

The NAPI half of a preset is the tuning commands' job (``netdevkit napi set --preset``).
A bad configuration (or a budget above 64 without CAP_NET_ADMIN) ends the worker with one
line on stderr and exit status 3, uvicorn's own status for a worker that failed before
serving: with ``--workers N`` uvicorn's supervisor then stops (it restarts workers that die
with any other status, forever) and exits non-zero.

An older uvicorn rejects ``--loop module:function`` itself (``'...' is not one of 'none',
'auto', 'asyncio', 'uvloop'``) before this module is imported; ``python -m
netdevkit.integrations.uvicorn NAME APP [uvicorn options]`` checks the version (and the
configuration) first and says so in one line, exit 1 (2), then runs uvicorn with
``--loop`` set.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..busypoll.aio import BusyPollEventLoop
from ..busypoll.config import LOOP_KNOBS, BusyPollConfig, checked
from ..errors import NetdevkitError, RequestError, UnsupportedError
from . import config_from_env, config_named, exit_with

__all__ = [
    "MIN_VERSION",
    "adaptive_window",
    "base",
    "busy_poll_thread",
    "defer",
    "env",
    "fullbusy",
    "hot_spin",
    "hybrid",
    "loop_named",
    "napibusy",
    "require_custom_loops",
    "suspend",
    "threaded",
]

#: The first uvicorn whose ``--loop`` takes ``module:function`` (Config.get_loop_factory).
MIN_VERSION = (0, 36, 0)


#: uvicorn's exit status for a worker that failed before serving (uvicorn.config): its
#: supervisor (``--workers N``) stops instead of restarting the worker forever.
STARTUP_FAILURE = 3


def _startup_failure(err: NetdevkitError) -> NoReturn:
    """One line on stderr, then exit with :data:`STARTUP_FAILURE` at once.

    ``os._exit``: uvicorn made its ``serve()`` coroutine before it asked for the loop, and
    a ``SystemExit`` would add "coroutine 'Server.serve' was never awaited" to the line.
    Nothing is open yet: the loop was not made."""
    print(f"netdevkit: {err}", file=sys.stderr, flush=True)
    os._exit(STARTUP_FAILURE)


def _make(config: BusyPollConfig) -> BusyPollEventLoop:
    try:
        return BusyPollEventLoop(config)
    except NetdevkitError as err:
        _startup_failure(err)


def _named(name: str) -> BusyPollEventLoop:
    try:
        config = config_named(name)
    except NetdevkitError as err:
        _startup_failure(err)
    return _make(config)


def base() -> BusyPollEventLoop:
    return _named("base")


def defer() -> BusyPollEventLoop:
    return _named("defer")


def napibusy() -> BusyPollEventLoop:
    return _named("napibusy")


def fullbusy() -> BusyPollEventLoop:
    return _named("fullbusy")


def suspend() -> BusyPollEventLoop:
    return _named("suspend")


def threaded() -> BusyPollEventLoop:
    return _named("threaded")


def busy_poll_thread() -> BusyPollEventLoop:
    return _named("busy-poll-thread")


def adaptive_window() -> BusyPollEventLoop:
    return _named("adaptive-window")


def hot_spin() -> BusyPollEventLoop:
    return _named("hot-spin")


def hybrid() -> BusyPollEventLoop:
    return _named("hybrid")


def env() -> BusyPollEventLoop:
    """The loop for the configuration in ``NETDEVKIT_BUSYPOLL``."""
    try:
        config = config_from_env()
    except NetdevkitError as err:
        _startup_failure(err)
    return _make(config)


def loop_named(name: str) -> str:
    """The ``--loop`` value for *name* (a preset, a mode or ``env``); checks the name."""
    if name != "env":
        config_named(name)
    return f"{__name__}:{name.replace('-', '_')}"


def _version(text: str) -> tuple[int, ...]:
    """``0.35.0`` -> (0, 35, 0); ``0.36.0rc1`` -> (0, 36, 0); leading numbers only."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    return tuple(int(g or 0) for g in match.groups()) if match else (0,)


def require_custom_loops(version: str | None = None) -> str:
    """The installed uvicorn's version; UnsupportedError when it is missing or too old."""
    if version is None:
        try:
            version = importlib.metadata.version("uvicorn")
        except importlib.metadata.PackageNotFoundError:
            raise UnsupportedError("uvicorn is not installed (pip install uvicorn)") from None
    if _version(version) < MIN_VERSION:
        need = ".".join(map(str, MIN_VERSION))
        raise UnsupportedError(
            f"uvicorn {version} cannot run a custom event loop (a loop given as "
            f"module:function came in uvicorn {need}): pip install 'uvicorn>={need}'"
        )
    return version


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m netdevkit.integrations.uvicorn NAME APP [uvicorn options]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0].startswith("-"):
        exit_with(RequestError("usage: python -m netdevkit.integrations.uvicorn NAME APP [...]"))
    try:
        require_custom_loops()
        loop = loop_named(args[0])
        config = config_from_env() if args[0] == "env" else config_named(args[0])
        checked(config, "the uvicorn loop", LOOP_KNOBS)  # here, not once per worker
    except NetdevkitError as err:
        exit_with(err)
    os.execvp(sys.executable, [sys.executable, "-m", "uvicorn", *args[1:], "--loop", loop])


if __name__ == "__main__":
    main()
