"""What each kernel of the matrix must do, asserted on the kernel that runs.

These tests run on the host (6.18) and inside the kernel-matrix guests
(Debian 6.1, 6.12, 7.x; ``make test-kernels``). Where kernels differ, each
branch asserts exactly what a user of that kernel sees: the per-NAPI netlink
path from 6.13, the device-wide sysfs fallback before it (saying so), and
refusals that name the kernel needed.
"""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli as run

from netdevkit import kver
from netdevkit.attach import attach, detach
from netdevkit.busypoll.config import BusyPollConfig
from netdevkit.busypoll.epoll import EpollParams, get_params, set_params
from netdevkit.errors import UnsupportedError
from netdevkit.netdev.client import Netdev
from netdevkit.testbed import Testbed
from netdevkit.tuning import sysfs

pytestmark = [pytest.mark.kernel, pytest.mark.matrix]

NO_FAMILY = (
    "netdevkit: error: this kernel has no 'netdev' generic netlink family: it appeared in "
    "Linux 6.3; NAPI and queue introspection need 6.8, per-NAPI settings 6.13\n"
)


# -- show commands ------------------------------------------------------------------


@pytest.mark.parametrize("word", ["dev", "queue", "napi", "qstats", "page-pool"])
def test_show(testbed4: Testbed, capsys: pytest.CaptureFixture[str], word: str) -> None:
    ns, dev = testbed4.server_ns, testbed4.server_if
    rc, out, err = run(capsys, word, "show", "--netns", ns)
    if not kver.at_least("6.3"):
        assert (rc, out, err) == (1, "", NO_FAMILY)
        return
    assert (rc, err) == (0, "")
    if word in ("dev", "queue", "napi"):
        assert dev in out
        if word == "napi":
            assert out.count(dev) == 4  # one row per NAPI of the four-queue veth
    elif word == "qstats":
        assert "the drivers there report none (veth never does)" in out
    else:
        assert out == f"no page pools in network namespace {ns!r}\n"


# -- napi set / apply / restore -----------------------------------------------------


def _settings(testbed: Testbed) -> list[tuple[int | None, int | None]]:
    """(defer-hard-irqs, gro-flush-timeout) of the server's NAPIs, as the kernel reports."""
    ns, dev = testbed.server_ns, testbed.server_if
    if kver.at_least("6.13"):
        with Netdev.open(ns) as nd:
            napis = nd.napi_dump(testbed.server_ifindex)
        return [(n.defer_hard_irqs, n.gro_flush_timeout) for n in napis]
    s = sysfs.read(ns, dev)
    return [(s.defer_hard_irqs, s.gro_flush_timeout)]


def test_napi_set_then_restore(testbed4: Testbed, capsys: pytest.CaptureFixture[str]) -> None:
    ns, dev = testbed4.server_ns, testbed4.server_if
    args = ("--defer-hard-irqs", "2", "--gro-flush-timeout", "20us")
    rc, out, err = run(capsys, "napi", "set", "--netns", ns, "--ifname", dev, *args)
    assert (rc, err) == (0, "")
    lines = out.splitlines()
    if kver.at_least("6.13"):  # per NAPI, over netlink
        assert len(lines) == 5
        for i, line in enumerate(lines[:4]):
            assert line.startswith("NAPI ") and f"({dev} #{i}, netns {ns}): " in line
            assert line.endswith("defer-hard-irqs 0 -> 2, gro-flush-timeout 0 -> 20us")
        assert _settings(testbed4) == [(2, 20_000)] * 4
    else:  # the device-wide sysfs fallback, saying so
        assert lines[0] == (
            f"{dev} (device-wide sysfs, all its NAPIs, netns {ns}): "
            "defer-hard-irqs 0 -> 2, gro-flush-timeout 0 -> 20us"
        )
        assert _settings(testbed4) == [(2, 20_000)]
    assert "undo with `netdevkit restore`" in lines[-1]
    rc, out, err = run(capsys, "restore")
    assert (rc, err) == (0, "")
    assert "restored defer-hard-irqs 2 -> 0, gro-flush-timeout 20us -> 0" in out
    assert set(_settings(testbed4)) == {(0, 0)}


def test_apply_profile(
    testbed4: Testbed, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ns, dev = testbed4.server_ns, testbed4.server_if
    profile = tmp_path / "p.toml"
    profile.write_text(
        f'netns = "{ns}"\n[[interface]]\nmatch = "{dev}"\n'
        'defer-hard-irqs = 3\ngro-flush-timeout = "30us"\n'
    )
    rc, out, err = run(capsys, "apply", str(profile))
    assert (rc, err) == (0, ""), out
    want = [(3, 30_000)] * (4 if kver.at_least("6.13") else 1)
    assert _settings(testbed4) == want
    assert ("device-wide sysfs" in out) is not kver.at_least("6.13")
    rc, out, err = run(capsys, "restore")
    assert (rc, err) == (0, "")
    assert set(_settings(testbed4)) == {(0, 0)}


def test_per_napi_only_knob_is_refused_before_6_13(
    testbed4: Testbed, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, dev = testbed4.server_ns, testbed4.server_if
    rc, out, err = run(
        capsys, "napi", "set", "--netns", ns, "--ifname", dev, "--irq-suspend-timeout", "2ms"
    )
    if kver.at_least("6.13"):
        assert (rc, err) == (0, "")
        assert out.count("irq-suspend-timeout 0 -> 2ms") == 4
        assert run(capsys, "restore")[0] == 0
    else:
        assert (rc, out) == (1, "")
        assert err == (
            f"netdevkit: error: {dev} (device-wide sysfs, all its NAPIs, netns {ns}): cannot "
            "set irq-suspend-timeout: this kernel lacks per-NAPI settings (napi-set, Linux "
            "6.13+), and irq-suspend-timeout exists only per NAPI\n"
        )


def test_napi_set_threaded_busy_poll_cli(
    testbed4: Testbed, capsys: pytest.CaptureFixture[str]
) -> None:
    ns, dev = testbed4.server_ns, testbed4.server_if
    rc, out, err = run(
        capsys, "napi", "set", "--netns", ns, "--ifname", dev, "--threaded", "busy-poll"
    )
    if kver.at_least("6.19"):
        assert (rc, err) == (0, "")
        assert out.count("threaded off -> busy-poll") == 4
        rc, out, err = run(capsys, "napi", "show", "--netns", ns)
        assert out.count("busy-poll") == 4
        assert run(capsys, "restore")[0] == 0
        return
    assert (rc, out) == (1, "")
    label = (
        f"{dev} (device-wide sysfs, all its NAPIs, netns {ns})"
        if not kver.at_least("6.13")
        else f"({dev} #0, netns {ns})"
    )
    assert label in err
    assert err.endswith(
        f"threaded busy-poll needs Linux 6.19 or newer (this is {kver.release()}); "
        "threaded on gives a kthread without busy polling\n"
    )


# -- epoll busy-poll parameters and attach ------------------------------------------


def test_epoll_params() -> None:
    epfd = select.epoll()
    try:
        wanted = EpollParams(50, 8, True)
        if kver.at_least("6.9"):
            assert set_params(epfd.fileno(), wanted) == wanted
            assert get_params(epfd.fileno()) == wanted
        else:
            with pytest.raises(UnsupportedError) as exc:
                set_params(epfd.fileno(), wanted)
            assert str(exc.value) == (
                f"EPIOCSPARAMS {wanted} on fd {epfd.fileno()}: the kernel has no epoll "
                "busy-poll ioctls (ENOTTY on an epoll fd): needs Linux >= 6.9 with "
                f"CONFIG_NET_RX_BUSY_POLL, running {kver.release()}"
            )
    finally:
        epfd.close()


def test_attach_on_a_epoll_target(epoll_target: subprocess.Popen[str]) -> None:
    config = BusyPollConfig(50, 8, True)
    if not kver.at_least("6.9"):
        with pytest.raises(UnsupportedError, match=r"needs Linux >= 6\.9"):
            attach(epoll_target.pid, config)
        return
    result = attach(epoll_target.pid, config)
    assert [c.new for c in result.contexts] == [config.params]
    assert len(detach(result).restored) == 1


# -- page-pool statistics -----------------------------------------------------------


def test_page_pool_stats_follow_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    """7.x is built with CONFIG_PAGE_POOL_STATS and its virtio_net uses page pools:
    statistics for each pool; kernels without the option refuse, naming it."""
    rc, out, err = run(capsys, "page-pool", "stats", "-j")
    if not kver.at_least("6.3"):
        assert (rc, out, err) == (1, "", NO_FAMILY)
        return
    cfg = kver.config()
    if cfg is None:
        pytest.skip("the kernel's configuration is not readable (no /proc/config.gz or copy)")
    if cfg.get("CONFIG_PAGE_POOL_STATS") != "y":
        assert (rc, out) == (1, "")
        assert err == (
            "netdevkit: error: page pool statistics need Linux 6.8 or newer built with "
            "CONFIG_PAGE_POOL_STATS=y (this kernel does not register page-pool-stats-get)\n"
        )
        return
    import json

    assert (rc, err) == (0, "")
    rows = json.loads(out)
    with Netdev.open() as nd:
        pools = {p.id for p in nd.page_pool_dump()}
    assert {r["id"] for r in rows} <= pools
    if os.environ.get("NETDEVKIT_IN_GUEST") == "1":
        assert pools, "the guest's virtio_net NIC is up: it should have page pools"
        assert rows and all("alloc_fast" in r["counters"] for r in rows)


# -- doctor's verdicts against what the kernel really has ---------------------------


def test_doctor_verdicts_match_the_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    rc, out, _err = run(capsys, "doctor", "-j")
    assert rc in (0, 1)
    checks = {(c["feature"], c["name"]): c["status"] for c in json.loads(out)["checks"]}
    try:
        with Netdev.open() as nd:
            ops = {op: nd.supports(op) for op in ("napi-get", "napi-set", "bind-rx")}
    except UnsupportedError:
        ops = {"napi-get": False, "napi-set": False, "bind-rx": False}
    epfd = select.epoll()
    try:
        get_params(epfd.fileno())
        epoll_ok = True
    except UnsupportedError:
        epoll_ok = False
    finally:
        epfd.close()

    def status(feature: str) -> str:
        found = [v for (f, n), v in checks.items() if f == feature and n.startswith("kernel >=")]
        assert found, f"doctor has no kernel check for {feature!r}: {sorted(checks)}"
        return str(found[0])

    assert (status("netdev family") == "OK") is kver.at_least("6.9")
    assert (status("NAPI introspection") == "OK") is ops["napi-get"]
    assert (status("per-NAPI config") == "OK") is ops["napi-set"]
    assert (status("epoll busy poll") == "OK") is epoll_ok
    assert (status("Device Memory TCP") == "OK") is ops["bind-rx"]


def test_bench_offers_busy_poll_thread_where_the_kernel_has_it() -> None:
    from netdevkit.bench import modes, runner

    # the mode is always known (so a command line naming it is valid everywhere) ...
    assert runner.parse_modes("base,busy-poll-thread") == ("base", "busy-poll-thread")
    absent = modes.threaded_busy_poll_absent()
    if kver.at_least("6.19"):
        # ... and measured where the kernel has threaded busy-poll ...
        assert absent is None
        assert modes.get_mode("busy-poll-thread").napi_preset == "busy-poll-thread"
    else:
        # ... and reported as not measured, naming the kernel it needs, where it has not
        assert absent is not None
        assert "needs Linux 6.19" in absent and "not measured" in absent


def test_doctor_threaded_verdict_follows_set_and_restore(
    testbed4: Testbed, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kthread's pid outlives threading on 6.12: doctor must not read it as "on"."""
    import json

    ns, dev = testbed4.server_ns, testbed4.server_if

    def threaded_line() -> str:
        rc, out, _err = run(capsys, "doctor", "-j", "--netns", ns, "--ifname", dev)
        assert rc == 0
        lines = [c["detail"] for c in json.loads(out)["checks"] if c["name"].endswith(
            ": threaded NAPI")]  # fmt: skip
        assert len(lines) == 1, out
        return str(lines[0])

    if not kver.at_least("6.8"):
        pytest.skip(f"doctor lists NAPIs from Linux 6.8 (napi-get); this is {kver.release()}")
    assert threaded_line().startswith("off for ")
    assert run(capsys, "napi", "set", "--netns", ns, "--ifname", dev, "--threaded", "on")[0] == 0
    assert threaded_line().startswith("on for 4 of 4 NAPIs")
    assert run(capsys, "restore")[0] == 0
    line = threaded_line()
    assert line.startswith("off for "), line
    busy = "available" if kver.at_least("6.19") else "needs Linux 6.19"
    assert f"threaded busy-poll {busy}" in line or f"threaded busy-poll (6.19+) {busy}" in line


# -- queue leasing (7.1+) -----------------------------------------------------------


def test_queue_create_on_veth(testbed4: Testbed, capsys: pytest.CaptureFixture[str]) -> None:
    """veth cannot lease queues: 7.1+ refuses with the kernel's reason, older kernels
    say which kernel is needed; nothing is created either way."""
    ns, dev = testbed4.server_ns, testbed4.server_if
    args = ("queue", "create", "--netns", ns, "--ifname", dev, "--lease-ifname", "lo")
    rc, out, err = run(capsys, *args, "--lease-queue", "0")
    if not kver.at_least("6.3"):
        assert (rc, out, err) == (1, "", NO_FAMILY)
        return
    assert (rc, out) == (1, "")
    if not kver.at_least("7.1"):
        assert err == "netdevkit: error: queue leasing needs Linux 7.1 or newer (queue-create)\n"
        return
    ifindex = testbed4.server_ifindex
    assert err == (
        f"netdevkit: error: queue-create ifindex {ifindex} (lease 1/0): Invalid argument "
        "(EINVAL); kernel says: Device does not support queue creation\n"
    )  # seen on 7.3
    with Netdev.open(ns) as nd:
        assert len(nd.queue_dump(ifindex)) == 8  # 4 RX + 4 TX, as built
        assert all(q.lease is None for q in nd.queue_dump())
