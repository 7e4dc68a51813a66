"""``netdevkit testbed up|show|down`` and what a killed testbed owner leaves behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netdevkit import netns
from netdevkit.testbed.journal import ns_pids, records_dir

pytestmark = pytest.mark.kernel


def ndk(*argv: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [sys.executable, "-m", "netdevkit", *argv], capture_output=True, text=True, check=False
    )
    if check is not None:
        assert p.returncode == check, (argv, p.stdout, p.stderr)
    return p


def test_up_show_down(testbed_name: str) -> None:
    up = json.loads(ndk("testbed", "up", "--name", testbed_name, "--queues", "2", "-j").stdout)
    try:
        assert up["namespaces"] == [f"{testbed_name}-srv", f"{testbed_name}-cli"]
        assert netns.exists(f"{testbed_name}-srv") and netns.exists(f"{testbed_name}-cli")
        (shown,) = json.loads(ndk("testbed", "show", testbed_name, "-j").stdout)
        assert shown["status"] == "kept" and os.path.isdir(shown["tmpdir"])
        assert "testbeds still up" in ndk("restore").stdout
        again = ndk("testbed", "up", "--name", testbed_name, check=1)
        assert "already exists" in again.stderr and again.stderr.count("\n") == 1
    finally:
        down = ndk("testbed", "down", testbed_name)
    assert "removed" in down.stdout
    assert not netns.exists(f"{testbed_name}-srv") and not netns.exists(f"{testbed_name}-cli")
    assert not os.path.exists(records_dir())  # the last testbed took its directory along
    assert json.loads(ndk("testbed", "show", "-j").stdout) == []


OWNER = textwrap.dedent(
    """
    import os, sys, time
    from netdevkit.testbed import Testbed, TestbedConfig
    tb = Testbed(TestbedConfig(name=sys.argv[1], server_addr="10.204.0.1",
                               client_addr="10.204.0.2"))
    tb.up()
    open(os.path.join(tb.tmpdir, "server.conf"), "w").write("x")
    server = tb.popen("server", ["sleep", "300"])
    # a process the testbed did not start (no parent-death signal): found by its namespace
    os.system(f"ip netns exec {tb.server_ns} setsid sleep 301 >/dev/null 2>&1 &")
    print(server.pid, flush=True)
    time.sleep(60)
    """
)


def test_sigkilled_owner_leaves_nothing_after_down_all(testbed_name: str) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, testbed_name], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        server_pid = int(owner.stdout.readline())
        for _ in range(100):
            if len(ns_pids(f"{testbed_name}-srv")) == 2:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    # the server started with popen died with its owner (PR_SET_PDEATHSIG)...
    for _ in range(100):
        if not os.path.exists(f"/proc/{server_pid}"):
            break
        subprocess.run(["sleep", "0.05"], check=True)
    assert not os.path.exists(f"/proc/{server_pid}")
    # ...the rest is a leftover that `testbed show` names and `down --all` removes
    (shown,) = json.loads(ndk("testbed", "show", "-j").stdout)
    assert shown["status"] == "leftover" and len(shown["processes"]) == 1
    stray = shown["processes"][0]
    assert "(left over)" in ndk("restore").stdout
    ndk("testbed", "down", "--all", "--prefix", testbed_name)
    assert not netns.exists(f"{testbed_name}-srv") and not netns.exists(f"{testbed_name}-cli")
    assert not os.path.exists(f"/proc/{stray}") or "Z" in Path(f"/proc/{stray}/stat").read_text()
    assert not os.path.exists(records_dir())  # the last testbed took its directory along


def test_down_refuses_a_running_owners_testbed(testbed_name: str) -> None:
    from netdevkit.testbed import Testbed, TestbedConfig

    with Testbed(TestbedConfig(name=testbed_name)) as tb:
        p = ndk("testbed", "down", testbed_name, check=1)
        assert "belongs to running process" in p.stderr
        assert "or add --force" in p.stderr  # the library's hint, in the CLI's flag
        assert ndk("testbed", "down", "--all").stdout.strip() == "nothing to remove"
        assert netns.exists(tb.server_ns)
