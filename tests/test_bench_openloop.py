"""The spinning open-loop generator (netdevkit.bench.loadgen.openloop): its pure parts, then
real servers on loopback (the bench's FastLoop echo, Debian's memcached and redis)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import free_port

from netdevkit.bench.loadgen import openloop
from netdevkit.bench.loadgen.openloop import PROTOCOLS, LoadSpec, client_limits, percentiles
from netdevkit.errors import RequestError, ToolError


def test_percentiles_nearest_rank() -> None:
    ns = [x * 1000 for x in range(1, 101)]  # 1..100 us
    assert percentiles(ns, (50, 99, 100)) == [50.0, 99.0, 100.0]
    assert percentiles([], (50,)) == [0.0]


# target, sent/s, lag p50, lag p99, busy share -> why the generator is the limit
LIMITS: list[tuple[tuple[float, float, float, float, float], list[str]]] = [
    ((1000, 1000, 1, 10, 0.2), []),
    ((1000, 940, 1, 10, 0.2), ["sent 940/s of 1000/s"]),
    ((1000, 1000, 25, 10, 0.2), ["median send lag 25 us"]),
    ((1000, 1000, 1, 250, 0.2), ["p99 send lag 250 us"]),
    ((1000, 1000, 1, 10, 0.95), ["generator busy 95% of its time"]),
]


@pytest.mark.parametrize(("args", "want"), LIMITS)
def test_client_limits(args: tuple[float, float, float, float, float], want: list[str]) -> None:
    assert client_limits(*args) == want


def test_protocols_have_fixed_size_answers() -> None:
    sp = PROTOCOLS["sockperf"]
    # sockperf framing: seq, flags CLIENT|PONG_REQUEST, length 14; the answer clears CLIENT
    assert len(sp.request) == 14 and sp.request[9] == 0x3 and sp.reply[9] == 0x2
    assert PROTOCOLS["memcached"].request == b"get ndkload\r\n"
    assert PROTOCOLS["resp"].reply == b"$32\r\n" + b"n" * 32 + b"\r\n"
    with pytest.raises(ToolError, match="is it a memcached server"):
        PROTOCOLS["memcached"].check(b"ERROR\r\n")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"protocol": "http"}, "protocol 'http'"),
        ({"rate": -1}, "rate -1"),
        ({"connections": 0}, "connections 0"),
        ({"rate": 0, "connections": 2}, "ping-pong"),
        ({"duration": 0}, "duration 0"),
    ],
)
def test_spec_checks(kw: dict[str, object], match: str) -> None:
    with pytest.raises(RequestError, match=match):
        LoadSpec("127.0.0.1", 1, **kw)  # type: ignore[arg-type]


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """A real server on loopback for the protocol named by the test's parameter."""
    protocol = request.param
    port = free_port()
    if protocol == "sockperf":
        argv = [sys.executable, "-m", "netdevkit.bench.servers.rr", "--loop", "fast"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
    elif protocol == "memcached":
        exe = shutil.which("memcached")
        if exe is None:
            pytest.skip("needs Debian's memcached package")
        argv = [exe, "-u", "nobody", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1"]
    else:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("needs Debian's redis-server package")
        argv = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        argv += ["--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        yield protocol, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("server", ["sockperf", "memcached", "resp"], indirect=True)
def test_open_loop_against_a_real_server(server: tuple[str, int]) -> None:
    protocol, port = server
    marks: list[str] = []
    spec = LoadSpec("127.0.0.1", port, protocol, 2000, 0.5, 4, warmup=0.1)
    rep = openloop.run(spec, marks.append)
    assert marks == ["start", "end"]
    # every request of the window answered, and counted once
    assert rep.count == 1000 and rep.timeouts == 0
    assert rep.achieved_rate == pytest.approx(2000, rel=0.01)
    assert 0 < rep.p50 <= rep.p90 <= rep.p99 <= rep.p999 <= rep.max
    assert rep.half_rtt is (protocol == "sockperf")
    assert rep.connections == 4 and 0 <= rep.busy_share <= 1


@pytest.mark.parametrize("server", ["sockperf", "memcached"], indirect=True)
def test_ping_pong(server: tuple[str, int]) -> None:
    protocol, port = server
    rep = openloop.run(LoadSpec("127.0.0.1", port, protocol, 0, 0.3, 1, warmup=0.05))
    assert rep.count > 100 and rep.achieved_rate > 300
    assert not rep.client_limited


@pytest.mark.parametrize("server", ["memcached"], indirect=True)
def test_wrong_protocol_is_one_line(server: tuple[str, int]) -> None:
    _protocol, port = server
    with pytest.raises(ToolError, match="is it a resp server"):
        openloop.run(LoadSpec("127.0.0.1", port, "resp", 1000, 0.2, 1, warmup=0.05))


@pytest.mark.parametrize("server", ["sockperf"], indirect=True)
def test_command_line_json_and_markers(server: tuple[str, int]) -> None:
    _protocol, port = server
    argv = [sys.executable, "-m", "netdevkit.bench.loadgen.openloop", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--rate", "1000", "--duration", "0.3", "-j", "--markers"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0] == "openloop: window start" and lines[1] == "openloop: window end"
    rep = json.loads(lines[-1])
    assert rep["count"] == 300 and rep["protocol"] == "sockperf"


def test_command_line_bad_input_is_one_line() -> None:
    argv = [sys.executable, "-m", "netdevkit.bench.loadgen.openloop", "--host", "127.0.0.1"]
    cp = subprocess.run(
        [*argv, "--port", "1", "--protocol", "nope"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cp.returncode == 2 and cp.stderr.count("\n") == 1 and "protocol 'nope'" in cp.stderr
    cp = subprocess.run(
        [*argv, "--port", str(free_port())], check=False, capture_output=True, text=True
    )
    assert cp.returncode == 1 and cp.stderr.count("\n") == 1 and "connect" in cp.stderr


def test_an_answer_split_across_reads_is_checked_and_counted_once() -> None:
    """A server that sends every answer in two pieces, the second 2 ms later."""
    import threading

    proto = PROTOCOLS["memcached"]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            got = b""
            while len(got) < len(proto.setup):
                got += conn.recv(4096)
            conn.sendall(proto.setup_reply)
            pending = b""
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                pending += data
                while len(pending) >= len(proto.request):
                    pending = pending[len(proto.request) :]
                    conn.sendall(proto.reply[:5])
                    time.sleep(0.002)
                    conn.sendall(proto.reply[5:])

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        rep = openloop.run(LoadSpec("127.0.0.1", port, "memcached", 100, 0.3, 1, warmup=0.0))
    finally:
        listener.close()
    assert rep.count == 30 and rep.timeouts == 0
    assert rep.p50 >= 2000  # every answer waited for its second piece
