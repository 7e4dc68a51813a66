"""netdevkit.integrations without a server: names, the environment variable, uvicorn's version."""

from __future__ import annotations

import subprocess
import sys

import pytest

from netdevkit.busypoll.config import BusyPollConfig
from netdevkit.errors import RequestError, UnsupportedError
from netdevkit.integrations import MODES, config_named, parse_config
from netdevkit.integrations.uvicorn import loop_named, require_custom_loops
from netdevkit.tuning.presets import PRESETS


def test_every_preset_and_mode_has_a_uvicorn_loop_function() -> None:
    import netdevkit.integrations.uvicorn as uv

    for name in [*PRESETS, *MODES]:
        module, _, function = loop_named(name).partition(":")
        assert module == "netdevkit.integrations.uvicorn"
        assert callable(getattr(uv, function)), name


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("suspend", BusyPollConfig(0, 64, True)),
        ("suspend,adaptive_us=30", BusyPollConfig(0, 64, True, adaptive_us=30)),
        ("busy_poll_usecs=50,prefer_busy_poll=on", BusyPollConfig(50, 0, True)),
        ("hybrid", BusyPollConfig(0, 64, True, adaptive_us=50, hybrid=True)),
        ("adaptive_window", BusyPollConfig(0, 64, True, adaptive_us=50)),
    ],
)
def test_parse_config(text: str, want: BusyPollConfig) -> None:
    assert parse_config(text) == want


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("suspnd", "did you mean 'suspend'?"),
        ("suspend,usecs=5", "expected key=value with key one of busy_poll_usecs"),
        ("busy_poll_usecs=x", "busy_poll_usecs='x': must be an integer"),
        ("hot_spin_us=50,adaptive_us=50", "hot_spin_us"),
        ("", "empty"),
    ],
)
def test_bad_config_names_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(RequestError, match=says):
        parse_config(text)


def test_config_named_refuses_unknown_names() -> None:
    with pytest.raises(RequestError, match="known: base"):
        config_named("turbo")


def test_uvicorn_older_than_0_36_is_refused_in_one_sentence() -> None:
    with pytest.raises(
        UnsupportedError, match=r"uvicorn 0\.35\.0 cannot run a custom event loop \(a loop given as"
    ):
        require_custom_loops("0.35.0")
    assert require_custom_loops("0.36.0") == "0.36.0"


def test_uvicorn_launcher_bad_name_is_one_line_and_exit_2() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "netdevkit.integrations.uvicorn", "turbo", "app:app"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("netdevkit: unknown busy-poll")


def test_queue_program_recorded_queue_is_stored_plus_one() -> None:
    from netdevkit.integrations.reuseport import queue_program

    # ld [SKF_AD_OFF + SKF_AD_QUEUE]; jeq #0 -> ret #4; sub #1; mod #4; ret a
    assert queue_program(4) == [
        (0x20, 0, 0, 0xFFFFF018),
        (0x15, 3, 0, 0),
        (0x14, 0, 0, 1),
        (0x94, 0, 0, 4),
        (0x16, 0, 0, 0),
        (0x06, 0, 0, 4),
    ]
    assert queue_program(2, raw_queue=True) == [
        (0x20, 0, 0, 0xFFFFF018),
        (0x94, 0, 0, 2),
        (0x16, 0, 0, 0),
    ]


@pytest.mark.parametrize("workers", [0, 65536, True])
def test_queue_program_refuses_bad_worker_counts(workers: int) -> None:
    from netdevkit.integrations.reuseport import queue_program

    with pytest.raises(RequestError):
        queue_program(workers)


def test_kernel_accepts_the_queue_program_on_a_reuseport_group() -> None:
    from netdevkit.integrations.reuseport import listeners

    socks = listeners("127.0.0.1", 0, 1)
    try:
        assert socks[0].getsockname()[1] > 0
    finally:
        for s in socks:
            s.close()


def test_listeners_hand_accepted_sockets_tcp_nodelay() -> None:
    """uvicorn --fd wraps the fd as AF_UNIX and so never sets TCP_NODELAY itself: without
    it on the listener (accepted sockets inherit it), Nagle plus delayed ACKs held each
    response ~40 ms."""
    import socket

    from netdevkit.integrations.reuseport import listeners

    (listener,) = listeners("127.0.0.1", 0, 1)
    with listener, socket.create_connection(listener.getsockname()[:2]) as client:
        conn, _ = listener.accept()
        with conn:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert client.fileno() >= 0


def test_uvicorn_launcher_checks_the_environment_before_uvicorn_starts() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "netdevkit.integrations.uvicorn", "env", "app:app"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={"NETDEVKIT_BUSYPOLL": "busy_poll_usecs=-1", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 2
    assert run.stderr == (
        "netdevkit: NETDEVKIT_BUSYPOLL: busy_poll_usecs=-1 is out of range: must be 0..2147483647\n"
    )
