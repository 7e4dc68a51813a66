"""The kernel matrix's own tools (tests/kernels/), without qemu or the network:
apt source parsing, package file names, downloads checked against the package index,
module load order, the JUnit reader, the table, and a cache the stage cannot write."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).with_name("kernels")))

import fetch
import guest
import matrix
import netdevsim


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


# -- downloads checked against the package index ----------------------------------------------

DEB = b"!<arch>\n" + bytes(range(256)) * 40  # stands in for a .deb: only size and hash matter
PIN = "linux-image-6.99.0-1-amd64=6.99.1-1"


class FakeApt(fetch.PrivateApt):
    """The package index lists DEB for PIN; download writes *served* (all of DEB, or less)."""

    def __init__(self, served: bytes) -> None:
        super().__init__(Path("/nonexistent"))
        self.served = served
        self.downloads: list[list[str]] = []

    def index_entry(self, pin: str) -> fetch.IndexEntry:
        return fetch.IndexEntry(len(DEB), hashlib.sha256(DEB).hexdigest())

    def download(self, pins: list[str], dest: Path) -> None:
        self.downloads.append(pins)
        for pin in pins:
            (dest / fetch._deb_name(pin)).write_bytes(self.served)


def test_check_deb_compares_size_then_sha256(tmp_path: Path) -> None:
    want = fetch.IndexEntry(len(DEB), hashlib.sha256(DEB).hexdigest())
    deb = tmp_path / "k.deb"
    deb.write_bytes(DEB)
    assert fetch.check_deb(deb, want) is None
    deb.write_bytes(DEB[:1000])
    assert fetch.check_deb(deb, want) == (
        f"1000 bytes where the package index says {len(DEB)} (truncated download?)"
    )
    deb.write_bytes(DEB[:-1] + b"x")
    bad = fetch.check_deb(deb, want)
    assert bad is not None and bad.endswith("(damaged download)") and "SHA256" in bad
    assert fetch.check_deb(tmp_path / "absent.deb", want) == "missing"


def test_a_truncated_cached_deb_is_removed_and_fetched_again(tmp_path: Path) -> None:
    cached = tmp_path / fetch._deb_name(PIN)
    cached.write_bytes(DEB[:4096])  # what a killed download leaves
    apt, said = FakeApt(DEB), list[str]()
    assert fetch.verified_debs(apt, [PIN], tmp_path, said.append) == [cached]
    assert apt.downloads == [[PIN]]
    assert cached.read_bytes() == DEB
    assert said == [
        f"kernel matrix: cached {cached.name}: 4096 bytes where the package index says "
        f"{len(DEB)} (truncated download?): removed, downloading it again"
    ]
    # a good cached file is neither downloaded again nor mentioned
    apt2, said2 = FakeApt(DEB), list[str]()
    assert fetch.verified_debs(apt2, [PIN], tmp_path, said2.append) == [cached]
    assert (apt2.downloads, said2) == ([], [])


def test_a_bad_download_fails_the_fetch_and_leaves_no_file(tmp_path: Path) -> None:
    apt = FakeApt(DEB[:100])
    with pytest.raises(fetch.FetchError) as exc:
        fetch.verified_debs(apt, [PIN], tmp_path, print)
    name = fetch._deb_name(PIN)
    assert str(exc.value) == (
        f"apt-get download of {PIN}: 100 bytes where the package index says {len(DEB)} "
        f"(truncated download?); removed {name}"
    )
    assert not (tmp_path / name).exists()  # the next run downloads it again


# -- a kernel cache the stage cannot write ------------------------------------------------------


def test_an_unwritable_cache_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cache = tmp_path / "file" / "kernels"  # below a file: nothing can be created there
    assert matrix.cache_unwritable(tmp_path / "ok") is None
    assert matrix.cache_unwritable(cache) == (
        f"the kernel cache {cache} is not writable (Not a directory): the stage keeps its "
        "kernels, the guests' logs and report.json there; make it writable or remove it"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a read-only bind mount")
def test_a_read_only_cache_stops_the_stage_with_one_line(tmp_path: Path) -> None:
    """The real thing: .cache/kernels read-only (a private mount namespace, so only this
    command sees it) -- one line, exit 1, no traceback."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) from util-linux for a private mount namespace")
    checkout = Path(__file__).resolve().parents[1]
    cache = checkout / ".cache" / "kernels"
    cache.mkdir(parents=True, exist_ok=True)
    empty = tmp_path / "ro"
    empty.mkdir()
    script = (
        f"mount --bind -o ro {empty} {cache} && exec {sys.executable} "
        f"{checkout / 'tests' / 'kernels' / 'matrix.py'} --kernel 6.1"
    )
    p = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (p.returncode, p.stdout) == (1, "")
    assert p.stderr == (
        f"kernel matrix: the kernel cache {cache} is not writable (Read-only file system): "
        "the stage keeps its kernels, the guests' logs and report.json there; make it "
        "writable or remove it\n"
    )


def _kernel_7x(tmp_path: Path) -> fetch.Kernel:
    moddir = tmp_path / "root" / "usr" / "lib" / "modules" / "7.3.4+deb13-amd64"
    moddir.mkdir(parents=True)
    return fetch.Kernel(
        "7.x", "linux-image-amd64", "trixie-backports,sid", "7.3.4+deb13-amd64",
        "trixie-backports", "", "", str(moddir),
        ("linux-image-7.3.4+deb13-amd64_7.3.4-1~bpo13+1_amd64.deb",),
    )  # fmt: skip


def test_netdevsim_packages_match_the_kernel(tmp_path: Path) -> None:
    assert netdevsim.pins(_kernel_7x(tmp_path)) == (
        "linux-source-7.3=7.3.4-1~bpo13+1",
        "linux-headers-7.3.4+deb13-amd64=7.3.4-1~bpo13+1",
    )
    assert fetch._deb_name("linux-source-7.3=7.3.4-1~bpo13+1", "all") == (
        "linux-source-7.3_7.3.4-1~bpo13+1_all.deb"
    )


def test_netdevsim_cached_builds_nothing_and_a_failure_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = _kernel_7x(tmp_path)
    installed: list[Path] = []
    monkeypatch.setattr(netdevsim, "_install", lambda k, ko: installed.append(ko))

    def no_build(*args: object) -> None:
        raise netdevsim.NetdevsimError("make modules_prepare failed (exit 2)")

    monkeypatch.setattr(netdevsim, "_fresh_build", no_build)
    apt = fetch.PrivateApt(tmp_path / "apt")
    with pytest.raises(netdevsim.NetdevsimError) as exc:
        netdevsim.build(kernel, tmp_path, apt)
    assert str(exc.value) == (
        "cannot build netdevsim for kernel 7.x (7.3.4+deb13-amd64) from package "
        "linux-source-7.3=7.3.4-1~bpo13+1 (with linux-headers-7.3.4+deb13-amd64="
        "7.3.4-1~bpo13+1): make modules_prepare failed (exit 2)"
    )
    out = tmp_path / "netdevsim" / "7.x"
    out.mkdir(parents=True)
    (out / "netdevsim.ko").write_bytes(b"ko")
    source, headers = netdevsim.pins(kernel)
    want = {"release": kernel.release, "source": source, "headers": headers,
            "recipe": netdevsim.RECIPE}  # fmt: skip
    (out / "build.json").write_text(json.dumps(want))
    assert netdevsim.build(kernel, tmp_path, apt) == (out / "netdevsim.ko", False)
    assert installed == [out / "netdevsim.ko"]
