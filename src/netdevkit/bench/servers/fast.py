"""The sockperf rr server on netdevkit's :class:`~netdevkit.busypoll.fastloop.FastLoop`.

``python -m netdevkit.bench.servers.rr --loop fast`` runs it. Each connection is a
:class:`RrConnection`: one ``recv_into`` into its :class:`~.framing.Framer`'s buffer, a
whole message answered in place (the flag flipped, the same bytes sent back), one ``send``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from ...busypoll.config import BusyPollConfig
from ...busypoll.fastloop import FastLoop
from ...busypoll.sockopt import set_busy_poll
from .framing import MAX_MESSAGE, Framer, FramingError
from .rr import Ready, RrStats, stopping

__all__ = ["RrConnection", "serve_fast"]


class RrConnection:
    """One connection of the server on a :class:`FastLoop` (nonblocking socket).

    A short send (a full socket buffer, never seen with request/response traffic) finishes
    with a blocking ``sendall`` (5 s timeout).
    """

    __slots__ = ("_framer", "_loop", "_on_close", "_sock", "_stats", "_work_ns")

    def __init__(
        self,
        loop: FastLoop,
        sock: socket.socket,
        stats: RrStats,
        on_close: Callable[[RrConnection], None] | None = None,
        work_us: float = 0.0,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._stats = stats
        self._on_close = on_close
        self._framer = Framer(stats, buffer_size=MAX_MESSAGE)
        self._work_ns = int(work_us * 1000)

    def fileno(self) -> int:
        return self._sock.fileno()

    def on_readable(self) -> bool:
        """Read once and answer; False when nothing was there to read (or it closed)."""
        framer = self._framer
        try:
            n = self._sock.recv_into(framer.buffer)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self.close()
            return False
        if not n:
            self.close()
            return False
        before = self._stats.replies
        try:
            out = framer.received(n)
        except FramingError:
            self._stats.framing_errors += 1
            self.close()
            return False
        if self._work_ns:
            _work((self._stats.replies - before) * self._work_ns)
        if out:
            self._send(out)
        return True

    def _send(self, data: bytes | bytearray | memoryview) -> None:
        try:
            sent = self._sock.send(data)
            if sent < len(data):
                self._sock.settimeout(5.0)
                try:
                    self._sock.sendall(data[sent:])
                finally:
                    self._sock.setblocking(False)
        except OSError:
            self.close()

    def close(self) -> None:
        if self._sock.fileno() < 0:
            return
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if self._on_close is not None:
            self._on_close(self)


def _work(ns: int) -> None:
    """Spin for *ns* nanoseconds: the per-request work of a real server (``--work-us``),
    on the CPU, as parsing, a lookup or a framework's handler would be."""
    end = time.perf_counter_ns() + ns
    while time.perf_counter_ns() < end:
        pass


def serve_fast(
    host: str,
    port: int,
    config: BusyPollConfig | None,
    *,
    sock_busy_poll_us: int = 0,
    work_us: float = 0.0,
    ready: Ready | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
) -> RrStats:
    """Serve sockperf request/response on a :class:`FastLoop` with *config* until told to stop.

    Every accepted socket gets ``SO_BUSY_POLL`` *sock_busy_poll_us* (0: none); each answer
    costs *work_us* microseconds of CPU before it is sent (0: none). Stopping,
    *ready* and the result are as for :func:`~.rr.serve_rr`.
    """
    stats = RrStats()
    conns: set[RrConnection] = set()
    loop = FastLoop(config)  # checks config before anything is created
    listener: socket.socket | None = None
    try:
        listener = socket.create_server((host, port), backlog=128)
        listener.setblocking(False)
        on_accept = _acceptor(loop, listener, stats, conns, sock_busy_poll_us, work_us)
        loop.add_reader(listener.fileno(), on_accept)
        with stopping(loop.stop, stop, handle_signals):
            addr = listener.getsockname()
            if ready is not None:
                ready((str(addr[0]), int(addr[1])))
            loop.run()
            stats.adaptive_switches = loop.adaptive_switches
    finally:
        for conn in list(conns):
            conn.close()
        if listener is not None:
            loop.remove_reader(listener.fileno())
            listener.close()
        loop.close()
    return stats


def _acceptor(
    loop: FastLoop,
    listener: socket.socket,
    stats: RrStats,
    conns: set[RrConnection],
    sock_busy_poll_us: int,
    work_us: float = 0.0,
) -> Callable[[], None]:
    """The listener's callback: accept every pending connection and serve it on *loop*."""

    def on_accept() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if sock_busy_poll_us:
                set_busy_poll(sock, sock_busy_poll_us)
            conn = RrConnection(loop, sock, stats, conns.discard, work_us)
            loop.add_reader(sock.fileno(), conn.on_readable)
            conns.add(conn)
            stats.connections += 1

    return on_accept
