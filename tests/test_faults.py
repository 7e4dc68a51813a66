"""Fault injection: interrupt each command at every step that changes the system.

For ``napi set``, ``apply``, ``apply --watch``, ``attach --hold``, ``testbed up`` and
``bench --quick`` (one mode, the echo workload, 50 ms samples), a clean run under
``NETDEVKIT_FAULT_TRACE`` lists the steps that change the system, in order (journal
writes, napi-set calls,
EPIOCSPARAMS, namespaces and links created, servers started, namespaces removed). Then,
for every step k and for SIGINT and SIGKILL, the command runs again with
``NETDEVKIT_FAULT=*:k:SIG`` -- it sends itself the signal right before step k -- and the
documented recovery runs (``restore``; ``detach --pid``; ``testbed down --all``). The
system must then be as before: NAPI settings of the testbed, epoll parameters of the
target, namespaces, processes (found by the private state directory in their
environment), files under the state directory and under the command's TMPDIR.

Why injection points and not a sweep of kill times: a timer lands in the short windows
(between the journal write and the kernel call, during the rollback) only by luck, and
differently in every run; a named point reaches each step in every run, so a residue
found here is reproduced with one environment variable. A SIGINT is also checked before
the recovery: those runs must clean up by themselves.

The number of points per command and the residue found are printed in the terminal
summary ("fault injection: ...").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import FAULT_SUMMARY, TESTBED_PREFIX

from netdevkit import netns
from netdevkit.ethtool.client import Ethtool
from netdevkit.netdev.client import Netdev
from netdevkit.testbed import Testbed

pytestmark = pytest.mark.kernel

SIGNALS = ("SIGINT", "SIGKILL")
IF = "ndk-s"


# --- what "the system" is, for these tests ------------------------------------------------


@dataclass(frozen=True)
class Snap:
    napi: tuple[Any, ...] = ()
    epoll: tuple[Any, ...] = ()
    namespaces: tuple[str, ...] = ()
    processes: frozenset[int] = frozenset()
    files: tuple[str, ...] = ()

    def diff(self, other: Snap) -> list[str]:
        out = []
        for name in ("napi", "epoll", "namespaces", "files"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                out.append(f"{name}: {a} -> {b}")
        extra = other.processes - self.processes
        if extra:
            out.append(f"processes left: {sorted(extra)} {[_cmdline(p) for p in extra]}")
        return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
    except OSError:
        return "?"


def _procs_with_env(marker: bytes) -> frozenset[int]:
    """Live processes whose environment holds *marker* (our private state directory)."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            if stat[stat.rindex(b")") + 2 :][:1] in (b"Z", b"X"):
                continue
            if marker in Path(f"/proc/{entry}/environ").read_bytes():
                out.add(int(entry))
        except OSError:
            continue
    return frozenset(out)


def _files(*dirs: Path) -> tuple[str, ...]:
    out = []
    for d in dirs:
        for root, dirnames, names in os.walk(d):
            for n in [*names, *(x + "/" for x in dirnames)]:
                rel = os.path.relpath(os.path.join(root, n), d.parent)
                if not rel.endswith("journal.lock"):  # the lock file is the journal's
                    out.append(rel)
    return tuple(sorted(out))


def napi_values(tb: Testbed) -> tuple[Any, ...]:
    rows = []
    for ns, ifindex in ((tb.server_ns, tb.server_ifindex), (tb.client_ns, tb.client_ifindex)):
        with Netdev.open(ns) as nd:
            for n in sorted(nd.napi_dump(ifindex), key=lambda n: n.id):
                rows.append((n.id, n.defer_hard_irqs, n.gro_flush_timeout, n.irq_suspend_timeout))
    return tuple(rows)


@dataclass
class World:
    """The private state directory and TMPDIR of one test, and how to look at the system."""

    state: Path
    tmp: Path
    testbed: Testbed | None = None
    epoll: Callable[[], tuple[Any, ...]] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def snap(self) -> Snap:
        return Snap(
            napi=napi_values(self.testbed) if self.testbed is not None else (),
            epoll=self.epoll() if self.epoll is not None else (),
            namespaces=tuple(n for n in netns.list_names() if n.startswith(TESTBED_PREFIX)),
            processes=_procs_with_env(f"NETDEVKIT_STATE_DIR={self.state}\0".encode()),
            files=_files(self.state, self.tmp),
        )

    def environ(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETDEVKIT_FAULT")}
        return {**env, "NETDEVKIT_STATE_DIR": str(self.state), "TMPDIR": str(self.tmp), **extra}

    def cli(
        self, *argv: str, extra: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "netdevkit", *argv],
            env=self.environ(extra or {}),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    state, tmp = tmp_path / "state", tmp_path / "tmp"
    state.mkdir()
    tmp.mkdir()
    return World(state, tmp)


def no_traceback(p: subprocess.CompletedProcess[str]) -> int:
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode


def interrupted_says_so(p: subprocess.CompletedProcess[str]) -> int:
    """An interrupted change is one line saying it changed nothing (never "interrupted"
    while the changes stay)."""
    no_traceback(p)
    if p.returncode == 128 + signal.SIGINT:
        assert p.stderr.count("\n") == 1 and "nothing changed" in p.stderr, p.stderr
    return p.returncode


# --- the sweep ------------------------------------------------------------------------------


def sweep(
    world: World,
    command: str,
    run: Callable[[dict[str, str]], int],
    recover: Callable[[], object],
) -> None:
    recover()  # the recovery's own files (journal.lock) exist before, as after
    before = world.snap()
    trace = world.state.parent / "trace"
    run({"NETDEVKIT_FAULT_TRACE": str(trace)})
    recover()
    assert before.diff(world.snap()) == [], "an uninterrupted run plus recovery left residue"
    points = trace.read_text().split()
    assert points, f"{command}: no system-changing step reached"
    residue: list[str] = []
    self_cleaned = 0
    for k, point in enumerate(points, 1):
        for sig in SIGNALS:
            rc = run({"NETDEVKIT_FAULT": f"*:{k}:{sig}"})
            if sig == "SIGKILL":  # the injection really happened
                assert rc == -signal.SIGKILL, (command, k, point, rc)
            if sig == "SIGINT":  # must clean up by itself, before any recovery
                left = before.diff(world.snap())
                if left:
                    residue.append(f"SIGINT at step {k} ({point}) before recovery: {left}")
                else:
                    self_cleaned += 1
            recover()
            left = before.diff(world.snap())
            if left:
                residue.append(f"{sig} at step {k} ({point}) after recovery: {left}")
    kinds = ", ".join(f"{n} {p}" for p, n in Counter(points).items())
    FAULT_SUMMARY.append(
        f"fault injection: {command}: {len(points)} interruption points ({kinds}) x "
        f"SIGINT/SIGKILL = {2 * len(points)} runs; SIGINT runs clean without recovery: "
        f"{self_cleaned}/{len(points)}; residue after recovery: {len(residue)}"
    )
    assert residue == []


# --- the commands ---------------------------------------------------------------------------


def test_napi_set(testbed4: Testbed, world: World) -> None:
    world.testbed = testbed4
    argv = ["napi", "set", "--netns", testbed4.server_ns, "--ifname", IF, "--preset", "suspend"]

    def run(extra: dict[str, str]) -> int:
        return interrupted_says_so(world.cli(*argv, extra=extra))

    sweep(world, "napi set (4 NAPIs)", run, lambda: no_traceback(world.cli("restore")))


def test_apply(testbed4: Testbed, world: World, tmp_path: Path) -> None:
    world.testbed = testbed4
    profile = tmp_path / "p.toml"
    profile.write_text(
        f'netns = "{testbed4.server_ns}"\n[[interface]]\nmatch = "ndk-*"\npreset = "defer"\n'
        "[[interface.napi]]\nposition = 1\ndefer-hard-irqs = 7\n"
    )

    def run(extra: dict[str, str]) -> int:
        return interrupted_says_so(world.cli("apply", str(profile), extra=extra))

    sweep(world, "apply (4 NAPIs)", run, lambda: no_traceback(world.cli("restore")))


def test_apply_watch(testbed4: Testbed, world: World, tmp_path: Path) -> None:
    """The watcher (--restore-on-exit) applies, re-applies to a second interface that
    appears, and undoes both on SIGTERM; a signal at any of those steps is cleaned up."""
    world.testbed = testbed4
    ns = testbed4.server_ns
    profile = tmp_path / "w.toml"
    profile.write_text(f'netns = "{ns}"\n[[interface]]\nmatch = "ndk-*"\npreset = "suspend"\n')
    argv = [sys.executable, "-m", "netdevkit", "apply", "--watch", "--restore-on-exit"]

    def run(extra: dict[str, str]) -> int:
        w = subprocess.Popen(
            [*argv, str(profile)],
            env=world.environ(extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert w.stdout is not None
            if _line_starting(w, "watching "):
                _second_interface(ns, "up")
                _line_starting(w, "re-applied ")
                w.send_signal(signal.SIGTERM)
            _out, err = w.communicate(timeout=60)
            assert "Traceback" not in err, err
        finally:
            if w.poll() is None:
                w.kill()
                w.wait()
            _second_interface(ns, "down")
        if w.returncode == 128 + signal.SIGINT:
            assert err.count("\n") == 1 and "nothing changed" in err, err
        return w.returncode

    sweep(
        world,
        "apply --watch (4 NAPIs + a second interface)",
        run,
        lambda: no_traceback(world.cli("restore")),
    )


def _line_starting(p: subprocess.Popen[str], head: str) -> bool:
    """Read *p*'s stdout up to a line starting with *head*: False if it ended first."""
    assert p.stdout is not None
    return any(line.startswith(head) for line in p.stdout)


def _second_interface(ns: str, state: str) -> None:
    """A 1-queue veth pair ndk-w0/ndk-w1 (GRO on ndk-w0) created or removed in *ns*."""
    if state == "down":
        subprocess.run(["ip", "-n", ns, "link", "del", "ndk-w0"], check=False, capture_output=True)
        return
    ip = ["ip", "-n", ns, "link"]
    subprocess.run(
        [*ip, "add", "name", "ndk-w0", "type", "veth", "peer", "name", "ndk-w1"], check=True
    )
    for dev in ("ndk-w0", "ndk-w1"):
        subprocess.run([*ip, "set", "dev", dev, "up"], check=True)
    with Ethtool.open(ns) as et:
        et.features_set("ndk-w0", {"rx-gro": True})


TARGET = textwrap.dedent(
    """
    import fcntl, json, select, struct, sys
    eps = [select.epoll(), select.epoll()]
    print("ready", flush=True)
    for line in sys.stdin:
        out = [list(struct.unpack("=IHBB", fcntl.ioctl(e.fileno(), 0x80088A02, bytes(8))))
               for e in eps]
        print(json.dumps(out), flush=True)
    """
)


@pytest.fixture
def target(world: World) -> Iterator[subprocess.Popen[str]]:
    p = subprocess.Popen(
        [sys.executable, "-c", TARGET],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=world.environ({}),
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def test_attach_hold(world: World, target: subprocess.Popen[str]) -> None:
    assert target.stdin is not None and target.stdout is not None

    def params() -> tuple[Any, ...]:
        assert target.stdin is not None and target.stdout is not None
        target.stdin.write("get\n")
        target.stdin.flush()
        return tuple(tuple(x) for x in json.loads(target.stdout.readline()))

    world.epoll = params

    def run(extra: dict[str, str]) -> int:
        argv = ["attach", "--pid", str(target.pid), "--preset", "suspend", "--hold", "-j"]
        hold = subprocess.Popen(
            [sys.executable, "-m", "netdevkit", *argv],
            env=world.environ(extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert hold.stderr is not None
            line = hold.stderr.readline()  # "holding; ..." once attached, or it ended
            if line.startswith("holding"):
                hold.send_signal(signal.SIGTERM)
            _out, err = hold.communicate(timeout=30)
            assert "Traceback" not in line + err, line + err
        finally:
            if hold.poll() is None:
                hold.kill()
                hold.wait()
        return hold.returncode

    def recover() -> None:
        p = world.cli("detach", "--pid", str(target.pid))
        no_traceback(p)
        assert p.returncode in (0, 1), p.stderr  # 1: nothing journaled, nothing to do

    sweep(world, "attach --hold (2 epoll contexts)", run, recover)


def test_testbed_up(world: World, testbed_name: str) -> None:
    def run(extra: dict[str, str]) -> int:
        return no_traceback(world.cli("testbed", "up", "--name", testbed_name, extra=extra))

    def recover() -> None:
        p = world.cli("testbed", "down", "--all", "--prefix", testbed_name)
        assert p.returncode == 0, p.stderr

    sweep(world, "testbed up", run, recover)


@pytest.mark.slow
def test_bench_quick(world: World, testbed_name: str) -> None:
    out = world.state.parent / "out"

    def run(extra: dict[str, str]) -> int:
        p = world.cli(
            *("bench", "--quick", "--modes", "suspend", "--workload", "echo"),
            # fixed loads, no knee probe: the probe's step count depends on what it
            # measures, and the sweep needs the same steps in every run
            *("--sweep", "off", "--load", "0,2000"),
            *("--duration", "0.05", "--testbed-name", testbed_name, "--out", str(out), "-j"),
            extra=extra,
        )
        return no_traceback(p)

    def recover() -> None:
        assert world.cli("testbed", "down", "--all", "--prefix", testbed_name).returncode == 0
        no_traceback(world.cli("restore"))

    start = time.monotonic()
    sweep(world, "bench --quick (suspend, echo, 50 ms samples)", run, recover)
    FAULT_SUMMARY.append(f"fault injection: bench sweep took {time.monotonic() - start:.0f} s")


# --- the Ctrl-C race on hundreds of NAPIs -------------------------------------------------


def _journaled_ids(state: Path) -> set[int]:
    path = state / "journal.json"
    if not path.exists():
        return set()
    return {e["info"]["napi_id"] for e in json.loads(path.read_text())["entries"]}


@pytest.mark.slow
def test_ctrl_c_during_napi_set_on_256_napis(world: World, testbed_name: str) -> None:
    """SIGINT from outside at staggered moments over the second half of a run (the real
    race, no injection point): after each run either every NAPI changed and the journal
    lists them all (exit 0, or 130 saying they stay), or none did
    and the journal is empty (exit 130, "nothing changed") -- never a changed NAPI the
    journal does not know, never "interrupted" with changes left."""
    from netdevkit.testbed import TestbedConfig

    with Testbed(TestbedConfig(name=testbed_name, queues=256)) as tb:
        argv = [sys.executable, "-m", "netdevkit", "napi", "set", "--netns", tb.server_ns]
        argv += ["--ifname", IF, "--defer-hard-irqs", "7"]
        outcomes: Counter[str] = Counter()
        start = time.monotonic()
        assert world.cli(*argv[3:]).returncode == 0  # how long a whole run takes here
        whole = time.monotonic() - start
        assert world.cli("restore").returncode == 0
        runs = 16
        for i in range(runs):
            p = subprocess.Popen(
                argv, env=world.environ({}), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            time.sleep(whole * (0.4 + 0.8 * i / runs))  # the writes come after start-up
            p.send_signal(signal.SIGINT)
            _out, err = p.communicate(timeout=60)
            with Netdev.open(tb.server_ns) as nd:
                changed = {n.id for n in nd.napi_dump(tb.server_ifindex) if n.defer_hard_irqs}
            assert changed <= _journaled_ids(world.state), "a changed NAPI the journal lacks"
            assert b"Traceback" not in err and err.count(b"\n") <= 1, err
            if p.returncode == 0:
                assert len(changed) == 256
                outcomes["completed"] += 1
            elif b"they stay" in err:  # the signal came after the last change: it says so
                assert p.returncode == 128 + signal.SIGINT, err
                assert len(changed) == 256
                outcomes["interrupted after completing"] += 1
            else:
                assert p.returncode == 128 + signal.SIGINT, err
                assert b"nothing changed" in err, err
                assert changed == set() and _journaled_ids(world.state) == set(), err
                outcomes["rolled back" if b"rolled back" in err else "before any change"] += 1
            assert world.cli("restore").returncode == 0
        FAULT_SUMMARY.append(
            f"Ctrl-C during napi set on 256 NAPIs ({whole:.2f} s a run), {runs} runs: "
            f"{dict(outcomes)}"
        )


def test_bench_remote(world: World, testbed_name: str, tmp_path: Path) -> None:
    """``bench --peer``: SIGINT and SIGKILL at each start of a remote client (the peer is
    sshd in the testbed's client namespace, tests/sshpeer.py). Nothing is left on either
    side: here the NAPI settings are back (SIGINT) or ``restore`` puts them back (SIGKILL),
    no local process; on the peer no process of the run. A SIGKILLed run's temporary
    directory is removed by the next run (checked at the end)."""
    from sshpeer import ssh_peer

    from netdevkit.testbed import TestbedConfig

    tb = Testbed(TestbedConfig(name=testbed_name, queues=1))
    with tb, ssh_peer(tb, tmp_path / "peer") as peer:
        world.testbed = tb
        argv = ["bench", *peer.bench_args(), "--modes", "defer", "--workload", "sockperf",
                "--sweep", "off", "--load", "2000", "--duration", "0.3",
                "--out", str(tmp_path / "out")]  # fmt: skip
        _remote_sweep(world, argv, peer.wait_no_processes, tmp_path / "trace")


def _remote_sweep(
    world: World, argv: list[str], peer_left: Callable[[], list[int]], trace: Path
) -> None:
    def recover() -> None:
        no_traceback(world.cli("restore"))

    recover()
    before = world.snap()
    assert no_traceback(world.cli(*argv, extra={"NETDEVKIT_FAULT_TRACE": str(trace)})) == 0
    starts = trace.read_text().split().count("remote-start")
    assert starts >= 3  # the noise floor's two clients and the mode's one
    residue: list[str] = []
    for k in range(1, starts + 1):
        for sig in SIGNALS:
            rc = no_traceback(
                world.cli(*argv, extra={"NETDEVKIT_FAULT": f"remote-start:{k}:{sig}"})
            )
            assert rc == (-signal.SIGKILL if sig == "SIGKILL" else 128 + signal.SIGINT), rc
            if left_there := peer_left():
                residue.append(f"{sig} at remote start {k}: peer processes {left_there}")
            if sig == "SIGINT" and (left := before.diff(world.snap())):
                residue.append(f"SIGINT at remote start {k} before recovery: {left}")
            recover()
            left = before.diff(world.snap())
            if sig == "SIGKILL":  # the run's temp dir stays until the next run
                left = [x for x in left if not (x.startswith("files:") and "ndkbench-nic-" in x)]
            if left:
                residue.append(f"{sig} at remote start {k} after recovery: {left}")
    assert no_traceback(world.cli(*argv)) == 0
    if left := before.diff(world.snap()):
        residue.append(f"after a clean run: {left}")
    FAULT_SUMMARY.append(
        f"fault injection: bench --peer: {starts} remote starts x SIGINT/SIGKILL = "
        f"{2 * starts} runs; residue: {len(residue)}"
    )
    assert residue == []
