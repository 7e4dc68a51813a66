"""NapiDispatcher: connections go to the worker that owns their NAPI (real kernel, veth).

The handler answers with what it sees from inside its worker: the NAPI the worker owns
(``worker_napi_id()``), the socket's own SO_INCOMING_NAPI_ID, and its pid; the client checks
that the two ids agree and that id 0 (loopback) lands on the fallback worker.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from netdevkit.busypoll.config import BusyPollConfig
from netdevkit.busypoll.sockopt import get_incoming_napi_id
from netdevkit.dispatch import FALLBACK, NapiDispatcher, worker_napi_id
from netdevkit.errors import RequestError
from netdevkit.testbed import Testbed

SUSPEND = BusyPollConfig(0, 64, True)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces")


async def whoami(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one line: the worker's NAPI, the socket's NAPI, the worker's pid."""
    await reader.readline()
    sock = writer.get_extra_info("socket")
    answer = {"worker": worker_napi_id(), "socket": get_incoming_napi_id(sock.fileno())}
    answer["pid"] = os.getpid()
    writer.write(json.dumps(answer).encode() + b"\n")
    await writer.drain()


def ask(sock: socket.socket, addr: tuple[str, int]) -> dict[str, int]:
    sock.settimeout(5)
    sock.connect(addr)
    sock.sendall(b"who\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1000)
        assert chunk, "the dispatcher closed the connection without answering"
        data += chunk
    sock.close()
    answer: dict[str, int] = json.loads(data)
    return answer


@pytest.fixture
def dispatchers() -> Iterator[list[NapiDispatcher]]:
    made: list[NapiDispatcher] = []
    try:
        yield made
    finally:
        for d in made:
            d.stop()


def test_bad_arguments_are_refused_before_anything_starts() -> None:
    with pytest.raises(RequestError, match="mode"):
        NapiDispatcher(whoami, SUSPEND, "fiber")  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="busy_poll_usecs"):
        NapiDispatcher(whoami, BusyPollConfig(-5, 0, False))
    with pytest.raises(RequestError, match="max_workers"):
        NapiDispatcher(whoami, max_workers=0)


def test_loopback_connection_has_napi_id_0_and_goes_to_the_fallback(
    dispatchers: list[NapiDispatcher],
) -> None:
    d = NapiDispatcher(whoami, SUSPEND)
    dispatchers.append(d)
    addr = d.start("127.0.0.1", 0)
    answer = ask(socket.socket(), addr)
    assert answer == {"worker": FALLBACK, "socket": 0, "pid": os.getpid()}
    assert d.stats() == {0: 1}
    assert [(w.napi_id, w.connections) for w in d.workers()] == [(FALLBACK, 1)]


def test_reuse_port_lets_two_dispatchers_share_a_port(dispatchers: list[NapiDispatcher]) -> None:
    a, b = NapiDispatcher(whoami), NapiDispatcher(whoami)
    dispatchers += [a, b]
    host, port = a.start("127.0.0.1", 0, reuse_port=True)
    assert b.start(host, port, reuse_port=True) == (host, port)
    for _ in range(8):
        assert ask(socket.socket(), (host, port))["worker"] == FALLBACK
    assert sum(a.stats().values()) + sum(b.stats().values()) == 8


@needs_root
@pytest.mark.kernel
def test_veth_connection_goes_to_its_napis_worker(
    testbed: Testbed, dispatchers: list[NapiDispatcher]
) -> None:
    d = NapiDispatcher(whoami, SUSPEND)
    dispatchers.append(d)
    addr = d.start(testbed.server_addr, 0, netns=testbed.server_ns)
    answers = [ask(testbed.socket("client"), addr) for _ in range(3)]
    napi = answers[0]["socket"]
    assert napi != 0, "a connection over the NAPI veth testbed must carry a NAPI id"
    assert all(a["worker"] == a["socket"] == napi for a in answers)
    assert d.stats() == {napi: 3}
    assert d.routes() == {napi: napi}
    assert sorted(w.napi_id for w in d.workers()) == [FALLBACK, napi]


@needs_root
@pytest.mark.kernel
def test_process_workers_own_one_napi_each(
    testbed4: Testbed, dispatchers: list[NapiDispatcher]
) -> None:
    d = NapiDispatcher(whoami, SUSPEND, "process", max_workers=4)
    dispatchers.append(d)
    addr = d.start(testbed4.server_addr, 0, netns=testbed4.server_ns)
    answers = [ask(testbed4.socket("client"), addr) for _ in range(12)]
    assert all(a["socket"] != 0 for a in answers), answers
    assert all(a["worker"] == a["socket"] for a in answers), answers
    assert all(a["pid"] != os.getpid() for a in answers)  # served in worker processes
    by_napi: dict[int, set[int]] = {}
    for a in answers:
        by_napi.setdefault(a["socket"], set()).add(a["pid"])
    assert all(len(pids) == 1 for pids in by_napi.values()), by_napi  # one process per NAPI
    assert len({next(iter(p)) for p in by_napi.values()}) == len(by_napi)  # distinct ones
    assert sum(d.stats().values()) == 12


@needs_root
@pytest.mark.kernel
def test_napis_beyond_max_workers_go_to_the_fallback(
    testbed4: Testbed, dispatchers: list[NapiDispatcher]
) -> None:
    d = NapiDispatcher(whoami, None, max_workers=1)
    dispatchers.append(d)
    addr = d.start(testbed4.server_addr, 0, netns=testbed4.server_ns)
    answers = [ask(testbed4.socket("client"), addr) for _ in range(12)]
    owners = {a["worker"] for a in answers}
    assert len({a["socket"] for a in answers}) >= 2, "12 flows over 4 queues hit one NAPI"
    assert FALLBACK in owners and len(owners - {FALLBACK}) == 1


@needs_root
@pytest.mark.kernel
@pytest.mark.skipif(shutil.which("sockperf") is None, reason="sockperf is not installed")
def test_example_server_answers_sockperf_ping_pong(testbed: Testbed) -> None:
    port = "11111"
    server = testbed.popen(
        "server",
        [
            *(sys.executable, "-m", "netdevkit.bench.servers.napiecho", "--protocol", "sockperf"),
            *("--host", testbed.server_addr, "--port", port, "--preset", "suspend"),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith(b"listening on")
        client = testbed.run(
            "client",
            ["sockperf", "ping-pong", "--tcp", "-i", testbed.server_addr, "-p", port, "-t", "1"],
            capture_output=True,
            timeout=30,
        )
        report = client.stdout.decode() + client.stderr.decode()
        assert client.returncode == 0, report
        assert "Summary: Latency is" in report, report
        assert "ReceivedMessages=0" not in report
    finally:
        server.terminate()
        out = server.communicate(timeout=10)[0].decode()
    stats = out.split("connections by NAPI id: ", 1)[1].splitlines()[0]
    napi_ids = list(ast.literal_eval(stats))
    assert napi_ids and all(napi_ids), out  # the sockperf connection came through a NAPI


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "napi_echo_server.py"


@needs_root
@pytest.mark.kernel
def test_the_example_echoes_per_napi(testbed: Testbed) -> None:
    """examples/napi_echo_server.py: bytes come back, through a NAPI's worker."""
    argv = [sys.executable, str(EXAMPLE), "--host", testbed.server_addr, "--port", "11112"]
    server = testbed.popen("server", argv, stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith(b"echo on")
        with testbed.socket("client") as sock:
            sock.settimeout(5)
            sock.connect((testbed.server_addr, 11112))
            sock.sendall(b"hello, NAPI")
            assert sock.recv(100) == b"hello, NAPI"
    finally:
        server.terminate()
        out = server.communicate(timeout=10)[0].decode()
    assert server.returncode == 0, out
    served = [line for line in out.splitlines() if line.endswith(": 1 connections")]
    assert len(served) == 1 and not served[0].startswith("worker for NAPI 0:"), out
