"""``apply --watch`` on the kernel that runs: the 6.18 host and the matrix guests.

Before 6.13 (6.1, 6.12) the watcher tunes through the device-wide sysfs knobs, which new
NAPIs inherit (``netif_napi_add`` copies ``dev->napi_defer_hard_irqs`` and
``dev->gro_flush_timeout``): after a GRO toggle the values are right without a write.
From 6.13 on it tunes per NAPI; whether a recreated veth NAPI keeps its values depends
on the kernel (docs/tuning.md, "NAPIs that vanish"), and the watcher re-reads and puts
back what differs either way. On every kernel a second matching interface starts at the
defaults, so the watcher must write: that is the re-application asserted everywhere.
What the watcher printed is shown in the terminal summary, per kernel.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FAULT_SUMMARY

from netdevkit import kver
from netdevkit.ethtool.client import Ethtool
from netdevkit.netdev.client import Netdev, ifindex_of
from netdevkit.testbed import Testbed
from netdevkit.tuning import sysfs
from netdevkit.tuning.presets import PRESETS

pytestmark = [pytest.mark.kernel, pytest.mark.matrix]

WANT = (PRESETS["defer"].napi.defer_hard_irqs, PRESETS["defer"].napi.gro_flush_timeout)
#: the guests run Python about 20x slower than the host
PATIENCE = 240.0


def knobs(ns: str, ifname: str) -> list[tuple[int | None, int | None]]:
    """(defer-hard-irqs, gro-flush-timeout) per NAPI (6.13+) or of the device (sysfs)."""
    if not kver.at_least("6.13"):
        s = sysfs.read(ns, ifname)
        return [(s.defer_hard_irqs, s.gro_flush_timeout)]
    with Netdev.open(ns) as nd:
        napis = sorted(nd.napi_dump(ifindex_of(ifname, ns)), key=lambda n: n.id)
    return [(n.defer_hard_irqs, n.gro_flush_timeout) for n in napis]


def eventually(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not cond():
        assert time.monotonic() < deadline, f"not within {PATIENCE:.0f} s: {what}"
        time.sleep(0.1)


def gro(ns: str, ifname: str, on: bool) -> None:
    with Ethtool.open(ns) as et:
        et.features_set(ifname, {"rx-gro": on})


def lines_of(p: subprocess.Popen[str]) -> queue.Queue[str | None]:
    q: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            q.put(line.rstrip("\n"))
        q.put(None)

    threading.Thread(target=read, daemon=True).start()
    return q


def wait_line(q: queue.Queue[str | None], pattern: str, seen: list[str]) -> str:
    deadline = time.monotonic() + PATIENCE
    while True:
        line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        assert line is not None, f"the watcher ended before {pattern!r}: {seen}"
        seen.append(line)
        if re.search(pattern, line):
            return line


def test_watch_reapplies_on_this_kernel(testbed4: Testbed, tmp_path: Path) -> None:
    ns, dev = testbed4.server_ns, testbed4.server_if
    profile = tmp_path / "p.toml"
    profile.write_text(f'netns = "{ns}"\n[[interface]]\nmatch = "ndk-*"\npreset = "defer"\n')
    env = {**os.environ, "NETDEVKIT_STATE_DIR": str(tmp_path / "state")}
    argv = [sys.executable, "-m", "netdevkit", "apply", "--watch", str(profile)]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen: list[str] = []
    try:
        q = lines_of(p)
        wait_line(q, "^watching ", seen)
        assert set(knobs(ns, dev)) == {WANT}

        gro(ns, dev, False)
        gro(ns, dev, True)
        eventually(lambda: set(knobs(ns, dev)) == {WANT}, "the profile's values after GRO off/on")

        subprocess.run(
            [
                "ip",
                "-n",
                ns,
                "link",
                "add",
                "name",
                "ndk-w0",
                "type",
                "veth",
                "peer",
                "name",
                "ndk-w1",
            ],
            check=True,
        )
        for d in ("ndk-w0", "ndk-w1"):
            subprocess.run(["ip", "-n", ns, "link", "set", "dev", d, "up"], check=True)
        gro(ns, "ndk-w0", True)
        line = wait_line(q, "^re-applied .*ndk-w0", seen)
        assert "ndk-w0" in line
        assert set(knobs(ns, "ndk-w0")) == {WANT}

        p.send_signal(signal.SIGTERM)
        assert p.wait(PATIENCE) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    FAULT_SUMMARY.append(f"apply --watch on {kver.release()}: " + " | ".join(seen[-4:]))
    r = subprocess.run(
        [sys.executable, "-m", "netdevkit", "restore"],
        env=env,
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(knobs(ns, dev)) == {(0, 0)}
    assert set(knobs(ns, "ndk-w0")) == {(0, 0)}
