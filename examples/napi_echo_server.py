"""An echo server with one busy-polling epoll context per NAPI (a NapiDispatcher example).

Each accepted connection goes to the worker thread that owns the NAPI its packets arrive on,
and every worker's asyncio loop busy polls with the epoll half of a tuning preset. Run it
inside a testbed namespace and talk to it from the other side, e.g.::

    netdevkit testbed up --name exp --queues 4
    ip netns exec exp-srv python examples/napi_echo_server.py --host 10.201.0.1
    ip netns exec exp-cli nc 10.201.0.1 11111

The server the bench measures (``--protocol sockperf``, process workers, ...) is
``python -m netdevkit.bench.servers.napiecho``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading

from netdevkit.dispatch import NapiDispatcher
from netdevkit.tuning.presets import get_preset


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Write back every byte read, until the client closes."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def main() -> None:
    p = argparse.ArgumentParser(description="per-NAPI busy-polling echo server")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=11111)
    p.add_argument("--preset", default="suspend", help="epoll half of this tuning preset")
    args = p.parse_args()
    config = get_preset(args.preset).epoll  # a BusyPollConfig: the preset's epoll half
    dispatcher = NapiDispatcher(echo, config)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda _s, _f: done.set())
    signal.signal(signal.SIGTERM, lambda _s, _f: done.set())
    host, port = dispatcher.start(args.host, args.port)
    print(f"echo on {host}:{port}, epoll {config.params}; Ctrl-C stops", flush=True)
    done.wait()
    workers = dispatcher.workers()
    dispatcher.stop()
    for w in workers:
        print(f"worker for NAPI {w.napi_id}: {w.connections} connections")


if __name__ == "__main__":
    main()
