"""``netdevkit doctor``: is this machine (and this interface) ready for the 2024 features?

Two halves, like the netlink codec and its socket:

- :func:`gather` (:mod:`.facts`) does all the I/O (uname, kernel config, the
  netdev family, an epoll ioctl probe, ethtool ioctls, /proc and /sys reads)
  and returns plain :class:`Facts`;
- :func:`evaluate` (:mod:`.verdicts`) turns facts into :class:`Check` lines
  (:mod:`.checks`) without touching the system, so every verdict can be
  tested with hand-made facts.

:func:`run_checks` is both. Nothing here changes the system or prints.
"""

from __future__ import annotations

from .._drivers import DEVMEM_DRIVERS as DEVMEM_DRIVERS
from .._drivers import NO_DEVMEM_DRIVERS as NO_DEVMEM_DRIVERS
from .._os import CAP_NET_ADMIN as CAP_NET_ADMIN
from .._os import CAP_SYS_ADMIN as CAP_SYS_ADMIN
from .._os import CAP_SYS_PTRACE as CAP_SYS_PTRACE
from ..ethtool.ioctl import ETHTOOL_GDRVINFO as ETHTOOL_GDRVINFO
from ..ethtool.ioctl import ETHTOOL_GGRO as ETHTOOL_GGRO
from ..ethtool.ioctl import ETHTOOL_GTSO as ETHTOOL_GTSO
from ..ethtool.ioctl import SIOCETHTOOL as SIOCETHTOOL
from ..kver import parse_config
from .checks import ATTACH as ATTACH
from .checks import BUSY_POLL as BUSY_POLL
from .checks import DEVMEM as DEVMEM
from .checks import FAMILY as FAMILY
from .checks import IRQ_SUSPEND as IRQ_SUSPEND
from .checks import KERNEL as KERNEL
from .checks import MIN_VERSION as MIN_VERSION
from .checks import NAPI as NAPI
from .checks import PER_NAPI as PER_NAPI
from .checks import PP_STATS as PP_STATS
from .checks import PRIVILEGES as PRIVILEGES
from .checks import QSTATS as QSTATS
from .checks import QUEUE_API as QUEUE_API
from .checks import Check, Status, report, summary
from .checks import Version as Version
from .facts import IFF_LOOPBACK as IFF_LOOPBACK
from .facts import ROOT_HINT as ROOT_HINT
from .facts import SIOCGIFFLAGS as SIOCGIFFLAGS
from .facts import SYS_PIDFD_GETFD as SYS_PIDFD_GETFD
from .facts import Facts, IfaceFacts, gather, parse_release
from .verdicts import evaluate, matching_presets

__all__ = [
    "Check",
    "Facts",
    "IfaceFacts",
    "Status",
    "evaluate",
    "gather",
    "matching_presets",
    "parse_config",
    "parse_release",
    "report",
    "run_checks",
    "summary",
]


def run_checks(ifname: str | None = None, netns: str | None = None) -> list[Check]:
    """The readiness report for this machine, and for *ifname* (in *netns*) if given.

    Raises :class:`~netdevkit.errors.NotFoundError` when the namespace or the
    interface does not exist; anything else that cannot be read becomes a WARN
    line saying why (``run as root to check`` where privileges are missing).
    """
    return evaluate(gather(ifname, netns))
