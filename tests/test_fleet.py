"""The fleet pieces: profile drift (pure and through the exporter), the systemd units,
the Prometheus alert rules (docs/fleet.md)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

from netdevkit.netdev.client import Napi, Netdev
from netdevkit.testbed import Testbed
from netdevkit.tuning.drift import DriftRow, drift
from netdevkit.tuning.profile import parse_profile

ROOT = Path(__file__).resolve().parent.parent
CONTRIB = ROOT / "contrib"
NETDEVKIT = shutil.which("netdevkit", path=str(Path(sys.executable).parent)) or "netdevkit"

# --- drift, pure ------------------------------------------------------------------------------

PROFILE = parse_profile(
    '[[interface]]\nmatch = "eth*"\ndefer-hard-irqs = 100\ngro-flush-timeout = "20us"\n'
    "[[interface.napi]]\nposition = 1\ndefer-hard-irqs = 7\n"
    '[[interface]]\nmatch = "ctr0"\nnetns = "c1"\nthreaded = "on"\n'
)


def napi(i: int, ifindex: int, defer: int, gro: int, threaded: int = 0) -> Napi:
    return Napi(i, ifindex, defer_hard_irqs=defer, gro_flush_timeout=gro, threaded=threaded)


@pytest.mark.parametrize(
    ("netns", "napis", "rows"),
    [
        # as the profile wants, position 1 with its override (ids ranked ascending)
        (
            None,
            [napi(11, 2, 7, 20_000), napi(10, 2, 100, 20_000)],
            [DriftRow(None, "eth0", 2, {"defer-hard-irqs": 0, "gro-flush-timeout": 0})],
        ),
        # one NAPI off in both settings, one off in one; lo is no rule's
        (
            None,
            [napi(10, 2, 0, 0), napi(11, 2, 100, 20_000), napi(5, 1, 0, 0)],
            [DriftRow(None, "eth0", 2, {"defer-hard-irqs": 2, "gro-flush-timeout": 1})],
        ),
        # another namespace: only its rules
        (
            "c1",
            [napi(3, 2, 0, 0, threaded=1), napi(4, 3, 0, 0)],
            [DriftRow("c1", "ctr0", 1, {"threaded": 0})],
        ),
        (None, [], []),
    ],
)
def test_drift_counts_napis_per_setting(
    netns: str | None, napis: list[Napi], rows: list[DriftRow]
) -> None:
    links = {1: "lo", 2: "eth0" if netns is None else "ctr0", 3: "other"}
    assert drift(PROFILE, netns, links, napis) == rows


def test_drifted_counts_each_napi_once() -> None:
    assert DriftRow(None, "eth0", 4, {"defer-hard-irqs": 3, "threaded": 1}).drifted == 3
    assert DriftRow(None, "eth0", 4, {}).drifted == 0


# --- the exporter's drift metric on a real testbed --------------------------------------------


@contextlib.contextmanager
def exporter(*args: str) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "netdevkit", "exporter", "--listen", f"127.0.0.1:{port}"]
    p = subprocess.Popen([*argv, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr is not None
        line = p.stderr.readline()
        assert "serving" in line, line + p.stderr.read()
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        p.terminate()
        assert p.wait(10) == 0


def drift_now(url: str) -> dict[tuple[str, str], float]:
    """(ifname, setting) -> NAPIs off the profile, from one scrape."""
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    return {
        (s.labels["ifname"], s.labels["setting"]): s.value
        for s in fams["netdevkit_profile_drift_napis"].samples
    }


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netdevkit", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.kernel
def test_exporter_drift_is_0_then_n_then_0_after_the_watcher(
    testbed4: Testbed, tmp_path: Path
) -> None:
    ns, dev = testbed4.server_ns, testbed4.server_if
    profile = tmp_path / "p.toml"
    profile.write_text(f'netns = "{ns}"\n[[interface]]\nmatch = "ndk-s"\npreset = "suspend"\n')
    settings = ("defer-hard-irqs", "gro-flush-timeout", "irq-suspend-timeout", "threaded")
    with exporter("--profile", str(profile)) as url:
        before = drift_now(url)  # nothing applied yet: all 4 NAPIs off, but not threaded
        assert before == {(dev, s): 4 for s in settings[:3]} | {(dev, "threaded"): 0}
        assert cli("apply", str(profile)).returncode == 0
        assert drift_now(url) == {(dev, s): 0 for s in settings}

        with Netdev.open(ns) as nd:  # a manual change netdevkit does not know about
            for n in sorted(nd.napi_dump(testbed4.server_ifindex), key=lambda n: n.id)[:2]:
                nd.napi_set(n.id, defer_hard_irqs=5)
        assert drift_now(url) == {(dev, "defer-hard-irqs"): 2} | {(dev, s): 0 for s in settings[1:]}

        w = subprocess.Popen(
            [sys.executable, "-m", "netdevkit", "apply", "--watch", str(profile)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert w.stdout is not None
            first = w.stdout.readline()  # the watcher's first application puts it right
            assert "defer-hard-irqs 5 -> 100" in first, first
            assert drift_now(url) == {(dev, s): 0 for s in settings}
        finally:
            w.terminate()
            w.wait(30)
    assert cli("restore").returncode == 0


def test_exporter_bad_profile_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[interface]]\nmatch = "eth0"\npreset = "nope"\n')
    r = cli("exporter", "--profile", str(bad), "--listen", "127.0.0.1:1")
    assert r.returncode == 2, r
    assert r.stderr.count("\n") == 1 and "preset" in r.stderr, r.stderr


# --- contrib/: systemd units and alert rules --------------------------------------------------


def _verify(unit: Path, instance: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of *unit* with ExecStart pointing at this netdevkit."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/usr/local/bin/netdevkit", NETDEVKIT))
    name = unit.name.replace("@.", f"@{instance}.") if instance else unit.name
    return subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("unit", "instance"),
    [("netdevkit-profile@.service", "web"), ("netdevkit-exporter.service", "")],
)
def test_units_pass_systemd_analyze_verify(unit: str, instance: str, tmp_path: Path) -> None:
    r = _verify(CONTRIB / unit, instance, tmp_path)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr


def test_systemd_analyze_verify_sees_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "src" / "netdevkit-profile@.service"
    broken.parent.mkdir()
    broken.write_text((CONTRIB / broken.name).read_text() + "[Service]\nExecStrat=/bin/true\n")
    r = _verify(broken, "web", tmp_path)
    assert "ExecStrat" in r.stdout + r.stderr


def test_profile_unit_runs_a_command_netdevkit_accepts(tmp_path: Path) -> None:
    unit = (CONTRIB / "netdevkit-profile@.service").read_text()
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = exec_start.removeprefix("ExecStart=").split()
    assert argv[0] == "/usr/local/bin/netdevkit"
    assert argv[-1] == "/etc/netdevkit/%i.toml"
    assert "Type=notify" in unit  # the watcher sends READY=1 (tests/test_watch.py)
    r = cli(*argv[1:-1], str(tmp_path / "absent.toml"))  # the flags parse; no such file
    assert r.returncode == 2 and "cannot read profile" in r.stderr, r.stderr


def test_alert_rules_are_well_formed() -> None:
    """The structure promtool checks, for machines without promtool (PyYAML comes with
    ansible-core, a test dependency)."""
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints

    doc = yaml.safe_load((CONTRIB / "netdevkit-alerts.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {g["name"] for g in doc["groups"]} == {"netdevkit", "netdevkit-recording"}
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert set(alerts) == {
        "NetdevkitProfileDrift",
        "NetdevkitBusyPollCollapsed",
        "NetdevkitNamespaceVanished",
        "NetdevkitExporterDown",
    }
    for name, r in alerts.items():
        assert set(r) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert r["labels"]["severity"] in ("warning", "critical"), name
        assert set(r["annotations"]) == {"summary", "description"}, name
    records = [r for r in rules if "record" in r]
    assert all(set(r) == {"record", "expr"} and ":" in r["record"] for r in records)
    cases = yaml.safe_load((ROOT / "tests/data/netdevkit-alerts.test.yml").read_text())
    tested = {t["alertname"] for c in cases["tests"] for t in c["alert_rule_test"]}
    assert tested == set(alerts)


def test_alert_rules_pass_promtool_check_and_their_unit_tests(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:  # test_alert_rules_are_well_formed still runs
        pytest.skip("promtool is not installed (Debian package prometheus)")
    rules = tmp_path / "netdevkit-alerts.yml"
    shutil.copy(CONTRIB / rules.name, rules)
    shutil.copy(ROOT / "tests" / "data" / "netdevkit-alerts.test.yml", tmp_path)
    for argv in (["check", "rules", rules.name], ["test", "rules", "netdevkit-alerts.test.yml"]):
        r = subprocess.run(
            [promtool, *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "SUCCESS" in r.stdout


def test_alert_rules_name_only_metrics_the_exporter_publishes() -> None:
    from netdevkit.cli.exporter import DESCRIPTION

    text = (CONTRIB / "netdevkit-alerts.yml").read_text()
    for metric in (
        "netdevkit_profile_drift_napis",
        "netdevkit_busy_poll_rx_packets_total",
        "netdevkit_queue_packets_total",
        "netdevkit_up",
        "netdevkit_build_info",
    ):
        assert metric in text
        stem = metric.removesuffix("_total").removeprefix("netdevkit_")
        assert stem.split("_")[0] in DESCRIPTION, metric
