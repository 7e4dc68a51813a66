"""mcload: the response parser on byte strings, config checks, a real memcached on loopback."""

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

from netdevkit.bench.loadgen.mcload import (
    LoadConfig,
    ResponseParser,
    client_limits,
    get_request,
    set_request,
)
from netdevkit.errors import DecodeError, RequestError

STREAM = (
    b"STORED\r\n"
    b"VALUE ndk:1 0 12\r\nEND\r\nEND\r\nxx\r\nEND\r\n"  # a value that contains END\r\n
    b"END\r\n"  # a miss
    b"VALUE a 0 1 77\r\nz\r\nVALUE b 0 1\r\ny\r\nEND\r\n"  # with cas, two values
    b"SERVER_ERROR out of memory storing object\r\n"
)


# target, sent/s, lag p50, lag p99 (us), ceiling/s, not sent -> why the client is the limit
LIMITS: list[tuple[tuple[float, float, float, float, float, int], list[str]]] = [
    ((1000, 1000, 50, 500, 10_000, 0), []),
    ((1000, 940, 50, 500, 10_000, 0), ["sent 940/s of the 1000/s target"]),
    ((1000, 1000, 201, 500, 10_000, 0), ["send lag p50 201 us > 200 us"]),
    ((1000, 1000, 50, 2001, 10_000, 0), ["send lag p99 2001 us > 2000 us"]),
    ((7000, 7000, 50, 500, 10_000, 0), ["target above 60% of the client ceiling 10000/s"]),
    ((1000, 1000, 50, 500, 10_000, 3), ["3 requests not sent (100000 outstanding)"]),
    (
        (1000, 900, 300, 500, 10_000, 0),
        ["sent 900/s of the 1000/s target", "send lag p50 300 us > 200 us"],
    ),
]


@pytest.mark.parametrize(("args", "want"), LIMITS)
def test_client_limits(
    args: tuple[float, float, float, float, float, int], want: list[str]
) -> None:
    assert client_limits(*args) == want


def test_parser_whole_stream() -> None:
    p = ResponseParser()
    assert p.feed(STREAM) == 5
    assert (p.hits, p.misses, p.errors) == (2, 1, 1)


def test_parser_byte_at_a_time_gives_the_same_answer() -> None:
    p = ResponseParser()
    total = sum(p.feed(STREAM[i : i + 1]) for i in range(len(STREAM)))
    assert total == 5
    assert (p.hits, p.misses, p.errors) == (2, 1, 1)


def test_parser_truncated_waits() -> None:
    p = ResponseParser()
    assert p.feed(b"VALUE k 0 5\r\nab") == 0
    assert p.feed(b"cde\r\nEN") == 0
    assert p.feed(b"D\r\n") == 1


@pytest.mark.parametrize("junk", [b"HELLO\r\n", b"VALUE k 0 x\r\n"])
def test_parser_rejects_junk(junk: bytes) -> None:
    with pytest.raises(DecodeError):
        ResponseParser().feed(junk)


def test_requests() -> None:
    assert get_request(b"k") == b"get k\r\n"
    assert set_request(b"k", b"abc") == b"set k 0 0 3\r\nabc\r\n"


@pytest.mark.parametrize(
    "kw",
    [{"rate": 0}, {"duration": -1}, {"connections": 0}, {"port": 70000}, {"get_ratio": 2.0}],
)
def test_bad_config(kw: dict[str, float]) -> None:
    with pytest.raises(RequestError):
        LoadConfig(host="127.0.0.1", **kw)  # type: ignore[arg-type]


@pytest.fixture
def memcached() -> Iterator[int]:
    exe = shutil.which("memcached")
    if exe is None:
        pytest.skip("needs Debian's memcached package")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "-u", "nobody", "-l", "127.0.0.1", "-p", str(port), "-t", "1", "-U", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def test_against_real_memcached(memcached: int) -> None:
    rate = 500
    cp = subprocess.run(
        [
            sys.executable,
            "-m",
            "netdevkit.bench.loadgen.mcload",
            "--host",
            "127.0.0.1",
            "--port",
            str(memcached),
            "--rate",
            str(rate),
            "--duration",
            "1",
            "--connections",
            "8",
            "--warmup",
            "0.2",
            "-j",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rep = json.loads(cp.stdout)
    assert 0 < rep["p50"] <= rep["p90"] <= rep["p99"] <= rep["p999"] <= rep["max"]
    assert 0 < rep["achieved_rate"] <= rate * 1.05
    assert rep["count"] == pytest.approx(rate, rel=0.05)
    assert rep["errors"] == 0 and rep["timeouts"] == 0
    assert rep["hits"] > 0  # the keys were preloaded, so gets hit
    assert rep["client_ceiling"] > rate
    assert isinstance(rep["client_limited"], bool)
