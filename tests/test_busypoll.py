"""Tests of netdevkit.busypoll: epoll parameters, socket options, selector, asyncio loops.

Tiers: the struct codec and the validation rules without a kernel call; then the real
kernel (Linux >= 6.9 for the epoll ioctls; root for budgets above 64, SO_PREFER_BUSY_POLL,
dropping to an unprivileged uid, and the veth testbed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import os
import select
import selectors
import socket
import struct
import textwrap
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from conftest import run_without_cap_net_admin
from hypothesis import given
from hypothesis import strategies as st

from netdevkit import busypoll
from netdevkit.busypoll import (
    EPIOCGPARAMS,
    EPIOCSPARAMS,
    BusyPollConfig,
    BusyPollEventLoop,
    BusyPollSelector,
    EpollParams,
    apply_to_loop,
    apply_to_running_loop,
    epoll_fds_watching,
    get_params,
    loop_factory,
    set_params,
    sockopt,
    validate_params,
)
from netdevkit.errors import PermissionDenied, RequestError
from netdevkit.testbed import Testbed, socket_in_netns

T = TypeVar("T")

S32_MAX = 2**31 - 1
SUSPEND = EpollParams(busy_poll_usecs=0, busy_poll_budget=64, prefer_busy_poll=True)
FULLBUSY = EpollParams(busy_poll_usecs=64, busy_poll_budget=64, prefer_busy_poll=True)
# The same parameters as the configuration every entry point takes.
SUSPEND_CFG = BusyPollConfig.from_params(SUSPEND)
FULLBUSY_CFG = BusyPollConfig.from_params(FULLBUSY)

# -- codec and validation: no kernel --------------------------------------------------------


def test_ioctl_numbers_match_the_uapi_encoding() -> None:
    # _IOC(dir, type 0x8A, nr, size 8): dir write=1, read=2 at bit 30.
    def ioc(direction: int, nr: int) -> int:
        return direction << 30 | 8 << 16 | 0x8A << 8 | nr

    assert ioc(1, 1) == EPIOCSPARAMS == 0x40088A01
    assert ioc(2, 2) == EPIOCGPARAMS == 0x80088A02


@pytest.mark.parametrize(
    ("params", "raw"),
    [
        (EpollParams(), bytes(8)),
        (EpollParams(50, 8, False), b"\x32\x00\x00\x00\x08\x00\x00\x00"),
        (SUSPEND, b"\x00\x00\x00\x00\x40\x00\x01\x00"),
        (EpollParams(S32_MAX, 65535, True), b"\xff\xff\xff\x7f\xff\xff\x01\x00"),
    ],
)
def test_struct_epoll_params_both_directions(params: EpollParams, raw: bytes) -> None:
    assert params.pack() == raw
    assert EpollParams.unpack(raw) == params


@given(
    st.integers(0, S32_MAX),
    st.integers(0, 65535),
    st.booleans(),
)
def test_pack_unpack_round_trip(usecs: int, budget: int, prefer: bool) -> None:
    params = EpollParams(usecs, budget, prefer)
    assert EpollParams.unpack(params.pack()) == params


@given(st.binary(min_size=8, max_size=8))
def test_unpack_any_eight_bytes(raw: bytes) -> None:
    params = EpollParams.unpack(raw)
    assert params.busy_poll_usecs == struct.unpack_from("=I", raw)[0]
    assert isinstance(params.prefer_busy_poll, bool)


@pytest.fixture
def no_ioctl(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record (and refuse) every ioctl the epoll module would make."""
    calls: list[tuple[Any, ...]] = []

    def fake_ioctl(*args: Any) -> bytes:
        calls.append(args)
        raise AssertionError("an ioctl was made")

    monkeypatch.setattr(fcntl, "ioctl", fake_ioctl)  # epoll.py calls fcntl.ioctl
    return calls


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (EpollParams(busy_poll_usecs=S32_MAX + 1), "busy_poll_usecs"),
        (EpollParams(busy_poll_usecs=-1), "busy_poll_usecs"),
        (EpollParams(busy_poll_budget=70000), "busy_poll_budget"),
        (EpollParams(busy_poll_budget=-1), "busy_poll_budget"),
        (EpollParams(prefer_busy_poll=2), "prefer_busy_poll"),  # type: ignore[arg-type]
        (EpollParams(busy_poll_usecs=1.5), "busy_poll_usecs"),  # type: ignore[arg-type]
    ],
)
def test_bad_values_name_the_field_and_make_no_ioctl(
    params: EpollParams, field: str, no_ioctl: list[tuple[Any, ...]]
) -> None:
    with select.epoll() as ep, pytest.raises(RequestError, match=field):
        set_params(ep.fileno(), params)
    # The configuration refuses the same values before any entry point sees them.
    with pytest.raises(RequestError, match=field):
        BusyPollSelector(BusyPollConfig.from_params(params))
    with pytest.raises(RequestError, match=field):
        loop_factory(BusyPollConfig.from_params(params))
    assert no_ioctl == []


def test_budget_above_64_without_cap_net_admin(no_ioctl: list[tuple[Any, ...]]) -> None:
    params = EpollParams(busy_poll_budget=100)
    with pytest.raises(PermissionDenied, match="CAP_NET_ADMIN") as info:
        validate_params(params, has_cap_net_admin=False)
    assert info.value.errno == errno.EPERM
    assert info.value.capability == "CAP_NET_ADMIN"
    with select.epoll() as ep, pytest.raises(PermissionDenied, match="busy_poll_budget=100"):
        set_params(ep.fileno(), params, has_cap_net_admin=False)
    validate_params(EpollParams(busy_poll_budget=64), has_cap_net_admin=False)
    validate_params(params, has_cap_net_admin=True)
    assert no_ioctl == []


def test_public_names_are_exported() -> None:
    for name in busypoll.__all__:
        assert hasattr(busypoll, name), name


# -- epoll ioctls on the real kernel --------------------------------------------------------


@pytest.mark.kernel
def test_fresh_epoll_reads_back_zeroes() -> None:
    with select.epoll() as ep:
        assert get_params(ep.fileno()) == EpollParams(0, 0, False)


@pytest.mark.kernel
@pytest.mark.parametrize(
    "params",
    [
        EpollParams(50, 8, False),
        SUSPEND,
        FULLBUSY,
        EpollParams(S32_MAX, 65535, True),  # budget > 64: root
        EpollParams(0, 0, False),  # budget 0 (= kernel default 8) reads back as 0
    ],
)
def test_params_round_trip_on_a_fresh_epoll(params: EpollParams) -> None:
    with select.epoll() as ep:
        assert set_params(ep.fileno(), params) == params
        raw = fcntl.ioctl(ep.fileno(), EPIOCGPARAMS, bytes(8))
        assert EpollParams.unpack(raw) == params


@pytest.mark.kernel
def test_non_epoll_fd_is_a_request_error() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(RequestError, match=f"fd {r} is not an epoll fd"):
            get_params(r)
        with pytest.raises(RequestError, match=f"fd {w} is not an epoll fd"):
            set_params(w, SUSPEND)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.kernel
def test_closed_fd_is_a_request_error() -> None:
    ep = select.epoll()
    fd = ep.fileno()
    ep.close()
    with pytest.raises(RequestError, match="not an open file descriptor"):
        get_params(fd)


@pytest.mark.kernel
def test_kernel_agrees_with_the_validation() -> None:
    # The rules set_params mirrors, asked of the kernel directly.
    with select.epoll() as ep:
        for raw in (
            struct.pack("=IHBB", S32_MAX + 1, 0, 0, 0),
            struct.pack("=IHBB", 0, 0, 2, 0),
            struct.pack("=IHBB", 0, 0, 0, 1),  # __pad
        ):
            with pytest.raises(OSError) as info:
                fcntl.ioctl(ep.fileno(), EPIOCSPARAMS, raw)
            assert info.value.errno == errno.EINVAL
        assert get_params(ep.fileno()) == EpollParams()


_UNPRIVILEGED_CHILD = textwrap.dedent(
    """
    import errno, fcntl, os, select, socket, struct, sys
    from netdevkit.busypoll import (EpollParams, EPIOCSPARAMS, has_cap_net_admin,
        set_params, set_busy_poll, set_busy_poll_budget, set_prefer_busy_poll)
    from netdevkit.errors import PermissionDenied
    ep = select.epoll()
    print("cap", has_cap_net_admin())
    try:
        fcntl.ioctl(ep.fileno(), EPIOCSPARAMS, struct.pack("=IHBB", 0, 100, 0, 0))
    except OSError as err:
        print("raw", errno.errorcode[err.errno])
    print("ok64", set_params(ep.fileno(), EpollParams(0, 64, True)))
    for name, call in [
        ("epoll", lambda: set_params(ep.fileno(), EpollParams(0, 100, True))),
        ("prefer", lambda: set_prefer_busy_poll(socket.socket(), True)),
        ("budget", lambda: set_busy_poll_budget(socket.socket(), 8)),
    ]:
        try:
            call()
            print(name, "allowed")
        except PermissionDenied as err:
            print(name, err.capability, errno.errorcode[err.errno])
    s = socket.socket()
    print("busy_poll", set_busy_poll(s, 50), set_prefer_busy_poll(s, False))
    set_busy_poll_budget(s, 0)
    """
)


@pytest.mark.kernel
def test_process_without_cap_net_admin_gets_permission_denied() -> None:
    out = run_without_cap_net_admin(_UNPRIVILEGED_CHILD)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == [
        "cap False",
        "raw EPERM",  # the kernel's own answer to what the pre-check refuses
        "ok64 busy_poll_usecs=0 busy_poll_budget=64 prefer_busy_poll=1",  # str(EpollParams)
        "epoll CAP_NET_ADMIN EPERM",
        "prefer CAP_NET_ADMIN EPERM",
        "budget CAP_NET_ADMIN EPERM",
        "busy_poll 50 False",
    ]


# -- socket options -------------------------------------------------------------------------


@pytest.fixture
def loopback_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        try:
            yield client, conn
        finally:
            client.close()
            conn.close()


@pytest.mark.kernel
def test_socket_options_round_trip(loopback_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = loopback_pair
    assert sockopt.set_busy_poll(client, 50) == 50
    assert sockopt.get_busy_poll(client) == 50
    assert sockopt.set_prefer_busy_poll(client, True) is True
    assert sockopt.get_prefer_busy_poll(client) is True
    sockopt.set_busy_poll_budget(client, 100)  # root may raise it; no getsockopt exists
    state = sockopt.socket_busy_poll(client.fileno())  # a raw fd works too
    assert state == sockopt.SocketBusyPoll(busy_poll_usecs=50, prefer_busy_poll=True, napi_id=0)
    assert sockopt.set_prefer_busy_poll(client.fileno(), False) is False
    assert client.fileno() >= 0  # the fd wrapper did not close the caller's socket
    assert sockopt.set_busy_poll(client, 0) == 0


@pytest.mark.kernel
def test_socket_option_bad_values(loopback_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = loopback_pair
    with pytest.raises(RequestError, match="busy_poll_budget=70000"):
        sockopt.set_busy_poll_budget(client, 70000)
    with pytest.raises(RequestError, match="busy_poll_usecs=-1"):
        sockopt.set_busy_poll(client, -1)
    with pytest.raises(RequestError, match="prefer_busy_poll=2"):
        sockopt.set_prefer_busy_poll(client, 2)  # type: ignore[arg-type]
    r, w = os.pipe()
    try:
        with pytest.raises(RequestError, match="not a socket"):
            sockopt.get_busy_poll(r)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.kernel
def test_loopback_connection_has_napi_id_zero(
    loopback_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, conn = loopback_pair
    client.sendall(b"ping")
    assert conn.recv(4) == b"ping"
    conn.sendall(b"pong")
    assert client.recv(4) == b"pong"
    assert sockopt.get_incoming_napi_id(conn) == 0
    assert sockopt.get_incoming_napi_id(client) == 0


# -- the selector ---------------------------------------------------------------------------


@pytest.mark.kernel
def test_selector_applies_params_to_its_own_epoll() -> None:
    with BusyPollSelector(SUSPEND_CFG) as sel:
        assert isinstance(sel, selectors.BaseSelector)
        assert sel.params == SUSPEND
        assert get_params(sel.fileno()) == SUSPEND
        assert sel.set_params(FULLBUSY) == FULLBUSY
        assert sel.read_params() == FULLBUSY == sel.params
        assert sel.config == FULLBUSY_CFG  # the config in force follows set_params
    with BusyPollSelector() as sel:
        assert sel.params == EpollParams() == get_params(sel.fileno())


@pytest.mark.kernel
def test_selector_undoes_bookkeeping_when_epoll_ctl_fails() -> None:
    # epoll refuses regular files (EPERM): the key must not stay registered.
    with BusyPollSelector(SUSPEND_CFG) as sel, open(__file__, "rb") as regular:
        with pytest.raises(PermissionError):
            sel.register(regular, selectors.EVENT_READ)
        assert sel.get_map() is not None
        assert len(sel.get_map()) == 0
        with pytest.raises(KeyError):
            sel.get_key(regular)


@pytest.mark.kernel
@pytest.mark.parametrize("adaptive_us", [0, 200])
def test_selector_timeouts(adaptive_us: int) -> None:
    with BusyPollSelector(dataclasses.replace(SUSPEND_CFG, adaptive_us=adaptive_us)) as sel:
        start = time.monotonic()
        assert sel.select(0.0001) == []  # rounds up to 1 ms: waits at least the timeout
        assert time.monotonic() - start >= 0.0001
        assert sel.select(0) == []
        assert sel.select(-1) == []


@pytest.mark.kernel
@pytest.mark.parametrize("adaptive_us", [0, 500])
def test_selector_serves_a_tcp_echo(adaptive_us: int) -> None:
    rounds = 300
    with (
        BusyPollSelector(dataclasses.replace(SUSPEND_CFG, adaptive_us=adaptive_us)) as sel,
        socket.create_server(("127.0.0.1", 0)) as server,
    ):
        server.setblocking(False)
        sel.register(server, selectors.EVENT_READ, "accept")
        client = socket.create_connection(server.getsockname())
        try:
            echoed = 0
            for i in range(rounds):
                message = f"request {i:05d}".encode()
                client.sendall(message)
                got = b""
                while len(got) < len(message):
                    for key, _ in sel.select(timeout=5):
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        if key.data == "accept":
                            conn, _ = sock.accept()
                            conn.setblocking(False)
                            sel.register(conn, selectors.EVENT_READ, "echo")
                        else:
                            data = sock.recv(4096)
                            sock.sendall(data)
                    with contextlib.suppress(BlockingIOError):
                        got += client.recv(4096, socket.MSG_DONTWAIT)
                assert got == message
                echoed += 1
            assert echoed == rounds
            if adaptive_us:
                # Back-to-back requests: the window opened (usecs = adaptive_us).
                assert sel.adaptive_switches > 0
                assert sel.read_params() in (
                    SUSPEND,
                    dataclasses.replace(SUSPEND, busy_poll_usecs=adaptive_us),
                )
            else:
                assert sel.read_params() == SUSPEND
        finally:
            client.close()
            for key in list(sel.get_map().values()):
                if key.data == "echo":
                    sel.unregister(key.fileobj)
                    assert isinstance(key.fileobj, socket.socket)
                    key.fileobj.close()


# -- asyncio --------------------------------------------------------------------------------


async def _echo_round_trips(rounds: int) -> int:
    """A stock asyncio.start_server echo server and a client on the running loop."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        for i in range(rounds):
            message = f"round trip {i:05d}\n".encode()
            writer.write(message)
            await writer.drain()
            assert await reader.readexactly(len(message)) == message
            done += 1
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    return done


async def _params_seen_inside() -> tuple[EpollParams, list[EpollParams]]:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, BusyPollEventLoop)
    fd = loop.selector.fileno()
    # The probe finds the same epoll fd independently of the selector.
    probe, peer = socket.socketpair()
    try:
        loop.add_reader(probe.fileno(), lambda: None)
        assert epoll_fds_watching(probe.fileno()) == [fd]
        loop.remove_reader(probe.fileno())
    finally:
        probe.close()
        peer.close()
    return get_params(fd), await apply_to_running_loop(BusyPollConfig.from_params(loop.params))


@pytest.mark.kernel
def test_loop_factory_with_runner() -> None:
    config = dataclasses.replace(SUSPEND_CFG, hot_spin_us=100)
    with asyncio.Runner(loop_factory=loop_factory(config)) as runner:
        seen, probed = runner.run(_params_seen_inside())
        assert seen == SUSPEND
        assert probed == [SUSPEND]
        assert runner.run(_echo_round_trips(300)) == 300
        loop = runner.get_loop()
        assert isinstance(loop, BusyPollEventLoop)
        assert loop.config == config
        assert loop.set_params(FULLBUSY) == FULLBUSY
        assert get_params(loop.selector.fileno()) == FULLBUSY


# Not marked kernel: budgets <= 64 need no privileges. One fresh Runner per
# call is what asyncio.run(main, loop_factory=...) does on 3.12+; Runner takes
# loop_factory since 3.11, so this runs on CI's Python too.
def _run_fresh(main: Coroutine[Any, Any, T], factory: Callable[[], asyncio.AbstractEventLoop]) -> T:
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def test_loop_factory_with_a_fresh_runner_per_run() -> None:
    seen, probed = _run_fresh(_params_seen_inside(), loop_factory(FULLBUSY_CFG))
    assert (seen, probed) == (FULLBUSY, [FULLBUSY])
    assert _run_fresh(_echo_round_trips(300), loop_factory(SUSPEND_CFG)) == 300


@pytest.mark.kernel
def test_apply_to_stock_asyncio_loop() -> None:
    selector = selectors.EpollSelector()
    loop = asyncio.SelectorEventLoop(selector)
    try:
        fd = selector.fileno()
        assert apply_to_loop(loop, SUSPEND_CFG) == [SUSPEND]  # before it runs
        assert get_params(fd) == SUSPEND

        async def main() -> tuple[list[EpollParams], list[EpollParams], int]:
            applied = apply_to_loop(asyncio.get_running_loop(), FULLBUSY_CFG)  # while running
            probed = await apply_to_running_loop(FULLBUSY_CFG)
            return applied, probed, await _echo_round_trips(200)

        applied, probed, rounds = loop.run_until_complete(main())
        assert applied == probed == [FULLBUSY]
        assert get_params(fd) == FULLBUSY
        assert rounds == 200
    finally:
        loop.close()


@pytest.mark.kernel
def test_apply_to_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")
    loop = uvloop.new_event_loop()
    try:

        async def main() -> tuple[list[EpollParams], list[int], int]:
            running = asyncio.get_running_loop()
            applied = apply_to_loop(running, SUSPEND_CFG)
            # Find uvloop's epoll by the probe (registered fd in /proc/self/fdinfo), not by
            # the private _get_backend_id that apply_to_loop uses, and read back there.
            probe, peer = socket.socketpair()
            running.add_reader(probe.fileno(), lambda: None)
            await asyncio.sleep(0)
            fds = epoll_fds_watching(probe.fileno())
            running.remove_reader(probe.fileno())
            probe.close()
            peer.close()
            return applied, fds, await _echo_round_trips(200)

        applied, fds, rounds = loop.run_until_complete(main())
        assert applied == [SUSPEND]
        # uvloop has one epoll, the one watching its fds; it carries the parameters.
        assert len(fds) == 1
        assert get_params(fds[0]) == SUSPEND
        assert rounds == 200
        assert loop.run_until_complete(apply_to_running_loop(FULLBUSY_CFG)) == [FULLBUSY]
        assert get_params(fds[0]) == FULLBUSY
    finally:
        loop.close()


@pytest.mark.kernel
def test_apply_to_loop_refuses_non_epoll_selector() -> None:
    loop = asyncio.SelectorEventLoop(selectors.PollSelector())
    try:
        with pytest.raises(RequestError, match="PollSelector, not epoll"):
            apply_to_loop(loop, SUSPEND_CFG)
    finally:
        loop.close()
    with pytest.raises(RequestError, match="closed"):
        apply_to_loop(loop, SUSPEND_CFG)


# -- veth testbed with live NAPI ------------------------------------------------------------


@pytest.mark.kernel
def test_accepted_connection_over_veth_has_a_napi_id(testbed: Testbed) -> None:
    with socket_in_netns(testbed.server_ns) as server:
        server.bind((testbed.server_addr, 0))
        server.listen()
        server.settimeout(5)
        with socket_in_netns(testbed.client_ns) as client:
            client.settimeout(5)
            client.connect((testbed.server_addr, server.getsockname()[1]))
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                client.sendall(b"x" * 100)
                assert conn.recv(100) == b"x" * 100
                conn.sendall(b"y" * 100)
                assert client.recv(100) == b"y" * 100
                server_id = sockopt.get_incoming_napi_id(conn)
                client_id = sockopt.get_incoming_napi_id(client)
    assert server_id != 0
    assert client_id != 0
    assert server_id != client_id  # one NAPI per veth end


@pytest.mark.kernel
def test_apply_to_loop_keeps_a_busypoll_selector_in_step() -> None:
    selector = BusyPollSelector(SUSPEND_CFG)
    loop = asyncio.SelectorEventLoop(selector)
    try:
        assert apply_to_loop(loop, FULLBUSY_CFG) == [FULLBUSY]
        assert selector.params == FULLBUSY == get_params(selector.fileno())
    finally:
        loop.close()
