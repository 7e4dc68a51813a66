"""NAPI tuning against the real kernel, in testbed namespaces with NAPI-enabled veth.

Every test reads the kernel's own values back (napi-get dump) rather than
trusting what netdevkit reports, and every journal lives in a per-test
state directory (``NETDEVKIT_STATE_DIR``).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from pyroute2.ethtool.ioctl import IoctlEthtool, NotSupportedError

from netdevkit import kver
from netdevkit.errors import NotFoundError, RequestError, TuningError, UnsupportedError
from netdevkit.netdev.client import Napi, Netdev
from netdevkit.netdev.family import NapiThreaded
from netdevkit.netns import entered
from netdevkit.testbed import Testbed
from netdevkit.tuning.context import tuned
from netdevkit.tuning.journal import Journal
from netdevkit.tuning.model import S32_MAX
from netdevkit.tuning.napi import Tuner
from netdevkit.tuning.presets import MS, PRESETS, US, NapiSettings

pytestmark = pytest.mark.kernel

IF = "ndk-s"


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private journal directory for this test (library and child processes)."""
    d = tmp_path / "state"
    monkeypatch.setenv("NETDEVKIT_STATE_DIR", str(d))
    monkeypatch.delenv("NETDEVKIT_TUNING_BACKEND", raising=False)
    return d


def napis(tb: Testbed) -> list[Napi]:
    """The server veth's NAPIs as the kernel reports them, by id."""
    with Netdev.open(tb.server_ns) as nd:
        return sorted(nd.napi_dump(tb.server_ifindex), key=lambda n: n.id)


def values(tb: Testbed) -> list[tuple[int | None, ...]]:
    return [
        (n.defer_hard_irqs, n.gro_flush_timeout, n.irq_suspend_timeout, int(n.threaded or 0))
        for n in napis(tb)
    ]


def defaults(tb: Testbed) -> list[tuple[int | None, ...]]:
    return [(0, 0, 0, 0)] * len(napis(tb))


def set_gro(ns: str, ifname: str, on: bool) -> None:
    """``ethtool -K IF gro on|off`` inside *ns* (veth makes new NAPIs on each toggle)."""
    with entered(ns):
        eth = IoctlEthtool(ifname)
    try:
        feats = eth.get_features()
        feats["rx-gro"] = on
        with contextlib.suppress(NotSupportedError):
            eth.set_features(feats)
    finally:
        eth.close()


def cli(*argv: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    """Run ``netdevkit ARGV`` in a fresh interpreter (the environment carries the state dir)."""
    p = subprocess.run(
        [sys.executable, "-m", "netdevkit", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p


@contextlib.contextmanager
def child(tb: Testbed, body: str) -> Iterator[subprocess.Popen[str]]:
    """A Python child that applies 'suspend' to the server veth with tuned(), prints
    'ready' and then runs *body*."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from netdevkit.tuning.context import tuned
        with tuned({IF!r}, preset="suspend", netns={tb.server_ns!r}):
            print("ready", flush=True)
        """
    ) + textwrap.indent(textwrap.dedent(body), "    ")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
        yield p
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


SUSPEND = (100, 20 * US, 20 * MS, 0)


# -- set and read back --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "want"),
    [
        (NapiSettings(defer_hard_irqs=12345), (12345, 0, 0, 0)),
        (NapiSettings(defer_hard_irqs=S32_MAX), (S32_MAX, 0, 0, 0)),
        (NapiSettings(gro_flush_timeout=123_456), (0, 123_456, 0, 0)),
        (NapiSettings(gro_flush_timeout=2**40), (0, 2**40, 0, 0)),  # an 8-byte uint
        (NapiSettings(irq_suspend_timeout=7 * MS), (0, 0, 7 * MS, 0)),
        (NapiSettings(threaded=True), (0, 0, 0, 1)),
    ],
)
def test_set_reads_back_each_knob(
    testbed4: Testbed, state: Path, settings: NapiSettings, want: tuple[int, ...]
) -> None:
    with Tuner() as t:
        applied = t.apply(t.plan_for(settings, netns=testbed4.server_ns, ifname=IF))
        assert len(applied.changes) == 4
        assert values(testbed4) == [want] * 4
        if settings.threaded:
            assert all(n.pid for n in napis(testbed4)), "threaded NAPIs have a kthread"
        t.undo(applied)
    assert values(testbed4) == defaults(testbed4)
    assert not (state / "journal.json").exists()


def test_set_by_id_list_touches_only_those(testbed4: Testbed, state: Path) -> None:
    ids = [n.id for n in napis(testbed4)]
    with Tuner() as t:
        plan = t.plan_for(
            NapiSettings(defer_hard_irqs=5), netns=testbed4.server_ns, napi_ids=[ids[1], ids[3]]
        )
        assert [c.target.position for c in plan.changes] == [1, 3]
        t.apply(plan)
    assert [v[0] for v in values(testbed4)] == [0, 5, 0, 5]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_applies_and_is_undone(testbed: Testbed, state: Path, name: str) -> None:
    p = PRESETS[name].napi
    want = (p.defer_hard_irqs, p.gro_flush_timeout, p.irq_suspend_timeout, int(p.threaded or 0))
    if p.threaded is NapiThreaded.BUSY_POLL and not kver.at_least("6.19"):
        with (
            pytest.raises(UnsupportedError, match=r"threaded busy-poll needs Linux 6\.19"),
            tuned(IF, preset=name, netns=testbed.server_ns),
        ):
            pass
        assert values(testbed) == [(0, 0, 0, 0)]
        return
    with tuned(IF, preset=name, netns=testbed.server_ns) as t:
        assert values(testbed) == [want]
        assert len(t.changes) == (0 if name == "base" else 1)
    assert values(testbed) == [(0, 0, 0, 0)]
    assert not (state / "journal.json").exists()


# -- bad input changes nothing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "rc", "needle"),
    [
        (["--defer-hard-irqs", "-1"], 2, "must not be negative"),
        (["--defer-hard-irqs", str(S32_MAX + 1)], 2, "S32_MAX"),
        (["--gro-flush-timeout", "20xs"], 2, "invalid duration"),
        (["--gro-flush-timeout=-20us"], 2, "invalid duration"),
        (["--irq-suspend-timeout", "1.5ns"], 2, "whole number of nanoseconds"),
        (["--threaded", "2"], 2, "expected on, off or busy-poll"),
        (["--preset", "turbo"], 2, "unknown preset"),
        ([], 2, "nothing to set"),
        (["--id", "4000000000", "--defer-hard-irqs", "1"], 1, "no NAPI instance with id"),
        (["--id", "1,x", "--defer-hard-irqs", "1"], 2, "not a NAPI id"),
        (["--ifname", "nope0", "--defer-hard-irqs", "1"], 1, "no interface named 'nope0'"),
        (["--ifname", "lo", "--defer-hard-irqs", "1"], 1, "has no NAPI instances"),
    ],
)
def test_bad_input_changes_nothing(
    testbed4: Testbed, state: Path, argv: list[str], rc: int, needle: str
) -> None:
    # Something already set, so "unchanged" is not just "all zero".
    with Tuner() as t:
        t.apply(t.plan_for(NapiSettings(3, 3000, 3000, False), netns=testbed4.server_ns, ifname=IF))
    journal_before = (state / "journal.json").read_bytes()
    before = napis(testbed4)
    target = [] if any(a in ("--id", "--ifname") for a in argv) else ["--ifname", IF]
    p = cli("napi", "set", "--netns", testbed4.server_ns, *target, *argv, check=None)
    assert p.returncode == rc, p.stderr
    assert needle in p.stderr
    assert napis(testbed4) == before  # byte for byte: every attribute, same ids
    assert (state / "journal.json").read_bytes() == journal_before


def test_napi_id_of_another_namespace_names_that_namespace(testbed: Testbed, state: Path) -> None:
    """NAPI ids are global; napi-get answers per namespace: say where the id lives."""
    ns = testbed.server_ns
    (napi,) = napis(testbed)
    p = cli("napi", "set", "--id", str(napi.id), "--defer-hard-irqs", "1", check=1)
    assert p.stderr == (
        f"netdevkit: error: no NAPI instance with id {napi.id} in this network namespace; "
        f"NAPI ids are global, and {napi.id} is {IF}'s in network namespace {ns!r}; name that "
        f"namespace: --netns {ns}\n"
    )
    p = cli(
        "napi",
        "set",
        "--netns",
        testbed.client_ns,
        "--id",
        str(napi.id),
        "--threaded",
        "on",
        check=1,
    )
    assert f"in network namespace {testbed.client_ns!r}; NAPI ids are global" in p.stderr
    assert p.stderr.endswith(f"name that namespace: --netns {ns}\n")
    assert napis(testbed) == [napi]
    assert not (state / "journal.json").exists()


def test_presets_through_the_forced_sysfs_backend(testbed: Testbed, state: Path) -> None:
    """`--backend sysfs` on 6.18: irq-suspend-timeout 0 is no write; suspend is refused."""
    ns = testbed.server_ns
    out = cli(
        "napi", "set", "--backend", "sysfs", "--netns", ns, "--ifname", IF, "--preset", "defer"
    )
    assert out.stdout.splitlines()[0] == (
        f"{IF} (device-wide sysfs, all its NAPIs, netns {ns}): defer-hard-irqs 0 -> 100, "
        "gro-flush-timeout 0 -> 20us"
    )
    assert values(testbed) == [(100, 20 * US, 0, 0)]
    cli("restore")
    p = cli(
        "napi",
        "set",
        "--backend",
        "sysfs",
        "--netns",
        ns,
        "--ifname",
        IF,
        "--preset",
        "suspend",
        check=1,
    )
    assert "cannot set irq-suspend-timeout" in p.stderr and "Linux 6.13+" in p.stderr
    assert values(testbed) == [(0, 0, 0, 0)]
    assert not (state / "journal.json").exists()


def test_restore_filters_that_match_nothing_say_so(testbed: Testbed, state: Path) -> None:
    ns = testbed.server_ns
    cli("napi", "set", "--netns", ns, "--ifname", IF, "--defer-hard-irqs", "2")
    journal = state / "journal.json"
    for command in (["restore"], ["napi", "diff"]):
        out = cli(*command, "--netns", ns, "--ifname", "b").stdout
        assert out.splitlines()[0].endswith(
            f"the journal ({journal}) lists 1 change(s), none of them matching --netns {ns} "
            "--ifname b"
        )
    assert values(testbed) == [(2, 0, 0, 0)] and journal.exists()  # nothing restored
    for command in (["restore"], ["napi", "diff"]):
        p = cli(*command, "--kind", "bogus", check=2)
        assert p.stdout == "" and p.stderr.startswith(
            "netdevkit: error: --kind 'bogus': no such kind of journal entry (known: "
        )
        assert cli(*command, "--kind", "nap", check=2).stderr.startswith(
            "netdevkit: error: --kind 'nap': no such kind of journal entry; did you mean 'napi'?"
        )
    assert values(testbed) == [(2, 0, 0, 0)] and journal.exists()
    assert "restored defer-hard-irqs 2 -> 0" in cli("restore", "--kind", "napi").stdout
    assert cli("restore", "--ifname", "b").stdout.startswith(
        f"nothing to restore: the journal ({journal}) lists no changes"
    )


def test_the_shipped_example_profile_applies_to_a_testbed(
    testbed: Testbed, state: Path, tmp_path: Path
) -> None:
    """examples/profile.toml is written for `netdevkit testbed up` (namespaces ndk-srv and
    ndk-cli); this testbed's namespaces have other names, everything else is as shipped."""
    shipped = (Path(__file__).parent.parent / "examples" / "profile.toml").read_text()
    assert shipped.count('"ndk-srv"') == 1 and shipped.count('"ndk-cli"') == 1
    profile = tmp_path / "profile.toml"
    profile.write_text(
        shipped.replace('"ndk-srv"', f'"{testbed.server_ns}"').replace(
            '"ndk-cli"', f'"{testbed.client_ns}"'
        )
    )

    def both() -> list[tuple[int | None, ...]]:
        with Netdev.open(testbed.client_ns) as nd:
            client = [
                (n.defer_hard_irqs, n.gro_flush_timeout, n.irq_suspend_timeout)
                for n in nd.napi_dump()
            ]
        return [v[:3] for v in values(testbed)] + client

    out = cli("apply", str(profile), "--dry-run").stdout
    assert out.splitlines()[-1] == "dry run: nothing changed"
    assert both() == [(0, 0, 0), (0, 0, 0)]
    assert "undo with `netdevkit restore`" in cli("apply", str(profile)).stdout
    assert both() == [(200, 50 * US, 20 * MS), (100, 200 * US, 0)]
    assert cli("apply", str(profile)).stdout == "no changes\n"
    cli("restore")
    assert both() == [(0, 0, 0), (0, 0, 0)]
    assert not (state / "journal.json").exists()


def test_bad_value_in_a_list_is_refused_before_the_first_write(
    testbed4: Testbed, state: Path
) -> None:
    ids = [n.id for n in napis(testbed4)]
    before = napis(testbed4)
    with Tuner() as t, pytest.raises(NotFoundError):
        t.plan_for(NapiSettings(defer_hard_irqs=1), netns=testbed4.server_ns, napi_ids=[*ids, 1])
    with Tuner() as t, pytest.raises(RequestError, match="named twice"):
        t.plan_for(NapiSettings(defer_hard_irqs=1), netns=testbed4.server_ns, napi_ids=[ids[0]] * 2)
    assert napis(testbed4) == before
    assert not (state / "journal.json").exists()


# -- rollback on a real kernel refusal ------------------------------------------------------------


def test_kernel_refusal_of_change_3_rolls_back_1_and_2(testbed: Testbed, state: Path) -> None:
    """A plan over three NAPIs (the testbed's, then both ends of a second veth pair)
    whose third vanishes between planning and applying (GRO turned off on it):
    napi-set answers ENOENT for change 3, after changes 1 and 2 went through."""
    ns = testbed.server_ns
    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname="ndk-x", kind="veth", peer={"ifname": "ndk-y"})
        for name in ("ndk-x", "ndk-y"):
            set_gro(ns, name, True)
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
    with Tuner() as t:
        before = values(testbed)
        (x,) = t.resolve(netns=ns, ifname="ndk-x")
        (y,) = t.resolve(netns=ns, ifname="ndk-y")
        (s,) = t.resolve(netns=ns, ifname=IF)
        want = NapiSettings(7, 70 * US)
        plan = t.plan([(*s, want), (*y, want), (*x, want)])
        assert len(plan.effective) == 3
        set_gro(ns, "ndk-x", False)
        with pytest.raises(TuningError) as info:
            t.apply(plan)
    err = info.value
    assert (err.index, err.total) == (3, 3)
    assert err.change.target.ifname == "ndk-x"
    assert len(err.rolled_back) == 2 and not err.rollback_failures
    assert err.errno == 2  # ENOENT from napi-set, with the attribute the kernel pointed at
    assert "change 3 of 3" in str(err) and "napi.id" in str(err) and "rolled back" in str(err)
    assert values(testbed) == before
    with Netdev.open(ns) as nd:
        assert nd.napi_get(y[0].napi_id or 0).defer_hard_irqs == 0  # change 2 undone
    assert not (state / "journal.json").exists()


# -- undo: exceptions, signals, crashes -------------------------------------------------------


def test_restore_after_an_exception(testbed: Testbed, state: Path) -> None:
    with pytest.raises(ZeroDivisionError), tuned(IF, preset="suspend", netns=testbed.server_ns):
        assert values(testbed) == [SUSPEND]
        assert json.loads((state / "journal.json").read_text())["entries"]
        _ = 1 / 0
    assert values(testbed) == [(0, 0, 0, 0)]
    assert not (state / "journal.json").exists()


def test_signal_handlers_are_put_back(testbed: Testbed, state: Path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with tuned(IF, preset="defer", netns=testbed.server_ns):
        assert signal.getsignal(signal.SIGTERM) not in (before[0],)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_undo_leaves_a_knob_someone_else_changed(testbed: Testbed, state: Path) -> None:
    with (
        tuned(IF, preset="suspend", netns=testbed.server_ns) as t,
        Netdev.open(testbed.server_ns) as nd,
    ):
        nd.napi_set(napis(testbed)[0].id, gro_flush_timeout=999)
    assert values(testbed) == [(0, 999, 0, 0)]
    assert "left gro-flush-timeout as is" in t.restored[0].message


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_restore_on_signal_in_a_child(testbed: Testbed, state: Path, sig: int) -> None:
    with child(testbed, "time.sleep(60)") as p:
        assert values(testbed) == [SUSPEND]
        p.send_signal(sig)
        rc = p.wait(timeout=10)
    # SIGTERM: the child dies of SIGTERM itself (its parent sees that), after restoring.
    # SIGINT: Python's handler raises KeyboardInterrupt after the restore, and an
    # uncaught KeyboardInterrupt ends the interpreter by SIGINT as well.
    assert rc == -sig
    assert values(testbed) == [(0, 0, 0, 0)]
    assert not (state / "journal.json").exists()


@pytest.mark.slow
def test_restore_from_the_journal_after_a_crash(testbed: Testbed, state: Path) -> None:
    with child(testbed, "time.sleep(60)") as p:
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=10) == -signal.SIGKILL
    assert values(testbed) == [SUSPEND]  # nobody cleaned up...
    (record,) = json.loads((state / "journal.json").read_text())["entries"]
    entry = record["info"]  # the journal's napi record: what it changed, described
    assert record["kind"] == "napi" and record["before"]["defer_hard_irqs"] == 0
    assert record["pid"] == p.pid and entry["ifname"] == IF and entry["position"] == 0
    assert entry["netns"] == testbed.server_ns and entry["ifindex"] == testbed.server_ifindex
    diff = cli("napi", "diff")
    assert "defer-hard-irqs 0 -> 100" in diff.stdout and "(baseline -> now)" in diff.stdout
    out = cli("restore")  # ...until a new process reads the journal
    assert "restored defer-hard-irqs 100 -> 0" in out.stdout
    assert values(testbed) == [(0, 0, 0, 0)]
    assert not (state / "journal.json").exists()
    assert "nothing to restore" in cli("restore").stdout


def test_napi_that_vanished_is_reported_on_restore(testbed4: Testbed, state: Path) -> None:
    ns = testbed4.server_ns
    cli("napi", "set", "--netns", ns, "--ifname", IF, "--preset", "napibusy")
    old = [n.id for n in napis(testbed4)]
    set_gro(ns, IF, False)
    set_gro(ns, IF, True)
    new = [n.id for n in napis(testbed4)]
    assert len(new) == 4 and not set(old) & set(new)
    assert values(testbed4) == defaults(testbed4)  # the new NAPIs start from the defaults
    diff = cli("napi", "diff", "-j")
    rows = json.loads(diff.stdout)
    assert [r["status"] for r in rows] == ["replaced"] * 4
    assert [r["successor_napi_id"] for r in rows] == new
    out = cli("restore")
    assert (
        f"NAPI {old[0]} of {IF} is gone (GRO toggled or link flapped); position 0 is now "
        f"NAPI {new[0]} ({IF} #0, netns {ns}): already at its baseline" in out.stdout
    )
    assert values(testbed4) == defaults(testbed4)
    assert not (state / "journal.json").exists()


def test_restore_puts_back_what_recreated_napis_kept(testbed4: Testbed, state: Path) -> None:
    """veth's re-added NAPIs keep irq-suspend-timeout (defer and gro come from the device):
    restore reads the kernel, puts the baseline back by position, and diff agrees."""
    ns = testbed4.server_ns
    cli("napi", "set", "--netns", ns, "--ifname", IF, "--preset", "suspend")
    old = [n.id for n in napis(testbed4)]
    set_gro(ns, IF, False)
    set_gro(ns, IF, True)
    new = [n.id for n in napis(testbed4)]
    assert not set(old) & set(new)
    assert values(testbed4) == [(0, 0, 20 * MS, 0)] * 4  # [seen on 6.18]
    rows = json.loads(cli("napi", "diff", "-j").stdout)
    assert [(r["status"], list(r["differs"])) for r in rows] == [
        ("replaced", ["irq_suspend_timeout"])
    ] * 4
    out = cli("restore").stdout
    for pos in range(4):
        assert (
            f"NAPI {old[pos]} of {IF} is gone (GRO toggled or link flapped); position {pos} "
            f"is now NAPI {new[pos]} ({IF} #{pos}, netns {ns}): restored irq-suspend-timeout "
            "20ms -> 0" in out
        )
    assert values(testbed4) == defaults(testbed4)
    assert not (state / "journal.json").exists()
    assert cli("napi", "diff").stdout.startswith("no differences")


def test_tuned_exit_puts_back_what_recreated_napis_kept(testbed: Testbed, state: Path) -> None:
    with tuned(IF, preset="suspend", netns=testbed.server_ns) as t:
        set_gro(testbed.server_ns, IF, False)
        set_gro(testbed.server_ns, IF, True)
        assert values(testbed) == [(0, 0, 20 * MS, 0)]
    assert values(testbed) == [(0, 0, 0, 0)]
    (o,) = t.restored
    assert o.status == "restored"
    assert o.message.endswith(": restored irq-suspend-timeout 20ms -> 0")
    assert not (state / "journal.json").exists()


def test_journal_keeps_the_first_baseline_across_changes(testbed: Testbed, state: Path) -> None:
    ns = testbed.server_ns
    cli("napi", "set", "--netns", ns, "--ifname", IF, "--defer-hard-irqs", "5")
    cli("napi", "set", "--netns", ns, "--ifname", IF, "--defer-hard-irqs", "10")
    assert values(testbed) == [(10, 0, 0, 0)]
    assert "restored defer-hard-irqs 10 -> 0" in cli("restore").stdout
    assert values(testbed) == [(0, 0, 0, 0)]


# -- the sysfs fallback --------------------------------------------------------------------


def test_sysfs_fallback_is_device_wide(
    testbed4: Testbed, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = testbed4.server_ns
    monkeypatch.setenv("NETDEVKIT_TUNING_BACKEND", "sysfs")
    out = cli(
        "napi",
        "set",
        "--netns",
        ns,
        "--ifname",
        IF,
        "--defer-hard-irqs",
        "7",
        "--gro-flush-timeout",
        "30us",
        "--threaded",
        "on",
    )
    assert "device-wide sysfs, all its NAPIs" in out.stdout
    # On 6.13+ a sysfs write sets every NAPI of the device: the per-NAPI view agrees.
    assert values(testbed4) == [(7, 30 * US, 0, 1)] * 4
    p = cli("napi", "set", "--netns", ns, "--ifname", IF, "--irq-suspend-timeout", "20ms", check=1)
    assert "cannot set irq-suspend-timeout" in p.stderr and "sysfs" in p.stderr
    p = cli(
        "napi",
        "set",
        "--netns",
        ns,
        "--id",
        str(napis(testbed4)[0].id),
        "--defer-hard-irqs",
        "1",
        check=2,
    )
    assert "--ifname DEV" in p.stderr
    assert values(testbed4) == [(7, 30 * US, 0, 1)] * 4
    (record,) = json.loads((state / "journal.json").read_text())["entries"]
    entry = record["info"]
    assert entry["backend"] == "sysfs" and entry["napi_id"] is None
    monkeypatch.delenv("NETDEVKIT_TUNING_BACKEND")
    assert "device-wide" in cli("restore").stdout
    assert values(testbed4) == defaults(testbed4)


def test_sysfs_backend_refuses_irq_suspend_in_the_library(testbed: Testbed, state: Path) -> None:
    before = napis(testbed)
    with Tuner("sysfs") as t, pytest.raises(UnsupportedError, match="irq-suspend-timeout"):
        t.plan_for(PRESETS["suspend"].napi, netns=testbed.server_ns, ifname=IF)
    assert napis(testbed) == before


def test_sysfs_helper_leaves_the_host_mounts_alone(testbed: Testbed) -> None:
    from netdevkit.tuning import sysfs

    mounts = Path("/proc/self/mountinfo").read_text()
    assert sysfs.read(testbed.server_ns, IF).defer_hard_irqs == 0
    with pytest.raises(NotFoundError):
        sysfs.read(testbed.server_ns, "eth0")  # the host's eth0 is not in there
    assert Path("/proc/self/mountinfo").read_text() == mounts


# -- profiles -------------------------------------------------------------------------


def test_apply_profile_dry_run_then_idempotent(
    testbed4: Testbed, state: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text(
        textwrap.dedent(
            f"""
            netns = "{testbed4.server_ns}"
            [[interface]]
            match = "ndk-*"
            preset = "suspend"
            [[interface.napi]]
            positions = [1, 3]
            defer-hard-irqs = 200
            gro-flush-timeout = "50us"
            """
        )
    )
    before = napis(testbed4)
    dry = cli("apply", str(profile), "--dry-run")
    assert "dry run: nothing changed" in dry.stdout
    assert dry.stdout.count("defer-hard-irqs 0 -> 100") == 2
    assert dry.stdout.count("defer-hard-irqs 0 -> 200") == 2
    assert napis(testbed4) == before
    assert not (state / "journal.json").exists()

    first = cli("apply", str(profile))
    assert first.stdout.splitlines()[:4] == dry.stdout.splitlines()[:4]
    o = (200, 50 * US, 20 * MS, 0)
    assert values(testbed4) == [SUSPEND, o, SUSPEND, o]
    assert cli("apply", str(profile)).stdout.strip() == "no changes"
    assert cli("apply", str(profile), "--dry-run").stdout.strip() == "no changes"
    cli("restore")
    assert values(testbed4) == defaults(testbed4)


@pytest.mark.parametrize(
    ("body", "rc", "needle"),
    [
        ('[[interface]]\nmatch = "ndk-s"\ndefer-hard-irq = 1\n', 2, "unknown key 'defer-hard-irq'"),
        ('[[interface]]\nmatch = "nope*"\nthreaded = true\n', 1, "no interface matches"),
        (
            '[[interface]]\nmatch = "ndk-s"\n[[interface.napi]]\nposition = 9\nthreaded = true\n',
            1,
            "no NAPI at position(s) 9",
        ),
        (
            '[[interface]]\nmatch = "ndk-*"\nthreaded = true\n[[interface]]\nmatch = "ndk-s"\n'
            "threaded = false\n",
            2,
            "matched by both",
        ),
        (
            '[[interface]]\nmatch = "ndk-s"\nirq-suspend-timeout = "1ms"\n'
            '[[interface]]\nmatch = "lo"\nthreaded = true\n',
            1,
            "lo",
        ),
    ],
)
def test_bad_profile_changes_nothing(
    testbed: Testbed, state: Path, tmp_path: Path, body: str, rc: int, needle: str
) -> None:
    profile = tmp_path / "bad.toml"
    profile.write_text(f'netns = "{testbed.server_ns}"\n{body}')
    before = napis(testbed)
    p = cli("apply", str(profile), check=None)
    assert p.returncode == rc, p.stderr
    assert needle in p.stderr
    assert napis(testbed) == before
    assert not (state / "journal.json").exists()


# -- CLI output -------------------------------------------------------------------------


def test_napi_set_json_and_diff(testbed: Testbed, state: Path) -> None:
    ns = testbed.server_ns
    out = cli("napi", "set", "--netns", ns, "--ifname", IF, "--preset", "suspend", "-j")
    doc = json.loads(out.stdout)
    (change,) = doc["changes"]
    assert change["before"]["defer_hard_irqs"] == 0 and change["after"]["defer_hard_irqs"] == 100
    assert change["changed"] == ["defer_hard_irqs", "gro_flush_timeout", "irq_suspend_timeout"]
    assert doc["journal"] == str(state / "journal.json")
    (row,) = json.loads(cli("napi", "diff", "-j").stdout)
    assert row["status"] == "differs"
    assert row["differs"]["irq_suspend_timeout"] == {"baseline": 0, "now": 20 * MS}
    res = json.loads(cli("restore", "-j").stdout)["results"]
    assert [r["status"] for r in res] == ["restored"]
    assert "no differences" in cli("napi", "diff").stdout


def test_presets_json_has_both_halves() -> None:
    rows = json.loads(cli("presets", "-j").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["suspend"]["napi"]["irq_suspend_timeout"] == 20 * MS
    assert by_name["suspend"]["epoll"] == {
        "busy_poll_usecs": 0,
        "busy_poll_budget": 64,
        "prefer_busy_poll": True,
    }


def test_journal_is_written_before_the_change(testbed: Testbed, state: Path) -> None:
    """The baseline is on disk (fsync'd) before napi-set runs: watch from a wrapped write."""
    seen: list[bool] = []
    with Tuner(journal=Journal()) as t:
        backend = t.backend_named("netlink")
        real = backend.write

        def spy(target, vals):  # type: ignore[no-untyped-def]
            seen.append((state / "journal.json").exists())
            real(target, vals)

        backend.write = spy  # type: ignore[method-assign]
        t.apply(t.plan_for(NapiSettings(defer_hard_irqs=1), netns=testbed.server_ns, ifname=IF))
    assert seen == [True]


def test_restore_after_the_namespace_is_gone(testbed_name: str, state: Path) -> None:
    from netdevkit.testbed import TestbedConfig

    with Testbed(TestbedConfig(name=testbed_name)) as tb:
        cli("napi", "set", "--netns", tb.server_ns, "--ifname", IF, "--preset", "defer")
        ns = tb.server_ns
    assert "gone" in cli("napi", "diff").stdout
    out = cli("restore")
    assert f"network namespace {ns} no longer exists" in out.stdout
    assert not (state / "journal.json").exists()
