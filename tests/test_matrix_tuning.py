"""Presets through the device-wide sysfs backend, and restore after NAPIs were recreated,
asserted on the kernel that runs (the 6.18 host and the matrix guests: 6.1, 6.12, 7.x).

Before 6.13 there is no ``napi-set``: every user of 6.1 and 6.12 tunes through sysfs, so
each preset whose values sysfs can hold (every one but ``suspend``, whose
irq-suspend-timeout exists only per NAPI) must apply there -- through ``napi set
--preset``, ``tuned(preset=...)`` and ``netdevkit run --napi`` -- and ``suspend`` must be
refused naming 6.13. On 6.13+ the same path is taken by forcing the sysfs backend
(``NETDEVKIT_TUNING_BACKEND=sysfs``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_cli as cli
from pyroute2.ethtool.ioctl import IoctlEthtool, NotSupportedError

from netdevkit import kver
from netdevkit.errors import UnsupportedError
from netdevkit.netdev.client import Netdev
from netdevkit.netdev.family import NapiThreaded
from netdevkit.netns import entered
from netdevkit.testbed import Testbed
from netdevkit.tuning import sysfs
from netdevkit.tuning.context import tuned
from netdevkit.tuning.presets import PRESETS, Preset

pytestmark = [pytest.mark.kernel, pytest.mark.matrix]

Knobs = tuple[int | None, int | None, bool | NapiThreaded | None]
BASELINE: Knobs = (0, 0, False)
RUN = (sys.executable, "-m", "netdevkit", "run")


@pytest.fixture(autouse=True)
def _sysfs_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private journal; the sysfs backend forced where the kernel has napi-set (before
    6.13 ``auto`` picks sysfs by itself, which is the path its users take)."""
    monkeypatch.setenv("NETDEVKIT_STATE_DIR", str(tmp_path / "state"))
    if kver.at_least("6.13"):
        monkeypatch.setenv("NETDEVKIT_TUNING_BACKEND", "sysfs")
    else:
        monkeypatch.delenv("NETDEVKIT_TUNING_BACKEND", raising=False)


def device(tb: Testbed) -> Knobs:
    """(napi_defer_hard_irqs, gro_flush_timeout, threaded) as sysfs reports them."""
    s = sysfs.read(tb.server_ns, tb.server_if)
    return s.defer_hard_irqs, s.gro_flush_timeout, s.threaded


def wanted(p: Preset) -> Knobs:
    return p.napi.defer_hard_irqs, p.napi.gro_flush_timeout, p.napi.threaded


def refusal(p: Preset, tb: Testbed, cli: bool = True) -> str | None:
    """The one-line refusal a user of this kernel gets for *p* through sysfs, or None
    (the CLI's spelling of a parameter in a hint, or the library's)."""
    label = f"{tb.server_if} (device-wide sysfs, all its NAPIs, netns {tb.server_ns})"
    if p.napi.threaded is NapiThreaded.BUSY_POLL and not kver.at_least("6.19"):
        return (
            f"{label}: threaded busy-poll needs Linux 6.19 or newer (this is "
            f"{kver.release()}); threaded on gives a kthread without busy polling"
        )
    if p.napi.threaded is NapiThreaded.BUSY_POLL:  # sysfs 'threaded' takes 0/1 [seen on 7.3]
        return (
            f"{label}: cannot set threaded busy-poll through sysfs: the device-wide 'threaded' "
            "knob takes only off and on; busy-poll exists only per NAPI (napi-set, Linux "
            "6.19+); use the per-NAPI backend ("
            + ("--backend netlink" if cli else "backend='netlink'")
            + ")"
        )
    if p.napi.irq_suspend_timeout:
        why = (
            "the sysfs backend was forced and sysfs has no irq-suspend-timeout knob (it "
            "exists only per NAPI, over netlink: Linux 6.13+, `--backend netlink`)"
            if kver.at_least("6.13")
            else "this kernel lacks per-NAPI settings (napi-set, Linux 6.13+), and "
            "irq-suspend-timeout exists only per NAPI"
        )
        return f"{label}: cannot set irq-suspend-timeout: {why}"
    return None


def test_suspend_alone_is_refused_naming_6_13(testbed: Testbed) -> None:
    refused = [name for name, p in PRESETS.items() if p.napi.irq_suspend_timeout]
    assert refused == ["suspend"]
    assert "Linux 6.13" in (refusal(PRESETS["suspend"], testbed) or "")


def test_every_preset_with_napi_set(testbed: Testbed, capsys: pytest.CaptureFixture[str]) -> None:
    ns, dev = testbed.server_ns, testbed.server_if
    for name, p in PRESETS.items():
        rc, out, err = cli(capsys, "napi", "set", "--netns", ns, "--ifname", dev, "--preset", name)
        why = refusal(p, testbed)
        if why is not None:
            assert (rc, out, err) == (1, "", f"netdevkit: error: {why}\n"), name
            assert device(testbed) == BASELINE, name
            continue
        assert (rc, err) == (0, ""), (name, out, err)
        assert "irq-suspend-timeout" not in out, name  # 0 is the default, not a write
        assert device(testbed) == wanted(p), name
        rc, out, err = cli(capsys, "restore")
        assert (rc, err) == (0, ""), (name, out)
        assert device(testbed) == BASELINE, name


def test_every_preset_with_tuned(testbed: Testbed) -> None:
    for name, p in PRESETS.items():
        why = refusal(p, testbed, cli=False)
        if why is not None:
            with pytest.raises(UnsupportedError) as exc:
                tuned(testbed.server_if, preset=name, netns=testbed.server_ns).__enter__()
            assert str(exc.value) == why, name
            assert device(testbed) == BASELINE, name
            continue
        with tuned(testbed.server_if, preset=name, netns=testbed.server_ns) as t:
            assert device(testbed) == wanted(p), name
            assert all("irq_suspend_timeout" not in c.delta for c in t.changes), name
        assert device(testbed) == BASELINE, name


def test_every_preset_with_run_napi(testbed: Testbed) -> None:
    """``netdevkit run --preset P --napi``: CMD sees the preset's values; they are put
    back when it exits, and the journal is empty again."""
    ns, dev = testbed.server_ns, testbed.server_if
    show = (
        "from netdevkit.tuning import sysfs; "
        f"s = sysfs.read({ns!r}, {dev!r}); "
        "print(s.defer_hard_irqs, s.gro_flush_timeout, int(s.threaded or 0))"
    )
    child = (sys.executable, "-c", show)
    for name, p in PRESETS.items():
        proc = subprocess.run(
            [*RUN, "--preset", name, "--napi", "--netns", ns, "--ifname", dev, "--", *child],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
            check=False,
        )
        why = refusal(p, testbed)
        if why is not None:
            assert (proc.returncode, proc.stdout) == (1, ""), (name, proc.stderr)
            assert proc.stderr == f"netdevkit: error: {why}\n", name
        else:
            assert (proc.returncode, proc.stderr.count("error")) == (0, 0), (name, proc.stderr)
            defer, gro, threaded = wanted(p)
            assert proc.stdout.split() == [str(defer), str(gro), str(int(threaded or 0))], name
        assert device(testbed) == BASELINE, name
        state = Path(os.environ["NETDEVKIT_STATE_DIR"])
        assert not (state / "journal.json").exists(), name


# -- restore after the kernel recreated the NAPIs -----------------------------------------


def set_gro(ns: str, ifname: str, on: bool) -> None:
    """``ethtool -K IF gro on|off`` in *ns*: veth re-adds its NAPIs on each toggle."""
    with entered(ns):
        eth = IoctlEthtool(ifname)
    try:
        feats = eth.get_features()
        feats["rx-gro"] = on
        with contextlib.suppress(NotSupportedError):
            eth.set_features(feats)
    finally:
        eth.close()


def per_napi(tb: Testbed) -> list[tuple[int, tuple[int | None, int | None, int | None]]]:
    with Netdev.open(tb.server_ns) as nd:
        napis = sorted(nd.napi_dump(tb.server_ifindex), key=lambda n: n.id)
    return [(n.id, (n.defer_hard_irqs, n.gro_flush_timeout, n.irq_suspend_timeout)) for n in napis]


def test_restore_after_the_napis_were_recreated(
    testbed4: Testbed,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    record_testsuite_property: Callable[[str, object], None],
) -> None:
    """Restore compares with what the kernel reports for the NAPI now at each position,
    whatever the kernel kept across the reset; ``napi diff`` agrees before and after."""
    ns, dev = testbed4.server_ns, testbed4.server_if
    if not kver.at_least("6.13"):  # device-wide values: they outlive the NAPIs
        rc, _out, err = cli(
            capsys, "napi", "set", "--netns", ns, "--ifname", dev, "--preset", "defer"
        )
        assert (rc, err) == (0, "")
        set_gro(ns, dev, False)
        set_gro(ns, dev, True)
        assert device(testbed4) == wanted(PRESETS["defer"])
        rc, out, err = cli(capsys, "restore")
        assert (rc, err) == (0, "")
        assert "restored defer-hard-irqs 100 -> 0, gro-flush-timeout 20us -> 0" in out
        assert device(testbed4) == BASELINE
        return
    monkeypatch.setenv("NETDEVKIT_TUNING_BACKEND", "auto")
    rc, _out, err = cli(
        capsys, "napi", "set", "--netns", ns, "--ifname", dev, "--preset", "suspend"
    )
    assert (rc, err) == (0, "")
    old = [i for i, _v in per_napi(testbed4)]
    set_gro(ns, dev, False)
    set_gro(ns, dev, True)
    now = per_napi(testbed4)
    new = [i for i, _v in now]
    assert len(new) == 4 and not set(old) & set(new)
    kept = [v for _i, v in now]
    # in the JUnit report (testsuite properties): what each kernel kept
    record_testsuite_property("kept_after_gro_toggle", kept)
    if os.environ.get("NETDEVKIT_IN_GUEST") != "1":
        assert kept == [(0, 0, 20_000_000)] * 4  # [seen on 6.18]
    rc, out, err = cli(capsys, "napi", "diff")
    lines = out.splitlines()
    assert (rc, err, len(lines)) == (0, "", 4)
    for pos, line in enumerate(lines):
        assert f"gone; position {pos} is now NAPI {new[pos]}" in line
        assert line.endswith(", at baseline") is (kept[pos] == (0, 0, 0)), line
    rc, out, err = cli(capsys, "restore")
    assert (rc, err) == (0, "")
    for pos in range(4):
        head = f"position {pos} is now NAPI {new[pos]} ({dev} #{pos}, netns {ns}): "
        assert head + ("already at its baseline" if kept[pos] == (0, 0, 0) else "restored") in out
    assert [v for _i, v in per_napi(testbed4)] == [(0, 0, 0)] * 4
    rc, out, err = cli(capsys, "napi", "diff")
    assert (rc, err) == (0, "") and out.startswith("no differences")
