"""``FastLoop``: netdevkit's minimal callback loop on one busy-polling epoll context.

For servers whose per-request Python budget matters more than asyncio's API: no futures,
no handles, no ready queue, no timers. A ready fd's callback is called straight from the
``epoll_wait`` result, and every wait blocks (timeout -1), so every wait is one the kernel
busy polls in (a timeout-0 ``epoll_wait`` never does: see
:mod:`netdevkit.busypoll.selector`). What is left per request is ``epoll_wait``, the
callback's own ``recv``/``send`` and a dictionary lookup.

It takes the same :class:`~netdevkit.busypoll.config.BusyPollConfig` as netdevkit's
asyncio loop and honours every knob: the epoll parameters, ``adaptive_us`` (the adaptive
window, :mod:`netdevkit.busypoll.adaptive`), ``hybrid`` (sleep-then-poll for paced traffic:
:class:`~netdevkit.busypoll.adaptive.GapPredictor` says how long to sleep; a timerfd in the
same epoll ends the sleep, a request that comes early ends it too, through the NAPI's IRQ)
and ``hot_spin_us``. Python 3.11 has no ``os.timerfd_*``, so the timerfd is made with
``ctypes`` (``timerfd_create``/``timerfd_settime`` from libc).
:func:`netdevkit.bench.servers.rr.serve_rr` with ``loop_kind="fast"`` runs the sockperf
request/response server on it.

``hot_spin_us`` is the fastest mode for a few hot connections: after a callback ran, the
loop calls it again and again without ``epoll_wait`` until ``hot_spin_us`` pass without
work (:meth:`FastLoop._run_spin`). With ``SO_BUSY_POLL`` on the sockets each of those
nonblocking reads polls the socket's NAPI once (``tcp_recvmsg`` calls ``sk_busy_loop`` with
``MSG_DONTWAIT``, which ``recvfrom`` sets for an O_NONBLOCK socket: one poll, no loop), so
the loop busy polls from user space and answers from the very read that found the request.
The loop watches fds, not sockets: set ``SO_BUSY_POLL`` (``hot_spin_us`` is the natural
value) on your sockets with :func:`~netdevkit.busypoll.sockopt.set_busy_poll`.
docs/busypoll.md has the measurements of each mode.

:meth:`FastLoop.stop` is safe from other threads and from signal handlers: it writes an
eventfd that the loop watches (Python runs a signal handler when ``epoll_wait`` returns
EINTR, then PEP 475 retries the wait, which finds the eventfd ready).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import time
from collections.abc import Callable

from ..errors import RequestError, UnsupportedError, translate_oserror
from .adaptive import AdaptiveWindow, GapPredictor, WindowSwitch
from .config import LOOP_KNOBS, BusyPollConfig, checked
from .epoll import EpollParams, check_int_at_least, get_params, set_params

__all__ = ["FastLoop", "TimerFd"]

#: A hot-socket spin (``hot_spin_us``, both loops) checks the epoll for other ready fds
#: every this many rounds.
SPIN_CHECK_ROUNDS = 16


class TimerFd:
    """A CLOCK_MONOTONIC timerfd (nonblocking, close-on-exec) armed in relative ns."""

    __slots__ = ("_settime", "_spec", "fd")

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            create, self._settime = libc.timerfd_create, libc.timerfd_settime
        except AttributeError as err:
            raise UnsupportedError("hybrid polling needs timerfd_create in libc") from err
        fd = create(time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise translate_oserror(ctypes.get_errno(), "timerfd_create")
        self.fd: int = fd
        # struct itimerspec {timespec it_interval; timespec it_value;}: four longs.
        self._spec = (ctypes.c_long * 4)()

    def arm(self, ns: int) -> None:
        """Fire once, *ns* from now (0 disarms and clears a pending expiry)."""
        spec = self._spec
        spec[2], spec[3] = divmod(ns, 1_000_000_000)
        if self._settime(self.fd, 0, spec, None) < 0:
            raise translate_oserror(ctypes.get_errno(), "timerfd_settime")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FastLoop:
    """A callback loop: ``add_reader(fd, callback)``, then ``run()`` until ``stop()``.

    Level-triggered: a callback that does not drain its fd is called again on the next
    iteration. Callbacks run in the loop's thread; an exception in one propagates out of
    :meth:`run` (nothing is swallowed).
    """

    __slots__ = (
        "_config",
        "_ep",
        "_max_events",
        "_params",
        "_predictor",
        "_readers",
        "_spin_ns",
        "_switch",
        "_timer",
        "_wake",
        "early",
        "hot_calls",
        "hot_hits",
        "sleeps",
        "waits",
    )

    def __init__(self, config: BusyPollConfig | None = None, *, max_events: int = 64) -> None:
        config = checked(config, "FastLoop", LOOP_KNOBS)
        check_int_at_least("max_events", max_events, 1)
        self._config = config
        self._spin_ns = config.hot_spin_us * 1000
        self.hot_calls = 0  # speculative callback calls (hot_spin_us)
        self.hot_hits = 0  # ... that did work (as BusyPollEventLoop.hot_hits counts them)
        adaptive_us = config.adaptive_us
        policy = AdaptiveWindow(adaptive_us) if adaptive_us else None
        self._predictor = GapPredictor(adaptive_us) if config.hybrid else None
        self._timer: TimerFd | None = None
        self.sleeps = 0  # hybrid: waits that began with a sleep phase
        self.early = 0  # hybrid: sleep phases ended by an event before the timer
        self._max_events = max_events
        self._readers: dict[int, Callable[[], object]] = {}
        self._switch: WindowSwitch | None = None
        self._params = EpollParams()
        self.waits = 0
        self._ep = select.epoll()
        self._wake = -1
        try:
            if config.params != EpollParams():
                self._params = set_params(self._ep.fileno(), config.params)
            if policy is not None:
                self._switch = WindowSwitch(
                    self._ep.fileno(), self._params, policy, hybrid=config.hybrid
                )
            self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._ep.register(self._wake, select.EPOLLIN)
            if config.hybrid:
                self._timer = TimerFd()
                self._ep.register(self._timer.fd, select.EPOLLIN)
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        """The epoll fd (its busy-poll parameters are this loop's)."""
        return self._ep.fileno()

    @property
    def params(self) -> EpollParams:
        """The parameters set (with an adaptive window: the idle set)."""
        return self._params

    def read_params(self) -> EpollParams:
        """The parameters as the kernel has them now."""
        return get_params(self._ep.fileno())

    @property
    def adaptive_busy(self) -> bool:
        """Whether the adaptive window is open now."""
        return self._switch is not None and self._switch.policy.busy

    @property
    def adaptive_switches(self) -> int:
        return self._switch.switches if self._switch is not None else 0

    @property
    def predicted_gap_us(self) -> float:
        """Hybrid polling's average gap between waits and events (0: none yet or off)."""
        return self._predictor.gap_ns / 1000 if self._predictor is not None else 0.0

    @property
    def config(self) -> BusyPollConfig:
        """The configuration this loop was made with."""
        return self._config

    def add_reader(self, fd: int, callback: Callable[[], object]) -> None:
        """Call *callback* whenever *fd* is readable (or has hung up / failed).

        With ``hot_spin_us`` the callback is also called speculatively (see :meth:`run`): it
        must read without blocking, tolerate finding nothing, and return a true value when
        it did work.
        """
        if fd in self._readers or fd == self._wake or (self._timer and fd == self._timer.fd):
            raise RequestError(f"fd {fd} is already watched by this loop")
        self._ep.register(fd, select.EPOLLIN)  # raises before any bookkeeping
        self._readers[fd] = callback

    def remove_reader(self, fd: int) -> bool:
        """Stop watching *fd*; False if it was not watched. Call before closing the fd."""
        if self._readers.pop(fd, None) is None:
            return False
        # Closed already: the kernel dropped it from the interest list.
        with contextlib.suppress(OSError):
            self._ep.unregister(fd)
        return True

    def stop(self) -> None:
        """Make :meth:`run` return after the current iteration (thread and signal safe)."""
        if self._wake >= 0:
            os.eventfd_write(self._wake, 1)

    def run(self) -> None:
        """Wait and dispatch until :meth:`stop`."""
        if self._predictor is not None:
            self._run_hybrid()
            return
        if self._spin_ns:
            self._run_spin()
            return
        poll = self._ep.poll
        max_events = self._max_events
        switch = self._switch
        clock = time.monotonic_ns
        while True:
            self.waits += 1
            if switch is None:
                events = poll(-1, max_events)
            else:
                start = clock()
                events = poll(-1, max_events)
                switch.observe(clock() - start)
            if self._dispatch(events):
                return

    def _run_spin(self) -> None:
        """:meth:`run` with hot-fd spinning: after an event, call its callback again and
        again (no ``epoll_wait`` in between) until ``hot_spin_us`` pass without work.

        Why: a nonblocking ``recv`` on a socket with ``SO_BUSY_POLL`` polls the socket's
        NAPI once (``tcp_recvmsg`` -> ``sk_busy_loop`` with ``MSG_DONTWAIT``), so spinning
        on the hot socket's read busy polls its NAPI from user space and answers straight
        from the read that found the request: no ``epoll_wait`` return, and no second
        syscall, between the packet and the callback. Every :data:`SPIN_CHECK_ROUNDS` rounds the
        spin polls the epoll with timeout 0, so other fds (new connections, :meth:`stop`)
        are served while it spins; a long spin on one connection delays the others by at
        most one round.
        """
        poll = self._ep.poll
        max_events = self._max_events
        readers = self._readers
        while True:
            self.waits += 1
            events = poll(-1, max_events)
            # Dispatch, spin on what was dispatched; a spin that ends because other fds
            # are ready hands their events straight to the next dispatch.
            while events:
                if self._dispatch(events):
                    return
                hot = [fd for fd, _ in events if fd in readers]
                events = self._spin(hot) if hot else []

    def _spin(self, hot: list[int]) -> list[tuple[int, int]]:
        """Call the callbacks of *hot* until ``hot_spin_us`` pass without work; returns the
        events of other ready fds if the periodic epoll check found some (else [])."""
        poll = self._ep.poll
        max_events = self._max_events
        readers = self._readers
        spin_ns = self._spin_ns
        clock = time.monotonic_ns
        deadline = clock() + spin_ns
        rounds = 0
        while True:
            worked = False
            for fd in hot:
                callback = readers.get(fd)
                if callback is not None:
                    self.hot_calls += 1
                    if callback():
                        worked = True
                        self.hot_hits += 1
            rounds += 1
            if rounds % SPIN_CHECK_ROUNDS == 0:
                events = poll(0, max_events)
                if events:
                    return events
            now = clock()
            if worked:
                deadline = now + spin_ns
            elif now >= deadline:
                return []

    def _dispatch(self, events: list[tuple[int, int]]) -> bool:
        """Run the callbacks of ready fds; True when the wake-up eventfd says stop."""
        readers = self._readers
        wake = self._wake
        for fd, _ in events:
            callback = readers.get(fd)
            if callback is not None:
                callback()
            elif fd == wake:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(wake)
                return True
        return False

    def _run_hybrid(self) -> None:
        """:meth:`run` with a sleep phase before the window when traffic is paced."""
        poll = self._ep.poll
        max_events = self._max_events
        switch, predictor, timer = self._switch, self._predictor, self._timer
        assert switch is not None and predictor is not None and timer is not None
        tfd = timer.fd
        clock = time.monotonic_ns
        while True:
            self.waits += 1
            sleep = predictor.sleep_ns()
            start = clock()
            if sleep:
                # Phase 1: window closed (a wait that finds nothing sleeps at once, IRQs
                # on), woken by the timer or by a request that comes early.
                self.sleeps += 1
                switch.set(False)
                timer.arm(sleep)
                events = poll(-1, max_events)
                timer.arm(0)  # disarm; also clears an expiry not yet read
                if len(events) == 1 and events[0][0] == tfd:
                    # Phase 2: the request is due: busy poll for up to the window.
                    predictor.observe_wake(clock() - start - sleep)
                    switch.set(True)
                    events = poll(-1, max_events)
                else:
                    self.early += 1
            else:
                switch.set(predictor.spin())
                events = poll(-1, max_events)
            predictor.observe(clock() - start)
            if self._dispatch(events):
                return

    def close(self) -> None:
        """Close the epoll fd and the wake-up eventfd (watched fds stay open: yours)."""
        self._readers.clear()
        if self._timer is not None:
            self._timer.close()
        if self._wake >= 0:
            os.close(self._wake)
            self._wake = -1
        self._ep.close()

    def __enter__(self) -> FastLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
