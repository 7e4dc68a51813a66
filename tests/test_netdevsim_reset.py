"""Per-NAPI settings and netdevkit's journal across a netdevsim queue reset and a
channels change, on the kernel that runs (the matrix's 7.x guest; skipped elsewhere).

netdevsim (7.x) restarts an RX queue through the queue management API when a
``"QUEUE MODE"`` line is written to its debugfs ``queue_reset`` file (mode 0: a new
NAPI and a new page pool), and changes its queue count with ``ethtool -L combined``.
What the kernel keeps (NAPI ids, per-NAPI values) goes to the JUnit report as a
testsuite property; ``napi diff`` and ``restore`` must agree with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import nsim
import pytest
from conftest import run_cli as cli

from netdevkit.ethtool.client import Ethtool
from netdevkit.netdev.client import Netdev
from netdevkit.netdev.family import QueueType

pytestmark = [pytest.mark.matrix]

QUEUES = 4
SUSPEND = (100, 20_000, 20_000_000)  # the `suspend` preset: defer, gro ns, irq-suspend ns
BASELINE = (0, 0, 0)
Values = tuple[int | None, int | None, int | None]


@pytest.fixture
def port() -> Iterator[nsim.Port]:
    with nsim.usable_pair(QUEUES) as (a, _b):
        yield a


def by_queue(p: nsim.Port) -> dict[int, tuple[int, Values]]:
    """RX queue -> (its NAPI id, that NAPI's defer/gro/irq-suspend), as the kernel says."""
    with Netdev.open(p.ns) as nd:
        napis = {n.id: n for n in nd.napi_dump(p.ifindex)}
        queues = [q for q in nd.queue_dump(p.ifindex) if q.type == QueueType.RX]
    out: dict[int, tuple[int, Values]] = {}
    for q in queues:
        assert q.napi_id is not None
        n = napis[q.napi_id]
        out[q.id] = (n.id, (n.defer_hard_irqs, n.gro_flush_timeout, n.irq_suspend_timeout))
    return out


def set_suspend(capsys: pytest.CaptureFixture[str], p: nsim.Port) -> dict[int, tuple[int, Values]]:
    rc, _out, err = cli(capsys, "napi", "set", "--netns", p.ns, "--ifname", p.ifname,
                        "--preset", "suspend")  # fmt: skip
    assert (rc, err) == (0, "")
    before = by_queue(p)
    assert [v for _i, v in before.values()] == [SUSPEND] * QUEUES
    return before


def restore_tells_the_truth(capsys: pytest.CaptureFixture[str], p: nsim.Port) -> None:
    """``restore`` puts every NAPI of *p* back to its baseline and ``napi diff`` agrees."""
    rc, out, err = cli(capsys, "restore")
    assert (rc, err) == (0, ""), out
    assert {v for _i, v in by_queue(p).values()} == {BASELINE}
    with Netdev.open(p.ns) as nd:
        values = {(n.defer_hard_irqs, n.gro_flush_timeout, n.irq_suspend_timeout)
                  for n in nd.napi_dump(p.ifindex)}  # fmt: skip
    assert values == {BASELINE}  # also NAPIs that no queue uses now
    rc, out, err = cli(capsys, "napi", "diff")
    assert (rc, err) == (0, "") and out.startswith("no differences"), out


@pytest.mark.parametrize("mode", [0, 2])
def test_queue_reset(
    port: nsim.Port,
    capsys: pytest.CaptureFixture[str],
    record_testsuite_property: Callable[[str, object], None],
    mode: int,
) -> None:
    """Queue 1 restarted through the queue API with a new NAPI (mode 0: the old one still
    enabled while the new one is added; mode 2: the old one removed first). Seen on 7.3:
    the new NAPI gets the old one's id and per-NAPI values (the config kept by index),
    so ``napi diff`` finds nothing gone and ``restore`` undoes the values."""
    before = set_suspend(capsys, port)
    (port.debugfs / "queue_reset").write_text(f"1 {mode}")
    after = by_queue(port)
    record_testsuite_property(f"queue_reset_{mode}_before", json.dumps(before))
    record_testsuite_property(f"queue_reset_{mode}_after", json.dumps(after))
    assert sorted(after) == list(range(QUEUES))
    for q in (0, 2, 3):
        assert after[q] == before[q]  # untouched queues keep NAPI and values
    rc, out, err = cli(capsys, "napi", "diff")
    assert (rc, err) == (0, "")
    assert ("gone" in out) is (after[1][0] != before[1][0]), out
    assert after == before  # seen on 7.3 in both modes
    restore_tells_the_truth(capsys, port)


def test_channels_change(
    port: nsim.Port,
    capsys: pytest.CaptureFixture[str],
    record_testsuite_property: Callable[[str, object], None],
) -> None:
    """``ethtool -L combined 2`` then 4 again: netdevsim keeps its four NAPIs (only the
    real queue count changes); the values stay; ``restore`` undoes them all."""
    before = set_suspend(capsys, port)
    with Ethtool.open(port.ns) as et:
        et.channels_set(port.ifname, combined=2)
        two = by_queue(port)
        with Netdev.open(port.ns) as nd:
            napis_at_two = len(nd.napi_dump(port.ifindex))
        et.channels_set(port.ifname, combined=QUEUES)
        assert et.channels_get(port.ifname).combined_count == QUEUES
    after = by_queue(port)
    record_testsuite_property("channels_two", json.dumps(two))
    record_testsuite_property("channels_napis_at_two", napis_at_two)
    record_testsuite_property("channels_after", json.dumps(after))
    assert sorted(two) == [0, 1]
    assert napis_at_two == QUEUES  # netdevsim only changes the real queue count
    assert {q: two[q] for q in (0, 1)} == {q: before[q] for q in (0, 1)}
    assert after == before
    rc, out, err = cli(capsys, "napi", "diff")
    assert (rc, err) == (0, "") and "gone" not in out, out
    restore_tells_the_truth(capsys, port)
