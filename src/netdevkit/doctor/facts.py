"""The I/O half of ``netdevkit doctor``: :func:`gather` reads what the verdicts need.

It returns plain :class:`Facts` (uname, kernel config, the netdev family, an
epoll ioctl probe, ethtool ioctls, /proc and /sys reads); turning them into
report lines is :func:`netdevkit.doctor.verdicts.evaluate`'s job. Nothing
here changes the system or prints.

Kernel facts relied on (see /work/shared/KERNEL.md and the kernel source):

- nlctrl lists only the *commands* a family registers (do/dump handlers).
  The netdev notifications (dev-add-ntf ... page-pool-change-ntf, ids 2-4 and
  6-8) are never in that list: they arrive on the multicast groups ``mgmt``
  and ``page-pool``, which is how their availability is told here.
- ``page-pool-stats-get`` is registered only with CONFIG_PAGE_POOL_STATS, so
  its absence from the op list is the probe for that option. ``bind-rx`` is
  registered on every 6.12+ kernel; without CONFIG_NET_DEVMEM it answers
  EOPNOTSUPP instead. Only the kernel config tells that option for sure.
- ``EPIOCGPARAMS`` on an epoll fd: ENOTTY before 6.9 (no ioctl handler),
  EOPNOTSUPP without CONFIG_NET_RX_BUSY_POLL, success otherwise.
- IRQ suspension (``irq-suspend-timeout``) and ``napi-set`` both arrived in
  6.13 (the IRQ suspension series was merged for 6.13, on top of the per-NAPI
  config storage of the same release); a NAPI dump that carries the
  ``irq-suspend-timeout`` attribute is the proof.
- ``net.core.busy_poll`` / ``busy_read`` are global sysctls (not per network
  namespace), read from the caller's /proc/sys.
- SIOCETHTOOL runs against the network namespace of the socket it is issued
  on, so a socket made inside :func:`netdevkit.netns.entered` reads driver
  and offload state of another namespace; sysfs shows only the namespace the
  reader's /sys was mounted in, so it is used for the caller's own namespace.
- pidfd_getfd is syscall 438 on x86_64 and the asm-generic table (arm64...).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .. import kver
from .._os import effective_caps
from ..busypoll.epoll import EPIOCGPARAMS
from ..errors import KernelError, NetdevkitError, NotFoundError
from ..ethtool.ioctl import ETHTOOL_GGRO, ETHTOOL_GTSO, driver_info, get_flag
from ..irq import irq_cpus
from ..netdev.client import Napi, Netdev, QStats, Queue
from ..netns import entered
from ..netns import exists as netns_exists

SYS_PIDFD_GETFD = 438

# ethtool ioctls (include/uapi/linux/ethtool.h, linux/sockios.h)
SIOCGIFFLAGS = 0x8913
IFF_LOOPBACK = 0x8
_IFREQ_SIZE = 40  # sizeof(struct ifreq) on 64-bit

ROOT_HINT = "run as root to check"


@dataclass(frozen=True, slots=True)
class IfaceFacts:
    """What could be read about one interface; ``*_error`` says why a field is None."""

    name: str
    netns: str | None
    ifindex: int | None = None
    #: set when nothing about the interface could be read (e.g. netns not enterable)
    error: str = ""
    driver: str | None = None
    driver_error: str = ""
    loopback: bool = False
    gro: bool | None = None
    tso: bool | None = None
    napis: tuple[Napi, ...] | None = None
    napi_error: str = ""
    queues: tuple[Queue, ...] | None = None
    qstats: tuple[QStats, ...] | None = None
    qstats_error: str = ""
    #: /sys/class/net/IF/threaded (inside the interface's namespace)
    sysfs_threaded: int | None = None
    #: (irq, CPUs it is affine to or None) of each NAPI that has an irq
    irqs: tuple[tuple[int, frozenset[int] | None], ...] = ()
    #: devmem requirement lines (name, met or None if unknown, detail), as ``devmem setup``
    #: checks them; None when they could not be read
    devmem: tuple[tuple[str, bool | None, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything :func:`evaluate` needs, read once by :func:`gather`."""

    release: str
    #: kernel config, CONFIG_X -> "y"/"m"/value; None when no config file was readable
    config: Mapping[str, str] | None = None
    config_source: str = ""
    config_error: str = ""
    family_version: int | None = None
    family_error: str = ""
    op_ids: frozenset[int] = frozenset()
    mcast_groups: frozenset[str] = frozenset()
    #: one NAPI of the caller's namespace (or the interface's), to see which attributes exist
    sample_napi: Napi | None = None
    #: errno of EPIOCGPARAMS on a fresh epoll fd (0: it worked)
    epoll_errno: int | None = None
    busy_poll: int | None = None
    busy_read: int | None = None
    cap_eff: int | None = None
    #: errno of pidfd_getfd(-1, 0, 0): EBADF means the syscall exists
    pidfd_getfd_errno: int | None = None
    ptrace_scope: int | None = None
    udmabuf: bool = False
    iface: IfaceFacts | None = None


def parse_release(release: str) -> tuple[int, int, int] | None:
    """``"6.18.44-fc-v595"`` -> ``(6, 18, 44)``; ``"6.9-rc1"`` -> ``(6, 9, 0)``; None if
    it does not start with a version (:func:`netdevkit.kver.parse`)."""
    try:
        return kver.parse(release)
    except ValueError:
        return None


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _probe_epoll() -> int:
    """errno of EPIOCGPARAMS on a fresh epoll fd; 0 when it worked."""
    ep = select.epoll()
    try:
        fcntl.ioctl(ep.fileno(), EPIOCGPARAMS, bytes(8))
    except OSError as err:
        return err.errno or errno.EIO
    finally:
        ep.close()
    return 0


def _probe_pidfd_getfd() -> int:
    """errno of ``pidfd_getfd(-1, 0, 0)``: EBADF if the syscall exists, ENOSYS if not."""
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD), -1, 0, 0)
    return 0 if rc >= 0 else ctypes.get_errno()


def _driver(ifname: str, netns: str | None) -> tuple[str | None, str]:
    """(driver name, why it is None): ethtool's driver info, else the caller's sysfs."""
    try:
        name = driver_info(ifname, netns)
        if name:
            return name, ""
        why = "ethtool driver info is empty"
    except KernelError as err:
        code = err.errno or 0
        why = f"ethtool driver info failed ({errno.errorcode.get(code, code)})"
    except NotFoundError:
        why = "ethtool driver info failed (ENODEV)"
    if netns is not None:
        return None, f"{why}, and the sysfs of namespace {netns!r} is not visible from here"
    try:
        link = os.readlink(f"/sys/class/net/{ifname}/device/driver")
    except OSError:
        return None, f"{why}; no /sys/class/net/{ifname}/device/driver (a virtual device?)"
    return os.path.basename(link), ""


def _flag(ifname: str, cmd: int, netns: str | None) -> bool | None:
    try:
        return get_flag(ifname, cmd, netns)
    except NetdevkitError:
        return None


def _is_loopback(sock: socket.socket, ifname: str) -> bool:
    try:
        ifr = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, ifname.encode().ljust(_IFREQ_SIZE, b"\0"))
    except OSError:
        return False
    return bool(struct.unpack_from("=H", ifr, 16)[0] & IFF_LOOPBACK)


@dataclass(frozen=True, slots=True)
class _NetdevLists:
    napis: tuple[Napi, ...] | None = None
    napi_error: str = ""
    queues: tuple[Queue, ...] | None = None
    qstats: tuple[QStats, ...] | None = None
    qstats_error: str = ""


def _qstats(nd: Netdev, ifindex: int) -> tuple[tuple[QStats, ...] | None, str]:
    if not nd.supports("qstats-get"):
        return None, "this kernel has no qstats-get (Linux 6.10+)"
    try:
        return tuple(nd.qstats_dump(ifindex)), ""
    except KernelError as err:
        # A dump filtered by ifindex answers EOPNOTSUPP for a driver without
        # queue stats ops (veth) [seen on 6.18]; unfiltered it just skips it.
        if err.errno == errno.EOPNOTSUPP:
            return (), ""
        return None, str(err)


def _netdev_lists(ifindex: int, netns: str | None) -> _NetdevLists:
    """The interface's NAPIs, queues and queue stats from the netdev family."""
    try:
        with Netdev.open(netns) as nd:
            napis = tuple(nd.napi_dump(ifindex)) if nd.supports("napi-get") else None
            queues = tuple(nd.queue_dump(ifindex)) if nd.supports("queue-get") else None
            qstats, qstats_error = _qstats(nd, ifindex)
    except NetdevkitError as err:
        return _NetdevLists(napi_error=str(err), qstats_error=str(err))
    napi_error = "" if napis is not None else "this kernel has no napi-get (Linux 6.9+)"
    return _NetdevLists(napis, napi_error, queues, qstats, qstats_error)


def _gather_iface(ifname: str, netns: str | None) -> IfaceFacts:
    """Read one interface. Raises NotFoundError when it does not exist."""
    try:
        with entered(netns):
            ifindex = socket.if_nametoindex(ifname)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    except OSError:
        where = f" in network namespace {netns!r}" if netns else ""
        raise NotFoundError(f"no interface named {ifname!r}{where}") from None
    except NotFoundError:
        raise
    except NetdevkitError as err:  # could not enter the namespace: needs CAP_SYS_ADMIN
        return IfaceFacts(ifname, netns, error=f"{ROOT_HINT}: {err}")
    with sock:
        loopback = _is_loopback(sock, ifname)
    driver, driver_error = _driver(ifname, netns)
    if driver is None and loopback:  # lo has no ethtool driver info
        driver, driver_error = "loopback", ""
    lists = _netdev_lists(ifindex, netns)
    return IfaceFacts(
        ifname,
        netns,
        ifindex,
        driver=driver,
        driver_error=driver_error,
        loopback=loopback,
        gro=_flag(ifname, ETHTOOL_GGRO, netns),
        tso=_flag(ifname, ETHTOOL_GTSO, netns),
        napis=lists.napis,
        napi_error=lists.napi_error,
        queues=lists.queues,
        qstats=lists.qstats,
        qstats_error=lists.qstats_error,
        sysfs_threaded=_sysfs_threaded(netns, ifname),
        irqs=tuple((n.irq, irq_cpus(n.irq)) for n in lists.napis or () if n.irq),
        devmem=_devmem_requirements(ifname, netns),
    )


def _devmem_requirements(
    ifname: str, netns: str | None
) -> tuple[tuple[str, bool | None, str], ...] | None:
    """The lines ``devmem setup`` would print (the queue API probe binds nothing)."""
    from ..devmem.nic import KernelNic
    from ..devmem.setup import requirements

    try:
        with KernelNic(netns) as nic:
            reqs, _facts = requirements(nic, ifname, None)
    except NetdevkitError:
        return None
    return tuple((r.name, r.ok, r.detail) for r in reqs if r.name != "driver")


def _sysfs_threaded(netns: str | None, ifname: str) -> int | None:
    """/sys/class/net/IF/threaded as seen inside *netns* (None if unreadable)."""
    from ..tuning import sysfs

    try:
        value = sysfs.read(netns, ifname).threaded
    except NetdevkitError:
        return None
    return None if value is None else int(value)


def gather(ifname: str | None = None, netns: str | None = None) -> Facts:
    """Read everything the report needs. Raises :class:`NotFoundError` for an
    unknown namespace or interface; every other failure ends up in the facts."""
    if netns is not None and not netns_exists(netns):
        raise NotFoundError(f"network namespace {netns!r} does not exist (see `ip netns list`)")
    iface = None if ifname is None else _gather_iface(ifname, netns)
    release = os.uname().release
    config, config_source, config_error = kver.read_config(release)
    family_version: int | None = None
    family_error = ""
    op_ids: frozenset[int] = frozenset()
    groups: frozenset[str] = frozenset()
    sample: Napi | None = None
    try:
        # The op list is global; the caller's own namespace needs no privileges.
        with Netdev.open() as nd:
            family_version = nd.info.version
            op_ids = nd.info.op_ids
            groups = frozenset(nd.info.mcast_groups)
            if nd.supports("napi-get"):
                sample = next(iter(nd.napi_dump()), None)
    except NetdevkitError as err:
        family_error = str(err)
    if iface is not None and iface.napis:
        sample = iface.napis[0]
    return Facts(
        release=release,
        config=None if config is None else MappingProxyType(config),
        config_source=config_source,
        config_error=config_error,
        family_version=family_version,
        family_error=family_error,
        op_ids=op_ids,
        mcast_groups=groups,
        sample_napi=sample,
        epoll_errno=_probe_epoll(),
        busy_poll=_read_int("/proc/sys/net/core/busy_poll"),
        busy_read=_read_int("/proc/sys/net/core/busy_read"),
        cap_eff=effective_caps(),
        pidfd_getfd_errno=_probe_pidfd_getfd(),
        ptrace_scope=_read_int("/proc/sys/kernel/yama/ptrace_scope"),
        udmabuf=os.path.exists("/dev/udmabuf"),
        iface=iface,
    )
