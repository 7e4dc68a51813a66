"""sockperf: report parsing on recorded output, argv checks, and a real run in a testbed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from netdevkit.bench import sockperf
from netdevkit.errors import NetdevkitError, RequestError
from netdevkit.testbed import Testbed

DATA = Path(__file__).parent / "data"
HAVE_SOCKPERF = shutil.which("sockperf") is not None


def test_parse_recorded_ping_pong() -> None:
    rep = sockperf.parse_report((DATA / "sockperf_pingpong.txt").read_text())
    assert rep.run_time > 0 and rep.received > 0
    assert rep.observations == rep.received
    lat = rep.latency()
    assert lat.kind == "half-rtt"
    assert lat.ordered() and lat.p50 > 0
    assert rep.min is not None and rep.max is not None
    assert rep.min <= lat.p50 <= rep.max
    assert not rep.rate_too_high
    assert rep.received_rate == pytest.approx(rep.received / rep.run_time)


def test_parse_recorded_rate_too_high_is_flagged() -> None:
    rep = sockperf.parse_report((DATA / "sockperf_underload_too_high.txt").read_text())
    assert rep.rate_too_high
    # The achieved rate is what came back, far below the 3M/s that was asked for.
    assert rep.received_rate < 3_000_000


def test_parse_garbage_quotes_sockperf() -> None:
    with pytest.raises(NetdevkitError, match="Connection refused"):
        sockperf.parse_report("sockperf: ERROR: Connection refused\n")


@pytest.mark.skipif(not HAVE_SOCKPERF, reason="needs Debian's sockperf package")
def test_client_argv_checks() -> None:
    assert "ping-pong" in sockperf.client_argv("10.0.0.1", 1, 1)
    ul = sockperf.client_argv("10.0.0.1", 1, 2, mps=5000)
    assert "under-load" in ul and "--mps=5000" in ul and "--reply-every" in ul
    with pytest.raises(RequestError):
        sockperf.client_argv("10.0.0.1", 1, 0)
    with pytest.raises(RequestError):
        sockperf.client_argv("10.0.0.1", 1, 1, mps=-1)
    with pytest.raises(RequestError):
        sockperf.client_argv("10.0.0.1", 1, 1, msg_size=4)


def _wait_listening(tb: Testbed, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with tb.socket("client") as s:
            s.settimeout(0.2)
            try:
                s.connect((tb.server_addr, port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
        time.sleep(0.05)


@pytest.mark.kernel
@pytest.mark.skipif(not HAVE_SOCKPERF, reason="needs Debian's sockperf package")
@pytest.mark.parametrize("mps", [0, 2000])
def test_sockperf_in_testbed_gives_sane_numbers(testbed: Testbed, mps: int) -> None:
    port = 11111
    with tempfile.TemporaryDirectory() as tmp:
        feed = sockperf.write_feed_file(tmp, testbed.server_addr, port)
        srv = testbed.popen(
            "server",
            sockperf.server_argv(testbed.server_addr, port, feed_file=feed),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_listening(testbed, port)
            # the feed-file server multiplexes with epoll: an epoll fd must exist
            # (the probe connection's fd may close while we list them)
            links = []
            for fd in os.listdir(f"/proc/{srv.pid}/fd"):
                with contextlib.suppress(FileNotFoundError):
                    links.append(os.readlink(f"/proc/{srv.pid}/fd/{fd}"))
            assert "anon_inode:[eventpoll]" in links
            rep = sockperf.run_client(testbed, testbed.server_addr, port, 1, mps=mps)
        finally:
            srv.terminate()
            srv.wait(5)
    lat = rep.latency()
    assert lat.p50 > 0 and lat.ordered()
    assert lat.p50 < 10_000  # a veth round trip, not a timeout
    assert rep.received > 0 and rep.dropped == 0
    if mps:
        # paced: the achieved rate is near the target and never above it by much
        assert 0.2 * mps < rep.received_rate <= 1.05 * mps
