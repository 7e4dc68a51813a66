"""``BusyPollSelector``: a ``selectors.EpollSelector`` whose epoll context busy polls.

A drop-in for code written against :mod:`selectors`: it *is* an ``EpollSelector`` (same
register/modify/unregister bookkeeping, undone when ``epoll_ctl`` fails; EINTR in
``epoll_wait`` means "nothing ready"; timeouts round up to the next millisecond, the
resolution of ``epoll_wait``), plus the busy-poll parameters of its own epoll fd.

Kernel facts the select loop relies on (fs/eventpoll.c ``ep_poll``/``ep_busy_loop``, 6.18):

- Only an ``epoll_wait`` with a non-zero timeout busy polls: with timeout 0 the kernel
  hands out what is already on the ready list and returns before ``ep_busy_loop``.
- The context busy polls the NAPI of the last socket that became ready (``ep->napi_id``).
  A busy poll that finds nothing drops that id, resumes the NAPI's IRQs when
  ``prefer_busy_poll`` is set, and the caller sleeps; a later ready socket brings it back.
- IRQ suspension: each ``epoll_wait`` that returns events re-arms the NAPI's
  ``irq-suspend-timeout``; so IRQs stay off while the loop keeps finding work.

The loop knobs it honours are the adaptive window and hybrid polling (``adaptive_us``,
``hybrid`` of :class:`~netdevkit.busypoll.config.BusyPollConfig`); the hot-socket spin needs
a loop that reads the sockets (:class:`~netdevkit.busypoll.aio.BusyPollEventLoop`).
"""

from __future__ import annotations

import dataclasses
import math
import select
import selectors
import time

from .adaptive import AdaptiveWindow, GapPredictor, WindowSwitch
from .config import BusyPollConfig, checked
from .epoll import EpollParams, get_params, set_params
from .fastloop import TimerFd

__all__ = ["BusyPollSelector"]

_SelectResult = list[tuple[selectors.SelectorKey, int]]


class BusyPollSelector(selectors.EpollSelector):
    """An epoll selector whose epoll context busy polls as *config* says.

    ``config=None`` leaves the kernel defaults (no per-epoll busy polling). The parameters
    are validated before the epoll fd is created, applied right after, and read back; on
    failure the epoll fd is closed again. Of the loop knobs it honours ``adaptive_us`` and
    ``hybrid``.
    """

    # Set by CPython's selectors (not in typeshed): the select.epoll object and the
    # fd -> key map the bookkeeping keeps.
    _selector: select.epoll
    _fd_to_key: dict[int, selectors.SelectorKey]

    def __init__(self, config: BusyPollConfig | None = None) -> None:
        config = checked(config, "BusyPollSelector", ("adaptive_us", "hybrid"))
        policy = AdaptiveWindow(config.adaptive_us) if config.adaptive_us else None
        self._predictor = GapPredictor(config.adaptive_us) if config.hybrid else None
        self._timer: TimerFd | None = None
        self.sleeps = 0  # hybrid: waits that began with a sleep phase
        super().__init__()
        self._config = config
        self._params = EpollParams()
        self._switch: WindowSwitch | None = None
        try:
            if config.params != EpollParams():
                self._params = set_params(self.fileno(), config.params)
            if policy is not None:
                self._switch = WindowSwitch(
                    self.fileno(), self._params, policy, hybrid=config.hybrid
                )
            if config.hybrid:
                # Watched by the epoll but not a selector key: _poll() never reports it.
                self._timer = TimerFd()
                self._selector.register(self._timer.fd, select.EPOLLIN)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        super().close()
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    @property
    def params(self) -> EpollParams:
        """The parameters last set and read back through this selector."""
        return self._params

    @property
    def config(self) -> BusyPollConfig:
        """The configuration in force (its epoll parameters as last given to
        :meth:`set_params`)."""
        return self._config

    @property
    def adaptive_us(self) -> int:
        """The adaptive busy-poll window in microseconds (0: off)."""
        return self._switch.policy.window_us if self._switch is not None else 0

    @property
    def adaptive_busy(self) -> bool:
        """Whether the adaptive window is open now (the context carries usecs = window)."""
        return self._switch is not None and self._switch.policy.busy

    @property
    def adaptive_switches(self) -> int:
        """How many times the adaptive window opened or closed."""
        return self._switch.switches if self._switch is not None else 0

    def set_params(self, params: EpollParams) -> EpollParams:
        """Set the epoll context's busy-poll parameters; returns what the kernel reads back.

        With an adaptive window, *params* become the idle set (and the window is closed).
        """
        if self._switch is not None:
            hybrid = self._predictor is not None
            self._switch = WindowSwitch(self.fileno(), params, self._switch.policy, hybrid=hybrid)
            self._params = self._switch.idle_params
        else:
            self._params = set_params(self.fileno(), params)
        self._config = dataclasses.replace(
            self._config,
            busy_poll_usecs=params.busy_poll_usecs,
            busy_poll_budget=params.busy_poll_budget,
            prefer_busy_poll=params.prefer_busy_poll,
        )
        return self._params

    def read_params(self) -> EpollParams:
        """The parameters as the kernel has them now (another process may have changed them)."""
        return get_params(self.fileno())

    def _poll(self, timeout: float) -> _SelectResult:
        # timeout: -1 blocks, 0 polls, > 0 seconds already rounded up to whole ms.
        # epoll_wait() needs maxevents > 0 even with nothing registered.
        max_ev = max(len(self._fd_to_key), 1)
        ready: _SelectResult = []
        try:
            fd_event_list = self._selector.poll(timeout, max_ev)
        except InterruptedError:
            return ready
        for fd, event in fd_event_list:
            events = 0
            if event & ~select.EPOLLIN:
                events |= selectors.EVENT_WRITE
            if event & ~select.EPOLLOUT:
                events |= selectors.EVENT_READ
            key = self._fd_to_key.get(fd)
            if key:
                ready.append((key, events & key.events))
        return ready

    def select(self, timeout: float | None = None) -> _SelectResult:
        switch = self._switch
        if switch is None or (timeout is not None and timeout <= 0):
            return self._select(timeout)  # timeout 0 never busy polls: nothing to adapt
        if self._predictor is not None:
            return self._select_hybrid(switch, self._predictor, timeout)
        start = time.monotonic_ns()
        ready = self._select(timeout)
        switch.observe(time.monotonic_ns() - start)
        return ready

    def _select_hybrid(
        self, switch: WindowSwitch, predictor: GapPredictor, timeout: float | None
    ) -> _SelectResult:
        """A wait with a sleep phase before the window when events come paced (see
        :class:`~netdevkit.busypoll.adaptive.GapPredictor`)."""
        timer = self._timer
        assert timer is not None
        sleep = predictor.sleep_ns()
        start = time.monotonic_ns()
        if sleep and (timeout is None or timeout * 1e9 > sleep):
            self.sleeps += 1
            switch.set(False)
            timer.arm(sleep)
            ready = self._select(timeout)
            timer.arm(0)  # disarm; also clears an expiry not yet seen
            woke = time.monotonic_ns() - start
            if not ready and (timeout is None or woke < timeout * 1e9):
                # The timer ended the sleep (it is not a key): open the window and wait on.
                predictor.observe_wake(woke - sleep)
                switch.set(True)
                left = None if timeout is None else max(timeout - woke / 1e9, 0.001)
                ready = self._select(left)
        else:
            switch.set(predictor.spin())
            ready = self._select(timeout)
        if ready:  # an empty, timed-out wait says nothing about the gap
            predictor.observe(time.monotonic_ns() - start)
        return ready

    def _select(self, timeout: float | None) -> _SelectResult:
        if timeout is None:
            return self._poll(-1)
        if timeout <= 0:
            return self._poll(0)
        # epoll_wait() has a resolution of 1 millisecond: round away from zero to wait
        # *at least* timeout seconds.
        return self._poll(math.ceil(timeout * 1e3) * 1e-3)
