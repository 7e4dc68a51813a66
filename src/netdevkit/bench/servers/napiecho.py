"""An echo / request-response server with one busy-polling epoll context per NAPI.

Built on :class:`netdevkit.dispatch.NapiDispatcher`: each accepted connection goes to the
worker (thread or process) that owns the NAPI its packets arrive on, and every worker's
asyncio loop busy polls with the epoll half of a preset.

Two protocols:

- ``echo``: every byte read is written back.
- ``sockperf``: speaks the framing of sockperf's client (``sockperf ping-pong --tcp``), so the
  C client can measure this Python server. Each message starts with a 14-byte big-endian
  header, ``u64 sequence number, u16 flags, u32 total length`` (header included); a message
  with the pong-request flag (0x2) is returned with the client flag (0x1) cleared; others
  (throughput mode) are consumed.

Run it inside a testbed namespace and measure from the other side, e.g.::

    ip netns exec ndk-srv python -m netdevkit.bench.servers.napiecho --protocol sockperf \\
        --host 10.201.0.1 --port 11111 --preset suspend
    ip netns exec ndk-cli sockperf ping-pong --tcp -i 10.201.0.1 -p 11111 -t 2
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
import sys
import threading
from types import FrameType

from netdevkit.dispatch import Handler, NapiDispatcher
from netdevkit.tuning.presets import get_preset

HEADER = struct.Struct(">QHI")  # sequence number, flags, total length (14 bytes)
FLAG_CLIENT = 0x1
FLAG_PONG_REQUEST = 0x2
MAX_MESSAGE = 65536 + HEADER.size


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        if writer.transport.get_write_buffer_size() > 1 << 20:
            await writer.drain()


async def sockperf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            header = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError:
            return  # the client closed between messages
        seq, flags, length = HEADER.unpack(header)
        if not HEADER.size <= length <= MAX_MESSAGE:
            return  # not sockperf framing: drop the connection
        body = await reader.readexactly(length - HEADER.size) if length > HEADER.size else b""
        if flags & FLAG_PONG_REQUEST:
            writer.write(HEADER.pack(seq, flags & ~FLAG_CLIENT, length) + body)
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
