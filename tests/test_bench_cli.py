"""``netdevkit bench``: bad input, a short real run, and nothing left behind (also after SIGINT).

Other test sessions may create and remove their own namespaces on this
machine while these tests run, so the "identical before and after" checks
look at the host's NAPI settings (all of them) and at the bench's own
namespaces (``ndkbench-PID-*``, PID being the bench process).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netdevkit import kver
from netdevkit.bench import runner
from netdevkit.bench.results import Results
from netdevkit.cli.main import main
from netdevkit.errors import NetdevkitError, RequestError
from netdevkit.netdev.client import Napi, Netdev
from netdevkit.netns import list_names
from netdevkit.testbed.journal import records_dir

BENCH = [sys.executable, "-m", "netdevkit", "bench"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--modes", "base,turbo"], "unknown mode turbo (known: base, defer, napibusy"),
        (
            ["--workload", "nginx"],
            "unknown workload nginx (known: echo, sockperf, memcached, redis)",
        ),
        (["--load", "fast"], "load 'fast'"),
        (["--load", "-5"], "must be 0 (ping-pong)"),
        (["--duration", "0"], "duration 0.0"),
        (["--repeat", "0"], "repeat 0"),
        (["--work-us", "-1"], "work per request -1 us: must be 0..100000"),
        (["--connections", "5000"], "connections 5000: must be 1..1000"),
    ],
)
def test_bad_input_is_a_clear_error(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = set(list_names())
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert set(list_names()) <= before  # nothing created


def test_missing_peer_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which
    monkeypatch.setattr("shutil.which", lambda p: None if p == "redis-benchmark" else real(p))
    with pytest.raises(NetdevkitError, match="install the Debian package 'redis-tools'"):
        runner.validate(runner.BenchOptions(workloads=("redis",)))


def test_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(NetdevkitError, match="run it as root"):
        runner.validate(runner.BenchOptions(workloads=("sockperf",)))


def test_parse_loads() -> None:
    assert runner.parse_loads("20k,0,pp,5000") == (0, 5000, 20000)
    with pytest.raises(RequestError):
        runner.parse_loads(",")


def test_quick_is_every_mode_on_the_fast_loop_swept() -> None:
    q = runner.QUICK
    assert q.modes == runner.MODES and q.workloads == ("echo",) and q.servers == ("fast",)
    assert len(q.sweep) == 3 and q.loads == ()
    # 20 us of work per request, so that one client core reaches the server's knee
    assert q.work_us == 20.0
    # the noise floor (2 samples), the knee probe (a guess until it ran) and
    # 9 modes (busy-poll-thread is absent before 6.19) x 3 loads
    runnable = 9 if not kver.at_least("6.19") else 10
    assert runner.count_steps(q) == 2 + runner._PROBE_STEPS_GUESS + runnable * 3


def _host_napis() -> list[Napi]:
    with Netdev.open() as nd:
        return sorted(nd.napi_dump(), key=lambda n: n.id)


def _bench_namespaces(pid: int) -> list[str]:
    return [ns for ns in list_names() if ns.startswith(f"ndkbench-{pid}")]


@pytest.mark.kernel
@pytest.mark.slow
def test_short_run_results_and_nothing_left_behind(tmp_path: Path) -> None:
    napis = _host_napis()
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            *BENCH,
            "--modes",
            "base,suspend",
            "--workload",
            "sockperf",
            "--sweep",
            "0.1,1.0",
            "--duration",
            "0.5",
            "--cpus",
            "auto",
            "--out",
            str(out),
            "-j",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    res = Results.from_json(stdout.decode())
    assert res == Results.load(str(out / "results.json"))
    assert {s.mode for s in res.samples} == {"base", "suspend"}
    for s in res.samples:
        assert s.latency.kind == "half-rtt"
        assert s.latency.p50 > 0 and s.latency.ordered()
        assert s.achieved_rate > 0 and s.server_cpu > 0
        assert s.napi["napi_id"] > 0
    # the mode's NAPI half was in effect while its sample ran
    by_mode = {s.mode: s for s in res.samples}
    assert by_mode["suspend"].napi["irq_suspend_timeout"] == 20_000_000
    assert by_mode["base"].napi["defer_hard_irqs"] == 0
    # the sweep: a light load and the knee found open loop, for both modes; the knee is far
    # above the one-in-flight ping-pong rate (which the old probe called the capacity)
    (cap,) = res.capacities
    assert cap.rate > 0 and len(cap.loads) == 2 and cap.ping_pong_rate > 0
    assert {s.load_target for s in res.samples} == set(cap.loads)
    assert cap.steps
    if "every probe step was disturbed" in cap.method:
        # a busy machine: the bench must say so rather than sweep a made-up knee (seen
        # while other test suites ran on the same 2 CPUs)
        assert cap.limited_by == "" and "ping-pong rate stands in" in cap.method
    elif cap.limited_by == "client" and cap.client_limited:
        # the generator over its own send-lag limit at every retry of a step (seen once in
        # a full suite run: 8000/s flagged, ping-pong 10.7k/s): the bench must then say the
        # knee is above what it reached, not call that the knee
        assert "saturated" in cap.method and "the knee is above" in cap.method, cap
        assert max(cap.loads) == cap.rate < cap.steps[-1][0], cap
    elif cap.limited_by == "disturbed":
        # the probe stopped on a step disturbed twice (a busy machine): it says so
        assert "disturbed twice: the knee is above" in cap.method, cap
    else:
        assert max(cap.loads) >= 3 * cap.ping_pong_rate, cap
        assert cap.limited_by in ("server", "client")
    # the noise floor: C sockperf, base, light open loop beside ping-pong
    assert res.noise_floor is not None and res.noise_floor.open_loop.count > 0
    # every sample carries its validity evidence
    for s in res.samples:
        assert {"server_cores", "steal_share", "server_run_delay_share"} <= set(s.checks)
    names = ("report.md", "tradeoff.png", "latency_by_mode.png", "latency_vs_load.png")
    for name in names:
        assert (out / name).stat().st_size > 0
    assert _bench_namespaces(proc.pid) == []
    assert not os.path.exists(os.path.join(records_dir(), f"ndkbench-{proc.pid}.json"))
    assert _host_napis() == napis


@pytest.mark.kernel
@pytest.mark.slow
def test_sigint_mid_run_restores_everything(tmp_path: Path) -> None:
    napis = _host_napis()
    proc = subprocess.Popen(
        [
            *BENCH,
            "--modes",
            "base,defer,suspend",
            "--workload",
            "sockperf,echo",
            "--duration",
            "2",
            "--out",
            str(tmp_path / "out"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # wait until its testbed exists, then let it measure a little
    deadline = time.monotonic() + 30
    while not _bench_namespaces(proc.pid):
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline, "the bench never built its testbed"
        time.sleep(0.1)
    time.sleep(2.5)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert not (tmp_path / "out").exists()  # no empty output folder
    assert _bench_namespaces(proc.pid) == [], stderr.decode()
    assert not os.path.exists(os.path.join(records_dir(), f"ndkbench-{proc.pid}.json"))
    assert _host_napis() == napis
    assert "Traceback" not in stderr.decode()


@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_leaves_no_output_folder(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "new" / "out"
    proc = subprocess.Popen(
        [*BENCH, "--modes", "base", "--workload", "sockperf", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not _bench_namespaces(proc.pid):
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline, "the bench never built its testbed"
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    if sig == signal.SIGKILL:  # what the README says to do after a SIGKILL
        down = [sys.executable, "-m", "netdevkit", "testbed", "down", "--all"]
        subprocess.run(down, check=True, capture_output=True, timeout=60)
        restore = [sys.executable, "-m", "netdevkit", "restore"]
        subprocess.run(restore, check=False, capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert not out.exists() and not out.parent.exists(), stderr.decode()
    assert _bench_namespaces(proc.pid) == []


@pytest.mark.kernel
def test_a_run_that_measured_nothing_exits_1(tmp_path: Path) -> None:
    out = tmp_path / "out"
    server = "python3 -c 'import sys; sys.exit(3)' {port}"
    cp = subprocess.run(
        [*BENCH, "--server", server, "--modes", "base", "--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cp.returncode == 1
    assert cp.stderr.count("\n") == 1, cp.stderr
    assert "bench measured nothing" in cp.stderr and "exit status 3" in cp.stderr
    assert not out.exists()  # no results, no empty plots


def test_a_kernel_without_the_only_mode_exits_1(tmp_path: Path) -> None:
    if kver.at_least("6.19"):
        pytest.skip("this kernel has threaded busy polling")
    if os.geteuid() != 0:
        pytest.skip("needs root (the bench validates that first)")
    cp = subprocess.run(
        [*BENCH, "--modes", "busy-poll-thread", "--out", str(tmp_path / "o")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cp.returncode == 1 and "needs Linux 6.19" in cp.stderr
    assert cp.stderr.count("\n") == 1 and not (tmp_path / "o").exists()
