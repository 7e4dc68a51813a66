"""The kernel matrix's own tools (tests/kernels/), without qemu or the network:
apt source parsing, package file names, module load order, the JUnit reader
and the table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).with_name("kernels")))

import fetch
import guest
import matrix


def test_system_mirrors_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security/\nSuites: bookworm-security\n"
    )
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text(
        "deb http://elsewhere.example/debian x main\n"
    )
    assert fetch.system_mirrors(tmp_path) == {
        "debian": "http://mirror.example/debian",
        "debian-security": "http://mirror.example/debian-security",
    }
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://m.example/debian bookworm main\n"
    )
    assert fetch.system_mirrors(tmp_path) == {
        "debian": "http://m.example/debian",
        "debian-security": "http://m.example/debian-security",
    }


def test_no_debian_mirror_is_a_fetch_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://m.example/ubuntu jammy main\n")
    with pytest.raises(fetch.FetchError, match="no Debian mirror"):
        fetch.system_mirrors(tmp_path)


def test_deb_file_names_and_suites() -> None:
    assert fetch._deb_name("linux-image-6.1.0-50-amd64=6.1.176-1") == (
        "linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb"
    )
    assert fetch._deb_name("busybox=1:1.35.0-4") == "busybox_1%3a1.35.0-4_amd64.deb"
    spec = next(s for s in fetch.DEFAULT_KERNELS if s.label == "7.x")
    assert spec.suites == ("trixie-backports", "sid")
    assert fetch._newer("7.3.4-1~bpo13+1", "7.2.13-1")
    assert not fetch._newer("6.1.176-1", "6.1.192-3")


def test_module_order_puts_dependencies_first(tmp_path: Path) -> None:
    moddir = tmp_path / "6.99.0"
    moddir.mkdir()
    (moddir / "modules.dep").write_text(
        "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n"
        "kernel/net/9p/9pnet.ko.xz:\n"
        "kernel/fs/netfs/netfs.ko.xz:\n"
        "kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz\n"
    )
    (moddir / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    order = guest._module_order(moddir, ("virtio_pci", "9pnet_virtio", "9p"))
    assert order == [
        "kernel/net/9p/9pnet.ko.xz",
        "kernel/net/9p/9pnet_virtio.ko.xz",
        "kernel/fs/netfs/netfs.ko.xz",
        "kernel/fs/9p/9p.ko.xz",
    ]
    with pytest.raises(RuntimeError, match="has no module overlay"):
        guest._module_order(moddir, ("overlay",))


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_a" name="test_ok" time="0.1"/>
<testcase classname="tests.test_a" name="test_bad" time="0.1">
  <failure message="AssertionError: 1 != 2&#10;more">trace</failure></testcase>
<testcase classname="tests.test_b.TestX" name="test_skip" time="0">
  <skipped type="pytest.skip" message="needs Linux 6.13; this is 6.12">skip</skipped></testcase>
<testcase classname="tests.test_b.TestX" name="test_ok2" time="0"/>
</testsuite></testsuites>
"""


def test_junit_is_read_per_module_with_reasons(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    groups = matrix.read_junit(path)
    assert set(groups) == {"test_a", "test_b"}
    a, b = groups["test_a"], groups["test_b"]
    assert (a.passed, a.failed, a.skipped) == (1, 1, 0)
    assert a.notes == ["FAILED test_bad: AssertionError: 1 != 2"]
    assert (b.passed, b.failed, b.skipped) == (1, 0, 1)
    assert b.notes == ["skipped test_skip: needs Linux 6.13; this is 6.12"]
    assert a.cell() == "1 passed, 1 FAILED" and b.cell() == "1 passed, 1 skipped"


def test_table_has_a_row_per_group_and_says_which_guest_did_not_report(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    ok = guest.BootResult("6.12", "6.12.1", "", 0, 0, 4.0, 30.0, 1.0, 35.0)
    lost = guest.BootResult("7.x", "7.3.4", "", None, None, 300.0, 0.0, 0.0, 300.0, "timed out")
    text = matrix.render({"6.12": matrix.read_junit(path)}, [ok, lost])
    lines = text.splitlines()
    assert lines[0].split() == ["test", "group", "6.12", "(6.12.1)", "7.x", "(7.3.4)"]
    assert lines[2].split()[:5] == ["test_a", "1", "passed,", "1", "FAILED"]
    assert "NO REPORT: timed out" in text
    assert "boot 4s tests 30s off 1s" in text
    assert "[6.12] test_b: skipped test_skip: needs Linux 6.13; this is 6.12" in text
