"""Where NAPI settings are read and written: per-NAPI netlink, or device-wide sysfs.

- :class:`NetlinkBackend` uses ``napi-get``/``napi-set`` of the netdev family
  (Linux 6.13+): one target per NAPI instance.
- :class:`SysfsBackend` uses ``/sys/class/net/DEV/{napi_defer_hard_irqs,
  gro_flush_timeout,threaded}`` (any kernel): one *device-wide* target per
  interface, no ``irq-suspend-timeout``.

``auto`` picks netlink where the kernel has ``napi-set`` and sysfs elsewhere.
The environment variable ``NETDEVKIT_TUNING_BACKEND`` (``auto``, ``netlink``
or ``sysfs``) sets the default, so the fallback can be exercised on a new
kernel too.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Literal, Protocol

from .. import kver
from ..errors import NetdevkitError, NotFoundError, RequestError, UnsupportedError
from ..netdev.client import Napi, Netdev, ifindex_of, ifnames
from ..netdev.family import THREADED_BUSY_POLL_SINCE, NapiThreaded
from ..netns import list_names
from . import sysfs
from .model import KNOBS, BackendName, Target, threaded_value
from .presets import NapiSettings

BACKEND_ENV = "NETDEVKIT_TUNING_BACKEND"
BackendChoice = Literal["auto", "netlink", "sysfs"]
CHOICES: tuple[BackendChoice, ...] = ("auto", "netlink", "sysfs")

Resolved = list[tuple[Target, NapiSettings]]


def default_choice() -> BackendChoice:
    """The backend named by ``NETDEVKIT_TUNING_BACKEND``, else ``auto``."""
    value = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    return check_choice(value, f"${BACKEND_ENV}")


def check_choice(value: str, what: str = "backend") -> BackendChoice:
    for c in CHOICES:
        if value == c:
            return c
    raise RequestError(f"{what}={value!r}: expected one of {', '.join(CHOICES)}")


def _where(netns: str | None) -> str:
    return f" in network namespace {netns!r}" if netns else ""


class Backend(Protocol):
    name: BackendName

    def interface(self, netns: str | None, ifname: str) -> Resolved: ...

    def ids(self, netns: str | None, napi_ids: list[int]) -> Resolved: ...

    def read(self, target: Target) -> NapiSettings: ...

    def write(self, target: Target, values: NapiSettings) -> None: ...

    def check(self, target: Target, current: NapiSettings, wanted: NapiSettings) -> NapiSettings:
        """Refuse what this backend cannot set; returns *wanted* as it will be applied."""
        ...

    def successor(self, target: Target) -> tuple[Target, NapiSettings] | None: ...

    def close(self) -> None: ...


def napi_values(n: Napi) -> NapiSettings:
    return NapiSettings(
        n.defer_hard_irqs,
        n.gro_flush_timeout,
        n.irq_suspend_timeout,
        None if n.threaded is None else threaded_value(int(n.threaded)),
    )


def _check_busy_poll(target: Target, wanted: NapiSettings) -> None:
    """Refuse threaded busy-poll before anything changes on a kernel older than 6.19."""
    if wanted.threaded is NapiThreaded.BUSY_POLL and not kver.at_least(THREADED_BUSY_POLL_SINCE):
        raise UnsupportedError(
            f"{target.label}: threaded busy-poll needs Linux {THREADED_BUSY_POLL_SINCE} or "
            f"newer (this is {kver.release()}); threaded on gives a kthread without busy polling"
        )


def _no_such_napi(napi_id: int, netns: str | None) -> NotFoundError:
    """The error for a NAPI id *netns* does not have, saying where it lives if anywhere.

    NAPI ids are global (one counter for the whole system, napi_hash_add), but napi-get
    answers only for devices of the caller's network namespace: an id from `napi show
    --netns X` is unknown without `--netns X`. So the other namespaces are asked.
    """
    head = f"no NAPI instance with id {napi_id}" + (
        _where(netns) if netns else " in this network namespace"
    )
    for other in [None, *list_names()]:
        if other == netns:
            continue
        try:
            with Netdev.open(other) as nd:
                n = nd.napi_get(napi_id)
            ifname = ifnames(other).get(n.ifindex, f"ifindex {n.ifindex}")
        except NetdevkitError:
            continue
        if other is None:
            return NotFoundError(
                f"{head}; NAPI ids are global, and {napi_id} is {ifname}'s in the default "
                "network namespace",
                hint="leave the namespace out",
            )
        return NotFoundError(
            f"{head}; NAPI ids are global, and {napi_id} is {ifname}'s in network namespace "
            f"{other!r}",
            hint=f"name that namespace: `netns={other}`",
        )
    return NotFoundError(
        f"{head} (list them with `netdevkit napi show`; ids change when a device is reset, "
        "e.g. veth GRO toggled)",
        hint="a NAPI of another network namespace needs `netns`",
    )


class NetlinkBackend:
    """Per-NAPI settings through the netdev family; one connection per netns."""

    name: BackendName = "netlink"

    def __init__(self) -> None:
        self._conns: dict[str | None, Netdev] = {}

    def conn(self, netns: str | None) -> Netdev:
        nd = self._conns.get(netns)
        if nd is None:
            nd = self._conns[netns] = Netdev.open(netns)
        return nd

    def supported(self, netns: str | None) -> bool:
        return self.conn(netns).supports("napi-set")

    def close(self) -> None:
        conns, self._conns = self._conns, {}
        for nd in conns.values():
            nd.close()

    def _device(self, netns: str | None, ifindex: int) -> list[Napi]:
        """The device's NAPIs ordered by id: list index = position."""
        return sorted(self.conn(netns).napi_dump(ifindex), key=lambda n: n.id)

    def interface(self, netns: str | None, ifname: str) -> Resolved:
        ifindex = ifindex_of(ifname, netns)
        napis = self._device(netns, ifindex)
        if not napis:
            raise NotFoundError(
                f"{ifname}{_where(netns)} has no NAPI instances (it is down, or a virtual "
                "device without NAPI: veth has NAPIs only while up with GRO on, "
                f"`ethtool -K {ifname} gro on`)"
            )
        return [
            (Target("netlink", netns, ifname, ifindex, n.id, pos), napi_values(n))
            for pos, n in enumerate(napis)
        ]

    def ids(self, netns: str | None, napi_ids: list[int]) -> Resolved:
        names = ifnames(netns)
        out: Resolved = []
        for napi_id in napi_ids:
            if napi_id <= 0 or napi_id > 2**32 - 1:
                raise RequestError(f"NAPI id {napi_id}: must be 1..4294967295")
            try:
                n = self.conn(netns).napi_get(napi_id)
            except NotFoundError:
                raise _no_such_napi(napi_id, netns) from None
            ids = [x.id for x in self._device(netns, n.ifindex)]
            pos = ids.index(n.id) if n.id in ids else None
            ifname = names.get(n.ifindex, f"ifindex{n.ifindex}")
            out.append((Target("netlink", netns, ifname, n.ifindex, n.id, pos), napi_values(n)))
        return out

    def read(self, target: Target) -> NapiSettings:
        assert target.napi_id is not None
        n = self.conn(target.netns).napi_get(target.napi_id)
        if n.ifindex != target.ifindex:
            raise NotFoundError(f"NAPI {target.napi_id} now belongs to another device")
        return napi_values(n)

    def write(self, target: Target, values: NapiSettings) -> None:
        assert target.napi_id is not None
        self.conn(target.netns).napi_set(
            target.napi_id,
            defer_hard_irqs=values.defer_hard_irqs,
            gro_flush_timeout=values.gro_flush_timeout,
            irq_suspend_timeout=values.irq_suspend_timeout,
            threaded=values.threaded,
        )

    def check(self, target: Target, current: NapiSettings, wanted: NapiSettings) -> NapiSettings:
        """Refuse knobs the kernel does not report for this NAPI (too old for them)."""
        _check_busy_poll(target, wanted)
        if not self.supported(target.netns):
            raise UnsupportedError(
                "per-NAPI settings need Linux 6.13 or newer (napi-set)",
                hint="use the device-wide sysfs backend (`backend='sysfs'`) on this kernel",
            )
        for knob in KNOBS:
            if getattr(wanted, knob) is not None and getattr(current, knob) is None:
                since = "6.17" if knob == "threaded" else "6.13"
                raise UnsupportedError(
                    f"{target.label}: this kernel does not report {KNOBS[knob]} per NAPI "
                    f"(needs Linux {since} or newer)",
                    hint="the device-wide sysfs 'threaded' knob works (`backend='sysfs'`)"
                    if knob == "threaded"
                    else "",
                )
        return wanted

    def successor(self, target: Target) -> tuple[Target, NapiSettings] | None:
        """The NAPI that now holds *target*'s position on the same device, if any."""
        if target.position is None:
            return None
        try:
            if ifindex_of(target.ifname, target.netns) != target.ifindex:
                return None
            napis = self._device(target.netns, target.ifindex)
        except NotFoundError:
            return None
        if target.position >= len(napis):
            return None
        n = napis[target.position]
        t = Target("netlink", target.netns, target.ifname, n.ifindex, n.id, target.position)
        return t, napi_values(n)


class SysfsBackend:
    """Device-wide knobs in sysfs; ``forced`` when chosen on a kernel with napi-set."""

    name: BackendName = "sysfs"

    def __init__(self, forced: bool = False) -> None:
        self.forced = forced

    def close(self) -> None:
        pass

    def interface(self, netns: str | None, ifname: str) -> Resolved:
        ifindex = ifindex_of(ifname, netns)
        return [(Target("sysfs", netns, ifname, ifindex), sysfs.read(netns, ifname))]

    def ids(self, netns: str | None, napi_ids: list[int]) -> Resolved:
        raise RequestError(
            "NAPI ids need per-NAPI settings (napi-set, Linux 6.13+); the sysfs backend "
            "only has device-wide knobs",
            hint="name the interface instead (`ifname=DEV`), which changes every NAPI of the "
            "device",
        )

    def read(self, target: Target) -> NapiSettings:
        if ifindex_of(target.ifname, target.netns) != target.ifindex:
            raise NotFoundError(f"{target.ifname} was recreated (ifindex changed)")
        return sysfs.read(target.netns, target.ifname)

    def write(self, target: Target, values: NapiSettings) -> None:
        sysfs.write(target.netns, target.ifname, values)

    def check(self, target: Target, current: NapiSettings, wanted: NapiSettings) -> NapiSettings:
        """Refuse what sysfs cannot set; an irq-suspend-timeout of 0 is dropped, not refused.

        0 is the kernel's default and, before 6.13, the only behaviour there is (no IRQ
        suspension exists): a preset's 0 (base, defer, threaded, ...) asks for nothing that
        sysfs would have to write. A non-zero value needs the per-NAPI knob (6.13+).
        """
        _check_busy_poll(target, wanted)
        if wanted.threaded is NapiThreaded.BUSY_POLL:
            # net-sysfs.c modify_napi_threaded() takes 0 and 1 only: 2 is EOPNOTSUPP
            # [seen on 7.3 for veth]; busy-poll threading is napi-set's alone.
            raise UnsupportedError(
                f"{target.label}: cannot set threaded busy-poll through sysfs: the device-wide "
                "'threaded' knob takes only off and on; busy-poll exists only per NAPI "
                "(napi-set, Linux 6.19+)",
                hint="use the per-NAPI backend (`backend='netlink'`)",
            )
        if wanted.irq_suspend_timeout == 0:
            wanted = replace(wanted, irq_suspend_timeout=None)
        if wanted.irq_suspend_timeout is not None:
            why = (
                "the sysfs backend was forced and sysfs has no irq-suspend-timeout knob "
                "(it exists only per NAPI, over netlink: Linux 6.13+, `--backend netlink`)"
                if self.forced
                else "this kernel lacks per-NAPI settings (napi-set, Linux 6.13+), and "
                "irq-suspend-timeout exists only per NAPI"
            )
            raise UnsupportedError(f"{target.label}: cannot set irq-suspend-timeout: {why}")
        for knob in ("defer_hard_irqs", "gro_flush_timeout", "threaded"):
            if getattr(wanted, knob) is not None and getattr(current, knob) is None:
                raise UnsupportedError(
                    f"{target.label}: /sys/class/net/{target.ifname}/{sysfs.FILES[knob]} "
                    "does not exist on this kernel"
                )
        return wanted

    def successor(self, target: Target) -> tuple[Target, NapiSettings] | None:
        return None
