"""``netdevkit queue create`` (queue leasing, Linux 7.1+) for real: netkit leasing
netdevsim's RX queues, in the kernel matrix's 7.x guest.

The kernel's ``queue-create`` (net/core/netdev-genl.c) takes a virtual device without a
parent device whose driver has ``ndo_queue_create`` (netkit, built into the 7.x kernel)
and an RX queue of a device with a parent and the queue management API (netdevsim, built
for the guest: tests/kernels/netdevsim.py). netkit adds one real RX queue per lease, up to
the num-rx-queues it was made with, on a single device or on the peer of a pair only; the
kernel ties the new queue to the leased one and answers its id. Deleting the netkit
(``netkit_uninit``) ends its leases. Everywhere but that guest these tests skip.
netkit devices come from tests/netkit.py (no iproute2 or pyroute2 here makes one).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator

import netkit
import nsim
import pytest
from conftest import run_cli as run

from netdevkit.errors import NotFoundError, RequestError
from netdevkit.netdev.client import Netdev, netns_id_of

pytestmark = [pytest.mark.matrix]

QUEUES = 4
NK = "ndk-nk0"


@pytest.fixture
def ports() -> Iterator[tuple[nsim.Port, nsim.Port]]:
    with nsim.usable_pair(QUEUES) as p:
        yield p


def create(
    capsys: pytest.CaptureFixture[str], ns: str, ifname: str, lease: str, queue: int, *more: str
) -> tuple[int, str, str]:
    """``netdevkit queue create --netns NS --ifname IFNAME --lease-ifname LEASE ...``."""
    argv = ["queue", "create", "--netns", ns, "--ifname", ifname, "--lease-ifname", lease]
    return run(capsys, *argv, "--lease-queue", str(queue), *more)


def leases(capsys: pytest.CaptureFixture[str], ns: str, ifname: str) -> dict[str, object]:
    """``queue show -j``'s lease per queue of *ifname*, keyed ``rx3``/``tx0``."""
    rc, out, err = run(capsys, "queue", "show", "-j", "--netns", ns, "--ifname", ifname)
    assert (rc, err) == (0, "")
    return {f"{q['type']}{q['id']}": q["lease"] for q in json.loads(out)}


def rx_sysfs(ns: str, ifname: str) -> int:
    """How many real RX queues the kernel lists for *ifname* in sysfs."""
    names = nsim.in_ns(ns, "ls", f"/sys/class/net/{ifname}/queues").split()
    return len([n for n in names if n.startswith("rx-")])


def nsids(ns: str) -> dict[int, str]:
    """``ip netns list-id`` in *ns*: the ids it has for other namespaces, with their names."""
    text = nsim.in_ns(ns, "ip", "netns", "list-id")
    return {
        int(m[1]): m[2] for m in re.finditer(r"nsid (\d+) \(iproute2 netns name: (\S+)\)", text)
    }


def refused(ifindex: int, lease: str, errno: str, says: str) -> str:
    """The CLI's one line (on stderr) for a queue-create the kernel refused."""
    what = f"queue-create ifindex {ifindex} (lease {lease})"
    return f"netdevkit: error: {what}: {errno}; kernel says: {says}\n"


def test_a_single_netkit_leases_netdevsim_queues(
    ports: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each lease adds the netkit's next RX queue (1, then 2); only the netdevsim end
    reports the lease (netdev_nl_queue_fill_lease walks physical -> virtual only)."""
    a, _b = ports
    with netkit.netkit(a.ns, NK, rx_queues=3) as nk:
        assert rx_sysfs(a.ns, NK) == 1
        rc, out, err = create(capsys, a.ns, NK, a.ifname, 3)
        assert (rc, out, err) == (
            0,
            f"created rx queue 1 on {NK}, leased from {a.ifname} rx queue 3\n",
            "",
        )
        # --lease-netns naming --netns's own namespace: no netns-id sent, same result
        rc, out, err = create(capsys, a.ns, NK, a.ifname, 2, "-j", "--lease-netns", a.ns)
        assert (rc, err) == (0, "")
        assert json.loads(out) == {
            "ifname": NK,
            "type": "rx",
            "id": 2,
            "lease": {"ifname": a.ifname, "type": "rx", "id": 2, "netns": a.ns, "netns_id": None},
        }
        assert rx_sysfs(a.ns, NK) == 3
        phys = leases(capsys, a.ns, a.ifname)
        lease = {"ifindex": nk, "ifname": NK, "type": "rx", "netns_id": None}
        assert phys == {
            "rx0": None,
            "rx1": None,
            "rx2": {**lease, "id": 2},
            "rx3": {**lease, "id": 1},
            **{f"tx{i}": None for i in range(QUEUES)},
        }
        # the virtual end: a queue dump skips a device that is down, and once it is up its
        # queues carry no lease attribute (a leased queue is reported from the NIC's side)
        assert leases(capsys, a.ns, NK) == {}
        nsim.in_ns(a.ns, "ip", "link", "set", NK, "up")
        assert leases(capsys, a.ns, NK) == {"rx0": None, "rx1": None, "rx2": None, "tx0": None}
        rc, out, err = run(capsys, "queue", "show", "--netns", a.ns, "--ifname", a.ifname)
        assert (rc, err) == (0, "")
        assert f"lease {NK}/rx1" in out and f"lease {NK}/rx2" in out


def test_a_leased_queue_is_busy(
    ports: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _b = ports
    with (
        netkit.netkit(a.ns, NK, rx_queues=2) as nk,
        netkit.netkit(a.ns, "ndk-nk1", rx_queues=2) as nk1,
    ):
        assert create(capsys, a.ns, NK, a.ifname, 3)[0] == 0
        rc, out, err = create(capsys, a.ns, "ndk-nk1", a.ifname, 3)
        assert (rc, out) == (1, "")
        assert err == refused(
            nk1,
            f"{a.ifindex}/3",
            "Device or resource busy (EBUSY)",
            "Device queue in use due to queue leasing",
        )
        assert rx_sysfs(a.ns, "ndk-nk1") == 1
        assert leases(capsys, a.ns, a.ifname)["rx3"] == {
            "ifindex": nk,
            "ifname": NK,
            "type": "rx",
            "id": 1,
            "netns_id": None,
        }


def test_netkit_stops_at_its_num_rx_queues(
    ports: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _b = ports
    with netkit.netkit(a.ns, NK, rx_queues=2) as nk:
        assert create(capsys, a.ns, NK, a.ifname, 1)[0] == 0
        rc, out, err = create(capsys, a.ns, NK, a.ifname, 2)
        assert (rc, out) == (1, "")
        assert err == refused(
            nk,
            f"{a.ifindex}/2",
            "Invalid argument (EINVAL)",
            "netkit maximum queue limit reached",
        )
        assert rx_sysfs(a.ns, NK) == 2
        assert leases(capsys, a.ns, a.ifname)["rx2"] is None


def test_only_the_peer_of_a_netkit_pair_leases(
    ports: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _b = ports
    with netkit.netkit(a.ns, NK, rx_queues=2, peer="ndk-nkpeer") as primary:
        rc, out, err = create(capsys, a.ns, NK, a.ifname, 3)
        assert (rc, out) == (1, "")
        assert err == refused(
            primary,
            f"{a.ifindex}/3",
            "Operation not supported (ENOTSUP)",  # Python's errorcode name for 95
            "netkit can only lease against the peer device",
        )
        assert leases(capsys, a.ns, a.ifname)["rx3"] is None
        rc, out, err = create(capsys, a.ns, "ndk-nkpeer", a.ifname, 3)
        assert (rc, out, err) == (
            0,
            f"created rx queue 1 on ndk-nkpeer, leased from {a.ifname} rx queue 3\n",
            "",
        )
        peer = netkit.ifindex(a.ns, "ndk-nkpeer")
        assert leases(capsys, a.ns, a.ifname)["rx3"] == {
            "ifindex": peer,
            "ifname": "ndk-nkpeer",
            "type": "rx",
            "id": 1,
            "netns_id": None,
        }


def test_the_kernel_checks_both_ends(
    ports: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _b = ports
    with netkit.netkit(a.ns, NK, rx_queues=2) as nk, netkit.netkit(a.ns, "ndk-nk1") as nk1:
        rc, out, err = create(capsys, a.ns, a.ifname, a.ifname, 0)  # a NIC as the virtual end
        einval = "Invalid argument (EINVAL)"
        want = refused(a.ifindex, f"{a.ifindex}/0", einval, "Device is not a virtual device")
        assert (rc, out, err) == (1, "", want)
        rc, out, err = create(capsys, a.ns, NK, "ndk-nk1", 0)  # a netkit as the leased end
        want = refused(nk, f"{nk1}/0", einval, "Lease device is a virtual device")
        assert (rc, out, err) == (1, "", want)
        rc, out, err = create(capsys, a.ns, NK, a.ifname, QUEUES)  # past netdevsim's queues
        assert (rc, out) == (1, "")
        assert err == (
            f"netdevkit: error: queue-create ifindex {nk} (lease {a.ifindex}/{QUEUES}): "
            "Numerical result out of range (ERANGE); at attribute queue.lease.queue.id\n"
        )
        with Netdev.open(a.ns) as nd:  # what the CLI's name lookups keep from happening
            with pytest.raises(NotFoundError, match="no network namespace has id 99 as numbered"):
                nd.queue_create(nk, a.ifindex, 3, lease_netns_id=99)  # kernel: ENONET
            with pytest.raises(NotFoundError, match=r"ifindex 9999 in network namespace"):
                nd.queue_create(nk, 9999, 3)  # kernel: ENODEV
            with pytest.raises(RequestError, match="lease_netns_id=-1 must be 0 or more"):
                nd.queue_create(nk, a.ifindex, 3, lease_netns_id=-1)
        assert rx_sysfs(a.ns, NK) == 1
        assert all(v is None for v in leases(capsys, a.ns, a.ifname).values())


def test_deleting_the_netkit_ends_the_lease(
    ports: tuple[nsim.Port, nsim.Port], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = ports
    with netkit.netkit(a.ns, NK, rx_queues=2) as nk:
        assert create(capsys, a.ns, NK, a.ifname, 0)[0] == 0
        assert leases(capsys, a.ns, a.ifname)["rx0"] == {
            "ifindex": nk,
            "ifname": NK,
            "type": "rx",
            "id": 1,
            "netns_id": None,
        }
        netkit.delete(a.ns, NK)
    assert all(v is None for v in leases(capsys, a.ns, a.ifname).values())
    nsim.udp(b, a)  # a receives on its queues again
    nsim.udp(a, b)
    with netkit.netkit(a.ns, "ndk-nk1", rx_queues=2):  # and queue 0 is free to lease again
        assert create(capsys, a.ns, "ndk-nk1", a.ifname, 0)[:2] == (
            0,
            f"created rx queue 1 on ndk-nk1, leased from {a.ifname} rx queue 0\n",
        )


@pytest.fixture
def container() -> Iterator[str]:
    """A network namespace of the test's own (the "container"), removed after."""
    ns = f"ndk-lease-ctr{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def test_netkit_in_a_container_leases_a_host_queue(
    ports: tuple[nsim.Port, nsim.Port], container: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--lease-netns: the request is made in the container's namespace and names the
    NIC's namespace by the id the container has for it; netdevsim's queue then reports
    the netkit by ifindex and the id *its* namespace has for the container."""
    a, _b = ports
    with netkit.netkit(container, NK, rx_queues=2) as nk:
        assert nsids(container) == {}  # none yet: netdevkit has one assigned
        rc, out, err = create(capsys, container, NK, a.ifname, 3, "-j", "--lease-netns", a.ns)
        assert (rc, err) == (0, "")
        ids = {name: i for i, name in nsids(container).items()}
        assert json.loads(out) == {
            "ifname": NK,
            "type": "rx",
            "id": 1,
            "lease": {
                "ifname": a.ifname,
                "type": "rx",
                "id": 3,
                "netns": a.ns,
                "netns_id": ids[a.ns],
            },
        }
        lease = leases(capsys, a.ns, a.ifname)["rx3"]
        back = {name: i for i, name in nsids(a.ns).items()}
        assert lease == {
            "ifindex": nk,
            "ifname": None,
            "type": "rx",
            "id": 1,
            "netns_id": back[container],
        }
        rc, out, err = run(capsys, "queue", "show", "--netns", a.ns, "--ifname", a.ifname)
        assert (rc, err) == (0, "")
        assert f"lease if{nk}/rx1@nsid{back[container]}" in out
        nsim.in_ns(container, "ip", "link", "set", NK, "up")
        assert leases(capsys, container, NK) == {"rx0": None, "rx1": None, "tx0": None}


def test_an_unknown_lease_namespace_changes_nothing(
    ports: tuple[nsim.Port, nsim.Port], container: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _b = ports
    with netkit.netkit(container, NK, rx_queues=2):
        before = nsids(container)
        rc, out, err = create(capsys, container, NK, a.ifname, 3, "--lease-netns", "ndk-no-such-ns")
        assert (rc, out, err) == (
            1,
            "",
            (
                "netdevkit: error: network namespace 'ndk-no-such-ns' does not exist "
                "(see `ip netns list`)\n"
            ),
        )
        rc, out, err = create(capsys, container, NK, a.ifname, 3, "--lease-netns", "a/b")
        assert (rc, out) == (2, "")
        assert err.startswith("netdevkit: error: network namespace 'a/b': not a valid")
        assert rx_sysfs(container, NK) == 1
        assert nsids(container) == before
        assert leases(capsys, a.ns, a.ifname)["rx3"] is None


# -- what needs no netdevsim: the namespace id, and bad --lease-netns values ----------


def test_netns_id_of_numbers_the_namespace_as_seen_from_the_other() -> None:
    """The id RTM_GETNSID reports (``ip netns list-id``), assigned when there is none;
    None for a namespace seen from itself."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    x, y = (f"ndk-lease{os.getpid()}-{n}" for n in "xy")
    for ns in (x, y):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        assert netns_id_of(x, x) is None
        assert nsids(x) == {}
        seen_from_x = netns_id_of(y, x)
        assert nsids(x) == {seen_from_x: y}
        assert netns_id_of(y, x) == seen_from_x  # the one assigned, not another
        seen_from_y = netns_id_of(x, y)
        assert nsids(y) == {seen_from_y: x}
    finally:
        for ns in (x, y):
            subprocess.run(["ip", "netns", "del", ns], check=True)


@pytest.mark.parametrize(
    ("netns", "rc", "says"),
    [
        ("ndk-no-such-ns", 1, "network namespace 'ndk-no-such-ns' does not exist"),
        ("a/b", 2, "network namespace 'a/b': not a valid namespace name"),
    ],
)
def test_a_bad_lease_netns_is_refused_before_the_kernel_is_asked(
    capsys: pytest.CaptureFixture[str], netns: str, rc: int, says: str
) -> None:
    argv = ["queue", "create", "--ifname", "lo", "--lease-ifname", "lo", "--lease-queue", "0"]
    got, out, err = run(capsys, *argv, "--lease-netns", netns)
    assert (got, out) == (rc, "")
    assert err.startswith(f"netdevkit: error: {says}") and err.count("\n") == 1
