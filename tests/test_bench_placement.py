"""CPU placement (``netdevkit bench --cpus``): the syntax, the machine check, and
pinning that the kernel reports back (``Cpus_allowed_list``) while programs run."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from netdevkit.bench import runner
from netdevkit.errors import RequestError
from netdevkit.testbed import (
    CpuPlacement,
    Testbed,
    TestbedConfig,
    affinity_of,
    format_cpu_list,
    parse_cpu_list,
)


def test_parse_roles_and_cpulists() -> None:
    p = CpuPlacement.parse("server=1,client=0,napi=1")
    assert p == CpuPlacement(frozenset({1}), frozenset({0}), frozenset({1}))
    assert p.describe() == "server=1,client=0,napi=1"
    # a role takes a cpulist; items without role= continue the previous role
    q = CpuPlacement.parse("server=2-3,5,client=0,1")
    assert q.server == frozenset({2, 3, 5}) and q.client == frozenset({0, 1}) and q.napi is None
    assert q.describe() == "server=2-3,5,client=0-1"
    assert CpuPlacement.parse("auto", cpu_count=4).describe() == "server=3,client=0,napi=3"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("srv=1", "unknown role 'srv'"),
        ("1,server=0", "start with a role"),
        ("server=1,server=0", "server given twice"),
        ("server=a", "'a' is not N or N-M"),
        ("server=3-1", "not a valid range"),
        ("", "e.g. server=1,client=0,napi=1"),
    ],
)
def test_bad_placement_is_a_clear_error(text: str, needle: str) -> None:
    with pytest.raises(RequestError, match=needle):
        CpuPlacement.parse(text)


def test_machine_without_enough_cores_says_so() -> None:
    with pytest.raises(RequestError, match="has 1 CPU, it needs at least 2"):
        CpuPlacement.parse("auto", cpu_count=1)
    with pytest.raises(RequestError, match="CPU 5 is not available; this machine has"):
        CpuPlacement.parse("server=5,client=0").check_machine(frozenset({0, 1}))
    CpuPlacement.parse("server=1,client=0").check_machine(frozenset({0, 1}))


def test_cpulist_round_trip() -> None:
    for text in ("0", "0-3", "0,2,4-6", "1-2,7"):
        assert format_cpu_list(parse_cpu_list(text)) == text


def test_bench_validates_placement_before_anything_exists() -> None:
    bad = CpuPlacement(server=frozenset({os.cpu_count() or 1}))
    with pytest.raises(RequestError, match="is not available"):
        runner.validate(runner.BenchOptions(workloads=("sockperf",), cpus=bad))


def _two_cpus() -> None:
    usable = os.sched_getaffinity(0)
    if not {0, 1} <= usable:
        pytest.skip(f"needs CPUs 0 and 1 usable to place server and client apart (has {usable})")


_THREADS = (
    "import threading, time\n"
    "ts = [threading.Thread(target=time.sleep, args=(10,)) for _ in range(3)]\n"
    "[t.start() for t in ts]\n"
    "print('ready', flush=True)\n"
    "[t.join() for t in ts]\n"
)


@pytest.mark.kernel
def test_testbed_pins_every_thread_of_each_side(testbed_name: str) -> None:
    _two_cpus()
    cpus = CpuPlacement.parse("server=1,client=0")
    with Testbed(TestbedConfig(name=testbed_name, cpus=cpus)) as tb:
        srv = tb.popen("server", [sys.executable, "-c", _THREADS], stdout=subprocess.PIPE)
        cli = tb.popen("client", ["sleep", "10"])
        assert srv.stdout is not None and srv.stdout.readline().strip() == b"ready"
        # threads started after the pin inherit it: all four report CPU 1
        assert len(os.listdir(f"/proc/{srv.pid}/task")) == 4
        assert affinity_of(srv.pid) == frozenset({1})
        assert affinity_of(cli.pid) == frozenset({0})
        srv.stdout.close()


@pytest.mark.kernel
@pytest.mark.slow
def test_short_bench_run_records_the_placement_read_back(testbed_name: str) -> None:
    _two_cpus()
    cpus = CpuPlacement.parse("server=1,client=0,napi=1")
    opts = runner.BenchOptions(
        modes=("threaded",),
        workloads=("sockperf",),
        loads=(0,),
        sweep=(),  # one ping-pong sample, no capacity probe
        duration=0.5,
        cpus=cpus,
        testbed_name=testbed_name,
    )
    start = time.monotonic()
    res = runner.run_bench(opts)
    assert time.monotonic() - start < 60
    assert res.config.placement == "server=1,client=0,napi=1"
    (s,) = res.samples
    # read back from Cpus_allowed_list while the client measured; the NAPI
    # kthread exists because the threaded mode was on
    assert dict(s.placement) == {"server": "1", "client": "0", "napi": "1"}
    assert s.napi["threaded"] == 1 and s.napi["napi_kthread_pid"] > 0
    assert s.napi["server_ip_in"] > 0 and s.napi["server_sleeps_per_s"] > 0
