"""An adaptive in-kernel busy-poll window: spin while traffic is dense, sleep when it is not.

The policy is pure logic (:class:`AdaptiveWindow`: wait times in, parameter changes out);
:class:`WindowSwitch` is the thin part that applies a change to an epoll fd. Both
:class:`~netdevkit.busypoll.selector.BusyPollSelector` (hence netdevkit's asyncio loop) and
:class:`~netdevkit.busypoll.fastloop.FastLoop` use them.

Why (fs/eventpoll.c ``ep_poll``/``ep_busy_loop`` and net/core/dev.c, Linux 6.18):

- A blocking ``epoll_wait`` whose ready list is empty busy polls the context's NAPI for
  ``busy_poll_usecs`` (0: once, when ``prefer_busy_poll`` is set). If that finds nothing it
  resumes the NAPI's IRQs (``napi_resume_irqs``) and sleeps; the next packet then comes
  through the NAPI's deferral (``gro-flush-timeout``) or its IRQ.
- An ``epoll_wait`` that returns events re-arms IRQ suspension (``irq-suspend-timeout``).

So with the suspend preset (usecs 0) a request/response peer, whose next request is never
there yet when the server waits, resumes IRQs on every wait and pays the deferral timer on
every request; with a fixed window (usecs W) it spins W after every request, also when the
next one comes long after W (wasted CPU at low load). The adaptive window keeps W only while
waits end within it:

- *busy* (usecs W): a wait that lasts longer than W means the spin ran out and the thread
  slept (or the wait timed out empty): after ``idle_after`` such waits in a row, go *idle*.
- *idle* (the base parameters, usecs 0 in the suspend preset): a wait that ends within
  ``busy_within`` (default 2 W: the first packet after a sleep also pays the deferral timer
  and the wake-up) means traffic is dense again: go *busy*.

Changing the parameters is one ``EPIOCSPARAMS`` ioctl, done on transitions only; both
parameter sets are set and read back once when the switch is made, so the transitions need
no read-back. Waits with timeout 0 never busy poll in the kernel and are not observed.
"""

from __future__ import annotations

import dataclasses
import fcntl

from ..errors import RequestError
from .epoll import (
    EPIOCSPARAMS,
    S32_MAX,
    EpollParams,
    check_int_at_least,
    set_params,
    validate_params,
)

__all__ = ["AdaptiveWindow", "GapPredictor", "WindowSwitch"]


class AdaptiveWindow:
    """The busy/idle decision from the length of each blocking wait (no I/O).

    :meth:`observe` takes how long a blocking wait lasted (ns) and returns ``True`` (go
    busy), ``False`` (go idle) or ``None`` (no change).
    """

    __slots__ = ("_busy_within_ns", "_idle_after", "_misses", "_window_ns", "busy")

    def __init__(
        self, window_us: int, *, idle_after: int = 2, busy_within_us: int | None = None
    ) -> None:
        check_int_at_least("window_us", window_us, 1)
        check_int_at_least("idle_after", idle_after, 1)
        if window_us > S32_MAX:
            raise RequestError(f"window_us={window_us} is out of range: must be 1..{S32_MAX}")
        within = 2 * window_us if busy_within_us is None else busy_within_us
        check_int_at_least("busy_within_us", within)
        self._window_ns = window_us * 1000
        self._busy_within_ns = within * 1000
        self._idle_after = idle_after
        self._misses = 0
        self.busy = False  # start idle: nothing has arrived yet

    @property
    def window_us(self) -> int:
        return self._window_ns // 1000

    def observe(self, waited_ns: int) -> bool | None:
        """Account one blocking wait of *waited_ns*; the new state on a transition."""
        if self.busy:
            if waited_ns <= self._window_ns:
                self._misses = 0
                return None
            self._misses += 1
            if self._misses < self._idle_after:
                return None
            self._misses = 0
            self.busy = False
            return False
        if waited_ns <= self._busy_within_ns:
            self.busy = True
            return True
        return None


class WindowSwitch:
    """Applies :class:`AdaptiveWindow` decisions to one epoll fd.

    *base* is what the context carries while idle (e.g. the suspend preset: usecs 0,
    budget 64, prefer); while busy it carries the same with ``busy_poll_usecs`` = the
    window. With *hybrid* the idle set is usecs 0 with *base*'s budget and without
    ``prefer_busy_poll`` instead (such a wait never busy polls, so it keeps the context's NAPI id,
    which a ``prefer_busy_poll`` wait that finds nothing drops until a socket becomes ready
    again -- and without a NAPI id the window that follows would not poll at all).
    Construction sets both (read back, so a refused value fails here) and leaves the idle
    set applied.
    """

    __slots__ = (
        "_busy_raw",
        "_epfd",
        "_idle_raw",
        "busy_params",
        "idle_params",
        "policy",
        "switches",
    )

    def __init__(
        self,
        epfd: int,
        base: EpollParams,
        policy: AdaptiveWindow,
        *,
        hybrid: bool = False,
    ) -> None:
        validate_params(base)
        self._epfd = epfd
        self.policy = policy
        self.idle_params = EpollParams(0, base.busy_poll_budget, False) if hybrid else base
        self.busy_params = dataclasses.replace(base, busy_poll_usecs=policy.window_us)
        set_params(epfd, self.busy_params)
        set_params(epfd, self.idle_params)
        policy.busy = False
        self._busy_raw = self.busy_params.pack()
        self._idle_raw = self.idle_params.pack()
        self.switches = 0

    @property
    def current(self) -> EpollParams:
        """What this switch last applied."""
        return self.busy_params if self.policy.busy else self.idle_params

    def observe(self, waited_ns: int) -> None:
        """Account one blocking wait; switch the epoll context on a transition."""
        change = self.policy.observe(waited_ns)
        if change is not None:
            self._apply(change)

    def set(self, busy: bool) -> None:
        """Open (*busy*) or close the window now, whatever the policy thinks."""
        if busy != self.policy.busy:
            self.policy.busy = busy
            self._apply(busy)

    def _apply(self, busy: bool) -> None:
        # Both sets were set and read back in __init__: no read-back on the hot path.
        fcntl.ioctl(self._epfd, EPIOCSPARAMS, self._busy_raw if busy else self._idle_raw)
        self.switches += 1


class GapPredictor:
    """Sleep-then-poll for paced traffic: when to start spinning before the next request.

    The idea of the block layer's hybrid polling (blk-mq ``io_poll_delay``: sleep for part
    of the expected completion time, then poll): keep an average of the time from one
    wait's start to its first event (the gap, ns) and of its deviation, and of how late
    the sleep's timer wakes the thread (:meth:`observe_wake`; docs/busypoll.md has how late
    that was on the development VM); when the gap is longer than the window, sleep for
    ``gap - late - window / 2 - deviation`` and busy poll from there. (No I/O:
    :meth:`sleep_ns` says how long.)

    - gap <= window: no sleep; the adaptive window alone spins through it;
    - window < gap <= ``max_sleep_us``: sleep, then open the window;
    - longer gaps (idle, or no regular pacing): no sleep phase, the window stays closed.
    """

    __slots__ = ("_dev_ns", "_gap_ns", "_late_ns", "_max_ns", "_window_ns")

    def __init__(self, window_us: int, *, max_sleep_us: int = 5000) -> None:
        AdaptiveWindow(window_us)  # validates the window
        check_int_at_least("max_sleep_us", max_sleep_us, 1)
        self._window_ns = window_us * 1000
        self._max_ns = max_sleep_us * 1000
        self._gap_ns = 0  # 0: no estimate yet
        self._dev_ns = 0
        self._late_ns = 0

    @property
    def gap_ns(self) -> int:
        """The average gap so far (0 before the first observation)."""
        return self._gap_ns

    def observe(self, gap_ns: int) -> None:
        """Account the gap of one wait (exponential averages with weight 1/4)."""
        if self._gap_ns == 0:
            self._gap_ns = gap_ns
            return
        err = gap_ns - self._gap_ns
        self._gap_ns += err // 4
        self._dev_ns = max(0, self._dev_ns + (abs(err) - self._dev_ns) // 4)

    def observe_wake(self, late_ns: int) -> None:
        """Account how late a sleep's timer woke the thread (weight 1/4)."""
        self._late_ns = max(0, self._late_ns + (late_ns - self._late_ns) // 4)

    def sleep_ns(self) -> int:
        """How long to sleep before opening the window for the next wait (0: do not)."""
        gap = self._gap_ns
        if gap <= self._window_ns or gap > self._max_ns:
            return 0
        sleep = gap - self._late_ns - self._window_ns // 2 - self._dev_ns
        return sleep if sleep > self._window_ns // 2 else 0

    def spin(self) -> bool:
        """Whether a wait without a sleep phase should carry the window (gap <= window)."""
        return 0 < self._gap_ns <= self._window_ns
