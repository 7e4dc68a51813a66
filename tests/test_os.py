"""The OS chores written once (netdevkit._os): capabilities, the signal scope, CPU lists.

Signal tests send real signals to this process (``signal.raise_signal``) or run a child
Python that does, so the kernel and CPython deliver them as they would to a user.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
from types import FrameType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdevkit import _os
from netdevkit.errors import NotFoundError, RequestError

# --- capabilities ----------------------------------------------------------------------


def _status_capeff() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise AssertionError("no CapEff line")


def test_effective_caps_is_what_proc_says() -> None:
    assert _os.effective_caps() == _status_capeff()


def test_has_capability_reads_the_bit() -> None:
    eff = _status_capeff()
    for cap in (_os.CAP_NET_ADMIN, _os.CAP_SYS_ADMIN, _os.CAP_SYS_PTRACE):
        assert _os.has_capability(cap) == bool(eff >> cap & 1)


def test_unprivileged_child_has_no_net_admin() -> None:
    """A child that dropped every capability is told so (needs root to drop them)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a child with an empty capability set")
    code = (
        "import os\n"
        "from netdevkit import _os\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"  # drops CapEff
        "print(_os.effective_caps(), _os.has_capability(_os.CAP_NET_ADMIN))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert out.split() == ["0", "False"]


# --- CPU lists -------------------------------------------------------------------------


@given(st.frozensets(st.integers(min_value=0, max_value=4096), min_size=1))
def test_cpu_list_round_trip(cpus: frozenset[int]) -> None:
    text = _os.format_cpu_list(cpus)
    assert _os.parse_cpu_list(text) == cpus
    # the canonical form is a fixed point
    assert _os.format_cpu_list(_os.parse_cpu_list(text)) == text


@given(st.frozensets(st.integers(min_value=0, max_value=256), min_size=1))
def test_cpu_list_is_shortest_ranges(cpus: frozenset[int]) -> None:
    text = _os.format_cpu_list(cpus)
    runs = text.split(",")
    # no two runs touch: each run is maximal
    bounds = [tuple(int(x) for x in r.split("-")) for r in runs]
    for (*_, hi), (lo, *_) in itertools.pairwise(bounds):
        assert lo > hi + 1


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", {0}), ("0-3", {0, 1, 2, 3}), ("1-2,7", {1, 2, 7}), (" 0-1,\n", {0, 1})],
)
def test_parse_cpu_list(text: str, cpus: set[int]) -> None:
    assert _os.parse_cpu_list(text) == frozenset(cpus)


@pytest.mark.parametrize(
    ("text", "needle"),
    [("a", "'a' is not N or N-M"), ("3-1", "not a valid range"), ("", "is empty"), ("-1", "N-M")],
)
def test_parse_cpu_list_refuses(text: str, needle: str) -> None:
    with pytest.raises(RequestError, match=needle):
        _os.parse_cpu_list(text)


def test_affinity_of_this_process_is_what_the_kernel_allows() -> None:
    assert _os.affinity_of(os.getpid()) == frozenset(os.sched_getaffinity(0))
    assert _os.usable_cpus() == frozenset(os.sched_getaffinity(0))


def test_set_affinity_pins_every_thread_of_a_child() -> None:
    usable = sorted(os.sched_getaffinity(0))
    one = frozenset({usable[-1]})
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import threading, time\n"
            "ts = [threading.Thread(target=time.sleep, args=(10,)) for _ in range(3)]\n"
            "[t.start() for t in ts]\nprint('ready', flush=True)\ntime.sleep(10)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        tids = _os.set_affinity(child.pid, one)
        assert len(tids) >= 4  # main + 3 threads
        assert _os.affinity_of(child.pid) == one
    finally:
        child.kill()
        child.wait()
    with pytest.raises(NotFoundError, match="exited"):
        _os.set_affinity(child.pid, one)


# --- signal scope ----------------------------------------------------------------------


@pytest.fixture
def usr1_default() -> object:
    """SIGUSR1/SIGUSR2 handlers as they were, put back after the test."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)}
    yield saved
    for s, h in saved.items():
        signal.signal(s, h if h is not None else signal.SIG_DFL)


def test_scope_installs_and_restores(usr1_default: object) -> None:
    got: list[int] = []

    def before(signum: int, frame: FrameType | None) -> None:
        got.append(-signum)

    signal.signal(signal.SIGUSR1, before)

    def ours(signum: int, frame: FrameType | None) -> None:
        got.append(signum)

    with _os.SignalScope((signal.SIGUSR1, signal.SIGUSR2), ours) as scope:
        assert scope.installed == (signal.SIGUSR1, signal.SIGUSR2)
        signal.raise_signal(signal.SIGUSR1)
        signal.raise_signal(signal.SIGUSR2)
    assert got == [signal.SIGUSR1, signal.SIGUSR2]
    assert signal.getsignal(signal.SIGUSR1) is before
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    signal.raise_signal(signal.SIGUSR1)
    assert got[-1] == -signal.SIGUSR1


def test_scope_chains_to_the_previous_handler(usr1_default: object) -> None:
    got: list[str] = []

    def before(signum: int, frame: FrameType | None) -> None:
        got.append("before")

    signal.signal(signal.SIGUSR1, before)
    scope: _os.SignalScope

    def ours(signum: int, frame: FrameType | None) -> None:
        got.append("ours")
        scope.chain(signum, frame)

    with _os.SignalScope((signal.SIGUSR1,), ours) as scope:
        signal.raise_signal(signal.SIGUSR1)
    assert got == ["ours", "before"]


def test_scope_chain_to_default_sigint_raises_keyboard_interrupt() -> None:
    def ours(signum: int, frame: FrameType | None) -> None:
        scope.chain(signum, frame)

    scope = _os.SignalScope((signal.SIGINT,), ours)
    with pytest.raises(KeyboardInterrupt), scope:
        prev = scope.previous_of(signal.SIGINT)
        assert prev is signal.default_int_handler
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_scope_keeps_an_ignored_signal_ignored(usr1_default: object) -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    with _os.SignalScope((signal.SIGUSR1,), lambda s, f: None) as scope:
        assert scope.installed == ()
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
        signal.raise_signal(signal.SIGUSR1)  # ignored: nothing happens
    with _os.SignalScope((signal.SIGUSR1,), lambda s, f: None, keep_ignored=False) as scope:
        assert scope.installed == (signal.SIGUSR1,)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN


def test_scope_leaves_a_later_handler_in_place(usr1_default: object) -> None:
    def later(signum: int, frame: FrameType | None) -> None:
        pass

    with _os.SignalScope((signal.SIGUSR1,), lambda s, f: None):
        signal.signal(signal.SIGUSR1, later)
    assert signal.getsignal(signal.SIGUSR1) is later


def test_scope_installs_nothing_outside_the_main_thread(usr1_default: object) -> None:
    seen: list[tuple[int, ...]] = []

    def body() -> None:
        with _os.SignalScope((signal.SIGUSR1,), lambda s, f: None) as scope:
            seen.append(scope.installed)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [()]
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_chain_to_default_dies_of_the_signal() -> None:
    """A process whose scope chains SIGTERM to the default action dies *of SIGTERM*."""
    code = textwrap.dedent(
        """
        import signal
        from netdevkit import _os
        scope = _os.SignalScope((signal.SIGTERM,), lambda s, f: scope.chain(s, f))
        with scope:
            signal.raise_signal(signal.SIGTERM)
        print("survived")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, timeout=30
    )
    assert proc.returncode == -signal.SIGTERM
    assert b"survived" not in proc.stdout


def test_mask_signals_delivers_after_the_body(usr1_default: object) -> None:
    got: list[str] = []
    signal.signal(signal.SIGUSR1, lambda s, f: got.append("handled"))
    with _os.mask_signals({signal.SIGUSR1}):
        # To this thread: the mask is per thread, and a signal sent to the process may be
        # taken by another thread (numpy's, say), whose C handler does not wait for the body.
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
        got.append("body")
    assert got == ["body", "handled"]


# --- processes -------------------------------------------------------------------------


def test_process_start_time_names_this_process() -> None:
    with open(f"/proc/{os.getpid()}/stat", encoding="ascii", errors="replace") as f:
        field22 = int(f.read().rsplit(")", 1)[1].split()[19])
    assert _os.process_start_time(os.getpid()) == field22
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(FileNotFoundError):
        _os.process_start_time(child.pid)
