"""netdevkit.integrations on the real servers: uvicorn, gunicorn, hypercorn, aiohttp, granian.

Each test starts the server in the testbed's server namespace with the integration, drives
it with wrk from the client namespace, and checks from outside: every epoll context of the
server's processes that watches a socket reads back the configured parameters (attach's
``inspect``: a pidfd_getfd copy, EPIOCGPARAMS), and the namespace's TcpExt
BusyPollRxPackets grew while wrk ran with the preset's NAPI half applied to the server
veth (requests were busy polled). A bad configuration ends
the server with one line on stderr and a non-zero status.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from netdevkit.attach.core import inspect
from netdevkit.busypoll.epoll import EpollParams
from netdevkit.errors import NetdevkitError
from netdevkit.procfs import descendants, parse_netstat
from netdevkit.procs import stop
from netdevkit.testbed import Testbed
from netdevkit.tuning.context import tuned

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces and pidfd_getfd"),
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
]

NAPIBUSY = EpollParams(64, 64, True)  # the napibusy preset: constant, unlike the window
PORT = 18_480

ASGI_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def hello(request):
    return PlainTextResponse("hello")

app = Starlette(routes=[Route("/", hello)])
"""


def _in_ns(tb: Testbed, side: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", tb.ns_of(side), *argv]  # type: ignore[arg-type]


def _wait_listening(tb: Testbed, proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"the server exited with status {proc.returncode}: {err}")
        with contextlib.closing(tb.socket("client")) as s:
            s.settimeout(1)
            if s.connect_ex((tb.server_addr, port)) == 0:
                return
        assert time.monotonic() < deadline, "the server did not listen within 20 s"
        time.sleep(0.2)


@contextlib.contextmanager
def serving(
    tb: Testbed, argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """The server *argv* started in the server namespace, stopped (with its workers) after."""
    proc = subprocess.Popen(
        _in_ns(tb, "server", argv),
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_listening(tb, proc, PORT)
        yield proc
    finally:
        kids = descendants(proc.pid)
        stop(proc)
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def _busy_poll_rx(tb: Testbed) -> dict[str, int]:
    text = subprocess.run(
        _in_ns(tb, "server", ["cat", "/proc/net/netstat", "/proc/net/snmp"]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_netstat(text)


def drive(tb: Testbed, seconds: int = 1, conns: int = 1) -> tuple[int, int]:
    """wrk against the server; (BusyPollRxPackets, Tcp InSegs) of the server ns meanwhile."""
    before = _busy_poll_rx(tb)
    out = subprocess.run(
        _in_ns(
            tb,
            "client",
            ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", f"http://{tb.server_addr}:{PORT}/"],
        ),
        check=False,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    after = _busy_poll_rx(tb)
    assert out.returncode == 0, out.stderr
    assert "Non-2xx" not in out.stdout and "Socket errors" not in out.stdout, out.stdout
    rx = after["TcpExt:BusyPollRxPackets"] - before["TcpExt:BusyPollRxPackets"]
    segs = after["Tcp:InSegs"] - before["Tcp:InSegs"]
    return rx, segs


def socket_contexts(pid: int) -> list[EpollParams]:
    """The parameters of every epoll context that watches a socket, in the worker processes
    (*pid*'s descendants; *pid* itself when it has none). A master (gunicorn's arbiter)
    is no worker: it runs no event loop of ours."""
    out = []
    for p in descendants(pid) or [pid]:
        with contextlib.suppress(NetdevkitError):
            for ctx in inspect(p).contexts:
                if any(w.kind == "socket" for w in ctx.watched):
                    out.append(ctx.new)
    return out


def _app(tmp_path: Path) -> Path:
    pytest.importorskip("starlette", reason="starlette is not installed (the test extra)")
    (tmp_path / "hello_app.py").write_text(ASGI_APP)
    return tmp_path


def _check_busy_polled(tb: Testbed, pid: int, contexts: int) -> None:
    """*contexts* worker contexts or more read back napibusy, and packets were busy polled
    while wrk ran with the preset's NAPI half on the server veth.

    One connection: a saturated worker's epoll_wait always finds events ready, and the
    kernel busy polls only a wait that finds none (ep_poll). Without the NAPI half, veth's
    NAPI runs from the sender's softirq at once and busy polling finds little (seen here:
    1-7% of segments; with it 86-92%)."""
    with tuned(tb.if_of("server"), preset="napibusy", netns=tb.server_ns):
        rx, segs = drive(tb)
    params = socket_contexts(pid)
    assert len(params) >= contexts, params
    assert set(params) == {NAPIBUSY}, params
    assert rx > 0 and segs > 0, f"no packet was busy polled ({rx} of {segs} segments)"


# --- uvicorn ---------------------------------------------------------------------------


def _uvicorn(*extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "hello_app:app",
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--no-access-log",
        *extra,
    ]


def test_uvicorn_workers_busy_poll_with_the_loop_name(testbed: Testbed, tmp_path: Path) -> None:
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (the test extra)")
    argv = _uvicorn("--workers", "2", "--loop", "netdevkit.integrations.uvicorn:napibusy")
    with serving(testbed, argv, _app(tmp_path)) as proc:
        _check_busy_polled(testbed, proc.pid, contexts=2)


def test_uvicorn_env_loop_takes_the_configuration_from_the_environment(
    testbed: Testbed, tmp_path: Path
) -> None:
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (the test extra)")
    argv = _uvicorn("--loop", "netdevkit.integrations.uvicorn:env")
    env = {"NETDEVKIT_BUSYPOLL": "busy_poll_usecs=64,busy_poll_budget=64,prefer_busy_poll=1"}
    with serving(testbed, argv, _app(tmp_path), env) as proc:
        _check_busy_polled(testbed, proc.pid, contexts=1)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_uvicorn_bad_environment_is_one_line_and_stops_uvicorn(
    workers: str, tmp_path: Path
) -> None:
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (the test extra)")
    run = subprocess.run(
        _uvicorn("--loop", "netdevkit.integrations.uvicorn:env", "--workers", workers),
        cwd=_app(tmp_path),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,  # with --workers, a worker restarted forever would run into this
        env={**os.environ, "NETDEVKIT_BUSYPOLL": "suspend,adaptive_us=50,hybrid=maybe"},
    )
    line = "netdevkit: NETDEVKIT_BUSYPOLL: hybrid='maybe': must be 0 or 1"
    assert "Traceback" not in run.stderr and "never awaited" not in run.stderr, run.stderr
    if workers == "1":
        assert run.returncode == 3, run.stderr  # uvicorn's STARTUP_FAILURE
        assert run.stderr.splitlines() == [line]
    else:
        # each worker says it once; uvicorn's supervisor stops on STARTUP_FAILURE (its own
        # exit status is 0 in uvicorn 0.55: not ours to set)
        assert set(x for x in run.stderr.splitlines() if x.startswith("netdevkit:")) == {line}
        assert "failed to start, stopping the parent process" in run.stderr


# --- gunicorn with uvicorn workers -----------------------------------------------------


def _gunicorn(worker: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "hello_app:app",
        "-b",
        f"0.0.0.0:{PORT}",
        "-k",
        f"netdevkit.integrations.gunicorn.{worker}",
    ]


def test_gunicorn_worker_class_runs_each_worker_on_a_busy_polling_loop(
    testbed: Testbed, tmp_path: Path
) -> None:
    pytest.importorskip("gunicorn", reason="gunicorn is not installed (the test extra)")
    argv = [*_gunicorn("NapibusyWorker"), "-w", "2"]
    with serving(testbed, argv, _app(tmp_path)) as proc:
        _check_busy_polled(testbed, proc.pid, contexts=2)


def test_gunicorn_bad_environment_stops_the_master_with_one_line(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn", reason="gunicorn is not installed (the test extra)")
    run = subprocess.run(
        _gunicorn("BusyPollWorker"),
        cwd=_app(tmp_path),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "NETDEVKIT_BUSYPOLL": "busy_poll_budget=70000"},
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "netdevkit: NETDEVKIT_BUSYPOLL: busy_poll_budget=70000 is out of range: must be 0..65535"
    )
    assert "Traceback" not in run.stderr and "Booting worker" not in run.stderr


# --- hypercorn and aiohttp: the programmatic forms of docs/servers.md ------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROGRAMMATIC = {
    "hypercorn": [str(EXAMPLES / "hypercorn_busypoll.py"), f"0.0.0.0:{PORT}"],
    "aiohttp": [str(EXAMPLES / "aiohttp_busypoll.py"), "0.0.0.0", str(PORT)],
}


@pytest.mark.parametrize("server", sorted(PROGRAMMATIC))
def test_programmatic_server_busy_polls(server: str, testbed: Testbed, tmp_path: Path) -> None:
    pytest.importorskip(server, reason=f"{server} is not installed (the test extra)")
    argv = [sys.executable, *PROGRAMMATIC[server]]
    with serving(testbed, argv, tmp_path, {"NETDEVKIT_BUSYPOLL": "napibusy"}) as proc:
        _check_busy_polled(testbed, proc.pid, contexts=1)


@pytest.mark.parametrize("server", sorted(PROGRAMMATIC))
def test_programmatic_server_bad_config_is_one_line(server: str) -> None:
    pytest.importorskip(server, reason=f"{server} is not installed (the test extra)")
    run = subprocess.run(
        [sys.executable, *PROGRAMMATIC[server]],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "NETDEVKIT_BUSYPOLL": "suspend,hybrid=1"},
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("netdevkit: NETDEVKIT_BUSYPOLL: ") and "hybrid" in run.stderr


# --- granian (a Rust event loop): netdevkit run ----------------------------------------


def _granian_under_run(*run_args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "netdevkit",
        "run",
        "-q",
        *run_args,
        "--",
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--workers",
        "2",
        "--no-ws",
        "hello_app:app",
    ]


def _wait_attached(pid: int, contexts: int) -> None:
    """Until run's scans have attached napibusy to *contexts* worker contexts (10 s)."""
    deadline = time.monotonic() + 10
    while (params := socket_contexts(pid)).count(NAPIBUSY) < contexts:
        assert time.monotonic() < deadline, f"netdevkit run did not attach: {params}"
        time.sleep(0.1)


def test_granian_under_netdevkit_run_busy_polls(testbed: Testbed, tmp_path: Path) -> None:
    pytest.importorskip("granian", reason="granian is not installed (the test extra)")
    argv = _granian_under_run("--preset", "napibusy")
    with serving(testbed, argv, _app(tmp_path)) as proc:
        _wait_attached(proc.pid, contexts=2)
        _check_busy_polled(testbed, proc.pid, contexts=2)


def test_granian_under_netdevkit_run_bad_config_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("granian", reason="granian is not installed (the test extra)")
    run = subprocess.run(
        _granian_under_run("--usecs", "-1"),
        cwd=_app(tmp_path),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "usecs" in run.stderr, run.stderr


# --- one NAPI per worker: SO_REUSEPORT listeners steered by rx queue -----------------


def _keepalive_clients(tb: Testbed, flows: int) -> list[socket.socket]:
    """*flows* client connections, each with one answered keep-alive request, left open."""
    clients = []
    for _ in range(flows):
        c = tb.socket("client")
        clients.append(c)
        c.settimeout(30)  # the workers may still be starting: the listeners queue it
        c.connect((tb.server_addr, PORT))
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 200")
    return clients


def _attach_show(pid: int) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "netdevkit", "attach", "--show", "-j", str(pid)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    contexts: list[dict[str, object]] = json.loads(out)["contexts"]
    return contexts


def test_reuseport_steering_gives_each_uvicorn_worker_one_napi(
    testbed4: Testbed, tmp_path: Path
) -> None:
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (the test extra)")
    argv = [
        sys.executable,
        "-m",
        "netdevkit.integrations.reuseport",
        "--workers",
        "4",
        "--port",
        str(PORT),
        "--raw-queue",
        "--",
        *_uvicorn("--fd", "{fd}", "--loop", "netdevkit.integrations.uvicorn:napibusy"),
    ]
    with serving(testbed4, argv, _app(tmp_path)) as proc:
        clients = _keepalive_clients(testbed4, 32)
        try:
            workers = descendants(proc.pid)
            assert len(workers) == 4
            per_worker = []
            for pid in workers:
                ids = set()
                for ctx in _attach_show(pid):
                    napi_ids = ctx["napi_ids"]
                    assert isinstance(napi_ids, list)
                    assert len(napi_ids) <= 1, f"worker {pid} context mixes NAPIs {napi_ids}"
                    ids.update(napi_ids)
                per_worker.append(ids)
            assert all(len(ids) == 1 for ids in per_worker), per_worker
            assert len(set.union(*per_worker)) == 4, per_worker  # one queue each
        finally:
            for c in clients:
                c.close()


def test_reuseport_launcher_bad_input_is_one_line() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "netdevkit.integrations.reuseport",
            "--workers",
            "0",
            "--port",
            str(PORT),
            "--",
            "true",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert run.stderr == "netdevkit: workers=0 is out of range: must be 1..65535\n"
