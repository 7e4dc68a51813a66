"""asyncio with busy polling: netdevkit's own loop, and parameters for anyone else's loop.

- :class:`BusyPollEventLoop` is a stock ``asyncio.SelectorEventLoop`` on a
  :class:`~netdevkit.busypoll.selector.BusyPollSelector`: streams, protocols and servers run
  unchanged. :func:`loop_factory` makes the zero-argument callable that
  ``asyncio.run(main(), loop_factory=...)`` (3.12+) and ``asyncio.Runner(loop_factory=...)``
  (3.11+) expect.
- :func:`apply_to_loop` sets the parameters on the epoll context of a loop netdevkit did
  not create, and reads them back from the same fd:

  * a ``SelectorEventLoop`` (stock asyncio): its selector's epoll fd
    (``loop._selector.fileno()``; a non-epoll selector is refused);
  * uvloop: libuv's backend fd, which uvloop returns from ``Loop._get_backend_id()``
    (``uv_backend_fd``: the loop's one ``epoll_create1`` fd). It is a private uvloop
    method, so the fd is checked to be an epoll in ``/proc/self/fd`` before use.
  * any other loop: :func:`apply_to_running_loop`, awaited inside the loop, finds the
    loop's epoll by a probe: it registers a fresh socket with ``loop.add_reader``, lets the
    loop run one iteration (libuv and asyncio issue ``epoll_ctl`` by then), and picks the
    ``anon_inode:[eventpoll]`` fds in ``/proc/self/fd`` whose ``/proc/self/fdinfo`` lists
    that socket as a ``tfd:`` line with the socket's inode. It works for every epoll loop,
    stock and uvloop included, and is what the tests use to cross-check the fast paths.

How the loop calls ``epoll_wait`` matters. asyncio's ``_run_once`` passes timeout 0 when
callbacks are ready and otherwise the time to the next timer (or blocks); only the blocking
or timed waits busy poll (see :mod:`netdevkit.busypoll.selector`). With IRQ suspension
(``prefer_busy_poll=1``, ``busy_poll_usecs=0``, budget 64) IRQs stay suspended while those
waits keep finding events; a request/response server whose next request is not there yet
finds nothing, resumes IRQs and falls back to the NAPI's deferral. ``adaptive_us`` fixes
that: the context carries ``busy_poll_usecs = adaptive_us`` while waits keep ending within
it, and drops back when traffic thins out (:mod:`netdevkit.busypoll.adaptive`).

What netdevkit's loop does beyond stock asyncio (docs/busypoll.md has the measurements):
its socket transports read 64 KiB at a time instead of 256 KiB (avoids an
mmap/mremap/munmap per read, see :class:`BusyPollEventLoop`), and an iteration that
blocked in the selector runs the I/O callbacks it found without the ready-queue round trip
(:meth:`BusyPollEventLoop._run_once`). Streams, protocols and servers run unchanged.

The loops take a :class:`~netdevkit.busypoll.config.BusyPollConfig`; a loop netdevkit did
not create can only be given its epoll parameters (the loop knobs need netdevkit's loop).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import selectors
import socket
import time
import weakref
from collections.abc import Callable

from .._argcheck import fail, int_arg
from ..errors import NetdevkitError, RequestError, UnsupportedError
from .config import LOOP_KNOBS, BusyPollConfig, checked
from .epoll import EpollParams, is_epoll_fd, set_params
from .fastloop import SPIN_CHECK_ROUNDS
from .selector import BusyPollSelector
from .sockopt import set_busy_poll

__all__ = [
    "BusyPollEventLoop",
    "apply_to_loop",
    "apply_to_running_loop",
    "epoll_fds_watching",
    "loop_factory",
]


#: Bytes one read of netdevkit's loop asks for (stock asyncio: 256 KiB).
READ_SIZE = 64 * 1024


class BusyPollEventLoop(asyncio.SelectorEventLoop):
    """A ``SelectorEventLoop`` on a :class:`BusyPollSelector` made with *config*.

    It honours every knob of :class:`~netdevkit.busypoll.config.BusyPollConfig`; the
    selector does the epoll parameters, ``adaptive_us`` and ``hybrid``.

    One change to the data path besides the selector: socket transports read
    :data:`READ_SIZE` (64 KiB) at a time instead of asyncio's 256 KiB. ``sock.recv(n)``
    allocates an n-byte ``bytes`` and shrinks it to what arrived; 256 KiB is above glibc's
    mmap threshold (128 KiB), so every read of a small message would pay for a fresh
    mapping (docs/busypoll.md). uvloop reads into 64 KiB buffers too. Protocols see the
    same ``data_received(bytes)`` calls; bulk transfers take more reads.

    ``hot_spin_us`` (0: off) is the fastest mode for a few busy connections. Each socket
    transport's socket gets ``SO_BUSY_POLL`` = ``hot_spin_us``, so a nonblocking read of it
    polls its NAPI once (``tcp_recvmsg`` -> ``sk_busy_loop`` with ``MSG_DONTWAIT``). After
    an iteration ran the read callbacks of sockets, the loop peeks at those sockets
    (``recv(1, MSG_PEEK)``, itself such a read) again and again instead of going back to
    ``epoll_wait``, and runs a socket's read callback as soon as a peek finds data, EOF or
    an error -- exactly when epoll would have called it readable -- until ``hot_spin_us``
    pass without any. Every few rounds it checks the epoll for other fds and returns to
    the normal iteration if any are ready, or when callbacks were scheduled, timers exist
    or the loop is stopping. It costs a full CPU while it spins.
    """

    def __init__(self, config: BusyPollConfig | None = None) -> None:
        try:
            config = checked(config, "BusyPollEventLoop", LOOP_KNOBS)
            selector = BusyPollSelector(dataclasses.replace(config, hot_spin_us=0))
        except BaseException:
            self._closed = True  # nothing opened; for the half-made loop's __del__
            raise
        self._hot_spin_ns = config.hot_spin_us * 1000
        #: fd -> socket of the transports this loop made (hot-socket spin only)
        self._socks: weakref.WeakValueDictionary[int, socket.socket] = weakref.WeakValueDictionary()
        self.hot_spins = 0  # spins started
        self.hot_hits = 0  # read callbacks run because a peek found data
        self.hot_busy_poll_refused = 0  # transports whose SO_BUSY_POLL could not be set
        self._busypoll_selector = selector
        super().__init__(selector)

    @property
    def selector(self) -> BusyPollSelector:
        return self._busypoll_selector

    # asyncio's private transport factory (3.11-3.13 signature), wrapped to set the size
    # of each read on the transport it makes.
    def _make_socket_transport(  # type: ignore[no-untyped-def]
        self, sock, protocol, waiter=None, *, extra=None, server=None
    ):
        transport = super()._make_socket_transport(  # type: ignore[misc]
            sock, protocol, waiter, extra=extra, server=server
        )
        transport.max_size = READ_SIZE
        if self._hot_spin_ns:
            try:
                set_busy_poll(sock, self._hot_spin_ns // 1000)
            except NetdevkitError:
                self.hot_busy_poll_refused += 1  # the spin still sees softirq-delivered data
            self._socks[sock.fileno()] = sock
        return transport

    def _run_once(self) -> None:
        """One iteration; with nothing ready, no timers and no debug mode, a leaner one.

        asyncio's iteration queues each I/O callback on the ready deque and then runs the
        deque; when that deque was empty before the wait (the common case for a server:
        it blocked in ``epoll_wait``, the wait the kernel busy polls in), the handles
        found by the wait are run straight from a local list instead, in the same order
        and with the same checks (cancelled handles skipped, cancelled registrations
        removed before any callback runs). Callbacks they schedule run on the next
        iteration, as in asyncio. If a callback raises ``SystemExit`` or
        ``KeyboardInterrupt`` the handles not yet run go to the head of the ready deque,
        where asyncio would have left them.
        """
        if self._ready or self._scheduled or self._stopping or self._debug:  # type: ignore[attr-defined]
            super()._run_once()  # type: ignore[misc]
            return
        handles = []
        read_fds = []
        for key, mask in self._busypoll_selector.select(None):
            fileobj, (reader, writer) = key.fileobj, key.data
            if mask & selectors.EVENT_READ and reader is not None:
                if reader._cancelled:
                    self._remove_reader(fileobj)  # type: ignore[attr-defined]
                else:
                    handles.append(reader)
                    read_fds.append(key.fd)
            if mask & selectors.EVENT_WRITE and writer is not None:
                if writer._cancelled:
                    self._remove_writer(fileobj)  # type: ignore[attr-defined]
                else:
                    handles.append(writer)
        self._run_handles(handles)
        if self._hot_spin_ns and read_fds:
            self._spin_hot(read_fds)

    def _run_handles(self, handles: list[asyncio.Handle]) -> None:
        for i, handle in enumerate(handles):
            if handle._cancelled:
                continue
            try:
                handle._run()
            except BaseException:
                # asyncio would have them at the head of the deque, before anything the
                # callbacks that ran have scheduled.
                self._ready.extendleft(reversed(handles[i + 1 :]))  # type: ignore[attr-defined]
                raise

    def _spin_hot(self, read_fds: list[int]) -> None:
        """Peek at the sockets whose read callbacks just ran; run them again when data
        comes, until ``hot_spin_us`` pass without any (see the class docstring)."""
        socks = self._socks
        fd_to_key = self._busypoll_selector._fd_to_key
        hot = [(fd, sock) for fd in read_fds if (sock := socks.get(fd)) is not None]
        if not hot:
            return
        self.hot_spins += 1
        poll = self._busypoll_selector._selector.poll
        clock = time.monotonic_ns
        spin_ns = self._hot_spin_ns
        peek = socket.MSG_PEEK
        deadline = clock() + spin_ns
        rounds = 0
        while True:
            ready = []
            for fd, sock in hot:
                try:
                    sock.recv(1, peek)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    if sock.fileno() != fd:  # closed: the fd may be someone else's now
                        continue
                found = fd_to_key.get(fd)
                if found is None:
                    continue
                reader = found.data[0]
                if reader is not None and not reader._cancelled:
                    ready.append(reader)
            if ready:
                self.hot_hits += len(ready)
                self._run_handles(ready)
                if self._ready or self._scheduled or self._stopping:  # type: ignore[attr-defined]
                    return
                hot = [(fd, sock) for fd, sock in hot if sock.fileno() == fd and fd in fd_to_key]
                if not hot:
                    return
                deadline = clock() + spin_ns
                continue
            rounds += 1
            if rounds % SPIN_CHECK_ROUNDS == 0 and poll(0, 1):
                return  # other fds are ready: the normal iteration serves them
            if clock() >= deadline:
                return

    @property
    def params(self) -> EpollParams:
        """The epoll parameters last set and read back (see :class:`BusyPollSelector`)."""
        return self._busypoll_selector.params

    @property
    def config(self) -> BusyPollConfig:
        """The configuration in force (epoll parameters as last given to :meth:`set_params`)."""
        return dataclasses.replace(
            self._busypoll_selector.config, hot_spin_us=self._hot_spin_ns // 1000
        )

    def set_params(self, params: EpollParams) -> EpollParams:
        """Change the epoll parameters (also while running); returns what reads back."""
        return self._busypoll_selector.set_params(params)


def loop_factory(config: BusyPollConfig | None = None) -> Callable[[], BusyPollEventLoop]:
    """A zero-argument callable making a :class:`BusyPollEventLoop` with *config*.

    The config is checked now (a budget above 64 without CAP_NET_ADMIN included), so a
    bad value fails here and not inside ``asyncio.run``; each call makes a new loop with
    its own epoll context.
    """
    config = checked(config, "loop_factory", LOOP_KNOBS)

    def make_loop() -> BusyPollEventLoop:
        return BusyPollEventLoop(config)

    return make_loop


def _loop_epoll_fds(loop: asyncio.AbstractEventLoop) -> list[int]:
    """The epoll fds of *loop* found without running it, or raise UnsupportedError."""
    selector = getattr(loop, "_selector", None)
    if isinstance(selector, selectors.BaseSelector):
        if not isinstance(selector, selectors.EpollSelector):
            raise RequestError(
                f"{type(loop).__name__} uses {type(selector).__name__}, not epoll: "
                "epoll busy-poll parameters cannot apply (use BusyPollEventLoop)"
            )
        return [selector.fileno()]
    backend_id = getattr(loop, "_get_backend_id", None)  # uvloop: uv_backend_fd()
    if callable(backend_id):
        fd = backend_id()
        if isinstance(fd, int) and is_epoll_fd(fd):
            return [fd]
    raise UnsupportedError(
        f"cannot find the epoll fd of a {type(loop).__module__}.{type(loop).__name__} "
        "without running it: await apply_to_running_loop(config) inside the loop instead"
    )


def apply_to_loop(loop: asyncio.AbstractEventLoop, config: BusyPollConfig) -> list[EpollParams]:
    """Set the epoll parameters of *config* on the epoll context(s) of *loop*; returns the
    read-back, one per fd.

    Works on a running or not yet running stock asyncio loop and on uvloop; see the module
    docstring for how each loop's epoll fd is found. A config with loop knobs on is refused
    (they need a loop netdevkit runs: :class:`BusyPollEventLoop`).
    """
    params = checked(config, "apply_to_loop", ()).params
    if not isinstance(loop, asyncio.AbstractEventLoop):
        raise fail("loop", "an asyncio event loop", loop)
    if loop.is_closed():
        raise RequestError("the event loop is closed")
    selector = getattr(loop, "_selector", None)
    if isinstance(selector, BusyPollSelector):  # keep its .params in step
        return [selector.set_params(params)]
    return [set_params(fd, params) for fd in _loop_epoll_fds(loop)]


def _inode_of_tfd(fdinfo: str, tfd: int) -> int | None:
    # epoll fdinfo lines: "tfd: %8d events: %8x data: %16llx pos:%lli ino:%lx sdev:%x"
    for line in fdinfo.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "tfd:" and fields[1] == str(tfd):
            for field in fields[2:]:
                if field.startswith("ino:"):
                    return int(field[4:], 16)
    return None


def epoll_fds_watching(fd: int) -> list[int]:
    """The epoll fds of this process whose interest list holds *fd* (the same open file)."""
    int_arg("fd", fd)
    inode = os.fstat(fd).st_ino
    found = []
    for name in os.listdir("/proc/self/fd"):
        candidate = int(name)
        if not is_epoll_fd(candidate):
            continue
        try:
            with open(f"/proc/self/fdinfo/{candidate}", encoding="ascii") as info:
                text = info.read()
        except OSError:
            continue  # closed since listdir
        if _inode_of_tfd(text, fd) == inode:
            found.append(candidate)
    return sorted(found)


async def apply_to_running_loop(config: BusyPollConfig) -> list[EpollParams]:
    """Set the epoll parameters of *config* on the running loop's epoll context(s), found
    by the probe method; returns the read-back, one per fd.

    Must be awaited inside the loop. Works for any loop that watches fds with epoll. A
    config with loop knobs on is refused, as by :func:`apply_to_loop`.
    """
    params = checked(config, "apply_to_running_loop", ()).params
    loop = asyncio.get_running_loop()
    probe, peer = socket.socketpair()
    try:
        loop.add_reader(probe.fileno(), lambda: None)
        try:
            fds: list[int] = []
            for _ in range(3):  # one iteration suffices; libuv and asyncio do epoll_ctl by then
                await asyncio.sleep(0)
                fds = epoll_fds_watching(probe.fileno())
                if fds:
                    break
        finally:
            loop.remove_reader(probe.fileno())
    finally:
        probe.close()
        peer.close()
    if not fds:
        raise UnsupportedError(
            f"{type(loop).__name__} does not watch its fds with an epoll of this process"
        )
    return [set_params(fd, params) for fd in fds]
