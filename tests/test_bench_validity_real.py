"""The validity rules on the real kernel: a CPU hog on the server's CPU marks every sample
disturbed and no claim is judged on them; threaded NAPI's kthread is counted as server CPU."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netdevkit.bench import runner
from netdevkit.bench.claims import MEASURED_NOT, evaluate_claims
from netdevkit.bench.cpu import Watch
from netdevkit.bench.results import Results
from netdevkit.testbed import CpuPlacement, Testbed, TestbedConfig, set_affinity
from netdevkit.tuning.context import tuned
from netdevkit.tuning.presets import PRESETS

BENCH = [sys.executable, "-m", "netdevkit", "bench"]


def _need_two_cpus() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs (server and client apart)")


@pytest.mark.kernel
@pytest.mark.slow
def test_a_cpu_hog_on_the_server_cpu_marks_the_samples_disturbed(tmp_path: Path) -> None:
    _need_two_cpus()
    server_cpu = max(os.sched_getaffinity(0))  # --cpus auto puts the server on the last CPU
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        set_affinity(hog.pid, frozenset({server_cpu}))
        args = ["--modes", "base,fullbusy,suspend", "--workload", "echo", "--servers", "fast"]
        args += ["--work-us", "20", "--sweep", "0.5", "--duration", "0.5", "--cpus", "auto"]
        cp = subprocess.run(
            [*BENCH, *args, "--out", str(tmp_path / "out")],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        hog.kill()
        hog.wait()
    assert cp.returncode == 0, cp.stderr
    first = cp.stdout.strip().splitlines()[0]
    assert first.startswith("WARNING:") and "disturbed" in first, cp.stdout[:500]
    res = Results.load(str(tmp_path / "out" / "results.json"))
    assert res.samples and all(s.disturbed for s in res.samples)
    assert all(
        any("of the server's CPUs" in d or "waited for a CPU" in d for d in s.disturbed)
        for s in res.samples
    )
    for claim in evaluate_claims(res):
        if claim.key in ("a", "d", "e"):
            assert claim.verdict == MEASURED_NOT, claim
    assert "disturbed" in (tmp_path / "out" / "report.md").read_text().splitlines()[2]


def _runtime_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat", encoding="ascii") as f:
        return int(f.read().split()[0])


@pytest.mark.kernel
@pytest.mark.slow
def test_threaded_modes_count_the_napi_kthread(tmp_path: Path) -> None:
    _need_two_cpus()
    opts = runner.BenchOptions(modes=("threaded",), workloads=("sockperf",), duration=1.0)
    cfg = TestbedConfig(
        name=f"ndkthr{os.getpid() % 100000}", queues=1, cpus=CpuPlacement.parse("auto")
    )
    with Testbed(cfg) as tb:
        spec = runner._specs(opts, tb, "sockperf", "threaded", tb.tmpdir)[0]
        spec = dataclasses.replace(spec, loads=(3000,))
        with tuned(tb.server_if, preset="threaded", netns=tb.server_ns):
            tb.pin_napi_threads("server")
            state = runner._napi_state(tb)
            kthread = int(state["napi_kthread_pid"])
            with runner._server(tb, spec, PRESETS["threaded"]) as (pid, _notes):
                t0, w0 = _runtime_ns(kthread), time.monotonic()
                m = runner._measure(tb, spec, "threaded", pid, 3000, 1.0, Watch())
                t1, w1 = _runtime_ns(kthread), time.monotonic()
    kcores = m.napi["napi_kthread_cores"]
    assert kcores > 0  # the kthread polled the server's NAPI
    # the window's kthread time is within what its schedstat grew by over the whole call
    assert kcores * m.wall <= (t1 - t0) / 1e9 * 1.01
    assert (t1 - t0) / 1e9 / (w1 - w0) < 1.0
    assert m.server_cpu == pytest.approx(m.napi["server_process_cores"] + kcores)
