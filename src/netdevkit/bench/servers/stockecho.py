"""The sockperf-framing echo server of :mod:`.napiecho` on a *stock* loop.

``python -m netdevkit.bench.servers.stockecho --loop asyncio|uvloop --host H --port P``
serves the example's ``sockperf`` handler with plain ``asyncio.start_server`` on
stock asyncio or on uvloop, so the bench can put the same application code on
three loops: netdevkit's own (:mod:`.napiecho` itself), stock asyncio and uvloop.
The stock loops get their busy-poll parameters from outside, through
``netdevkit attach``, like any unmodified server.

The handler is :func:`netdevkit.bench.servers.napiecho.sockperf` itself, not a copy;
``--example PATH`` loads the ``sockperf`` handler of another file instead.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from . import napiecho
from .alloc import settle_malloc

__all__ = ["load_handler", "main"]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def load_handler(path: str, name: str = "sockperf") -> Handler:
    """The connection handler *name* of the example module at *path*."""
    spec = importlib.util.spec_from_file_location("_ndk_example_echo", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return cast(Handler, getattr(mod, name))


async def _serve(handler: Handler, host: str, port: int) -> None:
    server = await asyncio.start_server(handler, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {host}:{port} ({type(loop).__module__})", flush=True)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netdevkit.bench.servers.stockecho")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=11111)
    p.add_argument("--example", help="load the 'sockperf' handler of this file instead")
    args = p.parse_args(argv)
    settle_malloc()
    handler = load_handler(args.example) if args.example else napiecho.sockperf
    factory: Any = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(handler, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
