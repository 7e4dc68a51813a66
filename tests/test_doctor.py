"""``netdevkit doctor``: verdicts from hand-made facts, then the real kernel.

The first half feeds :func:`netdevkit.doctor.evaluate` with :class:`Facts`
built here, so every verdict (old kernel, backport, mixed NAPI settings, a
veth without NAPI ...) is tested without touching the system. The kernel half
runs on the 6.18 development machine (root): the machine-level lines, a
NAPI-enabled veth testbed, a plain veth (GRO off, as veth is created), a
preset recognised after napi-set, the JSON output and the exit status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from netdevkit import doctor
from netdevkit.cli import main as cli_main
from netdevkit.doctor import Check, Facts, IfaceFacts, Status, evaluate
from netdevkit.errors import NotFoundError
from netdevkit.netdev.client import Napi, Netdev, Queue
from netdevkit.netdev.family import NETDEV, NapiThreaded, QueueType
from netdevkit.testbed import Testbed
from netdevkit.tuning.presets import PRESETS

ALL_OPS = frozenset(op.id for op in NETDEV.operations if not op.notify)
OPS_618_NO_PP_STATS = ALL_OPS - {9, 16}  # 16 queue-create: 7.1
GROUPS = frozenset({"mgmt", "page-pool"})


def find(checks: list[Check], feature: str, name: str) -> Check:
    hits = [c for c in checks if c.feature == feature and c.name == name]
    assert len(hits) == 1, f"{feature}/{name}: {len(hits)} lines in {checks}"
    return hits[0]


def napi(
    nid: int,
    defer: int = 0,
    gro: int = 0,
    suspend: int | None = 0,
    threaded: NapiThreaded = NapiThreaded.DISABLED,
) -> Napi:
    return Napi(
        nid,
        5,
        defer_hard_irqs=defer,
        gro_flush_timeout=gro,
        irq_suspend_timeout=suspend,
        threaded=threaded,
    )


def facts(
    release: str = "6.18.44",
    ops: frozenset[int] = OPS_618_NO_PP_STATS,
    iface: IfaceFacts | None = None,
    **kw: object,
) -> Facts:
    base: dict[str, object] = {
        "config": None,
        "family_version": 1,
        "op_ids": ops,
        "mcast_groups": GROUPS,
        "sample_napi": napi(1),
        "epoll_errno": 0,
        "busy_poll": 0,
        "busy_read": 0,
        "cap_eff": (1 << 41) - 1,
        "pidfd_getfd_errno": 9,  # EBADF: the syscall exists
        "ptrace_scope": 1,
        "iface": iface,
    }
    base.update(kw)
    return Facts(release, **base)  # type: ignore[arg-type]


def veth(napis: tuple[Napi, ...], gro: bool | None = True) -> IfaceFacts:
    rx = Queue(0, 5, QueueType.RX)
    return IfaceFacts(
        "v0", "ns", 5, driver="veth", gro=gro, tso=False, napis=napis, queues=(rx,), qstats=()
    )


# --- pure parsing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "want"),
    [
        ("6.18.44-fc-v595", (6, 18, 44)),
        ("6.9.0-rc1", (6, 9, 0)),
        ("6.12", (6, 12, 0)),
        ("5.14.0-427.el9.x86_64", (5, 14, 0)),
        ("weird", None),
    ],
)
def test_parse_release(release: str, want: tuple[int, int, int] | None) -> None:
    assert doctor.parse_release(release) == want


def test_parse_config_keeps_set_options_only() -> None:
    text = (
        "# comment\nCONFIG_NET_RX_BUSY_POLL=y\n# CONFIG_PAGE_POOL_STATS is not set\n"
        'CONFIG_UDMABUF=m\nCONFIG_LOCALVERSION="-fc"\n'
    )
    assert doctor.parse_config(text) == {
        "CONFIG_NET_RX_BUSY_POLL": "y",
        "CONFIG_UDMABUF": "m",
        "CONFIG_LOCALVERSION": "-fc",
    }


# --- verdicts from hand-made facts ----------------------------------------------


def test_618_like_facts_give_ok_for_the_2024_features() -> None:
    checks = evaluate(facts())
    assert find(checks, doctor.BUSY_POLL, "CONFIG_NET_RX_BUSY_POLL").status is Status.OK
    assert find(checks, doctor.PER_NAPI, "kernel >= 6.13").status is Status.OK
    assert find(checks, doctor.IRQ_SUSPEND, "irq-suspend-timeout").status is Status.OK
    pp = find(checks, doctor.PP_STATS, "CONFIG_PAGE_POOL_STATS")
    assert pp.status is Status.MISSING
    assert "CONFIG_PAGE_POOL_STATS=y" in pp.remedy


def test_old_kernel_misses_the_new_features_and_says_upgrade() -> None:
    ops = frozenset({1, 5, 10, 11})  # a 6.9-like family
    checks = evaluate(facts("6.9.12", ops, sample_napi=napi(1, suspend=None)))
    per_napi = find(checks, doctor.PER_NAPI, "kernel >= 6.13")
    assert per_napi.status is Status.MISSING
    assert "6.13" in per_napi.remedy
    assert find(checks, doctor.IRQ_SUSPEND, "irq-suspend-timeout").status is Status.MISSING
    assert find(checks, doctor.DEVMEM, "kernel >= 6.12 (RX)").status is Status.MISSING
    assert find(checks, doctor.NAPI, "kernel >= 6.8").status is Status.OK


def test_backported_ops_count_over_the_version_number() -> None:
    line = find(evaluate(facts("5.14.0-427.el9")), doctor.PER_NAPI, "kernel >= 6.13")
    assert line.status is Status.OK
    assert "backported" in line.detail


def test_busy_poll_probe_errnos() -> None:
    name = "CONFIG_NET_RX_BUSY_POLL"
    eop = find(evaluate(facts(epoll_errno=95)), doctor.BUSY_POLL, name)
    assert eop.status is Status.MISSING
    assert "EOPNOTSUPP" in eop.detail
    notty = find(evaluate(facts(epoll_errno=25)), doctor.BUSY_POLL, name)
    assert notty.status is Status.MISSING
    assert "6.9" in notty.remedy


def test_global_busy_poll_sysctl_is_a_warning() -> None:
    line = find(evaluate(facts(busy_poll=50)), doctor.BUSY_POLL, "net.core.busy_poll")
    assert line.status is Status.WARN
    assert "sysctl -w net.core.busy_poll=0" in line.remedy


def test_notifications_are_supported_through_their_groups() -> None:
    line = find(evaluate(facts()), doctor.FAMILY, "commands")
    assert "2 dev-add-ntf" in line.detail.split("; lacks")[0]
    assert "lacks 9 page-pool-stats-get" in line.detail


def test_veth_without_napi_gets_the_gro_remedy() -> None:
    checks = evaluate(facts(iface=veth((), gro=False)))
    line = find(checks, doctor.NAPI, "v0: NAPI instances")
    assert line.status is Status.MISSING
    assert "GRO off" in line.detail
    assert "ethtool -K v0 gro on" in line.remedy
    assert "tso off" in line.remedy
    assert find(checks, doctor.NAPI, "v0: NAPI ids on sockets").status is Status.MISSING


def test_veth_with_napi_gets_napi_ids_without_queue_links() -> None:
    checks = evaluate(facts(iface=veth((napi(7), napi(8)))))
    assert find(checks, doctor.NAPI, "v0: NAPI instances").detail == "2 (ids 7, 8)"
    assert find(checks, doctor.NAPI, "v0: NAPI ids on sockets").status is Status.OK
    driver = find(checks, doctor.DEVMEM, "v0: driver")
    assert driver.status is Status.MISSING
    assert "veth" in driver.detail


def test_queue_interrupt_cpus_are_shown_for_a_nic_with_irqs() -> None:
    """doctor --ifname names the CPUs each queue interrupt is affine to (issue 24); veth,
    whose NAPIs have no irq, gets no such line."""
    import dataclasses

    nic = dataclasses.replace(veth((napi(7), napi(8))), driver="mlx5_core")
    nic = dataclasses.replace(nic, irqs=((45, frozenset({0, 1})), (46, None)))
    line = find(evaluate(facts(iface=nic)), doctor.NAPI, "v0: queue interrupt CPUs")
    assert line.status is Status.OK
    assert line.detail == "0-1 (irq 45 -> 0-1, irq 46 -> unknown)"
    assert "--cpus server=irq" in line.remedy
    names = [c.name for c in evaluate(facts(iface=veth((napi(7),))))]
    assert "v0: queue interrupt CPUs" not in names


def test_loopback_has_no_napi_and_no_devmem() -> None:
    lo = IfaceFacts("lo", None, 1, driver="loopback", loopback=True, napis=(), queues=(), qstats=())
    checks = evaluate(facts(iface=lo))
    line = find(checks, doctor.NAPI, "lo: NAPI instances")
    assert line.status is Status.MISSING
    assert "testbed" in line.remedy
    assert find(checks, doctor.DEVMEM, "lo: driver").status is Status.MISSING
    assert find(checks, doctor.PER_NAPI, "lo: settings in effect").status is Status.MISSING


@pytest.mark.parametrize(
    "preset", [name for name in PRESETS if name not in ("threaded", "busy-poll-thread")]
)
def test_every_preset_is_recognised(preset: str) -> None:
    p = PRESETS[preset]
    s = p.napi
    n = napi(7, s.defer_hard_irqs or 0, s.gro_flush_timeout or 0, s.irq_suspend_timeout)
    line = find(evaluate(facts(iface=veth((n,)))), doctor.PER_NAPI, "v0: settings in effect")
    assert line.status is Status.OK
    assert f"preset '{p.name}'" in line.detail


def test_threaded_preset_needs_threaded_on() -> None:
    n = napi(7, threaded=NapiThreaded.ENABLED)
    line = find(evaluate(facts(iface=veth((n,)))), doctor.PER_NAPI, "v0: settings in effect")
    assert "preset 'threaded'" in line.detail


def test_threaded_busy_poll_is_shown_and_recognised() -> None:
    n = napi(7, threaded=NapiThreaded.BUSY_POLL)
    line = find(evaluate(facts(iface=veth((n,)))), doctor.PER_NAPI, "v0: settings in effect")
    assert "threaded busy-poll" in line.detail
    assert "preset 'busy-poll-thread'" in line.detail and "preset 'threaded'" not in line.detail


def test_mixed_and_inconsistent_settings_warn() -> None:
    mixed = veth((napi(7, 100, 200_000), napi(8)))
    line = find(evaluate(facts(iface=mixed)), doctor.PER_NAPI, "v0: settings in effect")
    assert line.status is Status.WARN
    assert "differ" in line.detail
    assert "napibusy" in line.detail and "base" in line.detail
    lone = find(evaluate(facts(iface=veth((napi(7, 100),)))), doctor.PER_NAPI, line.name)
    assert lone.status is Status.WARN
    assert "no effect without gro-flush-timeout" in lone.detail
    suspend_only = veth((napi(7, suspend=20_000_000),))
    bare = find(evaluate(facts(iface=suspend_only)), doctor.PER_NAPI, line.name)
    assert bare.status is Status.WARN


def test_interface_unreadable_without_root_degrades_to_warn() -> None:
    iface = IfaceFacts("v0", "ns", error=f"{doctor.ROOT_HINT}: needs CAP_SYS_ADMIN")
    checks = [c for c in evaluate(facts(iface=iface)) if c.name.startswith("v0:")]
    assert checks
    assert {c.status for c in checks} == {Status.WARN}
    assert all(doctor.ROOT_HINT in c.detail for c in checks)


def test_capabilities_from_cap_eff() -> None:
    checks = evaluate(facts(cap_eff=1 << doctor.CAP_NET_ADMIN))
    assert find(checks, doctor.PRIVILEGES, "CAP_NET_ADMIN").status is Status.OK
    assert find(checks, doctor.PRIVILEGES, "CAP_SYS_ADMIN").status is Status.WARN
    assert find(checks, doctor.ATTACH, "ptrace_scope").status is Status.WARN
    nosys = find(evaluate(facts(pidfd_getfd_errno=38)), doctor.ATTACH, "pidfd_getfd")
    assert nosys.status is Status.MISSING


def test_report_shape() -> None:
    checks = [Check("f", "n", Status.WARN, "d", "r"), Check("f", "m", Status.OK, "d")]
    rep = doctor.report(checks, "eth0", None)
    assert rep["summary"] == {"OK": 1, "WARN": 1, "MISSING": 0}
    assert rep["checks"][0] == {
        "feature": "f",
        "name": "n",
        "status": "WARN",
        "detail": "d",
        "remedy": "r",
    }
    assert json.loads(json.dumps(rep)) == rep


# --- the real kernel ---------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = cli_main.main(["doctor", *args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.kernel
def test_this_machine_is_ready_for_busy_poll_per_napi_and_irq_suspension() -> None:
    checks = doctor.run_checks()
    ok = Status.OK
    assert find(checks, doctor.BUSY_POLL, "CONFIG_NET_RX_BUSY_POLL").status is ok
    assert find(checks, doctor.PER_NAPI, "kernel >= 6.13").status is ok
    assert find(checks, doctor.IRQ_SUSPEND, "kernel >= 6.13").status is ok
    assert find(checks, doctor.FAMILY, "family").status is ok
    commands = find(checks, doctor.FAMILY, "commands")
    assert commands.status is ok
    for name in ("napi-get", "napi-set", "queue-get", "qstats-get", "bind-rx", "bind-tx"):
        assert name in commands.detail
    # The development kernel is built without CONFIG_PAGE_POOL_STATS (KERNEL.md).
    assert find(checks, doctor.PP_STATS, "CONFIG_PAGE_POOL_STATS").status is Status.MISSING


@pytest.mark.kernel
def test_napi_enabled_veth_reports_napis(testbed: Testbed) -> None:
    ns, ifname = testbed.ns_of("server"), testbed.if_of("server")
    checks = doctor.run_checks(ifname, ns)
    line = find(checks, doctor.NAPI, f"{ifname}: NAPI instances")
    assert line.status is Status.OK
    with Netdev.open(ns) as nd:
        ids = [n.id for n in nd.napi_dump(testbed.server_ifindex)]
    assert line.detail == f"{len(ids)} (ids {', '.join(map(str, ids))})"
    assert find(checks, doctor.NAPI, f"{ifname}: NAPI ids on sockets").status is Status.OK
    assert find(checks, doctor.IRQ_SUSPEND, "irq-suspend-timeout").status is Status.OK
    # veth has no queue stats: the ifindex-filtered dump answers EOPNOTSUPP.
    qstats = find(checks, doctor.QSTATS, f"{ifname}: driver statistics")
    assert qstats.status is Status.WARN
    assert "veth reports no queue statistics" in qstats.detail
    driver = find(checks, doctor.DEVMEM, f"{ifname}: driver")
    assert driver.status is Status.MISSING
    assert driver.detail.startswith("veth ")


@pytest.fixture
def plain_veth(testbed_name: str) -> Iterator[tuple[str, str]]:
    """A namespace holding a veth pair as the kernel creates it (GRO off), both up."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace and a veth pair")
    from pyroute2 import NetNS
    from pyroute2 import netns as pr_netns

    ns = testbed_name
    pr_netns.create(ns)
    try:
        with NetNS(ns) as ipr:
            ipr.link("add", ifname="pa", kind="veth", peer={"ifname": "pb"})
            for name in ("pa", "pb"):
                ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        yield ns, "pa"
    finally:
        pr_netns.remove(ns)


@pytest.mark.kernel
def test_plain_veth_has_no_napi_and_gets_the_gro_remedy(plain_veth: tuple[str, str]) -> None:
    ns, ifname = plain_veth
    checks = doctor.run_checks(ifname, ns)
    line = find(checks, doctor.NAPI, f"{ifname}: NAPI instances")
    assert line.status is Status.MISSING
    assert "veth, GRO off" in line.detail
    assert f"ethtool -K {ifname} gro on" in line.remedy
    sockets = find(checks, doctor.NAPI, f"{ifname}: NAPI ids on sockets")
    assert sockets.status is Status.MISSING


@pytest.mark.kernel
def test_preset_is_recognised_after_napi_set(testbed: Testbed) -> None:
    ns, ifname = testbed.ns_of("server"), testbed.if_of("server")
    name = f"{ifname}: settings in effect"
    assert "preset 'base'" in find(doctor.run_checks(ifname, ns), doctor.PER_NAPI, name).detail
    for preset in ("napibusy", "suspend"):
        s = PRESETS[preset].napi
        with Netdev.open(ns) as nd:
            for n in nd.napi_dump(testbed.server_ifindex):
                nd.napi_set(
                    n.id,
                    defer_hard_irqs=s.defer_hard_irqs,
                    gro_flush_timeout=s.gro_flush_timeout,
                    irq_suspend_timeout=s.irq_suspend_timeout,
                )
        checks = doctor.run_checks(ifname, ns)
        line = find(checks, doctor.PER_NAPI, name)
        assert line.status is Status.OK
        assert f"preset '{preset}'" in line.detail
    armed = find(checks, doctor.IRQ_SUSPEND, f"{ifname}: suspension")
    assert "20ms" in armed.detail
    # The testbed's namespaces (and these settings) are removed by the fixture.


@pytest.mark.kernel
def test_json_output(testbed: Testbed, capsys: pytest.CaptureFixture[str]) -> None:
    ns, ifname = testbed.ns_of("server"), testbed.if_of("server")
    rc, out, err = run_cli(capsys, "--netns", ns, "--ifname", ifname, "-j")
    assert (rc, err) == (0, "")
    rep = json.loads(out)
    assert set(rep) == {"release", "ifname", "netns", "summary", "checks"}
    assert (rep["ifname"], rep["netns"]) == (ifname, ns)
    assert rep["release"] == os.uname().release
    for c in rep["checks"]:
        assert set(c) == {"feature", "name", "status", "detail", "remedy"}
        assert c["status"] in ("OK", "WARN", "MISSING")
    counts = {s: sum(c["status"] == s for c in rep["checks"]) for s in ("OK", "WARN", "MISSING")}
    assert rep["summary"] == counts
    assert counts["MISSING"] > 0  # page-pool stats, udmabuf, veth devmem: still exit 0


@pytest.mark.kernel
def test_human_report_lists_every_feature(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _err = run_cli(capsys)
    assert rc == 0
    for feature in (doctor.KERNEL, doctor.BUSY_POLL, doctor.PER_NAPI, doctor.IRQ_SUSPEND):
        assert feature in out
    assert "MISSING" in out and "OK" in out


def test_unknown_interface_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "--ifname", "ndk-no-such0")
    assert rc == 1
    assert out == ""
    assert err == "netdevkit: error: no interface named 'ndk-no-such0'\n"
    with pytest.raises(NotFoundError):
        doctor.run_checks("ndk-no-such0")


def test_unknown_netns_is_one_line_and_exit_1() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "netdevkit", "doctor", "--netns", "ndk-no-such-ns", "-i", "lo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert "network namespace 'ndk-no-such-ns' does not exist" in proc.stderr
