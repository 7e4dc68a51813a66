"""An echo / request-response server with one busy-polling epoll context per NAPI.

Built on :class:`netdevkit.dispatch.NapiDispatcher`: each accepted connection goes to the
worker (thread or process) that owns the NAPI its packets arrive on, and every worker's
asyncio loop busy polls with the epoll half of a preset.

Two protocols:

- ``echo``: every byte read is written back.
- ``sockperf``: speaks the framing of sockperf's client (``sockperf ping-pong --tcp``,
  :mod:`.framing`), so the C client can measure this Python server.

Run it inside a testbed namespace and measure from the other side, e.g.::

    ip netns exec ndk-srv python -m netdevkit.bench.servers.napiecho --protocol sockperf \\
        --host 10.201.0.1 --port 11111 --preset suspend
    ip netns exec ndk-cli sockperf ping-pong --tcp -i 10.201.0.1 -p 11111 -t 2
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from types import FrameType

from ...dispatch import Handler, NapiDispatcher
from ...tuning.presets import get_preset
from .alloc import settle_malloc
from .framing import Framer, FramingError


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        if writer.transport.get_write_buffer_size() > 1 << 20:
            await writer.drain()


async def sockperf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    framer = Framer()
    while data := await reader.read(65536):
        try:
            out = framer.feed(data)
        except FramingError:
            return  # not sockperf framing: drop the connection
        if out:
            writer.write(out)
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()


PROTOCOLS: dict[str, Handler] = {"echo": echo, "sockperf": sockperf}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=11111)
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="echo")
    p.add_argument("--mode", choices=("thread", "process"), default="thread")
    p.add_argument("--preset", default="suspend", help="epoll half of this preset (or 'none')")
    p.add_argument("--workers", type=int, default=None, help="max NAPI workers")
    p.add_argument("--reuse-port", action="store_true")
    p.add_argument("--netns", help="listen inside this named network namespace")
    args = p.parse_args(argv)
    settle_malloc()

    config = None if args.preset == "none" else get_preset(args.preset).epoll
    dispatcher = NapiDispatcher(
        PROTOCOLS[args.protocol], config, args.mode, max_workers=args.workers
    )
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    host, port = dispatcher.start(
        args.host, args.port, reuse_port=args.reuse_port, netns=args.netns
    )
    params = None if config is None else config.params
    print(f"listening on {host}:{port} ({args.protocol}, {args.mode}, {params})", flush=True)
    try:
        while not done.wait(0.5):
            if dispatcher.accept_error is not None:
                print(f"accept failed: {dispatcher.accept_error}", file=sys.stderr)
                return 1
    finally:
        stats, workers = dispatcher.stats(), dispatcher.workers()
        dispatcher.stop()
        print(f"connections by NAPI id: {stats}", flush=True)
        for w in workers:
            print(f"  worker napi {w.napi_id}: {w.mode} {w.ident}, {w.connections} conns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
