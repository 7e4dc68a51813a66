"""A request/response server speaking sockperf's TCP framing, on any of five loops.

Debian's ``sockperf ping-pong --tcp`` / ``under-load --tcp`` clients measure it exactly as
they measure ``sockperf server``, so a Python server on stock asyncio, on netdevkit's
:class:`~netdevkit.busypoll.aio.BusyPollEventLoop` or on uvloop (with netdevkit's epoll
parameters applied) can be put side by side with the C server; so can netdevkit's
:class:`~netdevkit.busypoll.fastloop.FastLoop` (``--loop fast``, :mod:`.fast`) and a
thread per connection (``--loop threads``, :mod:`.threads`).

The framing itself is :mod:`.framing`. :class:`RrProtocol` is the asyncio adapter around
its :class:`~.framing.Framer`. :func:`serve_rr` runs a server on any loop until
SIGTERM/SIGINT or a stop event; ``python -m netdevkit.bench.servers.rr`` is the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, cast, get_args

from ..._os import SignalScope
from ...busypoll.aio import BusyPollEventLoop, apply_to_loop, loop_factory
from ...busypoll.config import BusyPollConfig, checked
from ...busypoll.epoll import EpollParams
from ...errors import NetdevkitError, RequestError
from .alloc import settle_malloc
from .framing import FLAG_CLIENT, FLAG_PONG_REQUEST, FLAG_WARMUP, HEADER, Framer, FramingError

__all__ = [
    "DEFAULT_ADAPTIVE_US",
    "FLAG_CLIENT",
    "FLAG_PONG_REQUEST",
    "FLAG_WARMUP",
    "HEADER",
    "LoopKind",
    "RrProtocol",
    "RrStats",
    "default_adaptive_us",
    "main",
    "make_loop",
    "params_from_preset",
    "serve_rr",
    "start_rr_server",
]

LoopKind = Literal["asyncio", "netdevkit", "uvloop", "fast", "threads"]
LOOP_KINDS: tuple[str, ...] = get_args(LoopKind)
#: Called with the bound address once a server listens.
Ready = Callable[[tuple[str, int]], None]


@dataclass(slots=True)
class RrStats:
    """Counters of one server (all connections)."""

    connections: int = 0
    messages: int = 0
    replies: int = 0
    framing_errors: int = 0
    #: Times netdevkit's adaptive busy-poll window opened or closed (netdevkit/fast loops).
    adaptive_switches: int = 0


class RrProtocol(asyncio.Protocol):
    """One connection of the server: answers sockperf messages as they arrive (through a
    :class:`~.framing.Framer` counting into the server's :class:`RrStats`)."""

    __slots__ = ("_framer", "_live", "_stats", "_transport")

    def __init__(self, stats: RrStats, live: set[asyncio.Transport] | None = None) -> None:
        self._stats = stats
        self._live = live
        self._framer = Framer(stats)
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
        try:
            out = self._framer.feed(data)
        except FramingError:
            self._stats.framing_errors += 1
            transport.abort()
            return
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
    from ...tuning.presets import get_preset

    ep = get_preset(name).epoll
    return EpollParams(
        busy_poll_usecs=ep.busy_poll_usecs,
        busy_poll_budget=ep.busy_poll_budget,
        prefer_busy_poll=ep.prefer_busy_poll,
    )


#: The adaptive window netdevkit's loops open for an IRQ-suspension context (usecs 0,
#: prefer): longer than a request/response round trip on the veth testbed so back-to-back
#: requests are caught by the spin, short enough that an idle server stops spinning after
#: two waits (the round trips and the choice: docs/busypoll.md).
DEFAULT_ADAPTIVE_US = 50


def default_adaptive_us(loop_kind: str, params: EpollParams | None) -> int:
    """The adaptive window the CLI uses unless told otherwise.

    :data:`DEFAULT_ADAPTIVE_US` for netdevkit's own loops (``netdevkit``, ``fast``) when the
    parameters ask for IRQ suspension without a busy-poll window (``prefer_busy_poll`` and
    ``busy_poll_usecs`` 0: the suspend preset), where a plain wait would resume IRQs after
    every answer; 0 otherwise.
    """
    if loop_kind not in ("netdevkit", "fast") or params is None:
        return 0
    if params.prefer_busy_poll and params.busy_poll_usecs == 0:
        return DEFAULT_ADAPTIVE_US
    return 0


def make_loop(
    loop_kind: LoopKind, config: BusyPollConfig | None = None
) -> asyncio.AbstractEventLoop:
    """A new asyncio event loop of *loop_kind* with *config* on its epoll context.

    ``asyncio``: a stock ``SelectorEventLoop`` (the epoll parameters, if a config is given,
    set on its selector's epoll fd: the "naive" way); ``netdevkit``: :class:`BusyPollEventLoop`
    (the loop knobs of :class:`~netdevkit.busypoll.config.BusyPollConfig` apply only here);
    ``uvloop``: ``uvloop.new_event_loop()`` with :func:`apply_to_loop`. ``fast`` is not an
    asyncio loop: :func:`serve_rr` runs it.
    """
    if loop_kind not in LOOP_KINDS:
        raise RequestError(f"loop kind {loop_kind!r}: use one of {', '.join(LOOP_KINDS)}")
    if loop_kind in ("fast", "threads"):
        raise RequestError(f"loop kind {loop_kind!r} is not an asyncio loop: use serve_rr")
    if loop_kind == "netdevkit":
        return loop_factory(config)()
    checked(config, f"loop {loop_kind!r}")  # stock loops: epoll parameters only
    loop: asyncio.AbstractEventLoop
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
    if config is not None:
        try:
            apply_to_loop(loop, config)
        except BaseException:
            loop.close()
            raise
    return loop


def serve_rr(
    host: str,
    port: int,
    loop_kind: LoopKind = "asyncio",
    config: BusyPollConfig | None = None,
    *,
    sock_busy_poll_us: int = 0,
    ready: Ready | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
    work_us: float = 0.0,
) -> RrStats:
    """Serve sockperf request/response on *host*:*port* until told to stop.

    Stops on SIGTERM/SIGINT (when *handle_signals* and called in the main thread) or when
    *stop* is set (lets a test run the server in a thread). *ready* is called with the
    bound address once listening (port 0 picks a free port). Returns the counters; the
    loop is closed on every exit path.

    *config* is the loop's :class:`~netdevkit.busypoll.config.BusyPollConfig` (None: no
    epoll parameters set); its loop knobs apply to the netdevkit and fast loops only, and
    the fast loop also sets SO_BUSY_POLL ``hot_spin_us`` on each accepted socket.
    *sock_busy_poll_us* sets SO_BUSY_POLL on each accepted socket (fast and threads loops).
    *work_us* spins that long per answer (fast loop only): a server with real work.
    """
    _check_loop_args(loop_kind, config, sock_busy_poll_us)
    if work_us and loop_kind != "fast":
        raise RequestError("work_us (per-request work) applies to the fast loop only")
    if not 0 <= work_us <= 1_000_000:
        raise RequestError(f"work_us {work_us}: must be 0..1000000 microseconds")
    if loop_kind == "threads":
        from .threads import serve_threads  # imports this module: import it late

        return serve_threads(
            host,
            port,
            busy_poll_us=sock_busy_poll_us,
            ready=ready,
            stop=stop,
            handle_signals=handle_signals,
        )
    if loop_kind == "fast":
        from .fast import serve_fast  # imports this module: import it late

        hot_spin_us = config.hot_spin_us if config is not None else 0
        return serve_fast(
            host,
            port,
            config,
            sock_busy_poll_us=sock_busy_poll_us or hot_spin_us,
            work_us=work_us,
            ready=ready,
            stop=stop,
            handle_signals=handle_signals,
        )
    return _run_asyncio(make_loop(loop_kind, config), host, port, ready, stop, handle_signals)


def _run_asyncio(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    ready: Ready | None,
    stop: threading.Event | None,
    handle_signals: bool,
) -> RrStats:
    """Serve on an asyncio *loop* until told to stop, then close it."""
    stats = RrStats()
    try:
        loop.run_until_complete(_serve(loop, host, port, stats, ready, stop, handle_signals))
        if isinstance(loop, BusyPollEventLoop):
            stats.adaptive_switches = loop.selector.adaptive_switches
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return stats


def _check_loop_args(loop_kind: str, config: BusyPollConfig | None, sock_busy_poll_us: int) -> None:
    """Refuse what *loop_kind* has no use for (before anything is created)."""
    if loop_kind == "threads":
        if config is not None:
            raise RequestError(
                "loop 'threads' has no epoll: its reads busy poll with sock_busy_poll_us only"
            )
        return
    if config is not None and not isinstance(config, BusyPollConfig):
        raise RequestError(f"serve_rr takes a BusyPollConfig, got {type(config).__name__}")
    if sock_busy_poll_us and loop_kind != "fast":
        raise RequestError("sock_busy_poll_us applies to the fast and threads loops only")


async def _serve(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    stats: RrStats,
    ready: Ready | None,
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


@contextlib.contextmanager
def stopping(
    on_stop: Callable[[], None], stop: threading.Event | None, handle_signals: bool
) -> Iterator[None]:
    """Call *on_stop* on SIGTERM/SIGINT (with *handle_signals*, in the main thread) or once
    *stop* is set, while the body runs (a server's blocking wait; *on_stop* must be safe
    from a signal handler and another thread). At exit the signal handlers are put back
    and *stop* is set, ending the thread that waits on it.
    """
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    watcher: threading.Thread | None = None
    try:
        with SignalScope(signals, lambda _s, _f: on_stop(), keep_ignored=False):
            if stop is not None:
                stop_event = stop

                def watch() -> None:
                    stop_event.wait()
                    on_stop()

                watcher = threading.Thread(target=watch, name="rr-stop", daemon=True)
                watcher.start()
            yield
    finally:
        if watcher is not None and stop is not None:
            stop.set()
            watcher.join(timeout=5)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m netdevkit.bench.servers.rr",
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
    p.add_argument(
        "--hot-spin-us",
        type=int,
        default=0,
        help="netdevkit/fast loop: after a request, re-read (fast) or peek at (netdevkit) the "
        "connection's socket for this long before waiting in epoll; sets SO_BUSY_POLL on "
        "accepted sockets so each of those reads polls the NAPI (the fastest mode, at a "
        "full CPU)",
    )
    p.add_argument(
        "--adaptive-us",
        type=int,
        default=None,
        help="netdevkit/fast loop: adaptive in-kernel busy-poll window (default: 50 with a "
        "preset whose busy_poll_usecs is 0 and prefer_busy_poll is set, e.g. suspend, and no "
        "--hot-spin-us, which excludes it; else 0)",
    )
    p.add_argument(
        "--hybrid",
        action="store_true",
        help="netdevkit/fast loop: sleep-then-poll for paced traffic (needs an adaptive window)",
    )
    p.add_argument(
        "--sock-busy-poll",
        type=int,
        default=0,
        help="fast/threads loops: SO_BUSY_POLL usecs on each accepted socket",
    )
    p.add_argument(
        "--work-us",
        type=float,
        default=0.0,
        help="fast loop: microseconds of CPU work per answer (a server that does something "
        "per request, as memcached or a web framework does; default 0)",
    )
    p.add_argument("--ready-file", help="touch this file once listening")
    args = p.parse_args(argv)
    explicit = args.usecs is not None or args.budget is not None or args.prefer
    if args.preset and explicit:
        p.error("--preset and --usecs/--budget/--prefer exclude each other")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see ``--help``."""
    args = _parse_args(argv)
    settle_malloc()
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
        adaptive_us = args.adaptive_us
        if adaptive_us is None:  # the hot-socket spin excludes the window
            adaptive_us = 0 if args.hot_spin_us else default_adaptive_us(args.loop, params)
        knobs = {"adaptive_us": adaptive_us, "hybrid": args.hybrid, "hot_spin_us": args.hot_spin_us}
        config = None
        if params is not None or any(knobs.values()):
            config = BusyPollConfig.from_params(params or EpollParams(), **knobs)

        def on_ready(addr: tuple[str, int]) -> None:
            print(
                f"rr: listening on {addr[0]}:{addr[1]} loop={args.loop} params={params} "
                f"hot_spin_us={args.hot_spin_us} adaptive_us={adaptive_us} "
                f"hybrid={args.hybrid} sock_busy_poll={args.sock_busy_poll} pid={os.getpid()}",
                flush=True,
            )
            if args.ready_file:
                with open(args.ready_file, "w", encoding="ascii") as f:
                    f.write(f"{addr[0]} {addr[1]}\n")

        stats = serve_rr(
            args.host,
            args.port,
            args.loop,
            config,
            sock_busy_poll_us=args.sock_busy_poll,
            ready=on_ready,
            work_us=args.work_us,
        )
    except (NetdevkitError, OSError) as err:
        print(f"rr: error: {err}", file=sys.stderr)
        return 1
    print(
        f"rr: stopped: {stats.connections} connections, {stats.messages} messages, "
        f"{stats.replies} replies, {stats.adaptive_switches} adaptive switches",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
