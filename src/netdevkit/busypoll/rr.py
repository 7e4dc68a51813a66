"""A request/response server speaking sockperf's TCP framing, on any of three loops.

Debian's ``sockperf ping-pong --tcp`` / ``under-load --tcp`` clients measure it exactly as
they measure ``sockperf server``, so a Python server on stock asyncio, on netdevkit's
:class:`~netdevkit.busypoll.aio.BusyPollEventLoop` or on uvloop (with netdevkit's epoll
parameters applied) can be put side by side with the C server.

The framing, as sockperf 3.7's client sends it (checked by capturing its messages):

- every message starts with a 14-byte big-endian header: u64 sequence number, u16 flags,
  u32 total length (header included; ``-m`` sets it, 14 at least);
- flags: 0x1 ``CLIENT`` (set on everything a client sends), 0x2 ``PONG_REQUEST`` (an
  answer is wanted: every message in ping-pong, one in ``--reply-every N`` under load),
  0x4 ``WARMUP``;
- the server answers a message carrying ``PONG_REQUEST`` with the same bytes and
  ``CLIENT`` cleared; other messages are consumed silently.

:class:`RrFramer` is that logic without I/O (bytes in, replies out); :class:`RrProtocol` is
the thin asyncio adapter around it with a fast path for the common case of exactly one
whole message per read (no copy into the framer's buffer). :func:`serve_rr` runs a server
until SIGTERM/SIGINT or a stop event; ``python -m netdevkit.busypoll.rr`` is the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast, get_args

from ..errors import NetdevkitError, RequestError
from .aio import BusyPollEventLoop, apply_to_loop
from .epoll import EpollParams, validate_params

__all__ = [
    "FLAG_CLIENT",
    "FLAG_PONG_REQUEST",
    "FLAG_WARMUP",
    "HEADER",
    "LoopKind",
    "RrFramer",
    "RrProtocol",
    "RrStats",
    "main",
    "make_loop",
    "params_from_preset",
    "serve_rr",
    "start_rr_server",
]

HEADER = struct.Struct(">QHI")  # sequence number, flags, total length: 14 bytes
FLAG_CLIENT = 0x1
FLAG_PONG_REQUEST = 0x2
FLAG_WARMUP = 0x4
#: The flags' low byte is byte 9 of the message (u16 big-endian at offset 8).
_FLAGS_LO = 9
#: sockperf's own limit on a message (MAX_PAYLOAD_SIZE is 65507 bytes plus the header).
MAX_MESSAGE = 65536

LoopKind = Literal["asyncio", "netdevkit", "uvloop"]
LOOP_KINDS: tuple[str, ...] = get_args(LoopKind)


class FramingError(NetdevkitError):
    """The peer sent something that is not sockperf framing (the connection is dropped)."""


@dataclass(slots=True)
class RrStats:
    """Counters of one server (all connections)."""

    connections: int = 0
    messages: int = 0
    replies: int = 0
    framing_errors: int = 0


def _answer_one(msg: bytes | bytearray | memoryview) -> bytearray | None:
    """The reply to one whole message, or None when no reply is asked for."""
    if not msg[_FLAGS_LO] & FLAG_PONG_REQUEST:
        return None
    reply = bytearray(msg)
    reply[_FLAGS_LO] &= ~FLAG_CLIENT & 0xFF
    return reply


class RrFramer:
    """sockperf framing without I/O: feed received bytes, get the bytes to send back.

    Handles messages split across reads and several messages in one read. Raises
    :class:`FramingError` on a length below the header size or above :data:`MAX_MESSAGE`.
    """

    __slots__ = ("_buf", "messages", "replies")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.messages = 0
        self.replies = 0

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held back for the next :meth:`feed`."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Consume *data*; return the concatenated replies to every message it completes."""
        buf = self._buf
        buf += data
        out = bytearray()
        pos = 0
        end = len(buf)
        while end - pos >= HEADER.size:
            length = int.from_bytes(buf[pos + 10 : pos + 14], "big")
            if not HEADER.size <= length <= MAX_MESSAGE:
                raise FramingError(
                    f"sockperf message with total length {length}: must be "
                    f"{HEADER.size}..{MAX_MESSAGE} (is the peer a sockperf client?)"
                )
            if end - pos < length:
                break
            self.messages += 1
            reply = _answer_one(memoryview(buf)[pos : pos + length])
            if reply is not None:
                self.replies += 1
                out += reply
            pos += length
        del buf[:pos]
        return bytes(out)


class RrProtocol(asyncio.Protocol):
    """One connection of the server: answers sockperf messages as they arrive.

    Fast path: a read that holds exactly one whole message (ping-pong always does) is
    answered straight from the received bytes; anything else goes through :class:`RrFramer`.
    """

    __slots__ = ("_framer", "_live", "_stats", "_transport")

    def __init__(self, stats: RrStats, live: set[asyncio.Transport] | None = None) -> None:
        self._stats = stats
        self._live = live
        self._framer = RrFramer()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._stats.connections += 1
        if self._live is not None:
            self._live.add(self._transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # asyncio and uvloop set it already; be explicit
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        stats = self._stats
        framer = self._framer
        if (
            not framer.pending
            and len(data) >= HEADER.size
            and int.from_bytes(data[10:14], "big") == len(data)
        ):
            stats.messages += 1
            reply = _answer_one(data)
            if reply is not None:
                stats.replies += 1
                transport.write(reply)
            return
        before_m, before_r = framer.messages, framer.replies
        try:
            out = framer.feed(data)
        except FramingError:
            stats.framing_errors += 1
            transport.abort()
            return
        stats.messages += framer.messages - before_m
        stats.replies += framer.replies - before_r
        if out:
            transport.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._live is not None and self._transport is not None:
            self._live.discard(self._transport)
        self._transport = None


async def start_rr_server(
    host: str,
    port: int,
    *,
    stats: RrStats | None = None,
    live: set[asyncio.Transport] | None = None,
    backlog: int = 128,
) -> asyncio.Server:
    """Start listening on the running loop; returns the ``asyncio.Server``.

    *live*, if given, holds the transports of the open connections (to close them at
    shutdown: ``Server.close()`` only stops listening).
    """
    counters = stats if stats is not None else RrStats()
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: RrProtocol(counters, live), host, port, reuse_address=True, backlog=backlog
    )


def params_from_preset(name: str) -> EpollParams:
    """The epoll half of a named tuning preset as :class:`EpollParams`."""
    from ..tuning.presets import get_preset

    ep = get_preset(name).epoll
    return EpollParams(
        busy_poll_usecs=ep.busy_poll_usecs,
        busy_poll_budget=ep.busy_poll_budget,
        prefer_busy_poll=ep.prefer_busy_poll,
    )


def make_loop(
    loop_kind: LoopKind, params: EpollParams | None = None, *, spin_us: int = 0
) -> asyncio.AbstractEventLoop:
    """A new event loop of *loop_kind* with *params* on its epoll context.

    ``asyncio``: a stock ``SelectorEventLoop`` (params, if given, set on its selector's epoll
    fd: the "naive" way); ``netdevkit``: :class:`BusyPollEventLoop` (``spin_us`` applies
    only here); ``uvloop``: ``uvloop.new_event_loop()`` with :func:`apply_to_loop`.
    """
    if loop_kind not in LOOP_KINDS:
        raise RequestError(f"loop kind {loop_kind!r}: use one of {', '.join(LOOP_KINDS)}")
    if params is not None:
        validate_params(params)
    if spin_us and loop_kind != "netdevkit":
        raise RequestError(f"spin_us applies to the netdevkit loop only, not {loop_kind!r}")
    loop: asyncio.AbstractEventLoop
    if loop_kind == "netdevkit":
        return BusyPollEventLoop(params, spin_us=spin_us)
    if loop_kind == "uvloop":
        try:
            import uvloop
        except ImportError as err:
            raise RequestError(
                "loop 'uvloop' needs the uvloop package (pip install 'netdevkit[bench]')"
            ) from err
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.SelectorEventLoop()
    if params is not None:
        try:
            apply_to_loop(loop, params)
        except BaseException:
            loop.close()
            raise
    return loop


def serve_rr(
    host: str,
    port: int,
    loop_kind: LoopKind = "asyncio",
    params: EpollParams | None = None,
    *,
    spin_us: int = 0,
    ready: Callable[[tuple[str, int]], None] | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
) -> RrStats:
    """Serve sockperf request/response on *host*:*port* until told to stop.

    Stops on SIGTERM/SIGINT (when *handle_signals* and called in the main thread) or when
    *stop* is set (checked every 50 ms; lets a test run the server in a thread). *ready* is
    called with the bound address once listening (port 0 picks a free port). Returns the
    counters. The loop is closed on every exit path.
    """
    loop = make_loop(loop_kind, params, spin_us=spin_us)
    stats = RrStats()
    try:
        loop.run_until_complete(_serve(loop, host, port, stats, ready, stop, handle_signals))
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return stats


async def _serve(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    stats: RrStats,
    ready: Callable[[tuple[str, int]], None] | None,
    stop: threading.Event | None,
    handle_signals: bool,
) -> None:
    done = asyncio.Event()
    installed: list[int] = []
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
            installed.append(sig)
    live: set[asyncio.Transport] = set()
    server = await start_rr_server(host, port, stats=stats, live=live)
    try:
        addr = server.sockets[0].getsockname()
        if ready is not None:
            ready((str(addr[0]), int(addr[1])))
        if stop is None:
            await done.wait()
        else:
            while not done.is_set() and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.05)
    finally:
        server.close()
        for signum in installed:
            loop.remove_signal_handler(signum)
        for transport in list(live):
            transport.abort()
        await asyncio.sleep(0)  # let connection_lost run
        await server.wait_closed()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m netdevkit.busypoll.rr",
        description="sockperf-compatible TCP request/response server on asyncio, netdevkit's "
        "busy-polling loop or uvloop",
    )
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=11111)
    p.add_argument("--loop", choices=LOOP_KINDS, default="asyncio")
    p.add_argument("--preset", help="epoll parameters of a tuning preset (e.g. suspend)")
    p.add_argument("--usecs", type=int, help="busy_poll_usecs")
    p.add_argument("--budget", type=int, help="busy_poll_budget (0: kernel default 8)")
    p.add_argument("--prefer", action="store_true", help="prefer_busy_poll")
    p.add_argument("--spin-us", type=int, default=0, help="netdevkit loop: user-space spin")
    p.add_argument("--ready-file", help="touch this file once listening")
    args = p.parse_args(argv)
    explicit = args.usecs is not None or args.budget is not None or args.prefer
    if args.preset and explicit:
        p.error("--preset and --usecs/--budget/--prefer exclude each other")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see ``--help``."""
    args = _parse_args(argv)
    try:
        params: EpollParams | None = None
        if args.preset:
            params = params_from_preset(args.preset)
        elif args.usecs is not None or args.budget is not None or args.prefer:
            params = EpollParams(
                busy_poll_usecs=args.usecs or 0,
                busy_poll_budget=args.budget or 0,
                prefer_busy_poll=bool(args.prefer),
            )

        def on_ready(addr: tuple[str, int]) -> None:
            print(
                f"rr: listening on {addr[0]}:{addr[1]} loop={args.loop} params={params} "
                f"spin_us={args.spin_us} pid={os.getpid()}",
                flush=True,
            )
            if args.ready_file:
                with open(args.ready_file, "w", encoding="ascii") as f:
                    f.write(f"{addr[0]} {addr[1]}\n")

        stats = serve_rr(
            args.host, args.port, args.loop, params, spin_us=args.spin_us, ready=on_ready
        )
    except (NetdevkitError, OSError) as err:
        print(f"rr: error: {err}", file=sys.stderr)
        return 1
    print(
        f"rr: stopped: {stats.connections} connections, {stats.messages} messages, "
        f"{stats.replies} replies",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
