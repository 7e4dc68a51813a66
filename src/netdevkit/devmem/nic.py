"""What NIC preparation asks of a device, behind one interface: the real kernel or a fake.

:class:`Nic` is the set of ethtool and netdev calls :mod:`.setup` makes;
:class:`KernelNic` makes them (ethtool netlink, the ntuple ioctl, a netdev
probe), :class:`~netdevkit.devmem.fakenic.FakeNic` keeps them in memory so the
step logic and the journal can be tested without a capable NIC.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from typing import Protocol

from ..errors import KernelError, NetdevkitError
from ..ethtool import ioctl
from ..ethtool.client import Channels, Ethtool, Features, Rings, Rss
from ..ethtool.family import TcpDataSplit
from ..ethtool.ioctl import Flow
from ..netdev.client import Netdev, ifindex_of


class Nic(Protocol):
    """The device calls of NIC preparation, for one network namespace."""

    netns: str | None

    def ifindex(self, ifname: str) -> int: ...
    def driver(self, ifname: str) -> str | None: ...
    def queue_api(self, ifname: str) -> bool | None: ...
    def rings_get(self, ifname: str) -> Rings: ...
    def rings_set(
        self, ifname: str, *, tcp_data_split: TcpDataSplit | None, hds_thresh: int | None
    ) -> None: ...
    def channels_get(self, ifname: str) -> Channels: ...
    def channels_set(
        self, ifname: str, *, combined: int | None = None, rx: int | None = None
    ) -> None: ...
    def features_get(self, ifname: str) -> Features: ...
    def features_set(self, ifname: str, changes: Mapping[str, bool]) -> None: ...
    def rss_get(self, ifname: str) -> Rss: ...
    def rss_set(self, ifname: str, indir: Sequence[int]) -> None: ...
    def can_set_rss(self) -> bool: ...
    def ntuple_insert(self, ifname: str, flow: Flow, queue: int) -> int: ...
    def ntuple_delete(self, ifname: str, location: int) -> None: ...
    def ntuple_exists(self, ifname: str, location: int) -> bool: ...
    def ntuple_find(self, ifname: str, flow: Flow, queue: int) -> int | None: ...


class KernelNic:
    """:class:`Nic` on the running kernel (namespace *netns*)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._et: Ethtool | None = None

    def _ethtool(self) -> Ethtool:
        if self._et is None:
            self._et = Ethtool.open(self.netns)
        return self._et

    def close(self) -> None:
        if self._et is not None:
            self._et.close()
            self._et = None

    def __enter__(self) -> KernelNic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ifindex(self, ifname: str) -> int:
        return ifindex_of(ifname, self.netns)

    def driver(self, ifname: str) -> str | None:
        return ioctl.driver_name(ifname, self.netns)

    def queue_api(self, ifname: str) -> bool | None:
        """Probe with a bind-rx of a memfd (never a dmabuf, so nothing is ever bound).

        The kernel checks the driver's queue management API before it looks at
        the fd: EOPNOTSUPP pointing at the ifindex means "no queue API"; any
        other refusal means the driver got past that check. None: cannot tell
        (no CAP_NET_ADMIN, or a kernel without bind-rx).
        """
        memfd = os.memfd_create("netdevkit-queue-api-probe")
        try:
            with Netdev.open(self.netns) as nd:
                if not nd.supports("bind-rx"):
                    return None
                nd.bind_rx(self.ifindex(ifname), memfd, [0])
        except KernelError as err:
            if err.errno == errno.EOPNOTSUPP and err.attr_path == "dmabuf.ifindex":
                return False
            if err.errno in (errno.EPERM, errno.EACCES):
                return None
            return True
        except NetdevkitError:
            return None
        finally:
            os.close(memfd)
        return True  # pragma: no cover - a memfd is never a dmabuf

    def rings_get(self, ifname: str) -> Rings:
        return self._ethtool().rings_get(ifname)

    def rings_set(
        self, ifname: str, *, tcp_data_split: TcpDataSplit | None, hds_thresh: int | None
    ) -> None:
        self._ethtool().rings_set(ifname, tcp_data_split=tcp_data_split, hds_thresh=hds_thresh)

    def channels_get(self, ifname: str) -> Channels:
        return self._ethtool().channels_get(ifname)

    def channels_set(
        self, ifname: str, *, combined: int | None = None, rx: int | None = None
    ) -> None:
        self._ethtool().channels_set(ifname, combined=combined, rx=rx)

    def features_get(self, ifname: str) -> Features:
        return self._ethtool().features_get(ifname)

    def features_set(self, ifname: str, changes: Mapping[str, bool]) -> None:
        self._ethtool().features_set(ifname, changes)

    def rss_get(self, ifname: str) -> Rss:
        return self._ethtool().rss_get(ifname)

    def rss_set(self, ifname: str, indir: Sequence[int]) -> None:
        """Set the default context's table; ``[]`` puts the driver's default back (and the
        kernel no longer counts the table as set by the user)."""
        if self._ethtool().supports("rss-set"):
            self._ethtool().rss_set(ifname, indir)
        else:  # kernels before 6.17: the ioctl
            ioctl.rxfh_indir_set(ifname, indir, self.netns)

    def can_set_rss(self) -> bool:
        return True  # netlink rss-set (6.17+) or ETHTOOL_SRXFHINDIR before it

    def ntuple_insert(self, ifname: str, flow: Flow, queue: int) -> int:
        return ioctl.ntuple_insert(ifname, flow, queue, netns=self.netns)

    def ntuple_delete(self, ifname: str, location: int) -> None:
        ioctl.ntuple_delete(ifname, location, netns=self.netns)

    def ntuple_exists(self, ifname: str, location: int) -> bool:
        return ioctl.ntuple_exists(ifname, location, netns=self.netns)

    def ntuple_find(self, ifname: str, flow: Flow, queue: int) -> int | None:
        return ioctl.ntuple_find(ifname, flow, queue, netns=self.netns)
