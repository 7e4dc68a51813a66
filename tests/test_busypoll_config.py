"""Tests of :class:`BusyPollConfig`: its validation rules, and every entry point taking it.

Tiers: the rules without a kernel call (each exclusion, each bad type and range, property
tests over arbitrary values); then the real kernel (Linux >= 6.9 epoll ioctls): each entry
point applies the config's epoll parameters to its epoll context, read back with
``EPIOCGPARAMS``, and refuses the loop knobs it cannot honour before anything is created.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import socket
import subprocess
from typing import Any

import pytest
from conftest import run_without_cap_net_admin
from hypothesis import given
from hypothesis import strategies as st

from netdevkit.attach import AttachWatcher, attach, detach
from netdevkit.busypoll import (
    BusyPollConfig,
    BusyPollEventLoop,
    BusyPollSelector,
    EpollParams,
    FastLoop,
    apply_to_loop,
    apply_to_running_loop,
    get_params,
    loop_factory,
)
from netdevkit.busypoll.config import LOOP_KNOBS
from netdevkit.dispatch import NapiDispatcher
from netdevkit.errors import RequestError
from netdevkit.tuning.presets import PRESETS

S32_MAX = 2**31 - 1
SUSPEND = BusyPollConfig(0, 64, True)
ADAPTIVE = dataclasses.replace(SUSPEND, adaptive_us=50)
HYBRID = dataclasses.replace(ADAPTIVE, hybrid=True)
HOT = BusyPollConfig(hot_spin_us=50)

# -- the rules: no kernel ---------------------------------------------------------------------


def test_default_is_the_kernel_default() -> None:
    config = BusyPollConfig()
    assert config.params == EpollParams(0, 0, False)
    assert not config.enabled and config.loop_knobs == {}
    assert ADAPTIVE.params == EpollParams(0, 64, True) and ADAPTIVE.enabled
    assert HYBRID.loop_knobs == {"adaptive_us": 50, "hybrid": True}
    assert BusyPollConfig.from_params(EpollParams(5, 8, True), hot_spin_us=3) == BusyPollConfig(
        5, 8, True, hot_spin_us=3
    )


def test_prefer_is_stored_as_a_bool() -> None:
    config = BusyPollConfig(prefer_busy_poll=1)  # type: ignore[arg-type]
    assert config.prefer_busy_poll is True
    assert config == BusyPollConfig(prefer_busy_poll=True)


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"hybrid": True}, "hybrid=True needs the adaptive window"),
        ({"hot_spin_us": 50, "adaptive_us": 50}, "hot_spin_us=50 excludes adaptive_us and hybrid"),
        (
            {"hot_spin_us": 50, "adaptive_us": 50, "hybrid": True},
            "hot_spin_us=50 excludes adaptive_us and hybrid",
        ),
    ],
)
def test_exclusion_rules(knobs: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError, match=message):
        BusyPollConfig(**knobs)
    # The same rule holds for a change to a valid config.
    with pytest.raises(RequestError, match=message):
        dataclasses.replace(BusyPollConfig(0, 64, True), **knobs)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("busy_poll_usecs", -1, "busy_poll_usecs=-1 is out of range: must be 0..2147483647"),
        ("busy_poll_usecs", S32_MAX + 1, "busy_poll_usecs=2147483648 is out of range"),
        ("busy_poll_usecs", 1.5, "busy_poll_usecs must be an int, got float 1.5"),
        ("busy_poll_usecs", True, "busy_poll_usecs must be an int, got bool True"),
        ("busy_poll_budget", 65536, "busy_poll_budget=65536 is out of range: must be 0..65535"),
        ("busy_poll_budget", "64", "busy_poll_budget must be an int, got str '64'"),
        ("prefer_busy_poll", 2, "prefer_busy_poll=2 is out of range: must be 0/1 or a bool"),
        ("prefer_busy_poll", "yes", "prefer_busy_poll='yes' is out of range"),
        ("adaptive_us", -5, "adaptive_us=-5 is out of range"),
        ("adaptive_us", S32_MAX + 1, "adaptive_us=2147483648 is out of range"),
        ("adaptive_us", 50.0, "adaptive_us must be an int, got float"),
        ("hybrid", 1, "hybrid must be a bool, got int"),
        ("hot_spin_us", -1, "hot_spin_us=-1 is out of range"),
        ("hot_spin_us", None, "hot_spin_us must be an int, got NoneType"),
    ],
)
def test_bad_values_name_the_knob(field: str, value: object, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        BusyPollConfig(**{field: value})  # type: ignore[arg-type]


def test_an_entry_point_refuses_anything_but_a_config() -> None:
    with pytest.raises(RequestError, match=r"config must be a BusyPollConfig \(BusyPollSelector"):
        BusyPollSelector(EpollParams(0, 64, True))  # type: ignore[arg-type]
    with pytest.raises(RequestError, match=r"config must be a BusyPollConfig \(FastLoop.*got dict"):
        FastLoop({"busy_poll_usecs": 5})  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="params must be an EpollParams"):
        BusyPollConfig.from_params(SUSPEND)  # type: ignore[arg-type]


_ints = st.one_of(st.integers(-(2**40), 2**40), st.booleans(), st.none(), st.floats())


@given(
    usecs=_ints,
    budget=_ints,
    prefer=st.one_of(st.booleans(), st.integers(-2, 3)),
    adaptive=_ints,
    hybrid=st.one_of(st.booleans(), st.integers(0, 1)),
    hot=_ints,
)
def test_any_values_make_a_valid_config_or_a_request_error(
    usecs: object, budget: object, prefer: object, adaptive: object, hybrid: object, hot: object
) -> None:
    try:
        config = BusyPollConfig(usecs, budget, prefer, adaptive, hybrid, hot)  # type: ignore[arg-type]
    except RequestError as err:
        assert str(err)  # a message, and nothing but RequestError
        return
    # What was accepted obeys every rule.
    for value, high in ((config.busy_poll_usecs, S32_MAX), (config.busy_poll_budget, 65535)):
        assert type(value) is int and 0 <= value <= high
    assert type(config.adaptive_us) is int and 0 <= config.adaptive_us <= S32_MAX
    assert type(config.hot_spin_us) is int and 0 <= config.hot_spin_us <= S32_MAX
    assert type(config.prefer_busy_poll) is bool and type(config.hybrid) is bool
    assert not config.hybrid or config.adaptive_us > 0
    assert not config.hot_spin_us or not (config.adaptive_us or config.hybrid)
    assert EpollParams.unpack(config.params.pack()) == config.params


@given(
    st.integers(0, S32_MAX),
    st.integers(0, 65535),
    st.booleans(),
    st.sampled_from(
        [{}, {"adaptive_us": 50}, {"adaptive_us": 50, "hybrid": True}, {"hot_spin_us": 9}]
    ),
)
def test_params_round_trip(usecs: int, budget: int, prefer: bool, knobs: dict[str, Any]) -> None:
    config = BusyPollConfig(usecs, budget, prefer, **knobs)
    assert BusyPollConfig.from_params(config.params, **knobs) == config
    assert config.loop_knobs == knobs


def test_presets_hold_configs_that_attach_can_apply() -> None:
    for preset in PRESETS.values():
        assert isinstance(preset.epoll, BusyPollConfig)
        assert preset.epoll.loop_knobs == {}  # the epoll half only
        preset.epoll.check_knobs("attach")  # what `netdevkit attach --preset` relies on
    assert PRESETS["suspend"].epoll == SUSPEND
    assert PRESETS["fullbusy"].epoll == BusyPollConfig(1000, 64, True)


@pytest.mark.parametrize("knob", LOOP_KNOBS)
def test_knobs_an_entry_point_cannot_honour_are_refused(knob: str) -> None:
    config = HOT if knob == "hot_spin_us" else (HYBRID if knob == "hybrid" else ADAPTIVE)
    with pytest.raises(RequestError, match=rf"attach cannot apply .*{knob}="):
        config.check_knobs("attach")
    config.check_knobs("FastLoop", LOOP_KNOBS)  # honours all


@pytest.fixture
def no_ioctl(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def fake_ioctl(*args: Any) -> bytes:
        calls.append(args)
        raise AssertionError("an ioctl was made")

    monkeypatch.setattr(fcntl, "ioctl", fake_ioctl)
    return calls


def _open_fds() -> set[str]:
    return {
        os.readlink(f"/proc/self/fd/{n}")
        for n in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{n}")
    }


def test_refused_knobs_change_nothing(no_ioctl: list[tuple[Any, ...]]) -> None:
    before = _open_fds()
    with pytest.raises(RequestError, match="BusyPollSelector cannot apply hot_spin_us=50"):
        BusyPollSelector(HOT)
    with pytest.raises(RequestError, match="attach cannot apply adaptive_us=50"):
        attach(os.getpid(), ADAPTIVE)
    with pytest.raises(RequestError, match="AttachWatcher cannot apply hot_spin_us=50"):
        AttachWatcher(os.getpid(), HOT)
    loop = asyncio.SelectorEventLoop()
    try:
        with pytest.raises(RequestError, match="apply_to_loop cannot apply adaptive_us=50"):
            apply_to_loop(loop, ADAPTIVE)
        with pytest.raises(RequestError, match="apply_to_running_loop cannot apply hot_spin_us"):
            loop.run_until_complete(apply_to_running_loop(HOT))
    finally:
        loop.close()
    assert no_ioctl == []
    assert _open_fds() == before  # no epoll, pidfd or timerfd left behind


# -- every entry point on the real kernel ---------------------------------------------------


@pytest.mark.kernel
def test_selector_and_fastloop_apply_the_config() -> None:
    for config in (SUSPEND, ADAPTIVE, HOT):
        if "hot_spin_us" not in config.loop_knobs:
            with BusyPollSelector(config) as sel:
                assert get_params(sel.fileno()) == config.params and sel.config == config
        with FastLoop(config) as fast:
            assert get_params(fast.fileno()) == config.params and fast.config == config


@pytest.mark.kernel
def test_asyncio_loops_apply_the_config() -> None:
    loop = BusyPollEventLoop(ADAPTIVE)
    try:
        assert get_params(loop.selector.fileno()) == SUSPEND.params
        assert loop.config == ADAPTIVE and loop.selector.adaptive_us == 50
    finally:
        loop.close()
    made = loop_factory(HOT)()
    try:
        assert made.config == HOT and get_params(made.selector.fileno()) == EpollParams()
    finally:
        made.close()
    stock = asyncio.SelectorEventLoop()
    try:
        assert apply_to_loop(stock, SUSPEND) == [SUSPEND.params]
        assert stock.run_until_complete(apply_to_running_loop(SUSPEND)) == [SUSPEND.params]
    finally:
        stock.close()


async def _loop_config(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, BusyPollEventLoop)
    params = get_params(loop.selector.fileno())
    writer.write(json.dumps([loop.config.adaptive_us, *dataclasses.astuple(params)]).encode())
    await writer.drain()


@pytest.mark.kernel
def test_dispatcher_workers_run_the_config() -> None:
    with NapiDispatcher(_loop_config, ADAPTIVE) as d:
        host, port = d.start("127.0.0.1", 0)
        with socket.create_connection((host, port), timeout=5) as sock:
            answer = json.loads(sock.recv(256))
    # The worker's loop carries the window (idle: the preset's own parameters).
    assert answer[0] == 50
    assert tuple(answer[1:]) in ((0, 64, True), (50, 64, True))


def test_attach_applies_a_preset_config(epoll_target: subprocess.Popen[str]) -> None:
    result = attach(epoll_target.pid, PRESETS["suspend"].epoll)
    assert [c.new for c in result.contexts] == [SUSPEND.params]
    assert result.params == SUSPEND.params
    assert len(detach(result).restored) == 1


def test_fastloop_opens_nothing_when_refused() -> None:
    before = _open_fds()
    with pytest.raises(RequestError, match="max_events"):
        FastLoop(SUSPEND, max_events=0)
    assert _open_fds() == before


_NO_CAP_CHILD = """
import asyncio, os
from netdevkit.busypoll import BusyPollConfig, BusyPollEventLoop, BusyPollSelector, FastLoop
from netdevkit.busypoll import loop_factory
from netdevkit.dispatch import NapiDispatcher
from netdevkit.errors import PermissionDenied
config = BusyPollConfig(0, 100, True, adaptive_us=50)  # budget above 64
async def handler(reader, writer): pass
before = sorted(os.listdir("/proc/self/fd"))
for name, make in [("BusyPollSelector", BusyPollSelector), ("BusyPollEventLoop", BusyPollEventLoop),
                   ("loop_factory", loop_factory), ("FastLoop", FastLoop),
                   ("NapiDispatcher", lambda c: NapiDispatcher(handler, c))]:
    try:
        make(config)
        print(name, "allowed")
    except PermissionDenied as err:
        print(name, err.capability)
print("fds unchanged", sorted(os.listdir("/proc/self/fd")) == before)
"""


@pytest.mark.kernel
def test_budget_above_64_without_cap_net_admin_is_refused_by_every_loop() -> None:
    out = run_without_cap_net_admin(_NO_CAP_CHILD)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "BusyPollSelector CAP_NET_ADMIN",
        "BusyPollEventLoop CAP_NET_ADMIN",
        "loop_factory CAP_NET_ADMIN",
        "FastLoop CAP_NET_ADMIN",
        "NapiDispatcher CAP_NET_ADMIN",
        "fds unchanged True",
    ]
