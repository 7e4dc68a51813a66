"""One busy-polling epoll context per NAPI: a server building block.

The kernel busy polls, from an epoll context, the NAPI of the last socket that became ready
in it (``ep->napi_id``, fs/eventpoll.c). A context holding sockets of two NAPIs polls them in
turn and IRQ suspension keeps the wrong one quiet; so each context should hold the sockets
of one NAPI. :class:`NapiDispatcher` arranges that for an asyncio stream handler:

- one listener (``SO_REUSEPORT`` optional, so several dispatchers or processes can share a
  port) accepted by a plain blocking ``accept`` in a thread of its own;
- every accepted socket already carries the NAPI id its handshake came through
  (``SO_INCOMING_NAPI_ID``, SOL_SOCKET 56; the kernel sets it on the child socket from the
  final ACK) [seen on 6.18 over veth: non-zero at accept, identical after the first data];
- the connection goes to the worker that owns that NAPI: a thread (default) or a process
  (``mode="process"``, for CPU parallelism: the fd travels over an AF_UNIX SOCK_SEQPACKET
  socketpair with ``SCM_RIGHTS``, ``socket.send_fds``), each running its own asyncio loop on
  a :class:`~netdevkit.busypoll.aio.BusyPollEventLoop` with the given
  :class:`~netdevkit.busypoll.config.BusyPollConfig` (every knob of it applies);
- NAPI id 0 (loopback, veth without GRO, traffic that took the backlog path) goes to the
  fallback worker; so do NAPIs beyond ``max_workers`` (counted in :meth:`stats` as usual,
  visible in :meth:`routes`).

Thread workers are created on the first connection of their NAPI. Process workers are
forked in :meth:`start`, before the accept thread exists (forking a multi-threaded process
copies only the forking thread, and locks held elsewhere stay locked in the child); a NAPI
id takes the first free one, like memcached's ``-N`` (``napi_ids``) does with its threads.
The handler must therefore exist before :meth:`start`; fork copies it into the workers.

Inside a worker, :func:`worker_napi_id` says which NAPI the worker owns (0: fallback).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from ._argcheck import fail, int_arg
from .busypoll.aio import BusyPollEventLoop
from .busypoll.config import LOOP_KNOBS, BusyPollConfig, checked
from .busypoll.sockopt import get_incoming_napi_id
from .errors import NetdevkitError, RequestError, StateError, translate_oserror
from .netns import entered

__all__ = ["FALLBACK", "Handler", "NapiDispatcher", "WorkerInfo", "worker_napi_id"]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Mode = Literal["thread", "process"]
FALLBACK = 0  # the worker key of connections with NAPI id 0 (and overflow)

_local = threading.local()


def worker_napi_id() -> int | None:
    """The NAPI id the calling worker owns (0 for the fallback), None outside workers."""
    value = getattr(_local, "napi_id", None)
    return value if isinstance(value, int) else None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker: the NAPI it owns, ``thread``/``process``, thread name or pid, and how
    many connections it was handed."""

    napi_id: int
    mode: str
    ident: str
    connections: int


def _make_loop(config: BusyPollConfig | None) -> asyncio.AbstractEventLoop:
    return asyncio.new_event_loop() if config is None else BusyPollEventLoop(config)


async def _serve_connection(handler: Handler, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.open_connection(sock=sock)
    except OSError:
        sock.close()
        return
    try:
        await handler(reader, writer)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the peer went away: normal for a server
    except Exception as exc:
        # Not swallowed: the loop's exception handler logs it (asyncio's default does).
        loop.call_exception_handler(
            {"message": "NapiDispatcher: connection handler failed", "exception": exc}
        )
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class _Connections:
    """The tasks of one worker loop (kept so shutdown can cancel them)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        task = loop.create_task(_serve_connection(self.handler, sock))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            loop.run_until_complete(asyncio.gather(*self.tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())


class _ThreadWorker:
    mode = "thread"

    def __init__(self, napi_id: int, handler: Handler, config: BusyPollConfig | None) -> None:
        self.napi_id = napi_id
        self.connections = 0
        self._conns = _Connections(handler)
        self._config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"napi-{napi_id}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    @property
    def ident(self) -> str:
        return self._thread.name

    def _main(self) -> None:
        _local.napi_id = self.napi_id
        try:
            loop = _make_loop(self._config)
        except BaseException as err:
            self._error = err
            self._ready.set()
            return
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._ready.set()
        try:
            loop.run_forever()
            self._conns.shutdown(loop)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def submit(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self.connections += 1
        self._loop.call_soon_threadsafe(self._conns.spawn, self._loop, sock)

    def stop(self, timeout: float) -> None:
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # closed already
                loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)


def _process_main(
    chan: socket.socket, napi_id: int, handler: Handler, config: BusyPollConfig | None
) -> None:
    """A worker process: receive fds on *chan*, serve each on this process's loop."""
    _local.napi_id = napi_id
    loop = _make_loop(config)
    asyncio.set_event_loop(loop)
    conns = _Connections(handler)
    chan.setblocking(False)

    def on_message() -> None:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(chan, 16, 8)
        except BlockingIOError:
            return
        if not msg and not fds:  # the dispatcher closed its end: shut down
            loop.stop()
            return
        if msg.startswith(b"n"):  # the NAPI this pre-forked worker now owns
            _local.napi_id = int(msg[1:])
        for fd in fds:
            conns.spawn(loop, socket.socket(fileno=fd))

    loop.add_reader(chan.fileno(), on_message)
    try:
        loop.run_forever()
        loop.remove_reader(chan.fileno())
        conns.shutdown(loop)
    finally:
        loop.close()
        chan.close()


class _ProcessWorker:
    mode = "process"

    def __init__(
        self,
        napi_id: int,
        handler: Handler,
        config: BusyPollConfig | None,
        close_in_child: list[socket.socket],
    ) -> None:
        self.napi_id = napi_id
        self.connections = 0
        self._chan, child_chan = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ctx = multiprocessing.get_context("fork")
        self._proc = ctx.Process(
            target=self._child,
            args=(child_chan, napi_id, handler, config, [s.fileno() for s in close_in_child]),
            name=f"napi-worker-{napi_id}",
            daemon=True,
        )
        self._proc.start()
        child_chan.close()

    def _child(
        self,
        chan: socket.socket,
        napi_id: int,
        handler: Handler,
        config: BusyPollConfig | None,
        close_fds: list[int],
    ) -> None:
        # Fds of the parent's other channels and listener: a worker must not hold them, or
        # the peers would never see EOF and the port would stay bound.
        for fd in [*close_fds, self._chan.fileno()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        _process_main(chan, napi_id, handler, config)

    @property
    def ident(self) -> str:
        return f"pid {self._proc.pid}"

    def assign(self, napi_id: int) -> None:
        """Give a pre-forked worker its NAPI; the message arrives before any connection
        (SOCK_SEQPACKET keeps order), so :func:`worker_napi_id` is right in its handlers."""
        self.napi_id = napi_id
        with contextlib.suppress(OSError):
            self._chan.send(b"n" + str(napi_id).encode())

    def submit(self, sock: socket.socket) -> None:
        self.connections += 1
        try:
            socket.send_fds(self._chan, [b"c"], [sock.fileno()])
        finally:
            sock.close()  # the worker holds its own copy now

    def stop(self, timeout: float) -> None:
        self._chan.close()  # EOF: the worker finishes and exits
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout)


_Worker = _ThreadWorker | _ProcessWorker


class NapiDispatcher:
    """Route each accepted connection to the worker owning its NAPI; see the module doc.

    *handler* is an asyncio stream handler, ``async def handle(reader, writer)``; *config*
    the :class:`~netdevkit.busypoll.config.BusyPollConfig` of every worker's loop (each a
    :class:`~netdevkit.busypoll.aio.BusyPollEventLoop`; None: plain asyncio loops).
    ``max_workers`` bounds the NAPI workers (the fallback comes on top); default: unbounded
    threads, or ``os.cpu_count()`` processes.
    """

    def __init__(
        self,
        handler: Handler,
        config: BusyPollConfig | None = None,
        mode: Mode = "thread",
        *,
        max_workers: int | None = None,
    ) -> None:
        if not callable(handler):
            raise fail("handler", "a callable", handler)
        int_arg("max_workers", max_workers, none_ok=True)
        if mode not in ("thread", "process"):
            raise RequestError(f"mode={mode!r}: must be 'thread' or 'process'")
        if config is not None:
            checked(config, "NapiDispatcher", LOOP_KNOBS)
        if max_workers is not None and max_workers < 1:
            raise RequestError(f"max_workers={max_workers}: must be >= 1")
        if mode == "process" and max_workers is None:
            max_workers = os.cpu_count() or 1
        self.handler = handler
        self.config = config
        self.mode: Mode = mode
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}  # worker key (NAPI id, 0 = fallback) -> worker
        self._spare: list[_ProcessWorker] = []  # pre-forked, no NAPI yet
        self._routes: dict[int, int] = {}  # NAPI id -> worker key
        self._stats: Counter[int] = Counter()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = threading.Event()
        self.accept_error: OSError | None = None

    # -- public API ------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            raise StateError("the dispatcher is not started")
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def start(
        self,
        host: str = "0.0.0.0",
        port: int = 0,
        *,
        reuse_port: bool = False,
        backlog: int = 1024,
        netns: str | None = None,
        sock: socket.socket | None = None,
    ) -> tuple[str, int]:
        """Listen (or take *sock*, a bound listening socket) and start accepting.

        *netns* creates the listener inside that named network namespace. Returns the bound
        address. Workers that fail to start (e.g. a kernel without the epoll ioctls) raise
        here: the fallback worker is created first.
        """
        if self._listener is not None:
            raise RequestError("the dispatcher is already started")
        if sock is None:
            sock = self._listen(host, port, reuse_port, backlog, netns)
        self._listener = sock
        try:
            if self.mode == "process":
                for _ in range(self.max_workers or 1):
                    self._spare.append(self._fork_worker(-1))
                self._workers[FALLBACK] = self._fork_worker(FALLBACK)
            else:
                self._workers[FALLBACK] = _ThreadWorker(FALLBACK, self.handler, self.config)
        except BaseException:
            self.stop()
            raise
        self._stopping.clear()
        self._acceptor = threading.Thread(target=self._accept_loop, name="napi-accept")
        self._acceptor.daemon = True
        self._acceptor.start()
        return self.address

    def serve(
        self,
        host: str = "0.0.0.0",
        port: int = 0,
        *,
        reuse_port: bool = False,
        backlog: int = 1024,
        netns: str | None = None,
    ) -> None:
        """:meth:`start`, then block until :meth:`stop` (from another thread) or Ctrl-C."""
        self.start(host, port, reuse_port=reuse_port, backlog=backlog, netns=netns)
        try:
            while not self._stopping.wait(0.5):
                pass
        finally:
            self.stop()
        if self.accept_error is not None:
            raise translate_oserror(self.accept_error, "accept failed") from self.accept_error

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every worker's connections and the workers (idempotent)."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocking accept()
        if self._acceptor is not None and self._acceptor is not threading.current_thread():
            self._acceptor.join(timeout)
        self._acceptor = None
        if listener is not None:
            listener.close()
        with self._lock:
            workers = [*self._workers.values(), *self._spare]
            self._workers.clear()
            self._spare.clear()
        for w in workers:
            w.stop(timeout)

    def stats(self) -> dict[int, int]:
        """Connections accepted so far, by the NAPI id they came through (0: none)."""
        with self._lock:
            return dict(sorted(self._stats.items()))

    def routes(self) -> dict[int, int]:
        """NAPI id -> key of the worker serving it (the NAPI id itself, or 0: fallback)."""
        with self._lock:
            return dict(sorted(self._routes.items()))

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            return [
                WorkerInfo(key, w.mode, w.ident, w.connections)
                for key, w in sorted(self._workers.items())
            ]

    def __enter__(self) -> NapiDispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _listen(
        host: str, port: int, reuse_port: bool, backlog: int, netns: str | None
    ) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with entered(netns):
            sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(backlog)
        except OSError as err:
            sock.close()
            raise translate_oserror(err, f"cannot listen on {host}:{port}") from err
        return sock

    def _fork_worker(self, napi_id: int) -> _ProcessWorker:
        others = [w._chan for w in self._spare] + [
            w._chan for w in self._workers.values() if isinstance(w, _ProcessWorker)
        ]
        keep = [self._listener] if self._listener is not None else []
        return _ProcessWorker(napi_id, self.handler, self.config, keep + others)

    def _worker_for(self, napi_id: int) -> _Worker:
        """The worker of *napi_id*, creating (thread) or assigning (process) one."""
        with self._lock:
            key = self._routes.get(napi_id)
            if key is None:
                key = self._new_route(napi_id)
                self._routes[napi_id] = key
            self._stats[napi_id] += 1
            return self._workers[key]

    def _new_route(self, napi_id: int) -> int:
        if napi_id == 0:
            return FALLBACK
        napi_workers = len(self._workers) - 1
        if self.max_workers is not None and napi_workers >= self.max_workers:
            return FALLBACK
        if self.mode == "process":
            if not self._spare:
                return FALLBACK
            worker = self._spare.pop(0)
            worker.assign(napi_id)
            self._workers[napi_id] = worker
        else:
            self._workers[napi_id] = _ThreadWorker(napi_id, self.handler, self.config)
        return napi_id

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                conn, _addr = listener.accept()
            except OSError as err:
                if not self._stopping.is_set():
                    self.accept_error = err
                    self._stopping.set()
                return
            try:
                napi_id = get_incoming_napi_id(conn)
            except NetdevkitError:
                napi_id = 0
            try:
                self._worker_for(napi_id).submit(conn)
            except (OSError, NetdevkitError, KeyError):
                conn.close()  # the worker is gone (stopping)
