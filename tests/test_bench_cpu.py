"""CPU accounting: /proc parsers on recorded text, and a live busy loop."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from netdevkit.bench import cpu
from netdevkit.errors import NotFoundError

STAT_LINE = (
    "4242 (my (odd) server) S 17 4242 4242 0 -1 4194560 900 0 0 0 "
    "250 75 3 1 20 0 4 0 12345 1000000 300 18446744073709551615"
)

PROC_STAT = """\
cpu  7241 0 3057 103649 274 0 95 15 0 0
cpu0 1502 0 1074 54508 21 0 21 5 0 0
cpu1 5738 0 1983 49141 253 0 74 9 0 0
intr 1 2 3
"""

SOFTIRQS = """\
                    CPU0       CPU1
          HI:          1          0
      NET_TX:         10         20
      NET_RX:        300        400
"""

SOFTNET = """\
0000000a 00000001 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000
00000010 00000000 00000003 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001
"""


def test_stat_line_with_parens_in_comm() -> None:
    assert cpu.parse_stat_line(STAT_LINE) == (17, 250, 75)


def test_proc_stat_softirq_column() -> None:
    assert cpu.parse_proc_stat(PROC_STAT) == {0: 21, 1: 74}


def test_softirqs_and_softnet() -> None:
    assert cpu.parse_softirqs(SOFTIRQS) == {"NET_TX": 30, "NET_RX": 700}
    assert cpu.parse_softnet_stat(SOFTNET) == {"processed": 26, "dropped": 1, "time_squeeze": 5}


def test_usage_of_a_busy_child_process_is_about_one_core() -> None:
    # The spinning grandchild must be counted through the descendants walk.
    code = (
        "import subprocess, sys; "
        "subprocess.run([sys.executable, '-c', "
        "'import time\\nt=time.time()\\nwhile time.time()-t<1.5: pass'])"
    )
    p = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.3)
        before = cpu.snapshot(p.pid)
        time.sleep(0.8)
        after = cpu.snapshot(p.pid)
    finally:
        p.wait()
    usage = after.usage_since(before)
    assert usage.process_cores is not None
    assert 0.6 < usage.process_cores < 1.2
    assert usage.softirq_cores >= 0
    assert set(usage.softirq_per_cpu) == set(range(len(usage.softirq_per_cpu)))


def test_missing_process() -> None:
    with pytest.raises(NotFoundError):
        cpu.process_cpu_seconds(2**22 + 7)
    assert cpu.snapshot(2**22 + 7).process is None
    assert os.getpid() not in cpu.descendants(os.getpid())


def test_parse_proc_net_pairs() -> None:
    from netdevkit.bench.cpu import parse_proc_net_pairs

    text = (
        "TcpExt: SyncookiesSent BusyPollRxPackets\n"
        "TcpExt: 0 19075\n"
        "IpExt: InNoRoutes\n"
        "IpExt: 3\n"
        "Ip: Forwarding DefaultTTL InReceives\n"
        "Ip: 2 64 19127\n"
    )
    got = parse_proc_net_pairs(text)
    assert got["TcpExt:BusyPollRxPackets"] == 19075
    assert got["Ip:InReceives"] == 19127 and got["IpExt:InNoRoutes"] == 3
    assert parse_proc_net_pairs("TcpExt: A\nIpExt: 1\n") == {}  # mismatched pair skipped
