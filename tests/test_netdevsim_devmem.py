"""Device memory TCP against netdevsim, a driver with the queue management API, header
split and ``hds-thresh`` (the matrix's 7.x guest; skipped elsewhere, saying so).

What netdevsim lacks (ntuple flow steering, an RSS indirection table, a DMA device)
is what the kernel and ``devmem setup`` must refuse, by name, changing nothing. What it
has (channels, header split) ``devmem setup --best-effort`` changes, journaled, and
``devmem teardown``, ``netdevkit restore`` and an interruption at any step put back:
the device's ethtool state is compared before and after.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nsim
import pytest
from conftest import run_cli as _main

from netdevkit.cli.main import main
from netdevkit.devmem import bind_rx, udmabuf
from netdevkit.devmem.fakenic import FakeNic
from netdevkit.errors import KernelError
from netdevkit.ethtool.client import Ethtool
from netdevkit.ethtool.family import TcpDataSplit
from netdevkit.journal import Journal
from netdevkit.netdev.client import Netdev
from netdevkit.netdev.family import QueueType

pytestmark = [pytest.mark.matrix]

QUEUES = 4


@pytest.fixture
def ports() -> Iterator[tuple[nsim.Port, nsim.Port]]:
    with nsim.usable_pair(QUEUES) as p:
        yield p


def ethtool_state(p: nsim.Port) -> tuple[object, ...]:
    with Ethtool.open(p.ns) as et:
        return (
            et.rings_get(p.ifname),
            et.channels_get(p.ifname),
            et.features_get(p.ifname),
        )


def test_rings_header_split_and_hds_thresh(ports: tuple[nsim.Port, nsim.Port]) -> None:
    """netdevsim takes tcp-data-split and hds-thresh up to hds-thresh-max (1024); above
    it the kernel refuses with EINVAL "requested ring size exceeds maximum"."""
    a, _b = ports
    with Ethtool.open(a.ns) as et:
        r = et.rings_get(a.ifname)
        assert r.hds_thresh_max == 1024
        et.rings_set(a.ifname, tcp_data_split=TcpDataSplit.ENABLED, hds_thresh=0)
        r = et.rings_get(a.ifname)
        assert (r.tcp_data_split, r.hds_thresh) == (TcpDataSplit.ENABLED, 0)
        with pytest.raises(KernelError) as exc:
            et.rings_set(a.ifname, hds_thresh=1025)
        assert (exc.value.errno, exc.value.extack, exc.value.attr_path) == (
            errno.EINVAL,
            "requested ring size exceeds maximum",
            "rings.hds-thresh",
        )
        assert et.rings_get(a.ifname).hds_thresh == 0


def test_devmem_setup_refuses_what_netdevsim_lacks(
    ports: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _b = ports
    before = ethtool_state(a)
    argv = ["devmem", "setup", "--netns", a.ns, "-i", a.ifname, "--queues", "3",
            "--flow", "tcp dst-port 5201"]  # fmt: skip
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert rc == 1, (out, err)
    text = out + err
    for lacking in ("ntuple", "RSS"):
        assert lacking in text, text
    assert "Traceback" not in text
    assert ethtool_state(a) == before


def test_bind_rx_of_a_udmabuf_is_refused_and_the_queue_still_works(
    ports: tuple[nsim.Port, nsim.Port],
) -> None:
    """netdevsim has no DMA device: 7.3's bind-rx refuses before touching the queue
    (EOPNOTSUPP "Device doesn't support DMA"), even with header split on and hds-thresh
    0; nothing stays bound and the queue and its NAPI carry traffic afterwards."""
    a, b = ports
    if not Path("/dev/udmabuf").exists():
        pytest.skip("this kernel has no /dev/udmabuf (CONFIG_UDMABUF is off)")
    with Ethtool.open(b.ns) as et:
        et.rings_set(b.ifname, tcp_data_split=TcpDataSplit.ENABLED, hds_thresh=0)
    with Netdev.open(b.ns) as nd:
        pools = {p.id for p in nd.page_pool_dump(b.ifindex)}
    with udmabuf(64 * 4096) as buf, pytest.raises(KernelError) as exc:
        bind_rx(b.ifname, [0], buf, netns=b.ns)
    assert (exc.value.errno, exc.value.extack) == (errno.EOPNOTSUPP, "Device doesn't support DMA")
    with Netdev.open(b.ns) as nd:
        assert all(q.dmabuf is None for q in nd.queue_dump(b.ifindex))
        assert {p.id for p in nd.page_pool_dump(b.ifindex)} == pools  # no queue restarted
    nsim.udp(a, b, count=3)


# -- devmem setup --best-effort: the steps netdevsim can take, and their undoing ----------

SETUP = ["devmem", "setup", "--queues", "1", "--channels", "2", "--flow", "tcp dst-port 5201",
         "--best-effort"]  # fmt: skip


def _cli(*argv: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m netdevkit ARGV`` with this test's state directory (set by the fixture)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETDEVKIT_FAULT")}
    return subprocess.run(
        [sys.executable, "-m", "netdevkit", *argv],
        env={**env, **(extra or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _setup_argv(p: nsim.Port, *more: str) -> list[str]:
    return [*SETUP, "--netns", p.ns, "-i", p.ifname, *more]


@pytest.fixture
def split_off(ports: tuple[nsim.Port, nsim.Port]) -> tuple[nsim.Port, nsim.Port]:
    """Port a with header split off and hds-thresh 256, so setup has a rings step (a fresh
    netdevsim reports tcp-data-split enabled, hds-thresh 0: nothing to change)."""
    a, _b = ports
    with Ethtool.open(a.ns) as et:
        et.rings_set(a.ifname, tcp_data_split=TcpDataSplit.DISABLED, hds_thresh=256)
        r = et.rings_get(a.ifname)
    assert (r.tcp_data_split, r.hds_thresh) == (TcpDataSplit.DISABLED, 256)
    return ports


def test_best_effort_setup_is_journaled_and_teardown_puts_it_back(
    split_off: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = split_off
    before = ethtool_state(a)
    rc, stdout, err = _main(capsys, *_setup_argv(a, "-j"))
    assert (rc, err) == (0, ""), err
    out = json.loads(stdout)
    assert out["applied"] and out["best_effort"] and out["channels"] == 2
    assert [(r["name"], r["ok"]) for r in out["requirements"]] == [
        ("driver", None), ("queue API", True), ("header split", True), ("ntuple", False),
        ("RSS", False), ("channels", True), ("queues", True),
    ]  # fmt: skip
    assert [s["name"] for s in out["skipped"]] == ["ntuple", "RSS"]
    why = {s["name"]: s["detail"] for s in out["skipped"]}
    assert why["ntuple"] == "the driver has no ntuple flow steering"  # not among its features
    assert why["RSS"].startswith(f"ethtool rss-get {a.ifname}: Operation not supported")
    assert [s["kind"] for s in out["steps"]] == ["ethtool-channels", "ethtool-rings"]
    with Ethtool.open(a.ns) as et:
        assert et.channels_get(a.ifname).combined_count == 2
        r = et.rings_get(a.ifname)
    assert (r.tcp_data_split, r.hds_thresh) == (TcpDataSplit.ENABLED, 0)
    with Netdev.open(a.ns) as nd:
        assert len([q for q in nd.queue_dump(a.ifindex) if q.type == QueueType.RX]) == 2
    nsim.udp(b, a)  # the device still carries traffic with two queues
    teardown = ["devmem", "teardown", "--netns", a.ns, "-i", a.ifname]
    rc, stdout, err = _main(capsys, *teardown)
    assert rc == 0, stdout + err
    assert [line.split()[0] for line in stdout.splitlines()] == ["undone", "undone"]
    assert ethtool_state(a) == before
    assert _main(capsys, *teardown)[1].startswith("nothing journaled")
    nsim.udp(b, a)


def test_text_output_names_the_skipped_steps(
    split_off: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _b = split_off
    before = ethtool_state(a)
    rc, stdout, err = _main(capsys, *_setup_argv(a, "--dry-run"))
    assert rc == 0, err
    lines = stdout.splitlines()
    assert "skipped (--best-effort): ntuple: the driver has no ntuple flow steering" in lines
    assert any(line.startswith("skipped (--best-effort): RSS: ") for line in lines), lines
    assert "would do 1/2: channels: combined 2 (was 4)" in lines
    assert "would do 2/2: header split on (was disabled), hds-thresh 0 (was 256)" in lines
    assert ethtool_state(a) == before  # a dry run


def test_netdevkit_restore_undoes_a_best_effort_setup(
    split_off: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _b = split_off
    before = ethtool_state(a)
    assert _main(capsys, *_setup_argv(a))[0] == 0
    assert ethtool_state(a) != before
    rc, out, err = _main(capsys, "restore")
    assert rc == 0, out + err
    assert ethtool_state(a) == before and Journal().records() == []


def test_interrupted_at_each_step_setup_leaves_nothing_after_restore(
    split_off: tuple[nsim.Port, nsim.Port], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fault-injection sweep of tests/test_faults.py, on a real driver: the command is
    interrupted right before each of its system-changing steps in turn. SIGINT (and
    SIGTERM, the same path, tried once after the first change) must put the device back by
    itself; after SIGKILL ``netdevkit restore`` must. Subprocesses are slow under the
    guest's emulation, so the checks between runs are made in this process."""
    a, _b = split_off
    before = ethtool_state(a)
    trace = tmp_path / "trace"
    assert _cli(*_setup_argv(a), extra={"NETDEVKIT_FAULT_TRACE": str(trace)}).returncode == 0
    assert _main(capsys, "devmem", "teardown", "--netns", a.ns, "-i", a.ifname)[0] == 0
    points = trace.read_text().split()
    # journal intent and change, per step: channels then rings
    assert points == ["journal-write", "ethtool-set", "journal-write", "ethtool-set"], points
    assert ethtool_state(a) == before and Journal().records() == []
    runs = [("SIGINT", k) for k in range(1, 5)] + [("SIGKILL", k) for k in range(1, 5)]
    for sig, k in [*runs, ("SIGTERM", 3)]:
        where = f"{sig} before step {k} ({points[k - 1]})"
        p = _cli(*_setup_argv(a), extra={"NETDEVKIT_FAULT": f"*:{k}:{sig}"})
        assert "Traceback" not in p.stderr, p.stderr
        if sig == "SIGKILL":
            assert p.returncode == -signal.SIGKILL, (where, p.returncode)
            assert _main(capsys, "restore")[0] == 0
        else:
            assert p.returncode == 128 + signal.Signals[sig], (where, p.returncode, p.stderr)
            assert p.stderr.count("\n") == 1, p.stderr  # one line saying what was undone
            assert p.stderr.startswith(f"netdevkit: interrupted: devmem setup of {a.ifname}: ")
            assert p.stderr.rstrip().endswith("changes undone, nothing changed"), p.stderr
        assert ethtool_state(a) == before, f"{where} left a change"
        assert Journal().records() == [], f"{where} left the journal non-empty"


def test_channels_refusals_of_the_kernel_and_the_fake_agree(
    ports: tuple[nsim.Port, nsim.Port],
) -> None:
    """netdevsim's channels under 7.3's ethtool core, and FakeNic's copy of its checks."""
    a, _b = ports
    fake = FakeNic(ifname=a.ifname, queues=QUEUES)
    with Ethtool.open(a.ns) as et:
        for combined in (QUEUES + 1, 0):
            with pytest.raises(KernelError) as real:
                et.channels_set(a.ifname, combined=combined)
            with pytest.raises(KernelError) as faked:
                fake.channels_set(a.ifname, combined=combined)
            got = (real.value.errno, real.value.extack, real.value.attr_path)
            assert got == (faked.value.errno, faked.value.extack, faked.value.attr_path)
        assert et.channels_get(a.ifname).combined_count == QUEUES
