"""netdevkit.attach against unmodified memcached and redis from Debian's packages.

Each test starts its server, attaches busy polling to its epoll contexts while clients keep
talking to it, reads the parameters back through a second, independent pidfd_getfd copy,
detaches, and kills the server in a finally block.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import free_port

from netdevkit.attach import EpollFd, attach, detach
from netdevkit.attach.core import Target
from netdevkit.busypoll.config import BusyPollConfig
from netdevkit.busypoll.epoll import EpollParams, get_params
from netdevkit.procs import stop
from netdevkit.testbed import Testbed

SUSPEND = EpollParams(0, 64, True)
DEFAULT = EpollParams(0, 0, False)
SUSPEND_CFG = BusyPollConfig.from_params(SUSPEND)
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: pidfd_getfd on other processes"
)


def _connect(addr: tuple[str, int], make: type[socket.socket] | None = None) -> socket.socket:
    deadline = time.monotonic() + 5
    while True:
        try:
            return socket.create_connection(addr, timeout=2)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _read_back(pid: int, epolls: list[EpollFd]) -> list[EpollParams]:
    """Each context's parameters through a fresh, independent pidfd_getfd copy."""
    out = []
    with Target(pid) as t:
        for e in epolls:
            with t.copy(e) as dup:
                out.append(get_params(dup))
    return out


def _memcached_round_trip(sock: socket.socket, key: bytes) -> None:
    sock.sendall(b"set " + key + b" 0 0 5\r\nhello\r\n")
    assert sock.recv(100) == b"STORED\r\n"
    sock.sendall(b"get " + key + b"\r\n")
    assert sock.recv(100) == b"VALUE " + key + b" 0 5\r\nhello\r\nEND\r\n"


@needs_root
@pytest.mark.skipif(shutil.which("memcached") is None, reason="memcached is not installed")
def test_memcached_keeps_serving_with_busy_polling_attached() -> None:
    port = free_port()
    mc = subprocess.Popen(
        ["memcached", "-u", "root", "-p", str(port), "-l", "127.0.0.1", "-t", "2", "-U", "0"]
    )
    try:
        with _connect(("127.0.0.1", port)) as s:
            _memcached_round_trip(s, b"before")
            result = attach(mc.pid, SUSPEND_CFG)
            # main thread's event base + one per worker thread (libevent epoll backends)
            assert len(result.contexts) >= 3
            epolls = [c.epoll for c in result.contexts]
            assert _read_back(mc.pid, epolls) == [SUSPEND] * len(epolls)
            _memcached_round_trip(s, b"after")
            undone = detach(result)
            assert len(undone.restored) == len(epolls)
            assert _read_back(mc.pid, epolls) == [DEFAULT] * len(epolls)
            _memcached_round_trip(s, b"detached")
    finally:
        stop(mc)


@needs_root
@pytest.mark.kernel
@pytest.mark.skipif(shutil.which("memcached") is None, reason="memcached is not installed")
def test_memcached_napi_ids_gives_each_worker_one_napi(testbed4: Testbed) -> None:
    """memcached -N (napi_ids): a worker thread per NAPI, so no context mixes NAPIs."""
    port = 11_311
    mc = testbed4.popen(
        "server",
        [
            *("memcached", "-u", "root", "-p", str(port), "-l", testbed4.server_addr),
            *("-t", "4", "-N", "4", "-U", "0"),
        ],
    )
    clients = []
    try:
        for i in range(8):
            c = testbed4.socket("client")
            deadline = time.monotonic() + 5
            while True:
                try:
                    c.connect((testbed4.server_addr, port))
                    break
                except OSError:
                    assert time.monotonic() < deadline, "memcached did not start"
                    time.sleep(0.05)
            _memcached_round_trip(c, b"k%d" % i)
            clients.append(c)
        result = attach(mc.pid, SUSPEND_CFG)
        busy = [c for c in result.contexts if c.napi_ids]
        assert len(busy) >= 2, [c.napi_ids for c in result.contexts]
        assert result.warnings == ()
        assert all(len(c.napi_ids) == 1 for c in busy)
        _memcached_round_trip(clients[0], b"after")
        detach(result)
    finally:
        for c in clients:
            c.close()
        stop(mc)


def _redis(sock: socket.socket, *words: bytes) -> bytes:
    sock.sendall(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
    return sock.recv(1000)


@needs_root
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_redis_keeps_serving_with_busy_polling_attached(tmp_path: Path) -> None:
    port = free_port()
    redis = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        with _connect(("127.0.0.1", port)) as s:
            assert _redis(s, b"PING") == b"+PONG\r\n"
            result = attach(redis.pid, SUSPEND_CFG)
            epolls = [c.epoll for c in result.contexts]
            assert epolls and _read_back(redis.pid, epolls) == [SUSPEND] * len(epolls)
            assert _redis(s, b"SET", b"k", b"v") == b"+OK\r\n"
            assert _redis(s, b"GET", b"k") == b"$1\r\nv\r\n"
            sockets = [w for c in result.contexts for w in c.watched if w.kind == "socket"]
            assert len(sockets) >= 2  # the listener and our connection
            detach(result)
            assert _read_back(redis.pid, epolls) == [DEFAULT] * len(epolls)
    finally:
        stop(redis)


@needs_root
@pytest.mark.kernel
@pytest.mark.skipif(shutil.which("memcached") is None, reason="memcached is not installed")
def test_run_ended_by_sigterm_leaves_no_journal_entries(testbed: Testbed, tmp_path: Path) -> None:
    """`run --preset suspend --napi -- memcached`, stopped with SIGTERM: memcached's epoll
    contexts die with it, and their journal records must go too (not linger as "gone")."""
    import json
    import signal
    import sys

    state = tmp_path / "state"
    env = {**os.environ, "NETDEVKIT_STATE_DIR": str(state)}
    port = free_port()
    run = subprocess.Popen(
        [
            *(sys.executable, "-m", "netdevkit", "run", "-q", "--preset", "suspend", "--napi"),
            *("--netns", testbed.server_ns, "--ifname", testbed.server_if, "--", "memcached"),
            *("-u", "root", "-p", str(port), "-l", "127.0.0.1", "-t", "2", "-U", "0"),
        ],
        env=env,
    )
    journal = state / "journal.json"
    try:
        with _connect(("127.0.0.1", port)) as s:
            _memcached_round_trip(s, b"k")
        deadline = time.monotonic() + 10
        kinds: list[str] = []
        while "epoll" not in kinds and time.monotonic() < deadline:
            time.sleep(0.1)
            with contextlib.suppress(FileNotFoundError, ValueError):
                kinds = [r["kind"] for r in json.loads(journal.read_text())["entries"]]
        assert "epoll" in kinds and "napi" in kinds
        run.send_signal(signal.SIGTERM)
        assert run.wait(20) == 0  # memcached exits 0 on SIGTERM
    finally:
        stop(run)
    assert not journal.exists()
    diff = subprocess.run(
        [sys.executable, "-m", "netdevkit", "napi", "diff"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert diff.stdout.startswith("no differences"), diff.stdout
