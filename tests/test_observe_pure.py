"""The pure parts of netdevkit.observe: counter deltas, rates, balance, parsers,
ethtool name plans and the exposition text, with no kernel."""

from __future__ import annotations

import array
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from netdevkit.errors import RequestError
from netdevkit.netdev.client import Napi, PagePool
from netdevkit.netdev.family import NapiThreaded
from netdevkit.observe.balance import balances, coefficient_of_variation
from netdevkit.observe.ethtool import group_queues, queue_plan
from netdevkit.observe.exporter import Families, render, snapshot_families
from netdevkit.observe.rates import compute, delta
from netdevkit.observe.sources import (
    Link,
    QueueCounters,
    Snapshot,
    SoftnetCpu,
    parse_netstat,
    parse_proc_stat_cpu,
    parse_softnet,
)

U32, U64 = 1 << 32, 1 << 64


# -- counter deltas ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prev", "cur", "expected"),
    [
        (0, 0, 0),
        (10, 25, 15),
        (U32 - 10, 5, 15),  # a 32-bit counter wrapped
        (U64 - 10, 5, 15),  # a 64-bit counter wrapped
        (1000, 3, None),  # a reset (device re-created), not a wrap
        (U32 + 1000, 3, None),  # a 64-bit counter far from its top went down: reset
        (100, 99, None),
    ],
)
def test_delta_table(prev: int, cur: int, expected: int | None) -> None:
    assert delta(prev, cur) == expected


@given(st.integers(0, U64 - 1), st.integers(0, (1 << 40) - 1))
def test_delta_recovers_increments_across_a_64_bit_wrap(prev: int, d: int) -> None:
    assert delta(prev, (prev + d) % U64) == d


@given(st.integers(0, U32 - 1), st.integers(0, (1 << 31) - 1))
def test_delta_recovers_increments_across_a_32_bit_wrap(prev: int, d: int) -> None:
    assert delta(prev, (prev + d) % U32) == d


# -- rates between snapshots ------------------------------------------------------------


def snap(
    t: float,
    links: dict[int, tuple[str, dict[str, int]]],
    queues: list[tuple[int, str, int, str, dict[str, int]]] = (),  # type: ignore[assignment]
    napis: list[Napi] = (),  # type: ignore[assignment]
    kthread: dict[int, float] | None = None,
    dev_qstats: dict[int, dict[str, int]] | None = None,
    busy: int | None = None,
    pools: tuple[PagePool, ...] = (),
    softnet: tuple[SoftnetCpu, ...] = (),
) -> Snapshot:
    return Snapshot(
        "ns",
        t,
        {i: Link(i, n, "veth", "UP", c) for i, (n, c) in links.items()},
        dev_qstats or {},
        tuple(QueueCounters(i, qt, q, src, c) for i, qt, q, src, c in queues),
        tuple(napis),
        kthread or {},
        pools,
        busy,
        softnet,
        {"net.core.busy_poll": 50},
    )


def link_counters(rx: int, tx: int = 0) -> dict[str, int]:
    return {"rx_packets": rx, "tx_packets": tx, "rx_bytes": rx * 100, "tx_bytes": tx * 100}


def test_link_rates_use_link_counters_without_qstats_and_qstats_with_them() -> None:
    a = snap(
        0.0,
        {2: ("veth0", link_counters(100)), 3: ("eth0", link_counters(0))},
        dev_qstats={3: {"rx_packets": 10, "rx_bytes": 1000, "rx_alloc_fail": 1}},
    )
    b = snap(
        2.0,
        {2: ("veth0", link_counters(300)), 3: ("eth0", link_counters(999))},
        dev_qstats={3: {"rx_packets": 30, "rx_bytes": 3000, "rx_alloc_fail": 5}},
    )
    rows = {r.ifname: r for r in compute(a, b).links}
    assert rows["veth0"].source == "link"
    assert rows["veth0"].rx_pps == 100.0 and rows["veth0"].rx_bps == 10000.0
    assert rows["eth0"].source == "qstats"
    assert rows["eth0"].rx_pps == 10.0 and rows["eth0"].alloc_fail_ps == 2.0


def test_vanished_new_and_reset_interfaces_give_no_rate() -> None:
    a = snap(0.0, {2: ("gone", link_counters(5)), 3: ("reset", link_counters(5000))})
    b = snap(1.0, {3: ("reset", link_counters(7)), 4: ("new", link_counters(1))})
    rows = {r.ifname: r for r in compute(a, b).links}
    assert "gone" not in rows and "new" not in rows
    assert rows["reset"].rx_pps is None  # counters went down: no rate this interval


def test_queue_rates_are_keyed_by_interface_queue_and_source() -> None:
    q0 = (2, "rx", 0, "ethtool", {"packets": 10, "bytes": 1000})
    q0b = (2, "rx", 0, "ethtool", {"packets": 60, "bytes": 6000, "drops": 4})
    a = snap(0.0, {2: ("v", link_counters(0))}, queues=[q0])
    b = snap(
        0.5, {2: ("v", link_counters(0))}, queues=[q0b, (2, "rx", 1, "ethtool", {"packets": 9})]
    )
    (row,) = compute(a, b).queues
    assert (row.queue_id, row.pps, row.bps, row.source) == (0, 100.0, 10000.0, "ethtool")
    assert row.drops_ps is None  # absent before: no rate


def test_queue_rates_match_queues_that_moved_or_vanished_by_key() -> None:
    links = {2: ("v", link_counters(0)), 3: ("w", link_counters(0))}
    a = snap(
        0.0,
        links,
        queues=[
            (2, "rx", 0, "ethtool", {"packets": 0}),
            (2, "rx", 1, "ethtool", {"packets": 0}),
            (3, "rx", 0, "qstats", {"packets": 0}),
        ],
    )
    b = snap(
        1.0,
        links,
        queues=[  # queue 2/rx/0 gone, the others in another order
            (3, "rx", 0, "qstats", {"packets": 30}),
            (2, "rx", 1, "ethtool", {"packets": 21}),
        ],
    )
    rows = {(r.ifindex, r.queue_id, r.source): r.pps for r in compute(a, b).queues}
    assert rows == {(3, 0, "qstats"): 30.0, (2, 1, "ethtool"): 21.0}


def test_renumbered_napis_keep_their_kthread_cpu_by_pid() -> None:
    before = Napi(id=100, ifindex=2, pid=555, threaded=NapiThreaded.ENABLED)
    after = Napi(id=205, ifindex=2, pid=555, threaded=NapiThreaded.ENABLED)  # new id, same kthread
    fresh = Napi(id=206, ifindex=2, pid=777, threaded=NapiThreaded.ENABLED)
    a = snap(0.0, {2: ("v", {})}, napis=[before], kthread={555: 1.0})
    b = snap(2.0, {2: ("v", {})}, napis=[after, fresh], kthread={555: 1.5, 777: 3.0})
    rows = {r.napi.id: r for r in compute(a, b).napis}
    assert rows[205].kthread_cpu == pytest.approx(0.25)
    assert rows[206].kthread_cpu is None  # no earlier reading of that kthread


def test_busy_poll_share_is_busy_polled_over_received_packets() -> None:
    a = snap(0.0, {2: ("v", link_counters(0))}, busy=1000)
    b = snap(1.0, {2: ("v", link_counters(400))}, busy=1100)
    r = compute(a, b)
    assert r.busy_poll_rx_pps == 100.0 and r.busy_poll_share == pytest.approx(0.25)


def test_softnet_rates_per_cpu() -> None:
    a = snap(0.0, {}, softnet=(SoftnetCpu(0, 100, 0, 5), SoftnetCpu(1, 10, 0, 0)))
    b = snap(2.0, {}, softnet=(SoftnetCpu(0, 300, 2, 9), SoftnetCpu(1, 10, 0, 0)))
    rows = {s.cpu: s for s in compute(a, b).softnet}
    assert (rows[0].processed_ps, rows[0].dropped_ps, rows[0].time_squeeze_ps) == (100.0, 1.0, 2.0)


# -- balance -------------------------------------------------------------------------------


def _balance_of(counts: list[int]) -> Any:
    links: dict[int, tuple[str, dict[str, int]]] = {2: ("v", {})}
    a = snap(
        0.0, links, queues=[(2, "rx", i, "ethtool", {"packets": 0}) for i in range(len(counts))]
    )
    b = snap(
        1.0, links, queues=[(2, "rx", i, "ethtool", {"packets": c}) for i, c in enumerate(counts)]
    )
    (bal,) = balances(a, b)
    return bal


def test_balance_even_spread() -> None:
    bal = _balance_of([1000, 1000, 1000, 1000])
    assert bal.cv == 0.0 and bal.busiest_share == 0.25 and bal.total_pps == 4000


def test_balance_all_on_one_queue() -> None:
    bal = _balance_of([0, 0, 5000, 0])
    assert bal.cv == pytest.approx(math.sqrt(3))
    assert bal.busiest.queue_id == 2 and bal.busiest_share == 1.0
    assert bal.idlest.pps == 0


def test_balance_without_traffic_judges_nothing() -> None:
    bal = _balance_of([0, 0])
    assert bal.cv is None and bal.busiest is None


def test_coefficient_of_variation_table() -> None:
    assert coefficient_of_variation([]) is None
    assert coefficient_of_variation([0.0, 0.0]) is None
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(0.5)


# -- parsers --------------------------------------------------------------------------------

SOFTNET = (
    "0000a1b2 00000001 00000003 00000000 00000000 00000000 00000000 00000000 "
    "00000000 00000000 00000000 00000000 00000000\n"
    "00000010 00000000 00000000 00000000 00000000 00000000 00000000 00000000 "
    "00000000 00000000 00000000 00000000 00000002\n"
)


def test_parse_softnet_reads_hex_and_the_cpu_column() -> None:
    assert parse_softnet(SOFTNET) == (SoftnetCpu(0, 0xA1B2, 1, 3), SoftnetCpu(2, 16, 0, 0))


def test_parse_netstat_finds_the_busy_poll_counter() -> None:
    text = (
        "TcpExt: SyncookiesSent BusyPollRxPackets TCPAutoCorking\n"
        "TcpExt: 0 4242 7\n"
        "IpExt: InNoRoutes\nIpExt: 0\n"
    )
    assert parse_netstat(text, "TcpExt", "BusyPollRxPackets") == 4242
    assert parse_netstat(text, "TcpExt", "Missing") is None
    assert parse_netstat("", "TcpExt", "BusyPollRxPackets") is None


def test_parse_proc_stat_cpu_skips_a_comm_with_spaces_and_parens() -> None:
    import os

    tck = os.sysconf("SC_CLK_TCK")
    text = f"42 (napi/a b) c)) S 2 0 0 0 -1 69238880 0 0 0 0 {3 * tck} {tck} 0 0 20 0 1 0 99"
    assert parse_proc_stat_cpu(text) == pytest.approx(4.0)


def test_ethtool_plan_maps_veth_names_and_groups_values() -> None:
    names = [
        "peer_ifindex",
        "rx_queue_0_xdp_packets",
        "rx_queue_0_xdp_bytes",
        "rx_queue_0_drops",
        "rx_queue_1_xdp_packets",
        "tx_queue_0_xdp_xmit",
    ]
    plan = queue_plan(names, "veth")
    rows = {
        (r.queue_type, r.queue_id): dict(r.counters)
        for r in group_queues(plan, array.array("Q", [9, 5, 500, 1, 7, 3]))
    }
    assert rows == {
        ("rx", 0): {"packets": 5, "bytes": 500, "drops": 1},
        ("rx", 1): {"packets": 7},
        ("tx", 0): {"xdp_xmit": 3},
    }
    assert (
        dict(group_queues(queue_plan(names, None), array.array("Q", [0] * 6))[0].counters)[
            "xdp_packets"
        ]
        == 0
    )  # other drivers keep their own names


# -- exposition text -------------------------------------------------------------------------


def test_render_parses_with_prometheus_client_and_escapes_labels() -> None:
    s = Snapshot(
        'we"ird\\ns',
        0.0,
        {2: Link(2, "v0", "veth", "UP", link_counters(7, 3))},
        {},
        (QueueCounters(4, "rx", 1, "qstats", {"packets": 11, "alloc_fail": 2}),),
        (
            Napi(
                id=9,
                ifindex=2,
                defer_hard_irqs=100,
                gro_flush_timeout=200_000,
                irq_suspend_timeout=20_000_000,
                threaded=NapiThreaded.DISABLED,
            ),
        ),
        {},
        (PagePool(id=5, ifindex=4, napi_id=9, inflight=3, inflight_mem=12288, dmabuf=7),),
        1234,
        (),
        {},
    )
    fs = Families()
    snapshot_families(fs, s)
    fams = {f.name: f for f in text_string_to_metric_families(render(fs).decode())}
    (gro,) = fams["netdevkit_napi_gro_flush_timeout_seconds"].samples
    assert gro.value == pytest.approx(200e-6)
    assert gro.labels == {"netns": 'we"ird\\ns', "ifname": "v0", "ifindex": "2", "napi_id": "9"}
    (pkts,) = fams["netdevkit_queue_packets"].samples
    assert fams["netdevkit_queue_packets"].type == "counter"
    assert pkts.name == "netdevkit_queue_packets_total" and pkts.value == 11
    assert pkts.labels["queue"] == "1" and pkts.labels["type"] == "rx"
    assert fams["netdevkit_link_receive_packets"].samples[0].value == 7
    assert fams["netdevkit_devmem_binding_page_pools"].samples[0].labels["dmabuf_id"] == "7"
    assert fams["netdevkit_busy_poll_rx_packets"].samples[0].value == 1234


def test_cli_option_parsers_reject_bad_input() -> None:
    from netdevkit.cli.exporter import parse_listen
    from netdevkit.cli.top import parse_interval

    assert parse_listen("127.0.0.1:9417") == ("127.0.0.1", 9417)
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    assert parse_interval("500ms") == 0.5 and parse_interval("2") == 2.0
    for bad in ("9417", "host:0", "host:http"):
        with pytest.raises(RequestError):
            parse_listen(bad)
    for bad in ("1ms", "soon", "-1s"):
        with pytest.raises(RequestError):
            parse_interval(bad)


def test_rtnetlink_link_payload_decodes_name_kind_state_and_stats() -> None:
    import struct

    from netdevkit.netlink.codec import NLA_F_NESTED, encode_attr
    from netdevkit.observe.rtnl import IFINFOMSG, parse_link

    stats = struct.pack("=8Q", 10, 20, 1000, 2000, 1, 2, 3, 4) + bytes(8 * 16)
    payload = (
        IFINFOMSG.pack(0, 1, 7, 0x1043, 0)
        + encode_attr(3, b"veth7\0")
        + encode_attr(16, bytes([6]))
        + encode_attr(18 | NLA_F_NESTED, encode_attr(1, b"veth\0"))
        + encode_attr(23, stats)
    )
    row = parse_link(payload)
    assert (row.ifindex, row.ifname, row.kind, row.operstate) == (7, "veth7", "veth", "UP")
    assert row.counters["rx_packets"] == 10 and row.counters["tx_dropped"] == 4
    bare = parse_link(IFINFOMSG.pack(0, 1, 9, 0, 0) + encode_attr(3, b"lo\0"))
    assert (bare.kind, bare.operstate, bare.counters) == (None, "UNKNOWN", {})


def test_journal_epoll_records_give_epoll_contexts_and_metrics(tmp_path: Any) -> None:
    import os

    from netdevkit.attach.proc import start_time
    from netdevkit.journal import Journal, Record
    from netdevkit.observe.exporter import machine_families
    from netdevkit.observe.sources import read_attached_epolls

    me = os.getpid()

    def record(pid: int, started: int | None) -> Record:
        return Record(
            "epoll",
            f"{pid}/{started}/{pid}/5",
            {"busy_poll_usecs": 0, "busy_poll_budget": 0, "prefer_busy_poll": False},
            {
                "pid": pid,
                "start_time": started,
                "tid": pid,
                "fd": 5,
                "new": {"busy_poll_usecs": 64, "busy_poll_budget": 16, "prefer_busy_poll": True},
            },
        )

    with Journal(str(tmp_path)).intent([record(me, start_time(me)), record(1, 5)]):
        pass
    got = {e.pid: e for e in read_attached_epolls(str(tmp_path))}
    assert set(got) == {me, 1}
    assert got[me].alive and not got[1].alive  # pid 1 never had that start time
    assert (got[me].fd, got[me].busy_poll_usecs, got[me].busy_poll_budget) == (5, 64, 16)
    fs = Families()
    machine_families(fs, snap(0.0, {}), list(got.values()))
    fams = {f.name: f for f in text_string_to_metric_families(render(fs).decode())}
    alive = {s.labels["pid"]: s.value for s in fams["netdevkit_epoll_attached"].samples}
    assert alive == {str(me): 1, "1": 0}
    (usecs,) = [
        s for s in fams["netdevkit_epoll_busy_poll_seconds"].samples if s.labels["pid"] == str(me)
    ]
    assert usecs.value == pytest.approx(64e-6)
    assert read_attached_epolls(str(tmp_path / "nowhere")) == []
    (tmp_path / "journal.json").write_text("{")  # unreadable: no contexts, no exception
    assert read_attached_epolls(str(tmp_path)) == []


def test_monitor_lines_name_the_event_and_the_object() -> None:
    from netdevkit.cli.monitor import event_json, event_line
    from netdevkit.netdev.client import Dev
    from netdevkit.netdev.family import XdpAct
    from netdevkit.observe.monitor import Event

    add = Event("notification", "dev-add-ntf", Dev(7, XdpAct.BASIC | XdpAct.REDIRECT), 0.0)
    assert event_line(add).endswith("dev-add-ntf ifindex=7 xdp_features=basic,redirect")
    assert event_json(add)["object"]["xdp_features"] == ["basic", "redirect"]
    assert "OVERRUN" in event_line(Event("overrun", "enobufs", None, 0.0))
    assert event_json(Event("resynced", "resynced", None, 1.5)) == {
        "time": 1.5,
        "event": "resynced",
        "name": "resynced",
        "object": None,
    }


def test_http_server_answers_500_on_a_failing_scrape_and_keeps_serving() -> None:
    import http.client
    import threading

    from netdevkit.observe.exporter import Exporter, make_server

    class Broken(Exporter):
        def render(self) -> bytes:
            raise RuntimeError("boom")

    server = make_server(Broken([None]), "127.0.0.1", 0)
    t = threading.Thread(target=server.serve_forever)
    t.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 500 and b"boom" in resp.read()
        conn.request("GET", "/")  # same kept-alive connection
        resp = conn.getresponse()
        assert resp.status == 200 and b"/metrics" in resp.read()
        conn.request("GET", "/nothing")
        assert conn.getresponse().status == 404
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
        t.join()
