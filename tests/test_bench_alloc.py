"""The bench's servers read without a page fault per request (netdevkit.bench.servers.alloc).

asyncio reads into a fresh 256 KiB buffer per readable event; unless glibc's dynamic mmap
threshold has been raised above that, every request costs mmap + mremap + munmap and two
page faults, which made the stock-asyncio reference 1.2-1.5x slower depending only on
the server's import history. These tests run real servers on loopback and count the
faults the kernel reports for them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from conftest import free_port

from netdevkit.bench.servers.framing import FLAG_CLIENT, FLAG_PONG_REQUEST, HEADER

GLIBC = bool(os.confstr("CS_GNU_LIBC_VERSION")) if hasattr(os, "confstr") else False
pytestmark = pytest.mark.skipif(not GLIBC, reason="glibc's allocator is what is settled")

ROUND_TRIPS = 2000

# Allocates what asyncio allocates per read and says whether glibc mmap-ed it (the
# IS_MMAPPED bit of the chunk's size word), after settle_malloc() when argv[1] is "settle".
_PROBE = """
import ctypes, sys
if sys.argv[1] == "settle":
    from netdevkit.bench.servers.alloc import settle_malloc
    settle_malloc()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
p = libc.malloc(256 * 1024)
print("mmap" if ctypes.c_size_t.from_address(p - 8).value & 2 else "heap")
"""


def _chunk_source(settle: bool) -> str:
    argv = [sys.executable, "-c", _PROBE, "settle" if settle else "plain"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def test_settle_malloc_moves_a_256k_buffer_from_mmap_to_the_heap() -> None:
    # A fresh interpreter starts at glibc's initial 128 KiB threshold: the precondition
    # that makes the settling matter.
    assert _chunk_source(settle=False) == "mmap"
    assert _chunk_source(settle=True) == "heap"


def _minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


@contextmanager
def _server(argv: list[str], ready: str | None, port: int) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            if ready is not None and os.path.exists(ready) and os.path.getsize(ready):
                break
            if ready is None:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
            assert time.monotonic() < deadline, "server did not listen"
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def _ping_pong(port: int, n: int) -> None:
    message = HEADER.pack(1, FLAG_CLIENT | FLAG_PONG_REQUEST, HEADER.size)
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            c.sendall(message)
            got = b""
            while len(got) < HEADER.size:
                chunk = c.recv(HEADER.size - len(got))
                assert chunk, "server closed the connection"
                got += chunk
            assert HEADER.unpack(got)[2] == HEADER.size


@pytest.mark.parametrize(
    "server",
    ["rr-asyncio", "rr-netdevkit", "stockecho-asyncio"],
)
def test_server_reads_without_a_page_fault_per_request(server: str) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        ready: str | None = os.path.join(tmp, "ready")
        module, loop = server.split("-")
        argv = [sys.executable, "-m", f"netdevkit.bench.servers.{module}", "--loop", loop]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        if module == "rr":
            argv += ["--ready-file", str(ready)]
        else:
            ready = None
        with _server(argv, ready, port) as proc:
            # One connection, as sockperf makes: glibc's threshold happens to rise when a
            # connection closes, so only the first connection shows the unsettled cost.
            before = _minor_faults(proc.pid)
            _ping_pong(port, ROUND_TRIPS)
            faults = _minor_faults(proc.pid) - before
    # Unsettled, asyncio's path costs two faults per request (4000 here); settled, the
    # heap's pages are reused and the count stays near zero.
    assert faults < ROUND_TRIPS // 10, f"{faults} minor faults for {ROUND_TRIPS} requests"
