"""What a bench report says about the NIC it ran on: driver, firmware, link speed, and
which CPUs its queue interrupts are affine to.

Kernel facts relied on:

- ``ETHTOOL_GDRVINFO`` (``struct ethtool_drvinfo``) names the driver and its firmware
  (an empty ``fw_version`` when the driver has none, e.g. veth); like every SIOCETHTOOL
  call it acts in the network namespace of the socket it is issued on.
- ``ETHTOOL_GSET`` answers ``struct ethtool_cmd`` for every driver that has
  ``get_link_ksettings`` (the core converts); the speed is ``speed | speed_hi << 16`` in
  Mb/s, ``0xffffffff`` (SPEED_UNKNOWN) when the link has none.
- netdev's napi-get gives each NAPI's ``irq`` (absent for a NAPI without one: veth has no
  interrupts, its "IRQ" is the sender's ``napi_schedule``); ``/proc/irq/N/smp_affinity_list``
  is a cpulist and does not depend on the network namespace.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .._os import format_cpu_list
from ..errors import NetdevkitError
from ..irq import irq_cpus

__all__ = ["IrqAffinity", "NicInfo", "irq_affinity", "nic_info"]

#: struct ethtool_cmd (legacy ETHTOOL_GSET), 44 bytes
_CMD = struct.Struct("=IIIHBBBBBBIIHBBI8s")
_ETHTOOL_GSET = 0x1
_SPEED_UNKNOWN = (0xFFFF, 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class IrqAffinity:
    """One NAPI's interrupt and the CPUs it may be delivered to."""

    napi_id: int
    irq: int | None
    cpus: frozenset[int] | None


@dataclass(frozen=True, slots=True)
class NicInfo:
    """The interface a remote bench ran on, as its report names it."""

    ifname: str
    driver: str
    firmware: str
    #: link speed in Mb/s (None: the driver reports none)
    speed_mbps: int | None
    irqs: tuple[IrqAffinity, ...]

    @property
    def irq_cpus(self) -> frozenset[int]:
        """Every CPU some queue interrupt of the interface is affine to."""
        return frozenset(c for x in self.irqs for c in (x.cpus or ()))

    def describe_irqs(self) -> str:
        """``"irq 45 -> 0-3, irq 46 -> 4"``, or why there is nothing to say."""
        if not self.irqs:
            return "no NAPIs"
        if all(x.irq is None for x in self.irqs):
            return "no interrupts (the driver's NAPIs have no irq: veth and other software devices)"
        parts = []
        for x in self.irqs:
            if x.irq is None:
                parts.append(f"napi {x.napi_id}: no irq")
                continue
            cpus = "unknown" if x.cpus is None else format_cpu_list(x.cpus)
            parts.append(f"irq {x.irq} (napi {x.napi_id}) -> CPUs {cpus}")
        return ", ".join(parts)

    def describe_speed(self) -> str:
        return "unknown" if self.speed_mbps is None else f"{self.speed_mbps} Mb/s"


def irq_affinity(ifname: str, netns: str | None = None) -> tuple[IrqAffinity, ...]:
    """Each NAPI of *ifname* with its irq and that irq's CPUs (napi-get + /proc/irq)."""
    from ..netdev.client import Netdev, ifindex_of

    index = ifindex_of(ifname, netns)
    with Netdev.open(netns) as nd:
        napis = nd.napi_dump(ifindex=index)
    out = []
    for n in sorted(napis, key=lambda x: x.id):
        irq = n.irq if n.irq else None
        out.append(IrqAffinity(n.id, irq, irq_cpus(irq) if irq is not None else None))
    return tuple(out)


def _link_speed(ifname: str, netns: str | None) -> int | None:
    from ..ethtool.ioctl import _ethtool

    req = _CMD.pack(_ETHTOOL_GSET, *[0] * 15, b"")
    try:
        raw = _ethtool(ifname, req, netns, f"ethtool link settings of {ifname}", "")
    except NetdevkitError:
        return None
    fields = _CMD.unpack(raw)
    speed = fields[3] | fields[12] << 16
    if fields[3] in _SPEED_UNKNOWN or speed in (0, 0xFFFFFFFF):
        return None
    return int(speed)


def _drvinfo(ifname: str, netns: str | None) -> tuple[str, str]:
    from ..ethtool.ioctl import _DRVINFO, ETHTOOL_GDRVINFO, _ethtool

    req = _DRVINFO.pack(ETHTOOL_GDRVINFO, *[b""] * 6, *[0] * 5)
    try:
        raw = _ethtool(ifname, req, netns, f"ethtool driver info of {ifname}", "")
    except NetdevkitError:
        return "", ""
    fields = _DRVINFO.unpack(raw)

    def text(b: bytes) -> str:
        return b.split(b"\0", 1)[0].decode("ascii", "replace")

    return text(fields[1]), text(fields[3])


def nic_info(ifname: str, netns: str | None = None) -> NicInfo:
    """Driver, firmware, link speed and queue-interrupt CPUs of *ifname*."""
    driver, firmware = _drvinfo(ifname, netns)
    return NicInfo(
        ifname, driver, firmware, _link_speed(ifname, netns), irq_affinity(ifname, netns)
    )
