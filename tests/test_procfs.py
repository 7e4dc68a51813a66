"""netdevkit.procfs: the /proc parsers on recorded text, and descendants on real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest

from netdevkit.procfs import (
    CLK_TCK,
    SoftnetCpu,
    descendants,
    parse_netstat,
    parse_softnet,
    parse_stat,
)

# comm may hold spaces and parentheses: fields count after the last ")"
STAT = "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 1 0 0 0 250 150 0 0 20 0 1 0 987654 0 0"


def test_parse_stat_counts_fields_after_the_last_parenthesis() -> None:
    st = parse_stat(STAT)
    assert (st.ppid, st.utime, st.stime, st.starttime) == (17, 250, 150, 987654)
    assert st.cpu_seconds == pytest.approx(400 / CLK_TCK)


def test_parse_stat_of_this_process() -> None:
    with open(f"/proc/{os.getpid()}/stat", encoding="ascii") as f:
        assert parse_stat(f.read()).ppid == os.getppid()


def test_parse_softnet_rows() -> None:
    text = (
        "0000a1b2 00000001 00000003 " + "00000000 " * 9 + "00000000\n"
        "00000010 00000000 00000000 " + "00000000 " * 9 + "00000002\n"
        "short line\n"
    )
    assert parse_softnet(text) == (SoftnetCpu(0, 0xA1B2, 1, 3), SoftnetCpu(2, 16, 0, 0))


def test_parse_netstat_pairs() -> None:
    text = (
        "TcpExt: SyncookiesSent BusyPollRxPackets\nTcpExt: 0 4242\n"
        "IpExt: InNoRoutes InOctets\nIpExt: 1 99\n"
    )
    assert parse_netstat(text) == {
        "TcpExt:SyncookiesSent": 0,
        "TcpExt:BusyPollRxPackets": 4242,
        "IpExt:InNoRoutes": 1,
        "IpExt:InOctets": 99,
    }
    assert parse_netstat("TcpExt: A\nIpExt: 1\n") == {}  # a mismatched pair is skipped
    assert parse_netstat("") == {}


def test_parse_netstat_of_this_namespace() -> None:
    with open("/proc/net/netstat", encoding="ascii") as f:
        assert "TcpExt:TCPTimeouts" in parse_netstat(f.read())


@pytest.fixture(params=["children-file", "parent-pids"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways descendants finds processes: CONFIG_PROC_CHILDREN's file, or (where the
    kernel lacks it) every process's parent pid."""
    if request.param == "parent-pids":
        real = os.path.exists
        monkeypatch.setattr(
            os.path, "exists", lambda p: False if str(p).endswith("/children") else real(p)
        )
    return str(request.param)


def test_descendants_finds_grandchildren(way: str) -> None:
    # sh -> (sleep, sh -> sleep): two children and a grandchild
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & sh -c 'sleep 30 & wait' & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(found := descendants(proc.pid)) < 3:
            assert time.monotonic() < deadline, found
            time.sleep(0.02)
        assert len(found) == 3 and found == sorted(found)
        assert proc.pid not in found
        assert all(os.path.exists(f"/proc/{p}") for p in found)
    finally:
        for pid in [*descendants(proc.pid), proc.pid]:  # all found first: none orphaned
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert descendants(proc.pid) == []  # gone, not an error
