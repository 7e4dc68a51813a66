"""netdevkit's show commands on netdevsim, a driver with real queues, against the kernel.

netdevsim exists in the kernel matrix's 7.x guest (built there out of tree, see
tests/kernels/netdevsim.py); everywhere else these tests skip, saying so. Two linked
ports with four queues each (tests/nsim.py): one NAPI and one page pool per RX queue,
per-queue statistics the kernel keeps in the driver.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import nsim
import pytest

from netdevkit.cli.main import main
from netdevkit.netdev.client import Netdev

pytestmark = [pytest.mark.matrix]

QUEUES = 4


@pytest.fixture
def ports() -> Iterator[tuple[nsim.Port, nsim.Port]]:
    with nsim.usable_pair(QUEUES) as p:
        yield p


def show(capsys: pytest.CaptureFixture[str], word: str, port: nsim.Port, *more: str) -> object:
    """``netdevkit WORD show -j --netns NS --ifname DEV``'s rows (exit 0, nothing on stderr)."""
    try:
        rc = main([word, "show", "-j", "--netns", port.ns, "--ifname", port.ifname, *more])
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert (rc, err) == (0, "")
    return json.loads(out)


def sysfs_queues(port: nsim.Port, kind: str) -> int:
    """How many ``rx-N``/``tx-N`` queues the kernel lists for *port* in sysfs."""
    names = nsim.in_ns(port.ns, "ls", f"/sys/class/net/{port.ifname}/queues").split()
    return len([n for n in names if n.startswith(f"{kind}-")])


def test_napi_and_queue_show_match_the_kernel(
    ports: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _b = ports
    assert sysfs_queues(a, "rx") == QUEUES
    napis = show(capsys, "napi", a)
    queues = show(capsys, "queue", a)
    assert isinstance(napis, list) and isinstance(queues, list)
    with Netdev.open(a.ns) as nd:
        kernel_napis = {n.id for n in nd.napi_dump(a.ifindex)}
        kernel_queues = {(q.type, q.id, q.napi_id) for q in nd.queue_dump(a.ifindex)}
    assert len(napis) == QUEUES == len(kernel_napis)
    assert {n["id"] for n in napis} == kernel_napis
    rx = sorted((q["id"], q["napi_id"]) for q in queues if q["type"] == "rx")
    assert [q for q, _ in rx] == list(range(QUEUES))
    assert {n for _, n in rx} == kernel_napis  # one NAPI per RX queue
    assert len(queues) == len(kernel_queues)
    for n in napis:
        assert {"type": "rx", "id": next(q for q, i in rx if i == n["id"])} in n["queues"]


def test_qstats_show_counts_the_datagrams(
    ports: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    """netdevsim's queue stats are a fixed split of the device counters (its
    nsim_get_queue_stats_rx): queue 0 holds all but one packet and all bytes, the
    other queues nothing, the "base" (device-only) part one packet; so per-queue rows
    sum to one packet less than the device row, which equals the interface's counters."""
    a, b = ports
    nsim.udp(a, b, count=5)
    rows = show(capsys, "qstats", b, "--per-queue")
    device = show(capsys, "qstats", b)
    assert isinstance(rows, list) and isinstance(device, list)
    rx = {r["queue_id"]: r["counters"] for r in rows if r["queue_type"] == "rx"}
    assert sorted(rx) == list(range(QUEUES))
    where = f"/sys/class/net/{b.ifname}/statistics"
    packets = int(nsim.in_ns(b.ns, "cat", f"{where}/rx_packets"))
    octets = int(nsim.in_ns(b.ns, "cat", f"{where}/rx_bytes"))
    assert packets >= 6  # five datagrams and the ARP request before them
    assert (rx[0]["rx_packets"], rx[0]["rx_bytes"]) == (packets - 1, octets)
    assert all(rx[q]["rx_packets"] == rx[q]["rx_bytes"] == 0 for q in range(1, QUEUES))
    assert [d["counters"]["rx_packets"] for d in device] == [packets]
    assert [d["counters"]["rx_bytes"] for d in device] == [octets]


def test_page_pool_show_one_pool_per_rx_queue(
    ports: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _b = ports
    pools = show(capsys, "page-pool", a)
    napis = show(capsys, "napi", a)
    assert isinstance(pools, list) and isinstance(napis, list)
    with Netdev.open(a.ns) as nd:
        kernel = {(p.id, p.napi_id) for p in nd.page_pool_dump(a.ifindex)}
    assert {(p["id"], p["napi_id"]) for p in pools} == kernel
    assert sorted(p["napi_id"] for p in pools) == sorted(n["id"] for n in napis)
