"""The sockperf rr server with a thread per connection and blocking, busy-polling reads.

This is how Debian's ``sockperf server --lls N`` serves one TCP client: no epoll at all,
a blocking ``recv`` then ``send`` per message, with ``SO_BUSY_POLL`` N on the socket. The
``recv`` itself busy polls the socket's NAPI (``sk_busy_loop``) for up to N microseconds
before it sleeps and returns the data as soon as the poll delivered it: there is no
``epoll_wait`` between the packet and the answer, and the Python work per request is one
:meth:`~.framing.Framer.received` call. How that compares with C and with the epoll loops,
and why a microsecond of work per request matters on the veth testbed, is measured in
``docs/busypoll.md`` and ``docs/bench.md`` ("The servers").

The cost: a thread per connection and a GIL shared among them, so it suits a few
latency-critical connections, not thousands; and ``SO_BUSY_POLL`` spins up to its usecs
after every message. Counters are kept per connection and added up at the end (no
shared counter is written from two threads).
"""

from __future__ import annotations

import contextlib
import socket
import threading

from ...busypoll.epoll import check_int_at_least
from ...busypoll.sockopt import set_busy_poll
from .framing import MAX_MESSAGE, Framer, FramingError
from .rr import Ready, RrStats, stopping

__all__ = ["serve_threads"]


def _serve_connection(sock: socket.socket, busy_poll_us: int, into: list[RrStats]) -> None:
    """Answer one connection until it closes; append its counters to *into*.

    The hot path is as short as it can be in Python (bound methods in locals, a whole
    message answered in place by :meth:`~.framing.Framer.received`).
    """
    stats = RrStats(connections=1)
    framer = Framer(stats, buffer_size=MAX_MESSAGE)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if busy_poll_us:
            set_busy_poll(sock, busy_poll_us)
        recv_into, send, received = sock.recv_into, sock.sendall, framer.received
        buf = framer.buffer
        while True:
            n = recv_into(buf)
            if not n:
                break
            out = received(n)
            if out:
                send(out)
    except FramingError:
        stats.framing_errors += 1
    except OSError:
        pass  # reset by the peer, or shut down by serve_threads at exit
    finally:
        sock.close()
        into.append(stats)


def serve_threads(
    host: str,
    port: int,
    *,
    busy_poll_us: int = 50,
    ready: Ready | None = None,
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
    listener = socket.create_server((host, port), backlog=128)
    done = threading.Event()

    def shut() -> None:
        # accept() blocks without a timeout (no periodic wake-ups taking the GIL from a
        # connection thread); shutting the listener down makes it fail with EINVAL.
        done.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)

    try:
        with stopping(shut, stop, handle_signals):
            addr = listener.getsockname()
            if ready is not None:
                ready((str(addr[0]), int(addr[1])))
            _accept_until(done, listener, busy_poll_us, finished, workers)
    finally:
        shut()
        listener.close()
        for worker, sock in workers:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv with 0 bytes
            worker.join(timeout=5)
    total = RrStats()
    for s in finished:
        total.connections += s.connections
        total.messages += s.messages
        total.replies += s.replies
        total.framing_errors += s.framing_errors
    return total


def _accept_until(
    done: threading.Event,
    listener: socket.socket,
    busy_poll_us: int,
    finished: list[RrStats],
    workers: list[tuple[threading.Thread, socket.socket]],
) -> None:
    """Accept connections until *done*, each served by a thread of its own (kept in
    *workers*, finished ones dropped, their counters appended to *finished*)."""
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
        workers[:] = [(t, s) for t, s in workers if t.is_alive()]
        workers.append((worker, sock))
