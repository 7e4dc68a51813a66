"""End-to-end runs of ``netdevkit {dev,queue,napi,qstats,page-pool} show``.

Each command runs twice over: as a separate process (``python -m netdevkit``,
what a user types) and in-process through :func:`netdevkit.cli.main.main`
with its output captured. The kernel tests look inside a four-queue veth
testbed (``testbed4``: four NAPIs per side) and read the host's own
interfaces only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdevkit.cli import show, table
from netdevkit.cli.main import main
from netdevkit.netdev.client import Napi, Netdev, Queue
from netdevkit.netdev.family import NapiThreaded, QueueType
from netdevkit.testbed import Testbed

NAPI_KEYS = {
    "ifindex",
    "ifname",
    "id",
    "queues",
    "irq",
    "pid",
    "defer_hard_irqs",
    "gro_flush_timeout",
    "irq_suspend_timeout",
    "threaded",
}
QUEUE_KEYS = {"ifindex", "ifname", "type", "id", "napi_id", "dmabuf", "io_uring", "xsk", "lease"}
DEV_KEYS = {
    "ifindex",
    "ifname",
    "xdp_features",
    "xdp_zc_max_segs",
    "xdp_rx_metadata_features",
    "xsk_features",
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m netdevkit ARGS`` as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "netdevkit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_json(*args: str) -> Any:
    r = cli(*args, "-j")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return json.loads(r.stdout)


def main_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    rc = main([*args, "-j"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def assert_one_line_error(r: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 1, nothing on stdout, exactly one line on stderr naming *words*."""
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("netdevkit: error: ")
    for w in words:
        assert w in lines[0]


# -- NAPI ------------------------------------------------------------------------


@pytest.mark.kernel
def test_napi_show_json_lists_the_four_napis_joined_with_their_queues(testbed4: Testbed) -> None:
    ns, ifindex = testbed4.server_ns, testbed4.server_ifindex
    rows = cli_json("napi", "show", "--netns", ns)
    assert all(set(r) == NAPI_KEYS for r in rows)
    mine = [r for r in rows if r["ifindex"] == ifindex]
    assert len(mine) == 4 == len(rows)  # lo has no NAPI
    assert {r["ifname"] for r in mine} == {testbed4.server_if}
    assert len({r["id"] for r in mine}) == 4
    # the server socket of the testbed's probe saw one of these NAPI ids
    assert testbed4.probe_napi_ids[0] in {r["id"] for r in mine}
    for r in mine:
        assert r["threaded"] == "disabled"
        assert r["pid"] is None
        assert isinstance(r["gro_flush_timeout"], int)
        assert isinstance(r["irq_suspend_timeout"], int)
        assert isinstance(r["defer_hard_irqs"], int)
    # The join: each NAPI lists exactly the queues whose napi_id is its id.
    # (veth on 6.18 links no queue to its NAPIs, so there the lists are empty;
    # the host test below checks a driver that does link them.)
    queues = cli_json("queue", "show", "--netns", ns)
    for r in mine:
        linked = sorted((q["type"], q["id"]) for q in queues if q["napi_id"] == r["id"])
        assert sorted((q["type"], q["id"]) for q in r["queues"]) == linked


@pytest.mark.kernel
def test_napi_show_table_names_interfaces_and_settings(testbed4: Testbed) -> None:
    with Netdev.open(testbed4.server_ns) as nd:
        ids = sorted(n.id for n in nd.napi_dump())
    r = cli("napi", "show", "--netns", testbed4.server_ns)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for col in ("IFNAME", "NAPI", "QUEUES", "IRQ", "PID", "DEFER", "GRO-FLUSH", "IRQ-SUSPEND"):
        assert col in lines[0]
    body = [ln.split() for ln in lines[2:]]
    assert [row[0] for row in body] == [testbed4.server_if] * 4
    assert [int(row[1]) for row in body] == ids
    assert all(row[-1] == "disabled" for row in body)


@pytest.mark.kernel
def test_napi_show_in_process_with_settings(
    testbed4: Testbed, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = testbed4.server_ns
    with Netdev.open(ns) as nd:
        napi = nd.napi_dump()[0]
        nd.napi_set(napi.id, defer_hard_irqs=100, gro_flush_timeout=200_000)
        nd.napi_set(napi.id, irq_suspend_timeout=20_000_000)
    rows = main_json(capsys, "napi", "show", "--netns", ns, "--ifname", testbed4.server_if)
    assert len(rows) == 4
    (row,) = [r for r in rows if r["id"] == napi.id]
    assert row["defer_hard_irqs"] == 100
    assert row["gro_flush_timeout"] == 200_000
    assert row["irq_suspend_timeout"] == 20_000_000
    assert main(["napi", "show", "--netns", ns]) == 0
    table = capsys.readouterr().out
    (line,) = [ln for ln in table.splitlines() if f" {napi.id} " in ln]
    assert "100" in line.split()
    assert "200us" in line.split()
    assert "20ms" in line.split()


@pytest.mark.kernel
def test_napi_show_threaded_gives_pid(
    testbed4: Testbed, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = testbed4.server_ns
    with Netdev.open(ns) as nd:
        napi = nd.napi_dump()[0]
        nd.napi_set(napi.id, threaded=True)
        try:
            rows = main_json(capsys, "napi", "show", "--netns", ns)
        finally:
            nd.napi_set(napi.id, threaded=False)
    (row,) = [r for r in rows if r["id"] == napi.id]
    assert row["threaded"] == "enabled"
    assert isinstance(row["pid"], int) and row["pid"] > 0


# -- filters and errors ----------------------------------------------------------


@pytest.mark.kernel
def test_ifname_and_ifindex_filters_agree(testbed4: Testbed) -> None:
    ns, name, idx = testbed4.server_ns, testbed4.server_if, testbed4.server_ifindex
    by_name = cli_json("queue", "show", "--netns", ns, "--ifname", name)
    by_index = cli_json("queue", "show", "--netns", ns, "--ifindex", str(idx))
    assert by_name == by_index
    assert all(set(q) == QUEUE_KEYS for q in by_name)
    assert sorted((q["type"], q["id"]) for q in by_name) == sorted(
        (t, i) for t in ("rx", "tx") for i in range(4)
    )
    assert {q["ifname"] for q in by_name} == {name}
    lo = cli_json("queue", "show", "--netns", ns, "--ifname", "lo")
    assert {(q["ifindex"], q["ifname"]) for q in lo} == {(1, "lo")}
    assert cli_json("napi", "show", "--netns", ns, "--ifname", "lo") == []
    assert len(cli_json("napi", "show", "--netns", ns, "--ifindex", str(idx))) == 4
    devs = cli_json("dev", "show", "--netns", ns, "--ifname", name)
    assert [(d["ifindex"], d["ifname"]) for d in devs] == [(idx, name)]


def test_ifname_and_ifindex_are_mutually_exclusive() -> None:
    r = cli("napi", "show", "--ifname", "lo", "--ifindex", "1")
    assert r.returncode == 2
    assert "not allowed with" in r.stderr
    r = cli("napi", "show", "--ifindex", "0")
    assert r.returncode == 2
    assert "positive" in r.stderr


@pytest.mark.kernel
@pytest.mark.parametrize("word", ["dev", "queue", "napi", "qstats", "page-pool"])
def test_unknown_interface_is_one_line_exit_1(testbed4: Testbed, word: str) -> None:
    ns = testbed4.server_ns
    r = cli(word, "show", "--netns", ns, "--ifname", "nosuchdev0")
    assert_one_line_error(r, "'nosuchdev0'", ns)
    r = cli(word, "show", "--netns", ns, "--ifindex", "4242", "-j")
    assert_one_line_error(r, "ifindex 4242", ns)


def test_missing_namespace_is_one_line_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"ndk-missing-{os.getpid()}"
    r = cli("napi", "show", "--netns", missing, "-j")
    assert_one_line_error(r, repr(missing), "does not exist")
    assert main(["dev", "show", "--netns", missing]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.count("\n") == 1 and missing in out.err


# -- the other objects -----------------------------------------------------------


@pytest.mark.kernel
def test_qstats_on_veth_is_empty(testbed4: Testbed, capsys: pytest.CaptureFixture[str]) -> None:
    ns = testbed4.server_ns
    assert cli_json("qstats", "show", "--netns", ns) == []
    r = cli("qstats", "show", "--netns", ns, "--per-queue", "-j")
    assert r.returncode == 0 and r.stdout == "[]\n"
    assert main_json(capsys, "qstats", "show", "--per-queue", "--netns", ns) == []
    r = cli("qstats", "show", "--netns", ns)
    assert r.returncode == 0
    assert r.stdout.startswith("no queue statistics in network namespace")
    # asking for the veth by name: the kernel says its driver keeps none
    r = cli("qstats", "show", "--netns", ns, "--ifname", testbed4.server_if, "-j")
    assert_one_line_error(r, "Operation not supported", "does not report queue statistics")


@pytest.mark.kernel
def test_dev_show(testbed4: Testbed, capsys: pytest.CaptureFixture[str]) -> None:
    ns, idx = testbed4.server_ns, testbed4.server_ifindex
    rows = main_json(capsys, "dev", "show", "--netns", ns)
    assert all(set(d) == DEV_KEYS for d in rows)
    assert [(d["ifindex"], d["ifname"]) for d in rows] == [(1, "lo"), (idx, testbed4.server_if)]
    veth = rows[1]
    assert "basic" in veth["xdp_features"]  # veth runs XDP programs natively
    assert veth["xsk_features"] == []
    r = cli("dev", "show", "--netns", ns)
    assert r.returncode == 0
    names = [ln.split()[1] for ln in r.stdout.splitlines()[2:]]
    assert names == ["lo", testbed4.server_if]


@pytest.mark.kernel
def test_queue_show_table(testbed4: Testbed) -> None:
    r = cli("queue", "show", "--netns", testbed4.client_ns, "--ifname", testbed4.client_if)
    assert r.returncode == 0, r.stderr
    body = [ln.split() for ln in r.stdout.splitlines()[2:]]
    assert [(row[0], row[1], row[2]) for row in body] == [
        (testbed4.client_if, t, str(i)) for t in ("rx", "tx") for i in range(4)
    ]


@pytest.mark.kernel
def test_page_pool_show(testbed4: Testbed, capsys: pytest.CaptureFixture[str]) -> None:
    ns = testbed4.server_ns
    with Netdev.open(ns) as nd:
        expected = sorted(p.id for p in nd.page_pool_dump())
    rows = cli_json("page-pool", "show", "--netns", ns)
    assert sorted(p["id"] for p in rows) == expected
    assert main(["page-pool", "show", "--netns", ns]) == 0
    out = capsys.readouterr().out
    if not expected:
        assert out.startswith("no page pools in network namespace")


@pytest.mark.kernel
def test_page_pool_stats_needs_config_option(testbed4: Testbed) -> None:
    with Netdev.open() as nd:
        supported = nd.supports("page-pool-stats-get")
    r = cli("page-pool", "stats", "--netns", testbed4.server_ns, "-j")
    if supported:  # a kernel built with CONFIG_PAGE_POOL_STATS=y
        assert r.returncode == 0 and isinstance(json.loads(r.stdout), list)
    else:
        assert_one_line_error(r, "CONFIG_PAGE_POOL_STATS")


# -- the host, read only ---------------------------------------------------------


@pytest.mark.kernel
def test_host_wide_dumps_list_the_hosts_interfaces() -> None:
    host = dict(socket.if_nameindex())
    devs = cli_json("dev", "show")
    assert {d["ifindex"]: d["ifname"] for d in devs} == host
    queues = cli_json("queue", "show")
    assert {q["ifindex"] for q in queues} <= set(host)
    napis = cli_json("napi", "show")
    by_id = {n["id"]: n for n in napis}
    for n in napis:
        assert n["ifname"] == host[n["ifindex"]]
    # Drivers that link queues to NAPIs (virtio_net, most NICs): the join.
    for q in queues:
        if q["napi_id"] is not None:
            napi = by_id[q["napi_id"]]
            assert napi["ifindex"] == q["ifindex"]
            assert {"type": q["type"], "id": q["id"]} in napi["queues"]
    for word in ("dev", "queue", "napi", "qstats", "page-pool"):
        r = cli(word, "show")
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""


@pytest.mark.kernel
def test_json_path_imports_neither_pyroute2_nor_rich() -> None:
    code = (
        "import sys\n"
        "from netdevkit.cli.main import main\n"
        "rc = main(['napi', 'show', '-j'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'rich'))\n"
        "print(rc, heavy, file=sys.stderr)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.stderr.strip() == "0 []"


# -- help and parser plumbing (no kernel) ----------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["dev", "show"], ["XDP-ZC-SEGS", "example:"]),
        (["queue", "show"], ["NAPI", "example:"]),
        (["napi", "show"], ["GRO-FLUSH", "IRQ-SUSPEND", "nanoseconds", "example:"]),
        (["qstats", "show"], ["--per-queue", "veth", "example:"]),
        (["page-pool", "show"], ["INFLIGHT", "example:"]),
        (["page-pool", "stats"], ["CONFIG_PAGE_POOL_STATS", "example:"]),
    ],
)
def test_help_teaches(
    argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for w in [*words, "--netns", "--ifname", "--ifindex", "--json"]:
        assert w in text


@pytest.mark.parametrize("first", ["show", "extension"])
def test_napi_parser_takes_more_actions(first: str) -> None:
    """Issue 3 adds ``napi set`` through napi_subparsers(), in either order."""
    parser = argparse.ArgumentParser(prog="netdevkit")
    sub = parser.add_subparsers(dest="command")

    def extension() -> None:
        p = show.napi_subparsers(sub).add_parser("set")
        show.add_target_options(p, json_option=False)
        p.add_argument("--defer-hard-irqs", type=int)
        p.set_defaults(func="set")

    if first == "extension":
        extension()
        show.register(sub)
    else:
        show.register(sub)
        extension()
    args = parser.parse_args(["napi", "set", "--ifname", "eth0", "--defer-hard-irqs", "5"])
    assert (args.func, args.ifname, args.defer_hard_irqs) == ("set", "eth0", 5)
    args = parser.parse_args(["napi", "show", "-j"])
    assert args.func is show.run_napi_show and args.json


def test_napi_join_and_json_rows() -> None:
    queues = [
        Queue(1, 3, QueueType.TX, napi_id=7),
        Queue(0, 3, QueueType.TX, napi_id=None),
        Queue(1, 3, QueueType.RX, napi_id=7),
        Queue(0, 3, QueueType.RX, napi_id=6),
    ]
    joined = show.queues_by_napi(queues)
    assert {k: [(q.type, q.id) for q in v] for k, v in joined.items()} == {
        6: [(QueueType.RX, 0)],
        7: [(QueueType.RX, 1), (QueueType.TX, 1)],
    }
    target = show.Target(None, None, {3: "eth9"})
    napi = Napi(7, 3, irq=33, pid=None, gro_flush_timeout=200_000, threaded=NapiThreaded.ENABLED)
    row = show.napi_json(napi, target, joined[7])
    assert set(row) == NAPI_KEYS
    assert row["ifname"] == "eth9"
    assert row["queues"] == [{"type": "rx", "id": 1}, {"type": "tx", "id": 1}]
    assert (row["irq"], row["gro_flush_timeout"], row["threaded"]) == (33, 200_000, "enabled")
    assert json.loads(json.dumps(row)) == row


# -- the table renderer (no kernel) ----------------------------------------------

_CELL = st.text(alphabet="ab-#0 .x", max_size=10).map(lambda s: s.strip(" "))
_COLUMN = st.sampled_from(["IFNAME", "NAPI>", "QUEUES", "IRQ>", "GRO-FLUSH>", "T"])


@given(data=st.data(), columns=st.lists(_COLUMN, min_size=1, max_size=6))
@settings(max_examples=150, deadline=None)
def test_plain_tables_read_as_rich_lays_them_out(data: st.DataObject, columns: list[str]) -> None:
    rows = data.draw(st.lists(st.lists(_CELL, min_size=len(columns), max_size=len(columns))))
    if rows:
        assert table.plain_lines(columns, rows) == table.rich_lines(columns, rows, 100_000)


def test_big_and_small_tables_print_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    columns = ["IFNAME", "NAPI>", "QUEUES"]
    rows = [[f"veth{i % 3}", str(8192 + i), "-" if i % 2 else f"rx{i}"] for i in range(500)]
    table.print_table(columns, rows, "nothing")
    printed = capsys.readouterr().out.splitlines()
    assert printed == table.rich_lines(columns, rows, 100_000)
    assert printed[0].split() == ["IFNAME", "NAPI", "QUEUES"]
    assert printed[-1] == "veth1    8691   -"
    table.print_table(columns, [["v\u00e9th0", "1", "-"]], "nothing")  # not ASCII: rich
    assert capsys.readouterr().out.splitlines()[2] == "v\u00e9th0       1   -"
    table.print_table(columns, [], "nothing here")
    assert capsys.readouterr().out == "nothing here\n"
