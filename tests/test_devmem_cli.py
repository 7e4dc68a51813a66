"""``netdevkit devmem`` and the devmem lines of ``netdevkit doctor``; the recv/send loops.

The loops run against the fake kernel; the commands run for real on veth,
which cannot carry devmem: they must refuse in one line and change nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netdevkit import doctor
from netdevkit.devmem.fake import FakeKernel, TxBinding
from netdevkit.devmem.rx import DevmemReceiver
from netdevkit.devmem.tool import fill_pattern, receive, send
from netdevkit.devmem.tx import DevmemSender
from netdevkit.doctor import Facts, IfaceFacts, Status, evaluate
from netdevkit.errors import RequestError, ValidationError
from netdevkit.ethtool.client import Ethtool
from netdevkit.netdev.family import NETDEV
from netdevkit.testbed import Testbed

PAGE = 4096


# -- the recv/send loops against the fake kernel ------------------------------------


def test_receive_validates_the_pattern_across_fragments_and_linear_chunks() -> None:
    fk = FakeKernel(64 * PAGE)
    stream = bytes(k % 251 for k in range(100_000))
    fk.deliver(stream, linear=100, frag_size=3000)
    fk.shutdown()
    with DevmemReceiver(fk, kernel=fk, source=fk, batch=7) as rx:
        report = receive(rx, fk, pattern=251)
    assert report.bytes == len(stream) and report.validated
    assert report.frags > 0 and report.linear_chunks > 0
    assert fk.returned == fk.handed_out


def test_receive_reports_the_first_wrong_byte() -> None:
    fk = FakeKernel(64 * PAGE)
    stream = bytearray(k % 256 for k in range(50_000))
    stream[12345] ^= 0xFF
    fk.deliver(bytes(stream))
    fk.shutdown()
    with (
        pytest.raises(ValidationError, match="stream byte 12345 is"),
        DevmemReceiver(fk, kernel=fk, source=fk) as rx,
    ):
        receive(rx, fk, pattern=256)
    assert fk.returned == fk.handed_out  # the error path gave every token back


def test_send_streams_the_pattern_from_the_dmabuf() -> None:
    class Instant(FakeKernel):
        def sendmsg(self, fd: int, iovecs: object, control: bytes, flags: int) -> int:
            n = super().sendmsg(fd, iovecs, control, flags)  # type: ignore[arg-type]
            self.complete_sends()
            return n

    fk = Instant(16 * PAGE, tx_bindings=[TxBinding(9, 3)], route_ifindex=3)
    fill_pattern(memoryview(fk.memory), 200)

    class B:
        id = 9
        ifname = "eth1"

        class dmabuf:  # noqa: N801
            size = 16 * PAGE

    tx = DevmemSender(fk, B(), kernel=fk)
    report = send(tx, 16 * PAGE, 300_000, chunk=10_000, pattern=200, wait_s=0)
    assert report.bytes == 300_000 and report.completions_pending == 0
    assert bytes(fk.sent) == bytes(k % 200 for k in range(300_000))


def test_pattern_length_is_checked() -> None:
    for bad in (0, 257):
        with pytest.raises(RequestError):
            fill_pattern(memoryview(bytearray(10)), bad)


# -- doctor lines from facts ----------------------------------------------------------


def _facts(iface: IfaceFacts) -> Facts:
    ops = frozenset(op.id for op in NETDEV.operations if not op.notify) - {9}
    return Facts(
        "6.18.0",
        config=None,
        family_version=1,
        op_ids=ops,
        mcast_groups=frozenset({"mgmt", "page-pool"}),
        sample_napi=None,
        epoll_errno=0,
        busy_poll=0,
        busy_read=0,
        cap_eff=(1 << 41) - 1,
        pidfd_getfd_errno=9,
        ptrace_scope=1,
        iface=iface,
    )


def test_doctor_prints_one_line_per_devmem_requirement() -> None:
    lines = (
        ("queue API", True, "the driver has the queue management API"),
        ("header split", False, "no header split"),
        ("ntuple", None, "cannot tell"),
        ("RSS", True, "indirection table of 128 entries"),
    )
    iface = IfaceFacts("eth1", None, 4, driver="fbnic", devmem=lines)
    checks = [c for c in evaluate(_facts(iface)) if c.feature == doctor.DEVMEM]
    got = {c.name: c.status for c in checks if c.name.startswith("eth1: ")}
    assert got == {
        "eth1: driver": Status.OK,
        "eth1: queue API": Status.OK,
        "eth1: header split": Status.MISSING,
        "eth1: ntuple": Status.WARN,
        "eth1: RSS": Status.OK,
    }
    split = next(c for c in checks if c.name == "eth1: header split")
    assert "tcp-data-split" in split.remedy


# -- the commands on veth -------------------------------------------------------------


def _run(*argv: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NETDEVKIT_STATE_DIR": str(state)}
    return subprocess.run(
        [sys.executable, "-m", "netdevkit", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["setup", "--queues", "x", "--flow", "tcp dst-port 1"], "queues 'x'"),
        (["setup", "--queues", "1", "--flow", "udp dst-port 1"], "must start with 'tcp'"),
        (["setup", "--queues", "1", "--flow", "tcp dst-port 99999"], "dst-port must be"),
        (["recv", "--queues", "1", "--validate", "300"], "pattern length from 1 to 256"),
        (["recv", "--queues", "1", "--size", "lots"], "size 'lots'"),
        (["recv", "--queues", "1", "--port", "0"], "--port must be"),
        (["send", "--to", "10.0.0.1", "--bytes", "1Q"], "--bytes: size '1Q'"),
        (["send", "--to", "nonsense"], "--to 'nonsense' is not an IPv4 or IPv6 address"),
        (["send", "--to", "10.0.0.1", "--chunk", "0"], "--chunk 0: must be at least 1 byte"),
        (["send", "--to", "10.0.0.1", "--bytes", "0"], "--bytes 0: must be at least 1 byte"),
        (["send", "--to", "10.0.0.1", "--validate", "0"], "--validate 0 is not a pattern"),
        (["send", "--to", "10.0.0.1", "--size", "1000"], "--size 1000: a udmabuf is"),
        (["send", "--to", "10.0.0.1", "--dmabuf", "cuda"], "send --dmabuf cuda"),
        (["recv", "--queues", "1", "--listen", "nonsense"], "--listen 'nonsense' is not"),
        (["recv", "--queues", "1", "--validate", "0"], "--validate 0 is not a pattern"),
        (["recv", "--queues", "1", "--limit", "0"], "--limit 0: must be at least 1"),
        (["recv", "--queues", "1", "--device", "-1"], "--device -1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], words: str) -> None:
    r = _run("devmem", args[0], "--ifname", "lo", *args[1:], state=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr


def _veth_state(tb: Testbed) -> tuple[object, ...]:
    with Ethtool.open(tb.server_ns) as et:
        f = et.features_get(tb.server_if)
        return (f.active, f.wanted, et.channels_get(tb.server_if))


@pytest.mark.kernel
@pytest.mark.parametrize("extra", [[], ["--dry-run"], ["-j"]])
def test_setup_on_veth_refuses_naming_each_requirement(
    testbed4: Testbed, tmp_path: Path, extra: list[str]
) -> None:
    before = _veth_state(testbed4)
    r = _run(
        "devmem", "setup", "--ifname", testbed4.server_if, "--netns", testbed4.server_ns,
        "--queues", "2-3", "--flow", "tcp dst-port 5201", *extra, state=tmp_path,
    )  # fmt: skip
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "nothing was changed" in err[0]
    for word in ("driver:", "queue API:", "header split:", "ntuple:", "RSS:"):
        assert word in err[0]
    if "-j" in extra:
        out = json.loads(r.stdout)
        assert out["ok"] is False and out["applied"] is False and out["steps"] == []
    else:
        assert "MISSING  queue API" in r.stdout
    assert _veth_state(testbed4) == before
    assert (
        not (tmp_path / "journal.json").exists()
        or '"records": []' in (tmp_path / "journal.json").read_text()
    )


@pytest.mark.kernel
def test_recv_on_veth_refuses_before_binding_and_teardown_has_nothing(
    testbed4: Testbed, tmp_path: Path
) -> None:
    where = ["--ifname", testbed4.server_if, "--netns", testbed4.server_ns]
    r = _run("devmem", "recv", *where, "--queues", "1", state=tmp_path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "devmem setup refused" in r.stderr
    r = _run("devmem", "recv", *where, "--queues", "1", "--no-setup", state=tmp_path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "udmabuf" in r.stderr or "Operation not supported" in r.stderr
    r = _run("devmem", "teardown", *where, state=tmp_path)
    assert r.returncode == 0 and "nothing to undo" in r.stdout


@pytest.mark.kernel
def test_send_on_veth_is_refused_naming_the_devices_missing_requirements(
    testbed4: Testbed, tmp_path: Path
) -> None:
    where = ["--ifname", testbed4.client_if, "--netns", testbed4.client_ns]
    r = _run("devmem", "send", *where, "--to", testbed4.server_addr, state=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    # the device is refused before any dmabuf is made (this host has no /dev/udmabuf)
    assert len(lines) == 1 and "udmabuf" not in lines[0], r.stderr
    assert f"devmem send refused for {testbed4.client_if}, nothing was changed" in lines[0]
    assert "driver: veth cannot carry devmem" in lines[0]
    assert "MISSING  driver" in r.stdout and "OK       kernel" in r.stdout


@pytest.mark.kernel
@pytest.mark.parametrize(
    ("where", "words"),
    [
        (["--ifname", "nosuch"], "no interface named 'nosuch'"),
        (["--ifname", "lo", "--netns", "ndk-nosuch"], "'ndk-nosuch' does not exist"),
    ],
)
def test_send_to_a_device_that_does_not_exist_names_it(
    tmp_path: Path, where: list[str], words: str
) -> None:
    r = _run("devmem", "send", *where, "--to", "10.0.0.1", state=tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "udmabuf" not in lines[0], r.stderr


@pytest.mark.kernel
def test_doctor_on_veth_prints_the_devmem_requirement_lines(testbed4: Testbed) -> None:
    checks = doctor.run_checks(ifname=testbed4.server_if, netns=testbed4.server_ns)
    got = {c.name: c.status for c in checks if c.feature == doctor.DEVMEM}
    name = testbed4.server_if
    for req in ("queue API", "header split", "ntuple", "RSS"):
        assert got[f"{name}: {req}"] is Status.MISSING
