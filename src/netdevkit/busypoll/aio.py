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
finds nothing, resumes IRQs and falls back to the NAPI's deferral. Two knobs address that:
``busy_poll_usecs`` (the kernel spins polling the NAPI for that long inside each wait that
would otherwise sleep) and the selector's ``spin_us`` (user-space re-polls with timeout 0
after activity; cheaper wake-ups when softirq delivers the packets).

First look on the 6.18 veth testbed (NAPI defer 100 / gro 200 us / suspend 20 ms, a stock
asyncio echo server, a Python client, 2000 round trips, one run per variant, noisy): stock
loop p50 ~230 us; netdevkit's loop with the suspend preset 86-290 us; suspend with
``spin_us=50`` 69-101 us; ``busy_poll_usecs=50`` with prefer 64-76 us. Whether ``spin_us``
beats ``busy_poll_usecs`` is for the benchmarks (sockperf client) to settle; it is off by
default.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
from collections.abc import Callable

from ..errors import RequestError, UnsupportedError
from .epoll import EpollParams, is_epoll_fd, set_params, validate_params
from .selector import BusyPollSelector

__all__ = [
    "BusyPollEventLoop",
    "apply_to_loop",
    "apply_to_running_loop",
    "epoll_fds_watching",
    "loop_factory",
]


class BusyPollEventLoop(asyncio.SelectorEventLoop):
    """A ``SelectorEventLoop`` whose epoll context busy polls with *params*."""

    def __init__(
        self,
        params: EpollParams | None = None,
        *,
        spin_us: int = 0,
        selector: BusyPollSelector | None = None,
    ) -> None:
        if selector is None:
            selector = BusyPollSelector(params, spin_us=spin_us)
        elif params is not None:
            selector.set_params(params)
        self._busypoll_selector = selector
        super().__init__(selector)

    @property
    def selector(self) -> BusyPollSelector:
        return self._busypoll_selector

    @property
    def params(self) -> EpollParams:
        return self._busypoll_selector.params

    def set_params(self, params: EpollParams) -> EpollParams:
        """Change the parameters (also while running); returns what reads back."""
        return self._busypoll_selector.set_params(params)


def loop_factory(
    params: EpollParams | None = None, *, spin_us: int = 0
) -> Callable[[], BusyPollEventLoop]:
    """A zero-argument callable making a :class:`BusyPollEventLoop` with *params*.

    The parameters are validated now, so a bad value fails here and not inside
    ``asyncio.run``; each call makes a new loop with its own epoll context.
    """
    if params is not None:
        validate_params(params)
    if not isinstance(spin_us, int) or isinstance(spin_us, bool) or spin_us < 0:
        raise RequestError(f"spin_us={spin_us!r} must be a non-negative int")

    def make_loop() -> BusyPollEventLoop:
        return BusyPollEventLoop(params, spin_us=spin_us)

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
        "without running it: await apply_to_running_loop(params) inside the loop instead"
    )


def apply_to_loop(loop: asyncio.AbstractEventLoop, params: EpollParams) -> list[EpollParams]:
    """Set *params* on the epoll context(s) of *loop*; returns the read-back, one per fd.

    Works on a running or not yet running stock asyncio loop and on uvloop; see the module
    docstring for how each loop's epoll fd is found.
    """
    validate_params(params)
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


async def apply_to_running_loop(params: EpollParams) -> list[EpollParams]:
    """Set *params* on the running loop's epoll context(s), found by the probe method.

    Must be awaited inside the loop. Works for any loop that watches fds with epoll.
    """
    validate_params(params)
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
