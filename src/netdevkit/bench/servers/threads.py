"""The sockperf rr server with a thread per connection and blocking, busy-polling reads.

This is how Debian's ``sockperf server --lls N`` serves one TCP client [seen with strace:
no epoll at all, a blocking ``recvfrom`` then ``sendto`` per message, ``SO_BUSY_POLL`` N on
the socket]: the ``recv`` itself busy polls the socket's NAPI (``sk_busy_loop``) for up
to N microseconds before it sleeps, and returns the data as soon as the poll delivered
it. There is no ``epoll_wait`` between the packet and the answer.

Why it is netdevkit's fastest Python path [measured, docs/busypoll.md]: on the 2-vCPU
veth testbed the client's (sockperf's) vCPU halts soon after it sends a request, and a
reply that comes after that pays for waking it up (~10 us of round trip). This server
answers as fast as the C one (p50 8.7 vs 8.7 us) and *one microsecond* of extra work per
request (a spin loop added for the experiment) moved p50 to 18 us. The epoll-based loops
(``epoll_wait`` busy polls, then ``recv``, then ``send``) land behind that cliff.

The cost: a thread per connection and a GIL shared among them, so it suits a few
latency-critical connections, not thousands; and ``SO_BUSY_POLL`` spins up to its usecs
after every message. Counters are kept per connection and added up at the end (no
shared counter is written from two threads).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

from ...busypoll.epoll import check_int_at_least
from ...busypoll.sockopt import set_busy_poll
from .rr import (
    _FLAGS_LO,
    FLAG_CLIENT,
    FLAG_PONG_REQUEST,
    HEADER,
    MAX_MESSAGE,
    FramingError,
    RrFramer,
    RrStats,
)

__all__ = ["serve_threads"]


def _serve_connection(sock: socket.socket, busy_poll_us: int, into: list[RrStats]) -> None:
    """Answer one connection until it closes; append its counters to *into*.

    The hot path is as short as it can be in Python (locals only, the answer sent before
    any counting): a microsecond more per request costs ten on the round trip here.
    """
    framer = RrFramer()
    buf = bytearray(MAX_MESSAGE)
    view = memoryview(buf)
    messages = replies = errors = 0
    pending = 0  # bytes of an incomplete message held by the framer
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if busy_poll_us:
            set_busy_poll(sock, busy_poll_us)
        recv_into, send = sock.recv_into, sock.sendall
        pong, flags, clear = FLAG_PONG_REQUEST, _FLAGS_LO, ~FLAG_CLIENT & 0xFF
        last_n, last_view = 0, view[:0]
        while True:
            n = recv_into(buf)
            # Exactly one whole message: total length (u32 at offset 10) == n. Read byte by
            # byte (small ints are cached): no tuple or slice is allocated on this path, so
            # it never triggers a garbage collection; nor does the cached memoryview.
            if (
                n >= HEADER.size
                and not pending
                and not buf[10]
                and not buf[11]
                and buf[12] << 8 | buf[13] == n
            ):
                if buf[flags] & pong:
                    buf[flags] &= clear
                    if n != last_n:
                        last_n, last_view = n, view[:n]
                    send(last_view)
                    replies += 1
                messages += 1
                continue
            if not n:
                break
            before_m, before_r = framer.messages, framer.replies
            try:
                out = framer.feed(view[:n])
            except FramingError:
                errors += 1
                break
            pending = framer.pending
            messages += framer.messages - before_m
            replies += framer.replies - before_r
            if out:
                send(out)
    except OSError:
        pass  # reset by the peer, or shut down by serve_threads at exit
    finally:
        sock.close()
        into.append(RrStats(1, messages, replies, errors))


def serve_threads(
    host: str,
    port: int,
    *,
    busy_poll_us: int = 50,
    ready: Callable[[tuple[str, int]], None] | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
) -> RrStats:
    """Serve sockperf request/response with a thread per connection until told to stop.

    ``busy_poll_us``: ``SO_BUSY_POLL`` on each accepted socket (0: plain blocking reads).
    Stops on SIGTERM/SIGINT (main thread, *handle_signals*) or when *stop* is set; open
    connections are shut down and their threads joined. Returns the counters of all
    connections.
    """
    check_int_at_least("busy_poll_us", busy_poll_us)
    finished: list[RrStats] = []
    workers: list[tuple[threading.Thread, socket.socket]] = []
    previous: dict[signal.Signals, Any] = {}
    watcher: threading.Thread | None = None
    listener = socket.create_server((host, port), backlog=128)
    done = threading.Event()

    def shut() -> None:
        # accept() blocks without a timeout (no periodic wake-ups taking the GIL from a
        # connection thread); shutting the listener down makes it fail with EINVAL.
        done.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)

    try:
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda _s, _f: shut())
        if stop is not None:
            stop_event = stop

            def watch() -> None:
                stop_event.wait()
                shut()

            watcher = threading.Thread(target=watch, name="rr-stop", daemon=True)
            watcher.start()
        addr = listener.getsockname()
        if ready is not None:
            ready((str(addr[0]), int(addr[1])))
        while not done.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                if done.is_set():
                    break
                raise
            worker = threading.Thread(
                target=_serve_connection,
                args=(sock, busy_poll_us, finished),
                name=f"rr-conn-{sock.fileno()}",
                daemon=True,
            )
            worker.start()
            workers = [(t, s) for t, s in workers if t.is_alive()]
            workers.append((worker, sock))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shut()
        listener.close()
        for worker, sock in workers:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv with 0 bytes
            worker.join(timeout=5)
        if watcher is not None and stop is not None:
            stop.set()
            watcher.join(timeout=5)
    total = RrStats()
    for s in finished:
        total.connections += s.connections
        total.messages += s.messages
        total.replies += s.replies
        total.framing_errors += s.framing_errors
    return total
