"""A two-port netdevsim pair across two network namespaces, for the netdevsim tests.

netdevsim is the kernel's test NIC: queues with NAPIs, page pools, per-queue stats,
ethtool rings/channels and (7.x) the queue management API. Debian does not build it;
the kernel matrix builds it for its 7.x guest (``tests/kernels/netdevsim.py``). Two
ports created through ``/sys/bus/netdevsim/new_device``, moved into namespaces of their
own and joined with ``link_device``: what one sends, the other receives on an RX queue.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from netdevkit import kver, netns

BUS = Path("/sys/bus/netdevsim")


def unavailable() -> str | None:
    """Why netdevsim cannot be used here (None: it can, the module is loaded).

    Inside the matrix's 7.x guest the module was built for it: failing to load it there
    fails the test instead of skipping it.
    """
    if not BUS.exists():
        subprocess.run(["modprobe", "-q", "netdevsim"], capture_output=True, check=False)
    if BUS.exists():
        return None
    if os.environ.get("NETDEVKIT_IN_GUEST") == "1" and kver.at_least("7.0"):
        pytest.fail(f"netdevsim was built for {kver.release()} but does not load (dmesg)")
    return (
        f"{kver.release()} has no netdevsim module (Debian does not build it; the kernel "
        "matrix builds it for its 7.x guest only)"
    )


@dataclass(frozen=True, slots=True)
class Port:
    """One netdevsim port, alone in its namespace."""

    dev_id: int
    ns: str
    ifname: str
    ifindex: int
    addr: str
    debugfs: Path


def in_ns(ns: str, *argv: str) -> str:
    """The output of *argv* run in namespace *ns* (``ip netns exec`` mounts its sysfs)."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], check=True, capture_output=True, text=True
    ).stdout.strip()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _new_port(dev_id: int, queues: int, ns: str, addr: str) -> Port:
    (BUS / "new_device").write_text(f"{dev_id} 1 {queues}")
    names = list((BUS / "devices" / f"netdevsim{dev_id}" / "net").iterdir())
    ifname = names[0].name
    _ip("link", "set", ifname, "netns", ns)
    with netns.entered(ns):  # /proc/sys/net follows the namespace (sysfs would not)
        Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1")
    ifindex = int(in_ns(ns, "cat", f"/sys/class/net/{ifname}/ifindex"))
    _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
    _ip("-n", ns, "link", "set", ifname, "up")
    debugfs = Path("/sys/kernel/debug/netdevsim") / f"netdevsim{dev_id}" / "ports" / "0"
    return Port(dev_id, ns, ifname, ifindex, addr, debugfs)


def _link(a: Port, b: Port) -> None:
    fa = os.open(netns.path_of(a.ns), os.O_RDONLY)
    fb = os.open(netns.path_of(b.ns), os.O_RDONLY)
    try:
        (BUS / "link_device").write_text(f"{fa}:{a.ifindex} {fb}:{b.ifindex}")
    finally:
        os.close(fa)
        os.close(fb)


@contextmanager
def pair(queues: int = 4) -> Iterator[tuple[Port, Port]]:
    """Two linked netdevsim ports with *queues* queues each, in namespaces of their own,
    192.0.2.1 and 192.0.2.2 (IPv6 off: no traffic but the test's); all removed after."""
    if not Path("/sys/kernel/debug/netdevsim").exists():
        subprocess.run(["mount", "-t", "debugfs", "none", "/sys/kernel/debug"], check=False)
    base = 1000 + (os.getpid() % 1000) * 2
    with ExitStack() as stack:
        ports: list[Port] = []
        for i, addr in enumerate(("192.0.2.1", "192.0.2.2")):
            ns = f"ndk-nsim{base}-{i}"
            _ip("netns", "add", ns)
            stack.callback(_ip, "netns", "del", ns)
            dev_id = base + i
            stack.callback((BUS / "del_device").write_text, str(dev_id))
            ports.append(_new_port(dev_id, queues, ns, addr))
        _link(ports[0], ports[1])
        yield ports[0], ports[1]


def udp(src: Port, dst: Port, count: int = 5, port: int = 9000) -> None:
    """*count* UDP datagrams from *src* to *dst*, each received there (fails the test with
    both ports' counters when one does not arrive; there is no ping on these machines)."""
    with netns.entered(dst.ns):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with netns.entered(src.ns):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind((dst.addr, port))
        rx.settimeout(10)
        got = 0
        try:
            for i in range(count):
                tx.sendto(b"ndk %d" % i, (dst.addr, port))
                rx.recv(64)
                got += 1
        except TimeoutError:
            state = [in_ns(p.ns, "sh", "-c", "ip -s link; ip neigh") for p in (src, dst)]
            pytest.fail(f"{got} of {count} datagrams arrived\n" + "\n".join(state))


@contextmanager
def usable_pair(queues: int = 4) -> Iterator[tuple[Port, Port]]:
    """:func:`pair`, or a pytest skip saying why netdevsim cannot be used here (not root,
    no module): the fixture of every netdevsim test module."""
    if os.geteuid() != 0:
        pytest.skip("netdevsim devices need root")
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    with pair(queues) as p:
        yield p
