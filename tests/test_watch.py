"""``netdevkit apply --watch``: the profile stays applied across NAPI recreation and hotplug.

The kernel tests run the real CLI as a subprocess against a 4-queue veth testbed and do
to it what resets NAPI settings: toggle GRO (new NAPIs), change the queue count (the
``ethtool -L`` request, through netdevkit's ethtool client), add a second matching
interface, delete and re-add it. Each time the watcher must say why it re-applied, and
the kernel must read back the profile's values; ``restore`` then undoes all of it. How
long each re-application took is printed in the terminal summary (not asserted: this VM's
timing is noise).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FAULT_SUMMARY

from netdevkit.ethtool.client import Ethtool
from netdevkit.netdev.client import Netdev, ifindex_of
from netdevkit.testbed import Testbed
from netdevkit.tuning.watch import compare, sd_notify

SUSPEND = (100, 20_000, 20_000_000)  # the suspend preset: defer, gro-flush ns, irq-suspend ns
PROFILE = """\
netns = "{ns}"
[[interface]]
match = "ndk-s"
preset = "suspend"
[[interface]]
match = "ndk-x*"
preset = "suspend"
"""


def values(ns: str, ifname: str) -> list[tuple[int | None, int | None, int | None]]:
    with Netdev.open(ns) as nd:
        napis = sorted(nd.napi_dump(ifindex_of(ifname, ns)), key=lambda n: n.id)
    return [(n.defer_hard_irqs, n.gro_flush_timeout, n.irq_suspend_timeout) for n in napis]


class Watcher:
    """`netdevkit apply --watch` as a subprocess; its stdout lines arrive on a queue."""

    def __init__(self, profile: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netdevkit", "apply", "--watch", str(profile), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        """The next line matching *pattern* (the lines before it are kept in seen)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; saw {self.seen}") from None
            if line is None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"watcher ended before {pattern!r}: {self.seen} {err}")
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(signum)
        self.proc.wait(timeout=30)
        self.reader.join(timeout=30)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        while not self.lines.empty():
            line = self.lines.get()
            if line is not None:
                self.seen.append(line)
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def profile(testbed4: Testbed, tmp_path: Path) -> Path:
    p = tmp_path / "watch.toml"
    p.write_text(PROFILE.format(ns=testbed4.server_ns))
    return p


@pytest.fixture
def watcher(profile: Path) -> Iterator[Watcher]:
    w = Watcher(profile)
    try:
        w.wait_for("^watching ")
        yield w
    finally:
        w.kill()


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netdevkit", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def add_veth(ns: str, name: str, queues: int = 2) -> None:
    subprocess.run(
        [
            "ip",
            "-n",
            ns,
            "link",
            "add",
            "name",
            name,
            "numrxqueues",
            str(queues),
            "type",
            "veth",
            "peer",
            "name",
            name + "p",
        ],
        check=True,
    )
    subprocess.run(["ip", "-n", ns, "link", "set", "dev", name + "p", "up"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "dev", name, "up"], check=True)
    with Ethtool.open(ns) as et:
        et.features_set(name, {"rx-gro": True})  # veth has NAPIs only with GRO on


def timed(what: str, w: Watcher, pattern: str, start: float) -> str:
    line = w.wait_for(pattern)
    FAULT_SUMMARY.append(
        f"apply --watch: {what}: re-applied after {time.monotonic() - start:.3f} s"
    )
    return line


# --- the proof on the real kernel ---------------------------------------------------------


@pytest.mark.kernel
def test_watch_keeps_profile_through_resets_and_restore_undoes_all(
    testbed4: Testbed, watcher: Watcher
) -> None:
    ns, dev = testbed4.server_ns, testbed4.server_if
    assert values(ns, dev) == [SUSPEND] * 4

    t = time.monotonic()
    with Ethtool.open(ns) as et:
        et.features_set(dev, {"rx-gro": False})
        et.features_set(dev, {"rx-gro": True})
    line = timed("GRO off/on (NAPIs recreated)", watcher, "^re-applied", t)
    assert "NAPIs were recreated" in line, line
    assert values(ns, dev) == [SUSPEND] * 4

    with Ethtool.open(ns) as et:
        et.channels_set(dev, rx=2)
        assert et.channels_get(dev).rx_count == 2
    line = watcher.wait_for("has 2 NAPIs, not 4")
    assert line.endswith("nothing to re-apply"), line  # the 2 kept keep their settings
    t = time.monotonic()
    with Ethtool.open(ns) as et:
        et.channels_set(dev, rx=4)
    line = timed("ethtool -L rx 2 -> 4", watcher, "^re-applied", t)
    assert "has 4 NAPIs, not 2" in line, line
    assert values(ns, dev) == [SUSPEND] * 4

    t = time.monotonic()
    add_veth(ns, "ndk-x0")
    line = timed("a second matching interface", watcher, "^re-applied.*ndk-x0", t)
    assert "ndk-x0 appeared" in line or "ndk-x0 can be tuned now" in line, line
    assert values(ns, "ndk-x0") == [SUSPEND] * 2

    subprocess.run(["ip", "-n", ns, "link", "del", "dev", "ndk-x0"], check=True)
    watcher.wait_for("ndk-x0 is gone")
    t = time.monotonic()
    add_veth(ns, "ndk-x0")
    line = timed("interface deleted and re-added", watcher, "^re-applied.*ndk-x0", t)
    assert "ndk-x0 came back" in line, line
    assert values(ns, "ndk-x0") == [SUSPEND] * 2

    rc, err = watcher.stop()
    assert rc == 0 and err == "", err
    assert "SIGTERM: the settings stay" in watcher.seen[-1]
    assert values(ns, dev) == [SUSPEND] * 4  # no --restore-on-exit: they stay

    p = cli("restore")
    assert p.returncode == 0, p.stderr
    assert values(ns, dev) == [(0, 0, 0)] * 4
    assert values(ns, "ndk-x0") == [(0, 0, 0)] * 2
    assert cli("napi", "diff").stdout.startswith("no differences")


@pytest.mark.kernel
def test_restore_on_exit_puts_back_what_it_applied(testbed4: Testbed, profile: Path) -> None:
    ns, dev = testbed4.server_ns, testbed4.server_if
    w = Watcher(profile, "--restore-on-exit")
    try:
        w.wait_for("^watching ")
        with Ethtool.open(ns) as et:
            et.features_set(dev, {"rx-gro": False})
            et.features_set(dev, {"rx-gro": True})
        w.wait_for("^re-applied")
        assert values(ns, dev) == [SUSPEND] * 4
        rc, err = w.stop(signal.SIGTERM)
    finally:
        w.kill()
    assert rc == 0 and err == "", err
    assert "SIGTERM: put back what the watcher applied" in w.seen[-1], w.seen
    assert values(ns, dev) == [(0, 0, 0)] * 4
    assert "lists no changes" in cli("restore").stdout


@pytest.mark.kernel
def test_waits_for_a_namespace_and_an_interface_that_do_not_exist_yet(
    testbed4: Testbed, tmp_path: Path
) -> None:
    p = tmp_path / "later.toml"
    p.write_text(
        f'netns = "{testbed4.server_ns}"\n[[interface]]\nmatch = "ndk-late"\npreset = "suspend"\n'
    )
    w = Watcher(p)
    try:
        w.wait_for(r"no interface matches .* yet: waiting")
        w.wait_for("^watching ")
        add_veth(testbed4.server_ns, "ndk-late")
        line = w.wait_for("^re-applied")
        assert "ndk-late appeared" in line, line
        assert values(testbed4.server_ns, "ndk-late") == [SUSPEND] * 2
        rc, _err = w.stop(signal.SIGINT)
    finally:
        w.kill()
    assert rc == 0
    assert cli("restore").returncode == 0


@pytest.mark.kernel
def test_sd_notify_ready_reaches_the_notify_socket(testbed4: Testbed, profile: Path) -> None:
    name = f"ndk-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(30)
        w = Watcher(profile, env={**os.environ, "NOTIFY_SOCKET": "@" + name})
        try:
            assert s.recv(4096).decode().split("\n")[0] == "READY=1"
            assert w.wait_for("^watching ")
            assert values(testbed4.server_ns, testbed4.server_if) == [SUSPEND] * 4
            rc, _err = w.stop()
            assert s.recv(4096) == b"STOPPING=1"
        finally:
            w.kill()
    assert rc == 0
    assert cli("restore").returncode == 0


# --- without the kernel -------------------------------------------------------------------


def test_sd_notify_paths(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": path})
        assert s.recv(100) == b"READY=1"
    assert not sd_notify("READY=1", {})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": "relative"})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "absent")})


@pytest.mark.parametrize(
    ("old", "new", "seen", "reasons", "notes"),
    [
        ({}, {"a": (3, (1, 2))}, {}, ["a appeared (2 NAPI(s))"], []),
        ({}, {"a": (4, (5,))}, {"a": 3}, ["a came back (ifindex 3 -> 4)"], []),
        ({"a": (3, (1,))}, {"a": (4, (5,))}, {}, ["a was recreated (ifindex 3 -> 4)"], []),
        (
            {"a": (3, (1, 2))},
            {"a": (3, (5, 6))},
            {},
            ["a's NAPIs were recreated (ids 1,2 -> 5,6)"],
            [],
        ),
        (
            {"a": (3, (1, 2))},
            {"a": (3, (1, 2, 7))},
            {},
            ["a has 3 NAPIs, not 2 (queue count changed; ids 1,2 -> 1,2,7)"],
            [],
        ),
        (
            {"a": (3, (1,))},
            {"a": (3, ())},
            {},
            [],
            ["a has no NAPIs now (down, or veth with GRO off): waiting"],
        ),
        ({"a": (3, ())}, {"a": (3, (9,))}, {}, ["a can be tuned now (1 NAPI(s))"], []),
        ({"a": (3, (1,))}, {}, {}, [], ["a is gone: waiting for it to come back"]),
        ({}, {"a": (3, ())}, {}, [], []),
        ({}, {"a": (3, (None,))}, {}, ["a appeared (device-wide sysfs)"], []),
        ({"a": (3, (1,))}, {"a": (3, (1,))}, {}, [], []),
    ],
)
def test_compare_says_why(
    old: Any, new: Any, seen: dict[str, int], reasons: list[str], notes: list[str]
) -> None:
    assert compare(old, new, seen) == (reasons, notes)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--restore-on-exit"], "--restore-on-exit needs --watch"),
        (["--recheck", "1s"], "--recheck needs --watch"),
        (["--watch", "--dry-run"], "--watch and --dry-run cannot be combined"),
        (["--watch", "-j"], "--watch and --json cannot be combined"),
        (["--watch", "--debounce", "2min"], "invalid duration"),
        (["--watch", "--recheck", "1ms"], "--recheck 1ms: give 0.1s..86400s"),
    ],
)
def test_watch_options_bad_input_is_one_line(tmp_path: Path, argv: list[str], message: str) -> None:
    p = tmp_path / "p.toml"
    p.write_text('[[interface]]\nmatch = "lo"\npreset = "suspend"\n')
    r = cli("apply", str(p), *argv)
    assert r.returncode == 2, r
    assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert r.stdout == ""


@pytest.mark.kernel
def test_a_namespace_that_comes_later_and_goes_away(testbed_name: str, tmp_path: Path) -> None:
    ns = testbed_name  # under this session's prefix: the leak check sees it
    p = tmp_path / "ns.toml"
    p.write_text(f'netns = "{ns}"\n[[interface]]\nmatch = "v*"\npreset = "suspend"\n')
    w = Watcher(p)
    try:
        w.wait_for(f"network namespace {ns} does not exist yet: waiting for it")
        w.wait_for("^watching ")
        subprocess.run(["ip", "netns", "add", ns], check=True)
        add_veth(ns, "va")
        line = w.wait_for("^re-applied")
        assert f"network namespace {ns} exists" in line or "va appeared" in line, line
        assert values(ns, "va") == [SUSPEND] * 2
        subprocess.run(["ip", "netns", "del", ns], check=True)
        w.wait_for(f"network namespace {ns} is gone: waiting for it to exist")
        rc, err = w.stop()
    finally:
        w.kill()
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
    assert rc == 0 and err == "", err
    assert "no longer exists" in cli("restore").stdout


@pytest.mark.kernel
def test_recheck_puts_back_a_change_made_behind_its_back(testbed4: Testbed, profile: Path) -> None:
    ns, dev = testbed4.server_ns, testbed4.server_if
    w = Watcher(profile, "--recheck", "300ms")
    try:
        w.wait_for("^watching ")
        with Netdev.open(ns) as nd:  # napi-set announces nothing: only a re-read sees it
            first = min(n.id for n in nd.napi_dump(testbed4.server_ifindex))
            nd.napi_set(first, defer_hard_irqs=5)
        line = w.wait_for("^re-applied")
        assert line.endswith("settings differed from the profile (changed outside netdevkit)")
        assert values(ns, dev) == [SUSPEND] * 4
        rc, _err = w.stop()
    finally:
        w.kill()
    assert rc == 0
    assert cli("restore").returncode == 0
    assert values(ns, dev) == [(0, 0, 0)] * 4


@pytest.mark.kernel
def test_a_position_the_device_lacks_is_logged_not_fatal(testbed4: Testbed, tmp_path: Path) -> None:
    ns, dev = testbed4.server_ns, testbed4.server_if
    p = tmp_path / "pos.toml"
    p.write_text(
        f'netns = "{ns}"\n[[interface]]\nmatch = "{dev}"\npreset = "suspend"\n'
        "[[interface.napi]]\nposition = 3\ndefer-hard-irqs = 7\n"
    )
    w = Watcher(p)
    try:
        w.wait_for("^watching ")
        with Ethtool.open(ns) as et:
            et.channels_set(dev, rx=2)
        line = w.wait_for("^could not re-apply")
        assert "no NAPI at position(s) 3" in line, line
        with Ethtool.open(ns) as et:
            et.channels_set(dev, rx=4)
        w.wait_for("^re-applied")
        assert values(ns, dev) == [SUSPEND] * 3 + [(7, *SUSPEND[1:])]
        rc, _err = w.stop()
    finally:
        w.kill()
    assert rc == 0
    assert cli("restore").returncode == 0


@pytest.mark.kernel
def test_an_interface_without_napis_is_waited_for_and_nothing_applied(tmp_path: Path) -> None:
    p = tmp_path / "lo.toml"
    p.write_text('[[interface]]\nmatch = "lo"\npreset = "suspend"\n')  # lo has no NAPIs
    w = Watcher(p)
    try:
        line = w.wait_for("waiting")
        assert line == (
            "[[interface]] #1 (match 'lo'): lo has no NAPIs (down, or veth with GRO off): waiting"
        )
        w.wait_for("^watching ")
        rc, err = w.stop()
    finally:
        w.kill()
    assert (rc, err) == (0, "")
    assert w.seen[-1] == "SIGTERM: the watcher applied nothing"
