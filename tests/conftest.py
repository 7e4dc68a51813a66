"""Shared test configuration.

Kernel tests carry the ``kernel`` marker. They skip with a sentence saying what
is missing when run without root; under CI (NETDEVKIT_REQUIRE_KERNEL=1, root
on a 6.18 kernel) a skipped kernel test is turned into a failure, so a green CI
always means the real kernel was exercised.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from netdevkit.netns import list_names as netns_list_names
from netdevkit.testbed import Testbed, TestbedConfig
from netdevkit.testbed.journal import end_processes, ns_pids, remove_namespace

REQUIRE_KERNEL = os.environ.get("NETDEVKIT_REQUIRE_KERNEL") == "1"

# The signal tests send SIGINT to this process and to the programs it starts. A shell
# without job control starts background commands with SIGINT ignored, and an ignored
# signal stays ignored across exec: run that way (`make test &`, a CI runner that
# backgrounds its script), every child would ignore Ctrl-C and those tests would
# measure the launcher, not netdevkit. Python's own handler is put back here; children
# then start with the default action, as they would from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: creates network namespaces and veth pairs")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if REQUIRE_KERNEL and report.skipped and "kernel" in item.keywords:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"kernel test skipped under NETDEVKIT_REQUIRE_KERNEL=1: {reason}"


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every netdevkit process it starts) journals and records testbeds in
    a directory of its own, never in the machine's /run/netdevkit: other test runs share
    this machine. Tests that look at the state directory set their own."""
    monkeypatch.setenv("NETDEVKIT_STATE_DIR", str(tmp_path / "ndk-state"))


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``netdevkit ARGS`` in this process: (exit status, stdout, stderr)."""
    from netdevkit.cli.main import main

    try:
        rc = main(list(args))
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


# --- testbed fixtures (netdevkit.testbed) ------------------------------------
#
# Every testbed a test creates is named with TESTBED_PREFIX (this process's pid
# included), so the session-end check below only looks at this run's own
# namespaces and never at those of another pytest running on the same machine.

TESTBED_PREFIX = f"ndkt{os.getpid()}-"
_testbed_counter = itertools.count()


def unique_testbed_name() -> str:
    """A testbed name no other test of this session uses (fits the 24-char rule)."""
    return f"{TESTBED_PREFIX}{next(_testbed_counter)}"


def _make_testbed(queues: int) -> Generator[Testbed, None, None]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and veth pairs")
    tb = Testbed(TestbedConfig(name=unique_testbed_name(), queues=queues))
    try:
        tb.up()
        yield tb
    finally:
        tb.down()


@pytest.fixture
def testbed_name() -> str:
    """A fresh testbed name under this session's prefix (the leak check sees it)."""
    return unique_testbed_name()


@pytest.fixture
def testbed() -> Generator[Testbed, None, None]:
    """A testbed with one queue (one NAPI per side), torn down after the test."""
    yield from _make_testbed(1)


@pytest.fixture
def testbed4() -> Generator[Testbed, None, None]:
    """A testbed with four queues (four NAPIs per side), torn down after the test."""
    yield from _make_testbed(4)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def epoll_target() -> Generator[subprocess.Popen[str], None, None]:
    """A Python process holding one epoll instance and waiting on stdin (killed after)."""
    code = "import select, sys; e = select.epoll(); print('ready', flush=True); sys.stdin.read()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


# Drops CAP_NET_ADMIN (bit 12) from the effective and permitted sets with capset(2), staying
# uid 0 so that the interpreter's files stay readable.
_DROP_CAP_NET_ADMIN = """
import ctypes
_libc = ctypes.CDLL(None, use_errno=True)
_header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, self
_data = (ctypes.c_uint32 * 6)()  # 2 x {effective, permitted, inheritable}
assert _libc.capget(_header, _data) == 0, ctypes.get_errno()
_data[0] &= ~(1 << 12)
_data[1] &= ~(1 << 12)
assert _libc.capset(_header, _data) == 0, ctypes.get_errno()
"""


def run_without_cap_net_admin(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python *code* in a child that first drops CAP_NET_ADMIN; its output as text."""
    return subprocess.run(
        [sys.executable, "-c", _DROP_CAP_NET_ADMIN + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


#: lines the fault-injection tests report (points per command, residue found)
FAULT_SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in FAULT_SUMMARY:
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run loudly if this session left testbed namespaces behind."""
    leftovers = [ns for ns in netns_list_names() if ns.startswith(TESTBED_PREFIX)]
    if not leftovers:
        return
    removed: list[str] = []
    if os.geteuid() == 0:
        # Each test had its own state directory (gone now): remove by name.
        for ns in leftovers:
            end_processes(ns_pids(ns))
            if remove_namespace(ns):
                removed.append(ns)
    message = (
        f"\nLEAKED TESTBED NAMESPACES: {', '.join(leftovers)} were left behind by this "
        f"test session (removed now: {', '.join(removed) or 'none'}). Some test or "
        "fixture does not tear its testbed down.\n"
    )
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message, red=True, bold=True)
    else:
        sys.stderr.write(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
