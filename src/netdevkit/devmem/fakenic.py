"""An in-memory NIC for testing NIC preparation (:class:`FakeNic`, a :class:`~.nic.Nic`).

It holds the state the real calls would change (channel count, header split,
hds-thresh, ntuple feature, RSS table, ntuple rules) and answers like the
kernel for a capable driver, or refuses like veth does (``capable=False``).
``ntuple=False`` and ``rss=False`` take away only those two, as netdevsim
lacks them (header split and channels stay). ``fail_on`` makes one named
call fail, to test rollback.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import KernelError, NotFoundError
from ..ethtool.client import Channels, Features, Rings, Rss, default_indir
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
    #: ntuple flow steering and an RSS table (netdevsim has neither)
    ntuple: bool = True
    rss: bool = True
    #: the most combined channels (0: as many as *queues*)
    channels_max: int = 0
    driver_name: str = "fbnic"
    netns: str | None = None
    tcp_data_split: TcpDataSplit = TcpDataSplit.DISABLED
    hds_thresh: int = 256
    ntuple_on: bool = False
    indir: list[int] = field(default_factory=list)
    #: an indirection table was set (the kernel's IFF_RXFH_CONFIGURED): kept across a
    #: channels change, which it then must fit; otherwise regenerated for the new count
    rss_configured: bool = False
    rules: dict[int, tuple[Flow, int]] = field(default_factory=dict)
    fail_on: str | None = None
    calls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.indir:
            self.indir = default_indir(128, self.queues)
        if not self.channels_max:
            self.channels_max = self.queues

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
        return Channels(ifname, 0, 0, 0, self.queues, 0, self.channels_max)

    def channels_set(
        self, ifname: str, *, combined: int | None = None, rx: int | None = None
    ) -> None:
        """The checks of the kernel's ethnl_set_channels and ethtool_check_max_channel
        (net/ethtool/channels.c, common.c, 7.3), in their order and words."""
        self._check(ifname, "channels_set")
        what = f"ethtool channels-set {ifname}"
        if rx:
            raise KernelError(
                errno.EINVAL, what, "requested channel count exceeds maximum", "channels.rx-count"
            )
        n = self.queues if combined is None else combined
        if n > self.channels_max:
            raise KernelError(
                errno.EINVAL,
                what,
                "requested channel count exceeds maximum",
                "channels.combined-count",
            )
        if n == 0:
            raise KernelError(
                errno.EINVAL,
                what,
                "requested channel counts would result in no RX or TX channel being configured",
                "channels.combined-count",
            )
        if self.rss_configured and n <= max(self.indir):
            raise KernelError(
                errno.EINVAL,
                what,
                "requested channel counts are too low for existing indirection table "
                f"({max(self.indir)})",
            )
        if any(n <= q for _flow, q in self.rules.values()):
            raise KernelError(
                errno.EINVAL,
                what,
                "requested channel counts are too low for existing ntuple filter settings",
            )
        self.queues = n
        if not self.rss_configured:
            self.indir = default_indir(len(self.indir), n)

    def features_get(self, ifname: str) -> Features:
        self._check(ifname, "features_get")
        on = {"rx-ntuple-filter"} if self.ntuple_on else set()
        hw = {"rx-ntuple-filter"} if self.capable and self.ntuple else set()
        return Features(ifname, frozenset(on), frozenset(on), frozenset(hw), frozenset())

    def features_set(self, ifname: str, changes: Mapping[str, bool]) -> None:
        self._check(ifname, "features_set")
        if not self.capable:
            raise self._unsupported("features-set")
        self.ntuple_on = changes.get("rx-ntuple-filter", self.ntuple_on)

    def rss_get(self, ifname: str) -> Rss:
        self._check(ifname, "rss_get")
        if not self.capable or not self.rss:
            raise self._unsupported("rss-get")
        return Rss(ifname, 0, 1, tuple(self.indir), b"")

    def rss_set(self, ifname: str, indir: Sequence[int]) -> None:
        self._check(ifname, "rss_set")
        if not self.capable or not self.rss:
            raise self._unsupported("rss-set")
        if not indir:  # an empty table: back to the default, no longer user-set
            self.indir = default_indir(len(self.indir), self.queues)
            self.rss_configured = False
            return
        self.indir = list(indir)
        self.rss_configured = True

    def can_set_rss(self) -> bool:
        return True

    def ntuple_insert(self, ifname: str, flow: Flow, queue: int) -> int:
        self._check(ifname, "ntuple_insert")
        if not self.capable or not self.ntuple or not self.ntuple_on:
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
