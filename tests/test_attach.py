"""netdevkit.attach and ``netdevkit attach/detach/run``: against real, unmodified processes.

The witness is always the target itself: the Python child below asks its *own* epoll fds
with EPIOCGPARAMS (plain fcntl.ioctl, no netdevkit) and prints what it sees; memcached and
redis are read back through a second, independent pidfd_getfd copy. Every test starts its
own peer processes and kills them in a finally block.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from netdevkit.attach import (
    AttachResult,
    AttachWatcher,
    NoEpollError,
    ProcessGone,
    attach,
    detach,
    find_epoll_fds,
    inspect,
    parse_epoll_fdinfo,
    watched_fds,
)
from netdevkit.attach.core import Target
from netdevkit.busypoll.config import BusyPollConfig
from netdevkit.busypoll.epoll import EpollParams
from netdevkit.errors import NotFoundError, PermissionDenied, RequestError, UnsupportedError
from netdevkit.journal import Journal
from netdevkit.testbed import Testbed

SUSPEND = EpollParams(0, 64, True)
DEFAULT = EpollParams(0, 0, False)
SUSPEND_CFG = BusyPollConfig.from_params(SUSPEND)
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: pidfd_getfd on other processes")

# The target: N epolls watching stdin (+ a listener); answers "get" with what its own epolls
# read back via EPIOCGPARAMS. "thread" creates one more epoll in a thread that unshared its
# fd table (CLONE_FILES off). "accept HOST PORT K" accepts K connections, reads one byte of
# each and registers them all in epoll 0, then prints their SO_INCOMING_NAPI_IDs.
CHILD = textwrap.dedent(
    """
    import ctypes, fcntl, json, queue, select, socket, struct, sys, threading, time
    EPIOCGPARAMS = 0x80088A02
    def params(fd):
        u, b, p, _ = struct.unpack("=IHBB", fcntl.ioctl(fd, EPIOCGPARAMS, bytes(8)))
        return [u, b, p]
    args = sys.argv[1:]
    delay = float(args[1]) if args and args[0] == "delay" else 0.0
    n = int(args[1]) if args and args[0] == "n" else 1
    time.sleep(delay)
    eps = [select.epoll() for _ in range(n)]
    lsock = socket.socket(); lsock.bind(("127.0.0.1", 0)); lsock.listen()
    for ep in eps:
        ep.register(sys.stdin.fileno(), select.EPOLLIN)
        ep.register(lsock.fileno(), select.EPOLLIN)
    private = {}
    if args and args[0] == "thread":
        ready = threading.Event()
        def own_table():
            if ctypes.CDLL(None, use_errno=True).unshare(0x400) != 0:  # CLONE_FILES
                raise OSError(ctypes.get_errno(), "unshare")
            ep = select.epoll()  # exists in this thread's fd table only
            private["ask"], private["answer"] = queue.Queue(), queue.Queue()
            ready.set()
            while True:
                private["ask"].get()
                private["answer"].put(params(ep.fileno()))
        threading.Thread(target=own_table, daemon=True).start()
        ready.wait()
    conns = []
    if args and args[0] == "accept":
        ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((args[1], int(args[2]))); ls.listen(64)
        print("listening", flush=True)
        for _ in range(int(args[3])):
            c, _a = ls.accept(); c.recv(1); conns.append(c)
            eps[0].register(c.fileno(), select.EPOLLIN)
        print(json.dumps([c.getsockopt(socket.SOL_SOCKET, 56) for c in conns]), flush=True)
    print("ready", flush=True)
    while True:
        eps[0].poll()
        line = sys.stdin.readline()
        if not line or line.strip() == "quit":
            sys.exit(3)
        if line.strip() == "get":
            mine = [params(e.fileno()) for e in eps]
            if private:  # only the thread itself can see its private epoll
                private["ask"].put(None)
                mine.append(private["answer"].get())
            print(json.dumps(mine), flush=True)
    """
)


class Child:
    """The Python target above, started and always killed by the test."""

    def __init__(self, tmp: Path, *args: str, argv_prefix: list[str] | None = None) -> None:
        script = tmp / "epoll_child.py"
        script.write_text(CHILD)
        argv = [*(argv_prefix or []), sys.executable, str(script), *args]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def wait_ready(self) -> None:
        while (got := self.line()) != "ready":
            assert got, "child exited before it was ready"

    def own_params(self) -> list[EpollParams]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("get\n")
        self.proc.stdin.flush()
        return [EpollParams(u, b, bool(p)) for u, b, p in json.loads(self.line())]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


class StartChild(Protocol):
    def __call__(self, *args: str, argv_prefix: list[str] | None = None) -> Child: ...


@pytest.fixture
def child_factory(tmp_path: Path) -> Iterator[StartChild]:
    started: list[Child] = []

    def start(*args: str, argv_prefix: list[str] | None = None) -> Child:
        child = Child(tmp_path, *args, argv_prefix=argv_prefix)
        started.append(child)
        return child

    try:
        yield start
    finally:
        for c in started:
            c.kill()


# --- fdinfo parsing: byte tables, no kernel ------------------------------------------------

FDINFO = (
    "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\n"
    "tfd:        6 events:       1f data:                6  pos:0 ino:8a1e sdev:9\n"
    "tfd:       27 events:     2019 data:     7f0000001b  pos:0 ino:40e sdev:10\n"
)


def test_parse_epoll_fdinfo_reads_tfd_lines_only() -> None:
    entries = parse_epoll_fdinfo(FDINFO)
    assert [(e.tfd, e.events, e.data, e.ino, e.sdev) for e in entries] == [
        (6, 0x1F, 6, 0x8A1E, 9),
        (27, 0x2019, 0x7F0000001B, 0x40E, 0x10),
    ]
    assert parse_epoll_fdinfo("pos:\t0\nflags:\t02\n") == []


def test_parse_epoll_fdinfo_rejects_a_mangled_tfd_line() -> None:
    with pytest.raises(ValueError, match="unexpected epoll fdinfo line"):
        parse_epoll_fdinfo("tfd: 6 events: zz\n")


def test_attach_result_round_trips_through_its_record() -> None:
    result = AttachResult(
        pid=42,
        start_time=7,
        params=SUSPEND,
        contexts=(),
    )
    assert AttachResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_bad_params_are_refused_before_anything_happens() -> None:
    with pytest.raises(RequestError, match="busy_poll_usecs"):
        attach(os.getpid(), BusyPollConfig(-1, 0, False))


# --- a Python target ---------------------------------------------------------------------


@needs_root
def test_attach_sets_the_targets_own_epolls_and_detach_restores(
    child_factory: StartChild,
) -> None:
    child = child_factory("n", "3")
    child.wait_ready()
    assert child.own_params() == [DEFAULT] * 3
    result = attach(child.pid, BusyPollConfig(50, 64, True))
    assert len(result.contexts) == 3
    assert all(c.old == DEFAULT and c.new == EpollParams(50, 64, True) for c in result.contexts)
    assert child.own_params() == [EpollParams(50, 64, True)] * 3  # seen from inside
    kinds = sorted(w.kind for w in result.contexts[0].watched)
    assert kinds == ["pipe", "socket"]  # stdin and the listener
    listener = next(w for w in result.contexts[0].watched if w.kind == "socket")
    assert listener.napi_id == 0  # loopback listener: no NAPI
    assert result.warnings == ()

    undone = detach(result)
    assert len(undone.restored) == 3 and undone.skipped == ()
    assert child.own_params() == [DEFAULT] * 3


@needs_root
def test_detach_leaves_a_context_the_program_changed_since(child_factory: StartChild) -> None:
    child = child_factory()
    child.wait_ready()
    result = attach(child.pid, SUSPEND_CFG)
    with Target(child.pid) as t, t.copy(result.contexts[0].epoll) as dup:
        from netdevkit.busypoll.epoll import set_params

        set_params(dup, EpollParams(7, 8, False))  # "the program" changes its mind
    undone = detach(result)
    assert undone.restored == ()
    assert "changed since attach" in undone.skipped[0][1]
    assert child.own_params() == [EpollParams(7, 8, False)]


@needs_root
def test_failure_on_the_third_context_restores_the_first_two(
    child_factory: StartChild,
) -> None:
    child = child_factory("n", "3")
    child.wait_ready()

    def fail_third(n: int) -> None:
        if n == 3:
            raise RuntimeError("injected failure on the third context")

    with pytest.raises(RuntimeError, match="injected") as info:
        attach(child.pid, SUSPEND_CFG, after_set=fail_third)
    assert any("set back" in note for note in info.value.__notes__)
    assert child.own_params() == [DEFAULT] * 3  # nothing half-applied


@needs_root
def test_process_exiting_mid_attach_is_a_clear_error(child_factory: StartChild) -> None:
    child = child_factory("n", "2")
    child.wait_ready()

    def kill_target(n: int) -> None:
        if n == 1:
            child.proc.kill()
            child.proc.wait()

    with pytest.raises(ProcessGone, match="exited during the attach"):
        attach(child.pid, SUSPEND_CFG, after_set=kill_target)


@needs_root
def test_thread_with_its_own_fd_table_is_found_and_attached(child_factory: StartChild) -> None:
    child = child_factory("thread")
    child.wait_ready()
    epolls = find_epoll_fds(child.pid)
    private = [e for e in epolls if not e.shared_table]
    assert len(private) == 1 and private[0].tid != child.pid
    result = attach(child.pid, SUSPEND_CFG)
    assert {c.epoll for c in result.contexts} == set(epolls)
    assert child.own_params() == [SUSPEND, SUSPEND]  # the shared epoll, then the private one
    detach(result)
    assert child.own_params() == [DEFAULT, DEFAULT]


@needs_root
def test_kernel_without_the_epoll_ioctls_is_unsupported(
    child_factory: StartChild, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before 6.9 the epoll file has no ioctl handler: ENOTTY on an epoll fd."""
    import errno
    import fcntl

    child = child_factory()
    child.wait_ready()

    def no_ioctl(fd: int, request: int, arg: bytes) -> bytes:
        raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))

    monkeypatch.setattr(fcntl, "ioctl", no_ioctl)
    with pytest.raises(UnsupportedError, match=r"Linux >= 6\.9"):
        attach(child.pid, SUSPEND_CFG)
    monkeypatch.undo()
    assert child.own_params() == [DEFAULT]


def test_pid_that_does_not_exist_is_not_found() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: the pid names nothing now (reuse within the test is unlikely)
    with pytest.raises(NotFoundError, match=f"process {gone.pid}"):
        attach(gone.pid, SUSPEND_CFG)
    with pytest.raises(NotFoundError):
        attach(2**22 + 1, SUSPEND_CFG)  # above the largest pid_max


@needs_root
@pytest.mark.parametrize(
    "form",
    [
        [],
        ["--show"],
        ["--hold"],
        ["--hold", "-j"],
        ["--hold", "--watch"],
        ["--hold", "--watch", "-j"],
    ],
)
def test_every_form_of_attach_says_a_missing_pid_does_not_exist(
    form: list[str], tmp_path: Path
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: the pid names nothing now
    preset = [] if "--show" in form else ["--preset", "suspend"]
    r = subprocess.run(
        _netdevkit("attach", "--pid", str(gone.pid), *preset, *form),
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "NETDEVKIT_STATE_DIR": str(tmp_path)},
    )  # fmt: skip
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr == f"netdevkit: error: process {gone.pid} does not exist\n"
    assert not (tmp_path / "journal.json").exists()


@needs_root
def test_process_without_epoll_gets_a_clear_message() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(NoEpollError, match="has no epoll fd"):
            attach(sleeper.pid, SUSPEND_CFG)
    finally:
        sleeper.kill()
        sleeper.wait()


@needs_root
def test_without_ptrace_rights_the_error_names_cap_sys_ptrace(
    child_factory: StartChild,
) -> None:
    child = child_factory()
    child.wait_ready()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                attach(child.pid, SUSPEND_CFG)
                msg = "attached?!"
            except PermissionDenied as err:
                msg = f"{err.capability}|{err}"
            except BaseException as err:
                msg = f"{type(err).__name__}|{err}"
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        got = f.read()
    os.waitpid(pid, 0)
    capability, _, message = got.partition("|")
    assert capability == "CAP_SYS_PTRACE", got
    assert str(child.pid) in message
    assert child.own_params() == [DEFAULT]


# --- the mixed-NAPI warning --------------------------------------------------------------


@needs_root
@pytest.mark.kernel
def test_context_with_sockets_of_two_napis_is_warned_about(
    testbed4: Testbed, child_factory: StartChild
) -> None:
    port, conns = 18_211, 8
    child = child_factory(
        "accept",
        testbed4.server_addr,
        str(port),
        str(conns),
        argv_prefix=["ip", "netns", "exec", testbed4.server_ns],
    )
    assert child.line() == "listening"
    clients = []
    try:
        for _ in range(conns):
            c = testbed4.socket("client")
            c.connect((testbed4.server_addr, port))
            c.sendall(b"x")
            clients.append(c)
        ids = json.loads(child.line())
        child.wait_ready()
        assert all(ids), f"connections over the veth testbed should carry NAPI ids: {ids}"
        assert len(set(ids)) >= 2, f"4 queues, {conns} flows, yet one NAPI: {ids}"
        result = attach(child.pid, SUSPEND_CFG)
        mixed = [c for c in result.contexts if c.mixed]
        assert len(mixed) == 1
        assert set(mixed[0].napi_ids) == set(ids)
        assert mixed[0].warning is not None and "route connections" in mixed[0].warning
        assert result.warnings == (mixed[0].warning,)
        assert child.own_params() == [SUSPEND]
        assert set(w.napi_id for w in watched_fds(child.pid, mixed[0].epoll.fd)) >= set(ids)
    finally:
        for c in clients:
            c.close()


# --- the watcher, and the CLI --------------------------------------------------------------


@needs_root
def test_watcher_attaches_to_a_context_created_later(child_factory: StartChild) -> None:
    child = child_factory("delay", "0.5")
    with AttachWatcher(child.pid, SUSPEND_CFG) as watcher:
        assert watcher.scan() == []
        child.wait_ready()
        added = watcher.scan()
        assert len(added) == 1 and added[0].new == SUSPEND
        assert watcher.scan() == []  # not twice
        assert child.own_params() == [SUSPEND]
        watcher.detach()
    assert child.own_params() == [DEFAULT]


def _netdevkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "netdevkit", *args]


@needs_root
def test_cli_run_attaches_as_the_program_creates_its_epoll(tmp_path: Path) -> None:
    script = tmp_path / "epoll_child.py"
    script.write_text(CHILD)
    run = subprocess.Popen(
        _netdevkit(
            "run", "--preset", "suspend", "-q", "--", sys.executable, str(script), "delay", "0.3"
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert run.stdout is not None and run.stdin is not None
        assert run.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # a few scan intervals
        run.stdin.write("get\n")
        run.stdin.flush()
        assert json.loads(run.stdout.readline()) == [[0, 64, 1]]
        run.stdin.write("quit\n")
        run.stdin.flush()
        assert run.wait(10) == 3  # the program's own exit code
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


@needs_root
def test_cli_run_forwards_sigterm_and_reports_death_by_signal(tmp_path: Path) -> None:
    run = subprocess.Popen(_netdevkit("run", "-q", "--", "sleep", "30"))
    try:
        time.sleep(0.5)
        run.send_signal(signal.SIGTERM)
        assert run.wait(10) == 128 + signal.SIGTERM
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


@needs_root
def test_cli_attach_records_and_detach_restores(
    child_factory: StartChild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netdevkit.cli.main import main

    monkeypatch.setenv("NETDEVKIT_STATE_DIR", str(tmp_path / "state"))
    child = child_factory("n", "2")
    child.wait_ready()
    assert main(["attach", "--pid", str(child.pid), "--preset", "suspend", "-j"]) == 0
    assert child.own_params() == [SUSPEND, SUSPEND]
    # explicit values on top of the preset; the record keeps the oldest values
    argv = ["attach", "--pid", str(child.pid), "--preset", "suspend", "--usecs", "20"]
    assert main([*argv, "--no-prefer"]) == 0
    assert child.own_params() == [EpollParams(20, 64, False)] * 2
    journal = Journal(str(tmp_path / "state"))
    recorded = [r for r in journal.records("epoll") if r.info["pid"] == child.pid]
    assert len(recorded) == 2  # one record per context, with the oldest values
    assert all(
        r.before == {"busy_poll_usecs": 0, "busy_poll_budget": 0, "prefer_busy_poll": False}
        for r in recorded
    )
    assert main(["detach", "--pid", str(child.pid)]) == 0
    assert child.own_params() == [DEFAULT, DEFAULT]
    assert journal.records("epoll") == []
    assert main(["detach", "--pid", str(child.pid)]) == 1  # no record any more


@needs_root
def test_cli_show_changes_nothing(
    child_factory: StartChild, capsys: pytest.CaptureFixture[str]
) -> None:
    from netdevkit.cli.main import main

    child = child_factory()
    child.wait_ready()
    assert main(["attach", "--pid", str(child.pid), "--show", "-j"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [c["new"] for c in shown["contexts"]] == [
        {"busy_poll_usecs": 0, "busy_poll_budget": 0, "prefer_busy_poll": False}
    ]
    assert inspect(child.pid).contexts[0].old == DEFAULT
    assert child.own_params() == [DEFAULT]


def test_cli_attach_without_values_is_a_usage_error() -> None:
    from netdevkit.cli.main import main

    assert main(["attach", "--pid", str(os.getpid())]) == 2


@needs_root
@pytest.mark.kernel
def test_cli_run_napi_applies_the_preset_while_the_program_runs(
    testbed: Testbed, tmp_path: Path
) -> None:
    from netdevkit.netdev.client import Netdev

    def napi_values() -> set[tuple[int | None, int | None, int | None]]:
        with Netdev.open(netns=testbed.server_ns) as nd:
            return {
                (n.defer_hard_irqs, n.gro_flush_timeout, n.irq_suspend_timeout)
                for n in nd.napi_dump(ifindex=testbed.server_ifindex)
            }

    before = napi_values()
    script = tmp_path / "epoll_child.py"
    script.write_text(CHILD)
    run = subprocess.Popen(
        _netdevkit(
            *("run", "--preset", "suspend", "--napi", "--ifname", testbed.server_if),
            *("--netns", testbed.server_ns, "-q", "--", sys.executable, str(script)),
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "NETDEVKIT_STATE_DIR": str(tmp_path / "state")},
    )
    try:
        assert run.stdout is not None and run.stdin is not None
        assert run.stdout.readline().strip() == "ready"
        assert napi_values() == {(100, 20_000, 20_000_000)}  # the suspend preset's NAPI half
        run.stdin.write("quit\n")
        run.stdin.flush()
        assert run.wait(10) == 3
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert napi_values() == before


@needs_root
@pytest.mark.parametrize("undo", ["detach", "restore"])
def test_sigkilled_attach_hold_is_undone_from_the_journal(
    child_factory: StartChild, tmp_path: Path, undo: str
) -> None:
    child = child_factory("n", "2")
    child.wait_ready()
    hold = subprocess.Popen(
        _netdevkit("attach", "--pid", str(child.pid), "--preset", "suspend", "--hold", "-j"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert hold.stdout is not None
        assert len(json.loads(hold.stdout.readline())) == 2  # the rows it attached
        assert child.own_params() == [SUSPEND, SUSPEND]
        hold.kill()  # SIGKILL: no handler runs
        hold.wait(10)
    finally:
        if hold.poll() is None:
            hold.kill()
            hold.wait()
    assert child.own_params() == [SUSPEND, SUSPEND]  # nobody cleaned up...
    diff = subprocess.run(_netdevkit("napi", "diff", "-j"), capture_output=True, check=True)
    rows = [r for r in json.loads(diff.stdout) if r.get("kind") == "epoll"]
    assert [r["status"] for r in rows] == ["differs", "differs"]  # the diff covers epoll too
    assert rows[0]["differs"]["prefer_busy_poll"] == {"before": False, "now": True}
    only_napi = subprocess.run(
        _netdevkit("napi", "diff", "--kind", "napi", "-j"), capture_output=True, check=True
    )
    assert json.loads(only_napi.stdout) == []
    argv = ["detach", "--pid", str(child.pid)] if undo == "detach" else ["restore"]
    done = subprocess.run(_netdevkit(*argv), capture_output=True, text=True, check=True)
    assert child.own_params() == [DEFAULT, DEFAULT], done.stdout  # ...until the journal did
    again = subprocess.run(_netdevkit("detach", "--pid", str(child.pid)), check=False)
    assert again.returncode == 1


def test_cli_attach_refuses_contradictions(capsys: pytest.CaptureFixture[str]) -> None:
    from netdevkit.cli.main import main

    pid = str(os.getpid())
    assert main(["attach", "--pid", pid, "--prefer", "--no-prefer"]) == 2
    assert main(["attach", "--pid", pid, "--preset", "suspend", "--watch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2, err  # one line each
    assert "--watch" in err and "--hold" in err


# --- many contexts: detach restores every one ------------------------------------------------

MANY = 300


@needs_root
def test_cli_detach_restores_every_one_of_hundreds_of_contexts(
    child_factory: StartChild, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netdevkit.cli.main import main

    monkeypatch.setenv("NETDEVKIT_STATE_DIR", str(tmp_path / "state"))
    child = child_factory("n", str(MANY))
    child.wait_ready()
    assert main(["attach", "--pid", str(child.pid), "--preset", "suspend", "-j"]) == 0
    assert child.own_params() == [SUSPEND] * MANY
    journal = Journal(str(tmp_path / "state"))
    assert len(journal.records("epoll")) == MANY
    assert main(["detach", "--pid", str(child.pid)]) == 0
    assert child.own_params() == [DEFAULT] * MANY
    assert journal.records() == []


@needs_root
def test_journaled_watcher_restores_every_one_of_hundreds_of_contexts(
    child_factory: StartChild, tmp_path: Path
) -> None:
    child = child_factory("n", str(MANY))
    child.wait_ready()
    journal = Journal(str(tmp_path / "state"))
    with AttachWatcher(child.pid, SUSPEND_CFG, journal=journal) as watcher:
        assert len(watcher.scan()) == MANY
        assert watcher.scan() == []  # not twice
        assert child.own_params() == [SUSPEND] * MANY
        records = journal.records("epoll")
        assert len(records) == MANY and all(r.before["busy_poll_budget"] == 0 for r in records)
        (undone,) = watcher.detach()
    assert len(undone.restored) == MANY and undone.skipped == ()
    assert child.own_params() == [DEFAULT] * MANY
    assert journal.records() == []


@needs_root
@pytest.mark.parametrize("hold", [False, True])
def test_hundreds_of_contexts_under_a_soft_open_files_limit_below_them(
    child_factory: StartChild, tmp_path: Path, hold: bool
) -> None:
    """`attach` copies every epoll fd at once: it raises its own soft RLIMIT_NOFILE (to the
    hard one) first; `--hold` copies one at a time. Both work with a soft limit of 128."""
    child = child_factory("n", str(MANY))
    child.wait_ready()
    argv = _netdevkit("attach", "--pid", str(child.pid), "--preset", "suspend", "-j")
    p = subprocess.Popen(
        ["sh", "-c", 'ulimit -Sn 128 && exec "$@"', "sh", *argv, *(["--hold"] * hold)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NETDEVKIT_STATE_DIR": str(tmp_path)},
    )  # fmt: skip
    try:
        assert p.stdout is not None
        assert len(json.loads(p.stdout.readline() or "[]") or []) > 0
        assert child.own_params() == [SUSPEND] * MANY
    finally:
        if hold:
            p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    if hold:
        assert child.own_params() == [DEFAULT] * MANY
