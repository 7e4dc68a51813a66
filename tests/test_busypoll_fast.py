"""Tests of the adaptive busy-poll window, hybrid polling, FastLoop and the fast rr server.

Tiers: the policies (:class:`AdaptiveWindow`, :class:`GapPredictor`) as tables of wait
times, no kernel; then the real kernel (Linux >= 6.9 epoll ioctls): the window's switching
is visible with ``EPIOCGPARAMS`` on the selector's, the asyncio loop's and the FastLoop's
own epoll fd after busy and idle phases; the fast rr server answers sockperf framing.
Behaviour only: no timing assertions beyond "a busy phase" (events already there, so the
wait is short) and "an idle phase" (timed waits that find nothing, 10 ms and more).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import cast

import pytest

from netdevkit.bench.servers.rr import (
    DEFAULT_ADAPTIVE_US,
    HEADER,
    RrStats,
    default_adaptive_us,
    make_loop,
    params_from_preset,
    serve_rr,
)
from netdevkit.busypoll import (
    BusyPollConfig,
    BusyPollEventLoop,
    BusyPollSelector,
    EpollParams,
    get_busy_poll,
    get_params,
    loop_factory,
)
from netdevkit.busypoll.adaptive import AdaptiveWindow, GapPredictor
from netdevkit.busypoll.fastloop import FastLoop
from netdevkit.errors import RequestError

SUSPEND = EpollParams(busy_poll_usecs=0, busy_poll_budget=64, prefer_busy_poll=True)
WINDOW = 50
SUSPEND_CFG = BusyPollConfig.from_params(SUSPEND)
ADAPTIVE = dataclasses.replace(SUSPEND_CFG, adaptive_us=WINDOW)
HYBRID = dataclasses.replace(ADAPTIVE, hybrid=True)
OPEN = EpollParams(busy_poll_usecs=WINDOW, busy_poll_budget=64, prefer_busy_poll=True)
US = 1000
MS = 1_000_000

# -- the policies: no kernel ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("waits_ns", "states"),
    [
        # Starts idle; a wait within 2 W opens the window; one long wait is tolerated,
        # the second in a row closes it.
        ([10 * US, 20 * US, 5 * MS, 20 * US], [True, True, True, True]),
        ([10 * US, 5 * MS, 5 * MS], [True, True, False]),
        # Idle: waits longer than 2 W keep it closed; 2 W exactly opens it.
        ([150 * US, 5 * MS, 100 * US], [False, False, True]),
        # Busy: a wait of exactly W is within the window.
        ([1 * US, 50 * US, 50 * US, 51 * US, 51 * US], [True, True, True, True, False]),
    ],
)
def test_adaptive_window_transitions(waits_ns: list[int], states: list[bool]) -> None:
    policy = AdaptiveWindow(WINDOW)
    assert policy.busy is False
    seen = []
    for waited in waits_ns:
        policy.observe(waited)
        seen.append(policy.busy)
    assert seen == states


def test_adaptive_window_reports_only_transitions() -> None:
    policy = AdaptiveWindow(WINDOW, idle_after=1)
    assert [policy.observe(w) for w in (1 * US, 1 * US, 1 * MS, 1 * MS, 1 * US)] == [
        True,
        None,
        False,
        None,
        True,
    ]


@pytest.mark.parametrize(
    "kwargs",
    [{"window_us": 0}, {"window_us": -5}, {"window_us": 2**31}, {"window_us": True}],
)
def test_adaptive_window_refuses_bad_windows(kwargs: dict[str, int]) -> None:
    with pytest.raises(RequestError, match="window_us"):
        AdaptiveWindow(**kwargs)


def test_gap_predictor_sleeps_before_regular_requests() -> None:
    pred = GapPredictor(WINDOW)
    assert pred.sleep_ns() == 0 and not pred.spin()  # no estimate yet
    for _ in range(50):
        pred.observe(200 * US)
    assert pred.gap_ns == 200 * US
    assert pred.sleep_ns() == 200 * US - WINDOW * US // 2  # no jitter, no late wake-ups
    pred.observe_wake(30 * US)
    assert pred.sleep_ns() < 200 * US - WINDOW * US // 2  # wakes earlier to make up for it
    assert not pred.spin()


def test_gap_predictor_spins_for_dense_traffic_and_rests_when_idle() -> None:
    pred = GapPredictor(WINDOW, max_sleep_us=5000)
    for _ in range(50):
        pred.observe(20 * US)
    assert pred.spin() and pred.sleep_ns() == 0
    for _ in range(50):
        pred.observe(50 * MS)
    assert not pred.spin() and pred.sleep_ns() == 0


# -- the selector and netdevkit's asyncio loop ------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.mark.kernel
def test_selector_window_opens_when_busy_and_closes_when_idle(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    with BusyPollSelector(ADAPTIVE) as sel:
        fd = sel.fileno()
        assert sel.params == SUSPEND and get_params(fd) == SUSPEND and not sel.adaptive_busy
        sel.register(b, 1)  # EVENT_READ
        # Busy: every wait finds a message that is already there.
        for _ in range(5):
            a.send(b"x")
            assert sel.select(timeout=1)
            b.recv(16)
        assert sel.adaptive_busy and get_params(fd) == OPEN
        # Idle: timed waits that find nothing; the second in a row closes the window.
        assert sel.select(timeout=0.01) == []
        assert get_params(fd) == OPEN
        assert sel.select(timeout=0.01) == []
        assert not sel.adaptive_busy and get_params(fd) == SUSPEND
        # timeout 0 never busy polls and is not observed.
        a.send(b"y")
        assert sel.select(timeout=0)
        assert get_params(fd) == SUSPEND
        assert sel.adaptive_switches == 2
        assert sel.read_params() == SUSPEND


@pytest.mark.kernel
def test_selector_set_params_with_window_changes_the_idle_set() -> None:
    with BusyPollSelector(ADAPTIVE) as sel:
        other = EpollParams(0, 32, True)
        assert sel.set_params(other) == other == get_params(sel.fileno())
        assert sel.adaptive_us == WINDOW and not sel.adaptive_busy


@pytest.mark.kernel
def test_asyncio_loop_window_follows_the_traffic() -> None:
    async def main() -> tuple[EpollParams, EpollParams]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, BusyPollEventLoop)
        fd = loop.selector.fileno()

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(64):
                writer.write(data)

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(200):  # busy: request/response on the loop itself
            writer.write(b"%05d" % i)
            assert await reader.readexactly(5) == b"%05d" % i
        busy = get_params(fd)
        for _ in range(3):  # idle: the loop waits 20 ms for a timer, nothing else
            await asyncio.sleep(0.02)
        idle = get_params(fd)
        writer.close()
        server.close()
        await server.wait_closed()
        return busy, idle

    with asyncio.Runner(loop_factory=loop_factory(ADAPTIVE)) as runner:
        busy, idle = runner.run(main())
    assert busy == OPEN
    assert idle == SUSPEND


def test_config_validates_the_window() -> None:
    with pytest.raises(RequestError, match="adaptive_us"):
        dataclasses.replace(SUSPEND_CFG, adaptive_us=-1)
    with pytest.raises(RequestError, match="adaptive_us > 0"):
        dataclasses.replace(SUSPEND_CFG, hybrid=True)


def _timerfds() -> set[int]:
    """The timerfds this process has open."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[timerfd]":
                found.add(int(name))
        except OSError:
            continue  # the listing's own fd, closed by now
    return found


@pytest.mark.kernel
def test_selector_hybrid_sleeps_then_polls_for_paced_events(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair

    def pace() -> None:
        for _ in range(40):
            time.sleep(0.002)
            a.send(b"x")

    with BusyPollSelector(HYBRID) as sel:
        timers = _timerfds()
        assert len(timers) == 1  # the timer that ends the sleep phase
        # Sleep phase set: usecs 0 without prefer (keeps the NAPI id); window: the preset's.
        assert get_params(sel.fileno()) == EpollParams(0, 64, False)
        sel.register(b, 1)  # EVENT_READ
        sender = threading.Thread(target=pace)
        sender.start()
        got = 0
        while got < 40:
            for key, _ in sel.select(timeout=1):
                assert key.fileobj is b  # the timerfd is never reported
                got += len(b.recv(64))
        sender.join()
        assert sel.sleeps > 0  # paced at ~2 ms: it slept before opening the window
        assert sel.select(timeout=0.01) == []  # a timed-out wait: nothing, no timer event
        # New parameters keep the hybrid idle set (no prefer) while the window is closed.
        sel.set_params(EpollParams(0, 32, True))
        assert get_params(sel.fileno()) == EpollParams(0, 32, False)
    # Closing the selector closed its timerfd too.
    assert _timerfds() & timers == set()


# -- FastLoop ---------------------------------------------------------------------------------


@pytest.mark.kernel
def test_fastloop_dispatches_and_stops_from_another_thread(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    got: list[bytes] = []
    with FastLoop(SUSPEND_CFG) as loop:
        assert get_params(loop.fileno()) == SUSPEND == loop.read_params() == loop.params

        def on_read() -> None:
            got.append(b.recv(64))
            if len(got) == 3:
                loop.remove_reader(b.fileno())
                threading.Thread(target=loop.stop).start()
            else:
                a.send(b"m%d" % len(got))

        loop.add_reader(b.fileno(), on_read)
        with pytest.raises(RequestError, match="already watched"):
            loop.add_reader(b.fileno(), on_read)
        a.send(b"m0")
        loop.run()
        assert got == [b"m0", b"m1", b"m2"]
        assert loop.remove_reader(b.fileno()) is False
    with pytest.raises(ValueError):
        loop.fileno()  # closed


@pytest.mark.kernel
def test_fastloop_spin_reads_the_hot_fd_again_without_waiting(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    b.setblocking(False)
    got: list[bytes] = []
    # A 1 s spin: only stop() can end it early.
    with FastLoop(BusyPollConfig(hot_spin_us=1_000_000)) as loop:

        def on_read() -> bool:
            try:
                data = b.recv(64)
            except BlockingIOError:
                return False
            got.append(data)
            if len(got) < 5:
                a.send(b"m%d" % len(got))  # there before the next speculative read
            else:
                loop.stop()  # seen by the spin's own epoll check, long before 1 s
            return True

        loop.add_reader(b.fileno(), on_read)
        a.send(b"m0")
        start = time.monotonic()
        loop.run()
        assert time.monotonic() - start < 0.5
        assert got == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        # One blocking wait found m0; m1..m4 were read by the spin, not by epoll_wait.
        assert loop.waits == 1
        assert loop.hot_hits == 4 and loop.hot_calls >= 4


def test_fastloop_refuses_bad_spins() -> None:
    with pytest.raises(RequestError, match="hot_spin_us"):
        FastLoop(BusyPollConfig(hot_spin_us=-1))
    with pytest.raises(RequestError, match="excludes"):
        FastLoop(dataclasses.replace(ADAPTIVE, hot_spin_us=50))


@pytest.mark.kernel
def test_fastloop_window_switches(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    with FastLoop(ADAPTIVE) as loop:
        seen: list[EpollParams] = []

        def on_read() -> None:
            b.recv(64)
            seen.append(get_params(loop.fileno()))
            if len(seen) < 5:
                a.send(b"x")  # the next wait finds it at once: busy
            else:
                # Idle: nothing for a while, then stop.
                threading.Timer(0.05, loop.stop).start()

        loop.add_reader(b.fileno(), on_read)
        a.send(b"x")
        loop.run()
        # The first wait found its message at once: the window opened right after it,
        # before the callback ran, and stayed open while the messages kept coming.
        assert seen == [OPEN] * 5
        assert loop.adaptive_switches == 1
        assert get_params(loop.fileno()) == OPEN  # one 50 ms wait is tolerated


@pytest.mark.kernel
def test_fastloop_hybrid_keeps_the_napi_id_while_it_sleeps() -> None:
    # The sleep phase carries usecs 0 *without* prefer_busy_poll (such a wait keeps the
    # context's NAPI id); the window carries the preset's budget and prefer.
    with FastLoop(HYBRID) as loop:
        assert get_params(loop.fileno()) == EpollParams(0, 64, False)
        assert loop.predicted_gap_us == 0.0
    with pytest.raises(RequestError, match="adaptive window"):
        FastLoop(dataclasses.replace(SUSPEND_CFG, hybrid=True))


@pytest.mark.kernel
def test_fastloop_hybrid_sleeps_then_polls_for_paced_events(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    count = 0
    with FastLoop(HYBRID) as loop:

        def on_read() -> None:
            nonlocal count
            b.recv(64)
            count += 1
            if count == 40:
                loop.stop()

        def pace() -> None:
            for _ in range(40):
                time.sleep(0.002)
                a.send(b"x")

        loop.add_reader(b.fileno(), on_read)
        sender = threading.Thread(target=pace)
        sender.start()
        loop.run()
        sender.join()
        assert count == 40
        assert loop.sleeps > 0  # paced at ~2 ms: it learnt the gap and slept before polling
        assert 500 < loop.predicted_gap_us < 50_000


# -- the rr server on FastLoop ----------------------------------------------------------------


def _message(seq: int, flags: int, size: int = 14) -> bytes:
    return HEADER.pack(seq, flags, size) + bytes(size - HEADER.size)


@pytest.fixture(params=["fast", "fast-spin", "threads"])
def fast_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """The rr server on a FastLoop (suspend + window, or spinning on the hot socket with
    SO_BUSY_POLL 50), or with a thread per connection (SO_BUSY_POLL 50), run in a thread;
    stopped by its event."""
    kind = request.param
    stop = threading.Event()
    ready = threading.Event()
    addr: list[tuple[str, int]] = []
    result: list[RrStats] = []

    def on_ready(a: tuple[str, int]) -> None:
        addr.append(a)
        ready.set()

    def serve() -> None:
        if kind == "fast":
            config = BusyPollConfig.from_params(SUSPEND, adaptive_us=WINDOW)
            stats = serve_rr("127.0.0.1", 0, "fast", config, ready=on_ready, stop=stop)
        elif kind == "fast-spin":
            config = BusyPollConfig(hot_spin_us=50)
            stats = serve_rr("127.0.0.1", 0, "fast", config, ready=on_ready, stop=stop)
        else:
            stats = serve_rr(
                "127.0.0.1", 0, "threads", sock_busy_poll_us=50, ready=on_ready, stop=stop
            )
        result.append(stats)

    thread = threading.Thread(target=serve)
    thread.start()
    assert ready.wait(10), "fast rr server did not start"
    yield addr[0]
    stop.set()
    thread.join(10)
    assert not thread.is_alive(), f"{kind} rr server did not stop on its stop event"
    assert result and result[0].connections >= 1
    assert result[0].replies >= 1 and result[0].messages >= result[0].replies


@pytest.mark.kernel
def test_fast_rr_server_answers_sockperf_framing(
    fast_server: tuple[str, int],
) -> None:
    addr = fast_server
    with socket.create_connection(addr, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for seq in range(200):  # ping-pong: CLIENT|PONG_REQUEST, answered with CLIENT cleared
            sock.sendall(_message(seq, 0x3))
            assert sock.recv(64) == _message(seq, 0x2)
        # Several messages in one write, one split across writes, one without PONG_REQUEST
        # (consumed silently) and a bigger one.
        batch = _message(1000, 0x3) + _message(1001, 0x1) + _message(1002, 0x3, 100)
        sock.sendall(batch[:20])
        time.sleep(0.01)
        sock.sendall(batch[20:])
        want = _message(1000, 0x2) + _message(1002, 0x2, 100)
        got = b""
        while len(got) < len(want):
            got += sock.recv(4096)
        assert got == want


@pytest.mark.kernel
def test_fast_rr_server_drops_a_peer_that_is_not_sockperf(
    fast_server: tuple[str, int],
) -> None:
    addr = fast_server
    with socket.create_connection(addr, timeout=5) as sock:
        sock.sendall(struct.pack(">QHI", 1, 3, 5))  # total length below the header size
        assert sock.recv(64) == b""  # closed by the server
    with socket.create_connection(addr, timeout=5) as sock:  # still serving others
        sock.sendall(_message(7, 0x3))
        assert sock.recv(64) == _message(7, 0x2)


def test_rr_loop_kinds_and_default_window() -> None:
    for kind in ("fast", "threads"):
        with pytest.raises(RequestError, match="not an asyncio loop"):
            make_loop(kind)
    with pytest.raises(RequestError, match="no epoll"):
        serve_rr("127.0.0.1", 0, "threads", BusyPollConfig.from_params(SUSPEND))
    with pytest.raises(RequestError, match="adaptive_us"):
        make_loop("asyncio", BusyPollConfig(adaptive_us=50))
    with pytest.raises(RequestError, match="adaptive_us > 0"):
        serve_rr("127.0.0.1", 0, "netdevkit", BusyPollConfig(hybrid=True))
    with pytest.raises(RequestError, match="hybrid"):
        serve_rr("127.0.0.1", 0, "uvloop", BusyPollConfig(hybrid=True))
    suspend = params_from_preset("suspend")
    assert default_adaptive_us("netdevkit", suspend) == DEFAULT_ADAPTIVE_US
    assert default_adaptive_us("fast", suspend) == DEFAULT_ADAPTIVE_US
    assert default_adaptive_us("asyncio", suspend) == 0
    assert default_adaptive_us("uvloop", suspend) == 0
    assert default_adaptive_us("netdevkit", params_from_preset("fullbusy")) == 0
    assert default_adaptive_us("netdevkit", None) == 0


# -- BusyPollEventLoop's leaner iteration keeps asyncio's semantics ---------------------------


def _cross_removal(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Two readers ready in the same wait; whichever runs first removes the other."""
    a1, b1 = socket.socketpair()
    a2, b2 = socket.socketpair()
    calls: list[str] = []
    try:

        def make(name: str, own: socket.socket, other: socket.socket) -> None:
            def callback() -> None:
                own.recv(16)
                calls.append(name)
                loop.remove_reader(other.fileno())  # cancels a handle found in this wait
                loop.call_soon(calls.append, "soon")  # the next iteration, as in asyncio
                loop.call_soon(loop.stop)

            loop.add_reader(own.fileno(), callback)

        make("first", b1, b2)
        make("second", b2, b1)
        a1.send(b"x")
        a2.send(b"x")
        loop.run_forever()  # no timers, nothing ready: netdevkit's lean iteration
        return calls
    finally:
        loop.close()
        for s in (a1, b1, a2, b2):
            s.close()


@pytest.mark.kernel
def test_loop_iteration_runs_callbacks_like_stock_asyncio() -> None:
    stock = _cross_removal(asyncio.SelectorEventLoop())
    ours = _cross_removal(BusyPollEventLoop())
    assert len(stock) == 2 and stock[1] == "soon"  # the removed reader never ran
    assert len(ours) == 2 and ours[1] == "soon"


@pytest.mark.kernel
def test_loop_iteration_keeps_handles_not_run_when_a_callback_interrupts() -> None:
    loop = BusyPollEventLoop()
    a1, b1 = socket.socketpair()
    a2, b2 = socket.socketpair()
    calls: list[int] = []
    try:

        def reader(fd: int) -> None:
            loop.remove_reader(fd)
            calls.append(fd)
            if len(calls) == 1:
                raise KeyboardInterrupt

        loop.add_reader(b1.fileno(), reader, b1.fileno())
        loop.add_reader(b2.fileno(), reader, b2.fileno())
        a1.send(b"x")
        a2.send(b"x")
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
        assert len(calls) == 1
        loop.call_soon(loop.stop)
        loop.run_forever()  # the other handle was kept and runs now
        assert sorted(calls) == sorted([b1.fileno(), b2.fileno()])
    finally:
        loop.close()
        for s in (a1, b1, a2, b2):
            s.close()


# -- the asyncio loop's hot-socket spin ---------------------------------------------------------

_PING_CLIENT = """
import socket, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for i in range(int(sys.argv[2])):
    msg = b"ping %06d" % i
    sock.sendall(msg)
    got = b""
    while len(got) < len(msg):
        got += sock.recv(64)
    assert got == msg, (got, msg)
sock.close()
"""


class _Echo(asyncio.Protocol):
    """A stock asyncio echo protocol; counts its calls."""

    def __init__(self, seen: list[bytes], done: asyncio.Future[None], busy_poll: list[int]) -> None:
        self.seen = seen
        self.done = done
        self.busy_poll = busy_poll
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        # What the loop set on the socket it made the transport for.
        self.busy_poll.append(get_busy_poll(transport.get_extra_info("socket").fileno()))

    def data_received(self, data: bytes) -> None:
        self.seen.append(data)
        assert self.transport is not None
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


@pytest.mark.kernel
def test_asyncio_loop_hot_spin_serves_a_stock_protocol_from_its_peeks() -> None:
    rounds = 200
    # Spins until the peer is done.
    loop = BusyPollEventLoop(BusyPollConfig(hot_spin_us=1_000_000))
    seen: list[bytes] = []
    busy_poll: list[int] = []

    async def main() -> None:
        done = loop.create_future()
        server = await loop.create_server(lambda: _Echo(seen, done, busy_poll), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PING_CLIENT, str(port), str(rounds)
        )
        await done
        assert await client.wait() == 0
        server.close()
        await server.wait_closed()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    # Every request was seen once, whole, and no read callback ran on an empty socket.
    assert b"".join(seen) == b"".join(b"ping %06d" % i for i in range(rounds))
    # One connection; SO_BUSY_POLL = hot_spin_us: each nonblocking read polls its NAPI.
    assert busy_poll == [1_000_000]
    assert loop.hot_busy_poll_refused == 0
    # The first request came through epoll_wait; the spin that followed caught most of the
    # rest (a spin also ends when another fd, here the child's pipes, is ready) and the EOF.
    # A hit is a read callback run because a peek found data: at most one per request + EOF.
    assert loop.hot_spins >= 1
    assert rounds // 2 <= loop.hot_hits <= rounds + 1


def test_hot_spin_is_validated() -> None:
    with pytest.raises(RequestError, match="hot_spin_us"):
        BusyPollConfig(hot_spin_us=-5)
    with pytest.raises(RequestError, match="hot_spin_us"):
        BusyPollConfig(hot_spin_us=True)
    with pytest.raises(RequestError, match="hot_spin_us"):
        make_loop("asyncio", BusyPollConfig(hot_spin_us=50))
    with pytest.raises(RequestError, match="hot_spin_us"):
        serve_rr("127.0.0.1", 0, "fast", BusyPollConfig(hot_spin_us=-1))
