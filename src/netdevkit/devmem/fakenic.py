"""An in-memory NIC for testing NIC preparation (:class:`FakeNic`, a :class:`~.nic.Nic`).

It holds the state the real calls would change (header split, hds-thresh,
ntuple feature, RSS table, ntuple rules) and answers like the kernel for a
capable driver, or refuses like veth does (``capable=False``). ``fail_on``
makes one named call fail, to test rollback.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import KernelError, NotFoundError
from ..ethtool.client import Channels, Features, Rings, Rss
from ..ethtool.family import TcpDataSplit
from ..ethtool.ioctl import Flow

#: what the fake reports as hds-thresh-max (netdevsim's NSIM_HDS_THRESHOLD_MAX too)
HDS_THRESH_MAX = 1024


@dataclass
class FakeNic:
    """One fake device named *ifname* with *queues* RX queues."""

    ifname: str = "eth9"
    queues: int = 16
    capable: bool = True
    driver_name: str = "fbnic"
    netns: str | None = None
    tcp_data_split: TcpDataSplit = TcpDataSplit.DISABLED
    hds_thresh: int = 256
    ntuple_on: bool = False
    indir: list[int] = field(default_factory=list)
    rules: dict[int, tuple[Flow, int]] = field(default_factory=dict)
    fail_on: str | None = None
    calls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.indir:
            self.indir = [i % self.queues for i in range(128)]

    def _check(self, ifname: str, call: str) -> None:
        if ifname != self.ifname:
            raise NotFoundError(f"no interface named {ifname!r}")
        self.calls.append(call)
        if call == self.fail_on:
            raise KernelError(errno.EIO, f"fake {call}", "injected failure")

    def _unsupported(self, call: str) -> KernelError:
        return KernelError(errno.EOPNOTSUPP, f"ethtool {call} {self.ifname}")

    def ifindex(self, ifname: str) -> int:
        self._check(ifname, "ifindex")
        return 7

    def driver(self, ifname: str) -> str | None:
        self._check(ifname, "driver")
        return self.driver_name

    def queue_api(self, ifname: str) -> bool | None:
        self._check(ifname, "queue_api")
        return self.capable

    def rings_get(self, ifname: str) -> Rings:
        self._check(ifname, "rings_get")
        if not self.capable:
            raise self._unsupported("rings-get")
        return Rings(
            ifname,
            1024,
            4096,
            1024,
            4096,
            None,
            self.tcp_data_split,
            self.hds_thresh,
            HDS_THRESH_MAX,
        )

    def rings_set(
        self, ifname: str, *, tcp_data_split: TcpDataSplit | None, hds_thresh: int | None
    ) -> None:
        self._check(ifname, "rings_set")
        if not self.capable:
            raise self._unsupported("rings-set")
        if hds_thresh is not None and hds_thresh > HDS_THRESH_MAX:
            # the kernel's own check (net/ethtool/rings.c), seen on netdevsim under 7.3
            raise KernelError(
                errno.EINVAL,
                f"ethtool rings-set {ifname}",
                "requested ring size exceeds maximum",
                "rings.hds-thresh",
            )
        if tcp_data_split is not None:
            self.tcp_data_split = tcp_data_split
        if hds_thresh is not None:
            self.hds_thresh = hds_thresh

    def channels_get(self, ifname: str) -> Channels:
        self._check(ifname, "channels_get")
        return Channels(ifname, 0, 0, 0, self.queues, 0, self.queues)

    def features_get(self, ifname: str) -> Features:
        self._check(ifname, "features_get")
        on = {"rx-ntuple-filter"} if self.ntuple_on else set()
        hw = {"rx-ntuple-filter"} if self.capable else set()
        return Features(ifname, frozenset(on), frozenset(on), frozenset(hw), frozenset())

    def features_set(self, ifname: str, changes: Mapping[str, bool]) -> None:
        self._check(ifname, "features_set")
        if not self.capable:
            raise self._unsupported("features-set")
        self.ntuple_on = changes.get("rx-ntuple-filter", self.ntuple_on)

    def rss_get(self, ifname: str) -> Rss:
        self._check(ifname, "rss_get")
        if not self.capable:
            raise self._unsupported("rss-get")
        return Rss(ifname, 0, 1, tuple(self.indir), b"")

    def rss_set(self, ifname: str, indir: Sequence[int]) -> None:
        self._check(ifname, "rss_set")
        self.indir = list(indir)

    def can_set_rss(self) -> bool:
        return True

    def ntuple_insert(self, ifname: str, flow: Flow, queue: int) -> int:
        self._check(ifname, "ntuple_insert")
        if not self.capable or not self.ntuple_on:
            raise self._unsupported("ntuple-insert")
        loc = max(self.rules, default=-1) + 1
        self.rules[loc] = (flow, queue)
        return loc

    def ntuple_delete(self, ifname: str, location: int) -> None:
        self._check(ifname, "ntuple_delete")
        if self.rules.pop(location, None) is None:
            raise KernelError(errno.ENOENT, f"ethtool ntuple delete rule {location}")

    def ntuple_exists(self, ifname: str, location: int) -> bool:
        self._check(ifname, "ntuple_exists")
        return location in self.rules

    def ntuple_find(self, ifname: str, flow: Flow, queue: int) -> int | None:
        self._check(ifname, "ntuple_find")
        return next((loc for loc, rule in self.rules.items() if rule == (flow, queue)), None)
