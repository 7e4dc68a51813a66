"""Device memory TCP against netdevsim, a driver with the queue management API, header
split and ``hds-thresh`` (the matrix's 7.x guest; skipped elsewhere, saying so).

What netdevsim lacks (ntuple flow steering, an RSS indirection table, a DMA device)
is what the kernel and ``devmem setup`` must refuse, by name, changing nothing.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import nsim
import pytest

from netdevkit.cli.main import main
from netdevkit.devmem import bind_rx, udmabuf
from netdevkit.errors import KernelError
from netdevkit.ethtool.client import Ethtool
from netdevkit.ethtool.family import TcpDataSplit
from netdevkit.netdev.client import Netdev

pytestmark = [pytest.mark.matrix]

QUEUES = 4


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETDEVKIT_STATE_DIR", str(tmp_path / "state"))


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
