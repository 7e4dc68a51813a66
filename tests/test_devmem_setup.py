"""NIC preparation: step logic and journaling against a fake NIC; real refusals on veth."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from netdevkit import journal as jr
from netdevkit.devmem import records
from netdevkit.devmem.fakenic import FakeNic
from netdevkit.devmem.nic import KernelNic
from netdevkit.devmem.setup import apply, parse_queues, plan, teardown, tx_requirements, undo
from netdevkit.errors import KernelError, RequestError, UnsupportedError
from netdevkit.ethtool.client import Ethtool
from netdevkit.ethtool.family import TcpDataSplit
from netdevkit.ethtool.ioctl import Flow, encode_insert, parse_flow
from netdevkit.testbed import Testbed

FLOW = parse_flow("tcp dst-port 5201 dst-ip 10.0.0.2")


@pytest.fixture
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> jr.Journal:
    monkeypatch.setenv(jr.STATE_DIR_ENV, str(tmp_path))
    return jr.Journal()


def _state(nic: FakeNic) -> tuple[object, ...]:
    return (
        nic.queues,
        nic.tcp_data_split,
        nic.hds_thresh,
        nic.ntuple_on,
        list(nic.indir),
        dict(nic.rules),
    )


@pytest.mark.parametrize(
    ("text", "queues"),
    [("14-15", (14, 15)), ("3,5,7-8", (3, 5, 7, 8)), ("2", (2,)), ("4,4,3", (3, 4))],
)
def test_parse_queues(text: str, queues: tuple[int, ...]) -> None:
    assert parse_queues(text) == queues


@pytest.mark.parametrize("text", ["", "a", "3-", "5-3", "1,,2", "-1"])
def test_parse_queues_refuses(text: str) -> None:
    with pytest.raises(RequestError):
        parse_queues(text)


def test_parse_flow() -> None:
    assert parse_flow("tcp dst-port 5201") == Flow(5201)
    f = parse_flow("tcp dst-port 80 src-ip 2001:db8::1")
    assert f.ipv6 and f.src_ip == "2001:db8::1"
    for bad in ["udp dst-port 1", "tcp", "tcp dst-port", "tcp dst-port 0", "tcp src-port 5",
                "tcp dst-port 5 dst-ip nope", "tcp dst-port 5 color red",
                "tcp dst-port 5 dst-ip 10.0.0.1 src-ip ::1"]:  # fmt: skip
        with pytest.raises(RequestError):
            parse_flow(bad)


def test_ntuple_insert_struct_bytes() -> None:
    raw = encode_insert(Flow(5201, dst_ip="10.0.0.2"), 14)
    assert len(raw) == 192
    assert raw[0:4] == (0x32).to_bytes(4, "little")  # ETHTOOL_SRXCLSRLINS
    assert raw[16:20] == (1).to_bytes(4, "little")  # fs.flow_type TCP_V4_FLOW
    # h_u.tcp_ip4_spec: ip4src, ip4dst, psrc, pdst (network order)
    assert raw[20:32] == bytes(4) + bytes([10, 0, 0, 2]) + b"\x00\x00" + (5201).to_bytes(2, "big")
    # m_u: only dst ip and dst port compared
    assert raw[92:104] == bytes(4) + b"\xff" * 4 + b"\x00\x00\xff\xff"
    assert raw[168:176] == (14).to_bytes(8, "little")  # ring_cookie
    assert raw[176:180] == b"\xff" * 4  # location RX_CLS_LOC_ANY


def test_plan_on_a_capable_nic_changes_nothing() -> None:
    nic = FakeNic()
    before = _state(nic)
    p = plan(nic, "eth9", [14, 15], FLOW)
    assert p.ok and [r.name for r in p.requirements] == [
        "driver", "queue API", "header split", "ntuple", "RSS", "queues"
    ]  # fmt: skip
    assert [s.record.kind for s in p.steps] == list(records.KINDS[1:])  # no channels asked
    assert "RSS indirection table over queues 0-13 only" in p.steps[2].description
    assert _state(nic) == before
    assert not {"rings_set", "features_set", "rss_set", "ntuple_insert"} & set(nic.calls)


def test_apply_journals_then_teardown_puts_everything_back(journal: jr.Journal) -> None:
    nic = FakeNic()
    before = _state(nic)
    seen: list[str] = []
    written = apply(
        plan(nic, "eth9", [14, 15], FLOW), nic, journal, lambda s: seen.append(s.description)
    )
    assert len(seen) == 4 and len(written) == 4
    assert nic.tcp_data_split is TcpDataSplit.ENABLED and nic.hds_thresh == 0 and nic.ntuple_on
    assert 14 not in nic.indir and 15 not in nic.indir and set(nic.indir) == set(range(14))
    assert list(nic.rules.values()) == [(FLOW, 14)]
    by_kind = {r.kind: r for r in journal.records()}
    assert by_kind["ethtool-rings"].before == {"tcp-data-split": 1, "hds-thresh": 256}
    assert by_kind["ethtool-features"].before == {"rx-ntuple-filter": False}
    assert by_kind["ethtool-rss"].before["indir"] == before[4]
    assert by_kind["ethtool-ntuple"].info["location"] == 0
    undone = teardown(nic, "eth9", journal)
    assert all(u.ok for u in undone) and len(undone) == 4
    assert _state(nic) == before
    assert journal.records() == []


def test_netdevkit_restore_undoes_a_setup(
    journal: jr.Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    nic = FakeNic()
    before = _state(nic)
    apply(plan(nic, "eth9", [3], FLOW), nic, journal)
    monkeypatch.setattr(records, "nic_for", lambda netns: nic)
    outcomes = jr.restore_all(journal)
    assert {o.status for o in outcomes} == {"restored"} and len(outcomes) == 4
    assert _state(nic) == before and journal.records() == []


@pytest.mark.parametrize("fail_on", ["features_set", "rss_set", "ntuple_insert"])
def test_a_failing_step_undoes_the_steps_before_it(journal: jr.Journal, fail_on: str) -> None:
    nic = FakeNic(fail_on=fail_on)
    before = _state(nic)
    with pytest.raises(KernelError, match="injected failure"):
        apply(plan(nic, "eth9", [14, 15], FLOW), nic, journal)
    assert _state(nic) == before
    assert journal.records() == []


def test_ctrl_c_during_setup_undoes_it(journal: jr.Journal) -> None:
    nic = FakeNic()
    before = _state(nic)
    p = plan(nic, "eth9", [14, 15], FLOW)

    def interrupt(step: object) -> None:
        if "RSS" in str(getattr(step, "description", "")):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        apply(p, nic, journal, interrupt)
    assert _state(nic) == before and journal.records() == []


def test_killed_between_journal_and_change_restores_as_a_no_op(
    journal: jr.Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    nic = FakeNic()
    before = _state(nic)
    p = plan(nic, "eth9", [14, 15], FLOW)
    # a process killed right after journaling its intents, before any kernel call
    journal.add([s.record for s in p.steps])
    monkeypatch.setattr(records, "nic_for", lambda netns: nic)
    outcomes = jr.restore_all(journal)
    assert len(outcomes) == 4 and all(o.status == "restored" for o in outcomes)
    assert any("already as before" in o.message for o in outcomes)
    assert all("already as before" in o.message for o in outcomes)
    assert _state(nic) == before and journal.records() == []


def test_killed_after_the_rule_insert_finds_the_rule_by_its_flow(
    journal: jr.Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    nic = FakeNic()
    p = plan(nic, "eth9", [14, 15], FLOW)
    ntuple = p.steps[-1]
    journal.add([ntuple.record])  # intent journaled ...
    nic.ntuple_on = True
    nic.ntuple_insert("eth9", parse_flow("tcp dst-port 7"), 3)  # someone else's rule
    ntuple.run(nic)  # ... the rule inserted, then SIGKILL before its location is journaled
    assert len(nic.rules) == 2
    monkeypatch.setattr(records, "nic_for", lambda netns: nic)
    outcomes = jr.restore_all(journal, kinds=["ethtool-ntuple"])
    assert [o.status for o in outcomes] == ["restored"] and "undone" in outcomes[0].message
    assert list(nic.rules.values()) == [(parse_flow("tcp dst-port 7"), 3)]


def test_an_incapable_device_is_refused_before_anything_changes(journal: jr.Journal) -> None:
    nic = FakeNic(capable=False, driver_name="veth")
    before = _state(nic)
    p = plan(nic, "eth9", [1], FLOW)
    assert not p.ok and p.steps == ()
    missing = {r.name for r in p.requirements if not r.ok}
    assert missing == {"driver", "queue API", "header split", "ntuple", "RSS"}
    with pytest.raises(UnsupportedError) as exc:
        apply(p, nic, journal)
    msg = str(exc.value)
    for word in ("nothing was changed", "driver:", "queue API:", "header split:", "ntuple:"):
        assert word in msg
    assert _state(nic) == before and journal.records() == []


def test_queues_out_of_range_are_a_missing_requirement() -> None:
    nic = FakeNic(queues=8)
    p = plan(nic, "eth9", [7, 8], FLOW)
    assert [r.detail for r in p.requirements if r.name == "queues"] == [
        "queues [8] out of range 0..7"
    ]
    assert not plan(nic, "eth9", list(range(8)), FLOW).ok


# -- the real kernel: veth refuses, and nothing changes ------------------------------


def _ethtool_state(tb: Testbed) -> tuple[object, ...]:
    with Ethtool.open(tb.server_ns) as et:
        feats = et.features_get(tb.server_if)
        chans = et.channels_get(tb.server_if)
    return (feats.active, feats.wanted, chans)


@pytest.mark.kernel
def test_setup_refuses_veth_and_changes_nothing(testbed4: Testbed, journal: jr.Journal) -> None:
    before = _ethtool_state(testbed4)
    with KernelNic(testbed4.server_ns) as nic:
        p = plan(nic, testbed4.server_if, [2, 3], FLOW)
        lines = {r.name: r for r in p.requirements}
        assert lines["driver"].ok is False and "veth cannot carry devmem" in lines["driver"].detail
        assert lines["queue API"].ok is False
        assert lines["header split"].ok is False and lines["ntuple"].ok is False
        assert lines["RSS"].ok is False and lines["queues"].ok is True
        with pytest.raises(UnsupportedError, match="nothing was changed"):
            apply(p, nic, journal)
    assert _ethtool_state(testbed4) == before
    assert journal.records() == []


def test_a_second_setup_keeps_the_first_baseline_and_adds_no_second_rule(
    journal: jr.Journal,
) -> None:
    nic = FakeNic()
    before = _state(nic)
    first = apply(plan(nic, "eth9", [14, 15], FLOW), nic, journal)
    second = apply(plan(nic, "eth9", [14, 15], FLOW), nic, journal)
    assert len(first) == 4 and second == []  # already set up: nothing new journaled
    assert len(nic.rules) == 1
    assert all(u.ok for u in teardown(nic, "eth9", journal))
    assert _state(nic) == before


def test_undo_of_one_run_leaves_an_earlier_setup_alone(journal: jr.Journal) -> None:
    nic = FakeNic()
    apply(plan(nic, "eth9", [14, 15], FLOW), nic, journal)
    set_up = _state(nic)
    other = parse_flow("tcp dst-port 6000")
    written = apply(plan(nic, "eth9", [14, 15], other), nic, journal)
    assert [r.kind for r in written] == ["ethtool-ntuple"] and len(nic.rules) == 2
    assert all(u.ok for u in undo(nic, written, journal))
    assert _state(nic) == set_up and len(journal.records()) == 4


@pytest.mark.parametrize(
    ("driver", "bind_tx", "missing"),
    [
        ("fbnic", True, []),
        ("veth", True, ["driver"]),
        ("fbnic", False, ["kernel"]),
        ("veth", False, ["driver", "kernel"]),
    ],
)
def test_tx_requirements_name_each_missing_one(
    driver: str, bind_tx: bool, missing: list[str]
) -> None:
    reqs = tx_requirements(FakeNic(driver_name=driver), "eth9", bind_tx)
    assert [r.name for r in reqs] == ["driver", "kernel"]
    assert [r.name for r in reqs if not r.ok] == missing
    if "kernel" in missing:
        assert "Linux 6.16" in reqs[1].detail


def test_fake_refuses_hds_thresh_above_its_max_like_the_kernel() -> None:
    # pinned against the kernel by tests/test_netdevsim_devmem.py (netdevsim, 7.3):
    # EINVAL "requested ring size exceeds maximum" at rings.hds-thresh, nothing changed
    nic = FakeNic()
    limit = nic.rings_get("eth9").hds_thresh_max
    assert limit is not None
    with pytest.raises(KernelError) as exc:
        nic.rings_set("eth9", tcp_data_split=None, hds_thresh=limit + 1)
    assert (exc.value.errno, exc.value.extack, exc.value.attr_path) == (
        errno.EINVAL,
        "requested ring size exceeds maximum",
        "rings.hds-thresh",
    )
    assert nic.rings_get("eth9").hds_thresh == 256
    nic.rings_set("eth9", tcp_data_split=None, hds_thresh=limit)
    assert nic.rings_get("eth9").hds_thresh == limit


# -- --channels and --best-effort ----------------------------------------------------


def netdevsim_like(**kw: object) -> FakeNic:
    """What netdevsim (7.3) offers: header split and channels, neither ntuple nor RSS."""
    return FakeNic(driver_name="netdevsim", ntuple=False, rss=False, queues=4, **kw)  # type: ignore[arg-type]


def test_best_effort_takes_the_steps_the_device_has_and_names_the_rest(
    journal: jr.Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    nic = netdevsim_like()
    before = _state(nic)
    assert not plan(nic, "eth9", [3], FLOW).ok  # without it: refused, as before
    p = plan(nic, "eth9", [3], FLOW, channels=2, best_effort=True)
    assert not p.ok  # queue 3 does not exist once there are 2 channels
    assert "queues: queues [3] out of range 0..1" in p.refusal()
    p = plan(nic, "eth9", [1], FLOW, channels=2, best_effort=True)
    assert p.ok
    assert [r.name for r in p.skipped] == ["ntuple", "RSS"]
    assert [s.record.kind for s in p.steps] == ["ethtool-channels", "ethtool-rings"]
    assert p.steps[0].description == "channels: combined 2 (was 4)"
    written = apply(p, nic, journal)
    assert [r.kind for r in written] == ["ethtool-channels", "ethtool-rings"]
    assert (nic.queues, nic.tcp_data_split, nic.hds_thresh) == (2, TcpDataSplit.ENABLED, 0)
    assert journal.records("ethtool-channels")[0].before == {"combined-count": 4, "rx-count": 0}
    undone = teardown(nic, "eth9", journal)
    assert [u.record.kind for u in undone] == ["ethtool-rings", "ethtool-channels"]
    assert all(u.ok for u in undone) and _state(nic) == before
    apply(plan(nic, "eth9", [1], FLOW, channels=2, best_effort=True), nic, journal)
    monkeypatch.setattr(records, "nic_for", lambda netns: nic)
    assert {o.status for o in jr.restore_all(journal)} == {"restored"}
    assert _state(nic) == before and journal.records() == []


def test_best_effort_refuses_when_no_step_is_possible(journal: jr.Journal) -> None:
    nic = FakeNic(capable=False, driver_name="veth")
    p = plan(nic, "eth9", [1], FLOW, best_effort=True)
    assert not p.ok and p.steps == ()
    assert [r.name for r in p.skipped] == ["header split", "ntuple", "RSS"]
    msg = p.refusal()
    assert msg.startswith("devmem setup refused for eth9, nothing was changed: no step")
    for word in ("header split:", "ntuple:", "RSS:"):
        assert word in msg
    with pytest.raises(UnsupportedError):
        apply(p, nic, journal)
    assert journal.records() == []


def test_best_effort_on_a_capable_device_is_the_whole_plan() -> None:
    nic = FakeNic()
    full, best = (
        plan(nic, "eth9", [14, 15], FLOW),
        plan(nic, "eth9", [14, 15], FLOW, best_effort=True),
    )
    assert best.skipped == () and best.ok
    assert [s.description for s in best.steps] == [s.description for s in full.steps]


def test_channels_grow_first_and_rss_is_read_again_after_it(journal: jr.Journal) -> None:
    """8 queues, devmem on 14-15: the channels step makes them; the driver regenerates
    an RSS table nobody set for 16 queues, so the RSS step (planned from that prediction)
    reads the table again when it runs and journals the regenerated one as before."""
    nic = FakeNic(queues=8, channels_max=16)
    before = _state(nic)
    assert not plan(nic, "eth9", [14, 15], FLOW).ok  # queues out of range without it
    p = plan(nic, "eth9", [14, 15], FLOW, channels=16)
    assert p.ok, p.refusal()
    reqs = {r.name: r.detail for r in p.requirements}
    assert reqs["channels"] == "combined 8 -> 16 (max 16)"
    assert reqs["queues"] == "2 of 16 RX queues for devmem"
    assert [s.record.kind for s in p.steps] == list(records.KINDS)
    apply(p, nic, journal)
    assert nic.queues == 16 and set(nic.indir) == set(range(14))
    assert list(nic.rules.values()) == [(FLOW, 14)]
    rss = journal.records("ethtool-rss")[0]
    assert rss.before["indir"] == [i % 16 for i in range(128)]  # as it was when it ran
    assert all(u.ok for u in teardown(nic, "eth9", journal))
    assert _state(nic) == before and journal.records() == []


def test_channels_over_the_maximum_are_a_missing_requirement() -> None:
    nic = FakeNic(queues=8, channels_max=8)
    p = plan(nic, "eth9", [3], FLOW, channels=9)
    reqs = {r.name: r for r in p.requirements}
    assert reqs["channels"].ok is False
    assert reqs["channels"].detail == "combined 9 exceeds the maximum 8"
    assert not p.ok and "channels: combined 9 exceeds the maximum 8" in p.refusal()
    best = plan(nic, "eth9", [3], FLOW, channels=9, best_effort=True)
    assert best.ok and [r.name for r in best.skipped] == ["channels"]
    assert "ethtool-channels" not in [s.record.kind for s in best.steps]
    with pytest.raises(RequestError):
        plan(nic, "eth9", [3], FLOW, channels=0)


def test_ctrl_c_after_the_channels_step_undoes_it(journal: jr.Journal) -> None:
    nic = netdevsim_like()
    before = _state(nic)
    p = plan(nic, "eth9", [1], FLOW, channels=2, best_effort=True)

    def interrupt(step: object) -> None:
        if "header split" in str(getattr(step, "description", "")):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        apply(p, nic, journal, interrupt)
    assert _state(nic) == before and journal.records() == []


def test_fake_channels_set_checks_like_the_kernel() -> None:
    # pinned against the kernel by tests/test_netdevsim_devmem.py (netdevsim, 7.3)
    nic = FakeNic(queues=4)
    with pytest.raises(KernelError) as exc:
        nic.channels_set("eth9", combined=5)
    assert (exc.value.errno, exc.value.extack, exc.value.attr_path) == (
        errno.EINVAL,
        "requested channel count exceeds maximum",
        "channels.combined-count",
    )
    with pytest.raises(KernelError, match="no RX or TX channel"):
        nic.channels_set("eth9", combined=0)
    nic.rss_set("eth9", [3, 2, 1, 0])
    with pytest.raises(KernelError) as exc:
        nic.channels_set("eth9", combined=3)
    assert (
        exc.value.extack
        == "requested channel counts are too low for existing indirection table (3)"
    )
    assert nic.queues == 4


def test_rss_undo_writes_a_default_table_back_as_the_default(journal: jr.Journal) -> None:
    """The kernel keeps a table written by the user across a channels change and refuses
    to shrink the channels below it (netif_is_rxfh_configured, 7.3's ethtool core): a
    default table is put back as the default (an empty table), a user's table as itself."""
    nic = FakeNic()
    apply(plan(nic, "eth9", [14, 15], FLOW), nic, journal)
    assert nic.rss_configured
    teardown(nic, "eth9", journal)
    assert nic.indir == [i % 16 for i in range(128)] and not nic.rss_configured
    nic.channels_set("eth9", combined=8)  # the driver regenerates it, as before setup
    assert set(nic.indir) == set(range(8))
    mine = [i % 4 for i in range(128)]
    nic.rss_set("eth9", mine)
    apply(plan(nic, "eth9", [3], FLOW), nic, journal)
    teardown(nic, "eth9", journal)
    assert nic.indir == mine and nic.rss_configured
