"""The bench on a "real NIC" with the load from a peer over ssh (issue 24).

The peer is Debian's openssh-server in the testbed's client namespace (tests/sshpeer.py):
a real ssh session, real remote processes, real journaled tuning. The "NIC" is the
testbed's server end, ``ndk-s`` (``--netns`` names its namespace).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import unique_testbed_name
from sshpeer import SshPeer, path_without, ssh_peer

from netdevkit.bench import remote
from netdevkit.bench.results import Results
from netdevkit.bench.site import NicSite
from netdevkit.netdev.client import Netdev
from netdevkit.testbed import Testbed, TestbedConfig
from netdevkit.tuning.presets import get_preset

pytestmark = pytest.mark.kernel

BENCH = [sys.executable, "-m", "netdevkit", "bench"]
#: the shortest run that measures two modes: no sweep, ping-pong and one open-loop rate
SHORT = ["--workload", "sockperf", "--sweep", "off", "--load", "0,2000", "--duration", "0.5"]


@pytest.fixture
def tb() -> Iterator[Testbed]:
    with Testbed(TestbedConfig(name=unique_testbed_name(), queues=1)) as t:
        yield t


@pytest.fixture
def peer(tb: Testbed, tmp_path: Path) -> Iterator[SshPeer]:
    with ssh_peer(tb, tmp_path / "peer") as p:
        yield p


def napi_values(tb: Testbed) -> list[tuple[Any, ...]]:
    with Netdev.open(tb.server_ns) as nd:
        napis = nd.napi_dump(tb.server_ifindex)
    return [(n.id, n.defer_hard_irqs, n.gro_flush_timeout, n.irq_suspend_timeout) for n in napis]


def bench(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCH, *argv],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={**os.environ, **(env or {})},
    )


def one_line(p: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1, p.stderr
    return p.stderr


def test_remote_run_two_modes(peer: SshPeer, tmp_path: Path) -> None:
    """Servers here on ndk-s, clients on the peer: two modes measured, the report marked
    with the driver and the peer, the NAPI settings put back, nothing left on the peer."""
    tb = peer.tb
    before = napi_values(tb)
    out = tmp_path / "out"
    p = bench(*peer.bench_args(), "--modes", "base,defer", *SHORT, "--out", str(out), "-j")
    assert p.returncode == 0, p.stderr
    res = Results.from_json(p.stdout)
    cfg = res.config
    assert cfg.peer == f"root@{tb.client_addr} ({tb.client_addr})"
    assert cfg.driver == "veth" and cfg.ifname == f"ndk-s (netns {tb.server_ns})"
    assert cfg.link_speed == "10000 Mb/s" and "no interrupts" in cfg.irq_cpus
    assert {(s.mode, s.load_target) for s in res.samples} == {
        (m, x) for m in ("base", "defer") for x in (0, 2000)
    }
    for s in res.samples:
        assert s.achieved_rate > 0 and s.latency.p50 > 0
    defer = next(s for s in res.samples if s.mode == "defer")
    assert defer.napi["defer_hard_irqs"] == get_preset("defer").napi.defer_hard_irqs
    report = (out / "report.md").read_text()
    assert f"clients on the peer root@{tb.client_addr}" in report and "driver veth" in report
    assert napi_values(tb) == before
    assert peer.wait_no_processes() == []
    assert not [k for k in res.skipped if k.workload == "peer"]


def test_peer_without_sockperf_is_refused_first(tb: Testbed, tmp_path: Path) -> None:
    """A peer whose PATH has no sockperf: one line naming the program and its Debian
    package, exit 1, before anything changed (no journal, NAPI settings as they were)."""
    path = path_without(tmp_path, "sockperf")
    with ssh_peer(tb, tmp_path / "peer", path=path) as peer:
        before = napi_values(tb)
        state = tmp_path / "state"
        p = bench(*peer.bench_args(), "--modes", "defer", *SHORT, "--out", str(tmp_path / "o"),
                  env={"NETDEVKIT_STATE_DIR": str(state)})  # fmt: skip
        assert p.returncode == 1
        line = one_line(p)
        assert "sockperf (Debian package 'sockperf')" in line, line
        assert napi_values(tb) == before
        assert not state.exists() or not any(state.iterdir())
        assert not (tmp_path / "o").exists()
        assert peer.wait_no_processes() == []


def test_ssh_failing_is_one_line(tb: Testbed, tmp_path: Path) -> None:
    """Nothing listens on the port: ssh's own reason, one line, exit 1."""
    with ssh_peer(tb, tmp_path / "peer") as peer:
        p = bench(*peer.bench_args(), "--ssh-option", "Port=2", *SHORT)
    assert p.returncode == 1
    line = one_line(p)
    assert f"cannot reach the peer root@{tb.client_addr} over ssh: ssh: connect" in line, line
    assert "refused" in line.lower(), line


def test_peer_python_without_netdevkit(peer: SshPeer) -> None:
    """The peer's Python cannot import netdevkit: said, with how to install it."""
    argv = [x if x != sys.executable else "/usr/bin/python3" for x in peer.bench_args()]
    p = bench(*argv, *SHORT)
    assert p.returncode == 1
    line = one_line(p)
    assert "cannot import netdevkit" in line and "pip install netdevkit" in line, line


def test_traffic_not_crossing_the_interface_is_refused(peer: SshPeer) -> None:
    """--peer-addr that this side routes out of another device (lo): refused, one line."""
    p = bench(*peer.bench_args(), "--peer-addr", "127.0.0.1", *SHORT)
    assert p.returncode == 2
    assert "leaves through lo, not ndk-s" in one_line(p)


def _site(peer: SshPeer) -> NicSite:
    args = peer.bench_args()
    rp = remote.Peer(
        peer.target, peer.tb.client_addr, str(peer.ssh_config), (), sys.executable,
        peer.tb.server_ns,
    )  # fmt: skip
    return NicSite(args[args.index("--ifname") + 1], rp, netns=peer.tb.server_ns)


@pytest.mark.parametrize("how", ["close", "sigkill-ssh"])
def test_remote_group_ends_with_the_channel(peer: SshPeer, how: str) -> None:
    """A remote client with a child of its own: its whole group is gone once the site
    closes, and also when the local ssh is SIGKILLed (the wrapper sees its stdin end)."""
    with _site(peer) as site:
        proc = site.popen("client", ["sh", "-c", "sleep 300 & exec sleep 301"],
                          stdout=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 10
        while len(found := remote.leftovers(site.peer, site.tag)) < 3:
            assert time.monotonic() < deadline, found
            time.sleep(0.2)
        if how == "sigkill-ssh":
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            deadline = time.monotonic() + 10
            while remote.leftovers(site.peer, site.tag):
                assert time.monotonic() < deadline, "the remote group outlived its ssh"
                time.sleep(0.2)
    assert site.leftover == []  # nothing had to be killed by the after-run check
    assert remote.leftovers(site.peer, site.tag) == []
    assert peer.wait_no_processes() == []


def test_wrapper_passes_the_exit_status(peer: SshPeer) -> None:
    """The client's output and exit status come back through the wrapper (its stdin, the
    channel, stays open: closing it is how the run says "end now")."""
    with _site(peer) as site:
        proc = site.popen("client", ["sh", "-c", "echo out; exit 3"], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert (proc.returncode, out) == (3, b"out\n")


def test_remote_argv_for_the_peer() -> None:
    argv = [sys.executable, "-m", "x", "--host", "/abs/arg"]
    assert remote.remote_argv(argv, "py3") == ["py3", "-m", "x", "--host", "/abs/arg"]
    argv = ["/usr/bin/stdbuf", "-oL", "/usr/bin/sockperf", "ping-pong"]
    assert remote.remote_argv(argv, "py3") == ["stdbuf", "-oL", "sockperf", "ping-pong"]


def test_ssh_argv_quotes_for_the_remote_shell() -> None:
    p = remote.Peer("u@h", "10.0.0.2", "/cfg", ("Port=2222",), "python3", "ns1")
    argv = remote.ssh_argv(p, ["echo", "a b", "$HOME"])
    assert argv[:4] == [argv[0], "netns", "exec", "ns1"]
    assert argv[-4:] == ["Port=2222", "--", "u@h", "echo 'a b' '$HOME'"]
    assert "BatchMode=yes" in argv and "/cfg" in argv
    tagged = remote.ssh_argv(p, ["sockperf"], tag="t1")[-1]
    assert tagged.startswith(f"env {remote.TAG_ENV}=t1 python3 -c ") and tagged.endswith(
        " sockperf"
    )


def test_nic_placement_refuses_a_client_cpu(peer: SshPeer) -> None:
    p = bench(*peer.bench_args(), "--cpus", "server=0,client=1", *SHORT)
    assert p.returncode == 2
    assert "clients run on the peer" in one_line(p)


def test_results_json_keeps_the_marks(tmp_path: Path) -> None:
    """Runs on different NICs compare: the marks are settings that differ."""
    from netdevkit.bench.compare import compare
    from netdevkit.bench.results import RunConfig

    a = Results(RunConfig(("base",), ("echo",), (0,), 1.0, driver="mlx5_core", peer="h1"), ())
    b = Results(RunConfig(("base",), ("echo",), (0,), 1.0, driver="ice", peer="h1"), ())
    path = tmp_path / "r.json"
    a.save(str(path))
    assert json.loads(path.read_text())["config"]["driver"] == "mlx5_core"
    assert Results.load(str(path)).config == a.config
    assert ("driver", "mlx5_core", "ice") in compare(a, b).setup


def test_cpus_irq_on_veth_is_refused(tb: Testbed) -> None:
    """--cpus server=irq on an interface whose NAPIs have no interrupts: refused, one line."""
    p = bench("--netns", tb.server_ns, "--ifname", "ndk-s", "--peer", f"root@{tb.client_addr}",
              "--cpus", "server=irq", *SHORT)  # fmt: skip
    assert p.returncode == 1
    assert "ndk-s's NAPIs have no interrupts" in one_line(p)


def test_cpus_irq_and_not_irq_become_the_interrupt_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """server=not-irq / napi=irq: the CPUs the queue interrupts are affine to, or the rest."""
    import argparse

    from netdevkit.bench import nic
    from netdevkit.cli import bench as cli_bench

    irq0 = nic.NicInfo(
        "eth1", "mlx5_core", "1.2", 100000, (nic.IrqAffinity(1, 45, frozenset({0})),)
    )
    monkeypatch.setattr(nic, "nic_info", lambda ifname, netns=None: irq0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    args = argparse.Namespace(ifname="eth1", netns=None)
    got = cli_bench._irq_placement("server=not-irq,napi=irq", args)
    assert got == "server=1-3,napi=0"
    assert irq0.describe_irqs() == "irq 45 (napi 1) -> CPUs 0"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--peer", "h"], "--ifname and --peer go together"),
        (["--ifname", "lo"], "--ifname and --peer go together"),
        (["--ssh-option", "Port=2"], "go with --ifname and --peer"),
        (["--ifname", "lo", "--peer", "h", "--ssh-option", "Port"], "KEY=VALUE"),
        (["--ifname", "lo", "--peer", "h", "--netns", "ndk-no-such-ns"], "no such network"),
        (["--ifname", "lo", "--peer", "h", "--ssh-config", "/no/such"], "no such file"),
    ],
)
def test_bad_remote_options_are_one_line(argv: list[str], said: str) -> None:
    p = bench(*argv, *SHORT)
    assert p.returncode == 2
    assert said in one_line(p)


def test_sigterm_mid_run_leaves_nothing(peer: SshPeer, tmp_path: Path) -> None:
    """SIGTERM while a client runs on the peer: the NAPI settings are put back here and
    no process of the run is left there."""
    tb = peer.tb
    before = napi_values(tb)
    proc = subprocess.Popen(
        [*BENCH, *peer.bench_args(), "--modes", "defer", *SHORT, "--out", str(tmp_path / "o")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while napi_values(tb) == before:  # the defer mode is on (after the noise floor)
            assert proc.poll() is None and time.monotonic() < deadline, "defer never applied"
            time.sleep(0.05)
        while not any(b"sockperf" in _cmdline(p) for p in peer.processes()):
            assert proc.poll() is None and time.monotonic() < deadline, "no remote client seen"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert napi_values(tb) == before
    assert peer.wait_no_processes() == []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_remote_memcached_redis_and_your_own_http_server(peer: SshPeer, tmp_path: Path) -> None:
    """Every client runs on the peer: mcload (memcached), redis-benchmark, and wrk against
    your own server (--server, started here in IF's namespace on IF's address)."""
    base = [*peer.bench_args(), "--modes", "base", "--sweep", "off", "--load", "0"]
    base += ["--duration", "0.5", "-j"]
    p = bench(*base, "--workload", "memcached,redis", "--out", str(tmp_path / "a"))
    assert p.returncode == 0, p.stderr
    res = Results.from_json(p.stdout)
    assert {s.workload for s in res.samples} == {"memcached", "redis"}, res.skipped
    assert all(s.achieved_rate > 0 for s in res.samples)
    server = f"{sys.executable} -m http.server --bind {{addr}} {{port}}"
    p = bench(*base, "--server", server, "--client", "http", "--out", str(tmp_path / "b"))
    assert p.returncode == 0, p.stderr
    (http,) = Results.from_json(p.stdout).samples
    assert http.server == "byo" and http.achieved_rate > 0
    assert peer.wait_no_processes() == []
