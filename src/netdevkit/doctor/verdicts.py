"""``netdevkit doctor``: is this machine (and this interface) ready for the 2024 features?

Two halves, like the netlink codec and its socket:

- :func:`gather` does all the I/O (uname, kernel config, the netdev family,
  an epoll ioctl probe, ethtool ioctls, /proc and /sys reads) and returns
  plain :class:`Facts`;
- :func:`evaluate` turns facts into :class:`Check` lines without touching the
  system, so every verdict can be tested with hand-made facts.

:func:`run_checks` is both. Nothing here changes the system or prints.

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
import enum
import errno
import fcntl
import gzip
import os
import re
import select
import socket
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .busypoll.epoll import EPIOCGPARAMS
from .errors import KernelError, NetdevkitError, NotFoundError
from .netdev.client import Napi, Netdev, QStats, Queue
from .netdev.family import NETDEV, NapiThreaded, QueueType
from .netns import entered
from .netns import exists as netns_exists
from .tuning.presets import PRESETS, Preset
from .units import format_duration_ns

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


class Status(enum.Enum):
    OK = "OK"
    WARN = "WARN"
    MISSING = "MISSING"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: a *feature*, what was checked, the verdict, why, what to do."""

    feature: str
    name: str
    status: Status
    detail: str
    remedy: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "feature": self.feature,
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "remedy": self.remedy,
        }


# Feature names, in report order.
KERNEL = "kernel"
FAMILY = "netdev family"
NAPI = "NAPI introspection"
BUSY_POLL = "epoll busy poll"
QSTATS = "queue stats"
QUEUE_API = "queue API"
PER_NAPI = "per-NAPI config"
IRQ_SUSPEND = "IRQ suspension"
DEVMEM = "Device Memory TCP"
PP_STATS = "page-pool stats"
PRIVILEGES = "privileges"
ATTACH = "attach"

Version = tuple[int, int]
#: First mainline release of each feature that netdevkit relies on.
MIN_VERSION: Mapping[str, Version] = MappingProxyType(
    {
        FAMILY: (6, 9),
        NAPI: (6, 9),
        BUSY_POLL: (6, 9),
        QSTATS: (6, 10),
        QUEUE_API: (6, 10),
        DEVMEM: (6, 12),
        "devmem-tx": (6, 16),
        PER_NAPI: (6, 13),
        IRQ_SUSPEND: (6, 13),
    }
)

#: Drivers (ethtool driver names) with the queue management API
#: (``netdev_queue_mgmt_ops``) and unreadable-netmem page pools as of Linux 6.18:
#: the ones Device Memory TCP can bind to.
DEVMEM_DRIVERS = frozenset({"gve", "mlx5_core", "bnxt_en", "fbnic", "idpf"})
#: Drivers known to lack both (KERNEL.md: they cannot carry devmem).
NO_DEVMEM_DRIVERS = frozenset({"veth", "virtio_net", "loopback", "dummy", "bridge", "tun"})

CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN = 12, 19, 21
SYS_PIDFD_GETFD = 438

# ethtool ioctls (include/uapi/linux/ethtool.h, linux/sockios.h)
SIOCETHTOOL = 0x8946
SIOCGIFFLAGS = 0x8913
IFF_LOOPBACK = 0x8
ETHTOOL_GDRVINFO = 0x03
ETHTOOL_GTSO = 0x1E
ETHTOOL_GGRO = 0x2B
# struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32],
# erom_version[32], reserved2[12], n_priv_flags, n_stats, testinfo_len, eedump_len,
# regdump_len
_DRVINFO = struct.Struct("=I32s32s32s32s32s12s5I")
_ETHTOOL_VALUE = struct.Struct("=II")  # struct ethtool_value {cmd, data}
_IFREQ_SIZE = 40  # sizeof(struct ifreq) on 64-bit

ROOT_HINT = "run as root to check"


# --------------------------------------------------------------------------- facts


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
    #: /sys/class/net/IF/threaded (own namespace only)
    sysfs_threaded: int | None = None


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
    """``"6.18.44-fc-v595"`` -> ``(6, 18, 44)``; ``"6.9-rc1"`` -> ``(6, 9, 0)``."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if m is None:
        return None
    return int(m[1]), int(m[2]), int(m[3] or 0)


def parse_config(text: str) -> dict[str, str]:
    """A kernel .config as ``{"CONFIG_X": "y"}``; ``# CONFIG_X is not set`` is left out."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


def _read_config(release: str) -> tuple[dict[str, str] | None, str, str]:
    """(config, source path, error); error is set when a config exists but cannot be read."""
    error = ""
    for path in ("/proc/config.gz", f"/boot/config-{release}"):
        try:
            if path.endswith(".gz"):
                with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                    return parse_config(f.read()), path, ""
            with open(path, encoding="utf-8", errors="replace") as f:
                return parse_config(f.read()), path, ""
        except FileNotFoundError:
            continue
        except PermissionError:
            error = f"{path} is not readable: {ROOT_HINT}"
        except OSError as err:
            error = f"{path}: {err.strerror}"
    return None, "", error


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cap_eff() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
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


def _ethtool(sock: socket.socket, ifname: str, request: bytes) -> bytes:
    """One SIOCETHTOOL call: *request* is the ethtool struct, returned as filled in."""
    buf = ctypes.create_string_buffer(request, len(request))
    ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(buf)).ljust(_IFREQ_SIZE, b"\0")
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    return buf.raw


def _ethtool_flag(sock: socket.socket, ifname: str, cmd: int) -> bool | None:
    try:
        raw = _ethtool(sock, ifname, _ETHTOOL_VALUE.pack(cmd, 0))
    except OSError:
        return None
    return bool(_ETHTOOL_VALUE.unpack(raw)[1])


def _driver(sock: socket.socket, ifname: str, netns: str | None) -> tuple[str | None, str]:
    try:
        raw = _ethtool(sock, ifname, _DRVINFO.pack(ETHTOOL_GDRVINFO, *[b""] * 6, *[0] * 5))
        name = _DRVINFO.unpack(raw)[1].split(b"\0", 1)[0].decode("ascii", "replace")
        if name:
            return name, ""
        why = "ethtool driver info is empty"
    except OSError as err:
        why = f"ethtool driver info failed ({errno.errorcode.get(err.errno or 0, err.errno)})"
    if netns is not None:
        return None, f"{why}, and the sysfs of namespace {netns!r} is not visible from here"
    try:
        link = os.readlink(f"/sys/class/net/{ifname}/device/driver")
    except OSError:
        return None, f"{why}; no /sys/class/net/{ifname}/device/driver (a virtual device?)"
    return os.path.basename(link), ""


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
        driver, driver_error = _driver(sock, ifname, netns)
        try:
            ifr = fcntl.ioctl(
                sock.fileno(), SIOCGIFFLAGS, ifname.encode().ljust(_IFREQ_SIZE, b"\0")
            )
            loopback = bool(struct.unpack_from("=H", ifr, 16)[0] & IFF_LOOPBACK)
        except OSError:
            loopback = False
        if driver is None and loopback:  # lo has no ethtool driver info
            driver, driver_error = "loopback", ""
        gro = _ethtool_flag(sock, ifname, ETHTOOL_GGRO)
        tso = _ethtool_flag(sock, ifname, ETHTOOL_GTSO)
    napis: tuple[Napi, ...] | None = None
    queues: tuple[Queue, ...] | None = None
    qstats: tuple[QStats, ...] | None = None
    napi_error = qstats_error = ""
    try:
        with Netdev.open(netns) as nd:
            if nd.supports("napi-get"):
                napis = tuple(nd.napi_dump(ifindex))
            else:
                napi_error = "this kernel has no napi-get (Linux 6.9+)"
            if nd.supports("queue-get"):
                queues = tuple(nd.queue_dump(ifindex))
            if nd.supports("qstats-get"):
                try:
                    qstats = tuple(nd.qstats_dump(ifindex))
                except KernelError as err:
                    # A dump filtered by ifindex answers EOPNOTSUPP for a driver without
                    # queue stats ops (veth) [seen on 6.18]; unfiltered it just skips it.
                    if err.errno == errno.EOPNOTSUPP:
                        qstats = ()
                    else:
                        qstats_error = str(err)
            else:
                qstats_error = "this kernel has no qstats-get (Linux 6.10+)"
    except NetdevkitError as err:
        napi_error = qstats_error = str(err)
    threaded = None if netns is not None else _read_int(f"/sys/class/net/{ifname}/threaded")
    return IfaceFacts(
        ifname,
        netns,
        ifindex,
        driver=driver,
        driver_error=driver_error,
        loopback=loopback,
        gro=gro,
        tso=tso,
        napis=napis,
        napi_error=napi_error,
        queues=queues,
        qstats=qstats,
        qstats_error=qstats_error,
        sysfs_threaded=threaded,
    )


def gather(ifname: str | None = None, netns: str | None = None) -> Facts:
    """Read everything the report needs. Raises :class:`NotFoundError` for an
    unknown namespace or interface; every other failure ends up in the facts."""
    if netns is not None and not netns_exists(netns):
        raise NotFoundError(f"network namespace {netns!r} does not exist (see `ip netns list`)")
    iface = None if ifname is None else _gather_iface(ifname, netns)
    release = os.uname().release
    config, config_source, config_error = _read_config(release)
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
        cap_eff=_cap_eff(),
        pidfd_getfd_errno=_probe_pidfd_getfd(),
        ptrace_scope=_read_int("/proc/sys/kernel/yama/ptrace_scope"),
        udmabuf=os.path.exists("/dev/udmabuf"),
        iface=iface,
    )


def run_checks(ifname: str | None = None, netns: str | None = None) -> list[Check]:
    """The readiness report for this machine, and for *ifname* (in *netns*) if given.

    Raises :class:`~netdevkit.errors.NotFoundError` when the namespace or the
    interface does not exist; anything else that cannot be read becomes a WARN
    line saying why (``run as root to check`` where privileges are missing).
    """
    return evaluate(gather(ifname, netns))


def summary(checks: Iterable[Check]) -> dict[str, int]:
    counts = dict.fromkeys((s.value for s in Status), 0)
    for c in checks:
        counts[c.status.value] += 1
    return counts


def report(
    checks: list[Check], ifname: str | None = None, netns: str | None = None
) -> dict[str, Any]:
    """The JSON shape of ``netdevkit doctor -j``."""
    return {
        "release": os.uname().release,
        "ifname": ifname,
        "netns": netns,
        "summary": summary(checks),
        "checks": [c.as_dict() for c in checks],
    }


# --------------------------------------------------------------------------- verdicts


def _vstr(v: Version) -> str:
    return f"{v[0]}.{v[1]}"


class _Report:
    """Collects checks; small helpers keep each verdict to a few lines."""

    def __init__(self, facts: Facts) -> None:
        self.f = facts
        self.checks: list[Check] = []
        #: the feature the lines being added belong to; set by :func:`evaluate`
        self.feature = ""
        v = parse_release(facts.release)
        self.version: Version | None = None if v is None else (v[0], v[1])

    def add(self, name: str, status: Status, detail: str, remedy: str = "") -> None:
        self.checks.append(Check(self.feature, name, status, detail, remedy))

    def ok(self, name: str, detail: str, remedy: str = "") -> None:
        self.add(name, Status.OK, detail, remedy)

    def warn(self, name: str, detail: str, remedy: str = "") -> None:
        self.add(name, Status.WARN, detail, remedy)

    def missing(self, name: str, detail: str, remedy: str = "") -> None:
        self.add(name, Status.MISSING, detail, remedy)

    def has_op(self, name: str) -> bool:
        return NETDEV.ops_by_name[name].id in self.f.op_ids

    def config(self, option: str) -> str | None:
        """ "y"/"m"/value, "" when not set, None when no config file was read."""
        if self.f.config is None:
            return None
        return self.f.config.get(option, "")

    def kernel(self, key: str | None = None, ops: tuple[str, ...] = (), label: str = "") -> None:
        """One "kernel >= X" line; the registered *ops* are the proof (backports count)."""
        need = MIN_VERSION[key or self.feature]
        have = self.version
        missing_ops = [op for op in ops if not self.has_op(op)]
        oplist = f"; {', '.join(ops)} registered" if ops and not missing_ops else ""
        name = f"kernel >= {_vstr(need)}{label}"
        upgrade = f"upgrade to Linux {_vstr(need)} or newer"
        if have is None:
            status = Status.WARN if missing_ops or not ops else Status.OK
            self.add(name, status, f"cannot parse release {self.f.release!r}{oplist}")
        elif have >= need and not missing_ops:
            self.add(name, Status.OK, f"Linux {self.f.release}{oplist}")
        elif have >= need:
            self.add(
                name,
                Status.MISSING,
                f"Linux {self.f.release}, but the netdev family lacks {', '.join(missing_ops)}",
                self.f.family_error or "a custom or vendor kernel without this part",
            )
        elif ops and not missing_ops:
            self.add(
                name,
                Status.OK,
                f"Linux {self.f.release} is older than {_vstr(need)}, but {', '.join(ops)} "
                "is registered (backported)",
            )
        else:
            self.add(name, Status.MISSING, f"Linux {self.f.release}", upgrade)


def _fmt_settings(n: Napi) -> str:
    parts = [
        f"defer-hard-irqs {n.defer_hard_irqs}",
        f"gro-flush-timeout {format_duration_ns(n.gro_flush_timeout)}",
        f"irq-suspend-timeout {format_duration_ns(n.irq_suspend_timeout)}",
    ]
    if n.threaded is not None:
        parts.append(f"threaded {'on' if n.threaded == NapiThreaded.ENABLED else 'off'}")
    return ", ".join(parts)


def _settings_key(n: Napi) -> tuple[int | None, int | None, int | None, int | None]:
    return (
        n.defer_hard_irqs,
        n.gro_flush_timeout,
        n.irq_suspend_timeout,
        None if n.threaded is None else int(n.threaded),
    )


def matching_presets(n: Napi) -> list[Preset]:
    """The presets whose NAPI half equals *n*'s settings (threaded only if reported)."""
    out = []
    for p in PRESETS.values():
        s = p.napi
        if (s.defer_hard_irqs, s.gro_flush_timeout, s.irq_suspend_timeout) != (
            n.defer_hard_irqs,
            n.gro_flush_timeout,
            n.irq_suspend_timeout,
        ):
            continue
        threaded = n.threaded == NapiThreaded.ENABLED
        if n.threaded is not None and s.threaded is not None and bool(s.threaded) != threaded:
            continue
        out.append(p)
    return out


def _epoll_half(p: Preset) -> str:
    e = p.epoll
    if not e.enabled:
        return "no epoll busy polling"
    prefer = ", prefer_busy_poll" if e.prefer_busy_poll else ""
    return f"epoll busy_poll_usecs {e.busy_poll_usecs}, budget {e.busy_poll_budget}{prefer}"


def _count(napis: tuple[Napi, ...] | list[Napi]) -> str:
    return "its NAPI" if len(napis) == 1 else f"all {len(napis)} NAPIs"


def _ids(napis: Iterable[Napi]) -> str:
    ids = [str(n.id) for n in napis]
    return ", ".join(ids[:8]) + (f" ... ({len(ids)} in all)" if len(ids) > 8 else "")


def _check_kernel(r: _Report) -> None:
    f = r.f
    if r.version is None:
        r.warn("release", f"cannot parse {f.release!r}")
    else:
        r.ok("release", f"Linux {f.release}")
    if f.config is not None:
        r.ok("config", f"read from {f.config_source}")
    elif f.config_error:
        r.warn("config", f.config_error + "; options inferred by probing")
    else:
        r.warn(
            "config",
            f"no /proc/config.gz or /boot/config-{f.release}; options inferred by probing",
            "modprobe configs (CONFIG_IKCONFIG_PROC) to expose /proc/config.gz",
        )


def _check_family(r: _Report) -> None:
    f = r.f
    r.kernel()
    if f.family_version is None:
        r.missing(
            "family",
            f.family_error or "no 'netdev' generic netlink family",
            "upgrade to Linux 6.9 or newer",
        )
        return
    r.ok("family", f"'netdev' version {f.family_version} is registered")
    have: list[str] = []
    lacks: list[str] = []
    for op in NETDEV.operations:
        if op.notify:
            group = "page-pool" if op.name.startswith("page-pool") else "mgmt"
            ok = group in f.mcast_groups
        else:
            ok = op.id in f.op_ids
        (have if ok else lacks).append(f"{op.id} {op.name}")
    detail = "supports " + ", ".join(have)
    if lacks:
        detail += "; lacks " + ", ".join(lacks)
    r.ok(
        "commands", detail + " (notifications count as supported when their multicast group exists)"
    )


def _check_busy_poll(r: _Report) -> None:
    f = r.f
    r.kernel()
    cfg = r.config("CONFIG_NET_RX_BUSY_POLL")
    from_cfg = "" if cfg is None else f" (config: {cfg or 'not set'})"
    e = f.epoll_errno
    if e == 0:
        r.ok("CONFIG_NET_RX_BUSY_POLL", "EPIOCGPARAMS works on a fresh epoll fd" + from_cfg)
    elif e == errno.EOPNOTSUPP:
        r.missing(
            "CONFIG_NET_RX_BUSY_POLL",
            "EPIOCGPARAMS answers EOPNOTSUPP: the kernel was built without busy polling" + from_cfg,
            "use a kernel built with CONFIG_NET_RX_BUSY_POLL=y",
        )
    elif e == errno.ENOTTY:
        r.missing(
            "CONFIG_NET_RX_BUSY_POLL",
            "EPIOCGPARAMS answers ENOTTY: epoll has no busy-poll ioctls before Linux 6.9"
            + from_cfg,
            "upgrade to Linux 6.9 or newer",
        )
    else:
        name = errno.errorcode.get(e or 0, str(e))
        r.warn("CONFIG_NET_RX_BUSY_POLL", f"EPIOCGPARAMS: {name}{from_cfg}")
    for knob, value in (("busy_poll", f.busy_poll), ("busy_read", f.busy_read)):
        name = f"net.core.{knob}"
        if value is None:
            r.warn(name, f"/proc/sys/net/core/{knob} is not readable")
        elif value == 0:
            who = "poll()/select()" if knob == "busy_poll" else "blocking socket reads"
            r.ok(
                name,
                f"0 (global, all namespaces): {who} do not busy poll by default; per-epoll "
                "parameters and SO_BUSY_POLL decide",
            )
        else:
            what = "poll()/select()" if knob == "busy_poll" else "blocking reads"
            r.warn(
                name,
                f"{value} us (global, all namespaces): every socket busy polls on {what}, "
                "burning CPU outside the applications you tune",
                f"sysctl -w net.core.{knob}=0 and set busy polling per epoll context instead",
            )


def _veth_remedy(iface: IfaceFacts) -> str:
    return (
        f"veth has NAPI only while up with GRO on: ethtool -K {iface.name} gro on; and on "
        "the sending peer ethtool -K PEER tso off gso off so its packets take the NAPI path"
    )


def _napi_set(iface: IfaceFacts, args: str) -> str:
    """The ``netdevkit napi set`` command line for every NAPI of *iface*."""
    netns = f" --netns {iface.netns}" if iface.netns else ""
    return f"netdevkit napi set{netns} --ifname {iface.name} {args}"


def _no_napi(iface: IfaceFacts) -> tuple[str, str]:
    """(detail, remedy) for an interface without NAPI instances."""
    if iface.driver == "veth":
        gro = "unknown" if iface.gro is None else ("on" if iface.gro else "off")
        return f"none (veth, GRO {gro})", _veth_remedy(iface)
    if iface.loopback:
        return (
            "none: loopback has no NAPI; its traffic never carries NAPI ids",
            "use a NIC or a NAPI-enabled veth pair (netdevkit testbed)",
        )
    return (
        f"none (driver {iface.driver or 'unknown'})",
        "bring the interface up; a driver without NAPI cannot be tuned per NAPI",
    )


def _check_napi(r: _Report) -> None:
    r.kernel(ops=("napi-get", "queue-get"))
    iface = r.f.iface
    if iface is None:
        return
    instances, ids = f"{iface.name}: NAPI instances", f"{iface.name}: NAPI ids on sockets"
    if iface.error or iface.napis is None:
        r.warn(instances, iface.error or iface.napi_error)
        r.warn(ids, iface.error or iface.napi_error)
        return
    if not iface.napis:
        detail, remedy = _no_napi(iface)
        r.missing(instances, detail, remedy)
        r.missing(
            ids, "no NAPI: SO_INCOMING_NAPI_ID reads 0, busy polling has nothing to poll", remedy
        )
        return
    r.ok(instances, f"{len(iface.napis)} (ids {_ids(iface.napis)})")
    rxq = [q for q in iface.queues or () if q.type == QueueType.RX]
    linked = [q for q in rxq if q.napi_id]
    if linked:
        r.ok(ids, f"{len(linked)} of {len(rxq)} RX queues linked to NAPI ids")
    elif iface.driver == "veth":
        tso = (
            ""
            if iface.tso is False
            else (
                f"for replies to carry ids too: ethtool -K {iface.name} tso off gso off "
                f"(TSO is {'on' if iface.tso else 'unknown'})"
            )
        )
        r.ok(
            ids,
            "veth links no queue to a NAPI, but its NAPIs exist: TCP/UDP from a peer with "
            "TSO/GSO off arrives with a NAPI id",
            tso,
        )
    else:
        r.warn(ids, "NAPIs exist but no RX queue reports a NAPI id; SO_INCOMING_NAPI_ID may read 0")
    _check_threaded(r, iface)


def _check_threaded(r: _Report, iface: IfaceFacts) -> None:
    name = f"{iface.name}: threaded NAPI"
    napis = iface.napis or ()
    if not napis:
        return
    reported = [n for n in napis if n.threaded is not None]
    if reported:
        on = [n for n in reported if n.threaded == NapiThreaded.ENABLED]
    else:  # older kernels: a kthread pid is reported only while threaded
        on = [n for n in napis if n.pid]
        if not on and iface.sysfs_threaded:
            on = list(napis)
    if on:
        pids = ", ".join(str(n.pid) for n in on if n.pid)
        r.ok(
            name,
            f"on for {len(on)} of {len(napis)} NAPIs (kthreads {pids or 'unknown'}); "
            "busy polling and threaded NAPI compete for the same NAPI",
        )
    else:
        r.ok(
            name,
            f"off for {_count(napis)} (polled in softirq)",
            _napi_set(iface, "--threaded on") + " for a kthread per NAPI",
        )


def _check_qstats(r: _Report) -> None:
    r.kernel(ops=("qstats-get",))
    iface = r.f.iface
    if iface is None:
        return
    name = f"{iface.name}: driver statistics"
    if iface.error or iface.qstats is None:
        r.warn(name, iface.error or iface.qstats_error)
    elif iface.qstats:
        counters = sorted({c for row in iface.qstats for c in row.counters})
        more = ", ..." if len(counters) > 6 else ""
        r.ok(name, f"{len(counters)} counters: {', '.join(counters[:6])}{more}")
    else:
        r.warn(
            name,
            f"driver {iface.driver or '?'} reports no queue statistics (qstats-get: EOPNOTSUPP)",
            "use ethtool -S for driver-private counters",
        )


def _driver_line(r: _Report, iface: IfaceFacts, what: str, remedy_missing: str) -> None:
    name = f"{iface.name}: driver"
    if iface.error:
        r.warn(name, iface.error)
    elif iface.driver is None:
        r.warn(name, f"driver unknown: {iface.driver_error}")
    elif iface.driver in DEVMEM_DRIVERS:
        r.ok(name, f"{iface.driver} {what}")
    elif iface.driver in NO_DEVMEM_DRIVERS or iface.loopback:
        r.missing(name, f"{iface.driver} has no {what}", remedy_missing)
    else:
        r.warn(
            name,
            f"{iface.driver} is not known to have {what} (known: "
            f"{', '.join(sorted(DEVMEM_DRIVERS))})",
            "try it: bind-rx answers EOPNOTSUPP when the driver cannot",
        )


def _check_queue_api(r: _Report) -> None:
    r.kernel()
    if r.f.iface is not None:
        _driver_line(
            r,
            r.f.iface,
            "queue management API (netdev_queue_mgmt_ops)",
            "devmem and io_uring zero-copy receive need a NIC such as gve, mlx5, bnxt, "
            "fbnic or idpf",
        )


def _check_per_napi(r: _Report) -> None:
    r.kernel(ops=("napi-set",))
    iface = r.f.iface
    if iface is None:
        return
    name = f"{iface.name}: settings in effect"
    napis = iface.napis
    if iface.error or napis is None:
        r.warn(name, iface.error or iface.napi_error)
        return
    if not napis:
        r.missing(name, "no NAPI to configure")
        return
    if napis[0].defer_hard_irqs is None:
        r.warn(
            name,
            "the kernel does not report per-NAPI settings (Linux 6.13+)",
            "use the device-wide /sys/class/net/IF/{napi_defer_hard_irqs,gro_flush_timeout}",
        )
        return
    groups: dict[tuple[int | None, ...], list[Napi]] = {}
    for n in napis:
        groups.setdefault(_settings_key(n), []).append(n)
    if len(groups) > 1:
        parts = []
        for members in groups.values():
            names = "/".join(p.name for p in matching_presets(members[0])) or "custom"
            parts.append(f"ids {_ids(members)}: {_fmt_settings(members[0])} ({names})")
        r.warn(
            name,
            f"NAPIs of {iface.name} differ: " + "; ".join(parts),
            f"a half-applied change? {_napi_set(iface, '--preset NAME')} makes them uniform",
        )
        return
    n = napis[0]
    every = "on " + _count(napis)
    presets = matching_presets(n)
    defer, gro, suspend = n.defer_hard_irqs or 0, n.gro_flush_timeout or 0, n.irq_suspend_timeout
    if suspend and not (defer and gro):
        r.warn(
            name,
            f"{_fmt_settings(n)} {every}: irq-suspend-timeout needs defer-hard-irqs and "
            "gro-flush-timeout as the fallback when the application stops polling",
            _napi_set(iface, "--preset suspend"),
        )
    elif defer and not gro:
        r.warn(
            name,
            f"{_fmt_settings(n)} {every}: defer-hard-irqs has no effect without gro-flush-timeout",
            _napi_set(iface, "--gro-flush-timeout 200us") + " (or --preset defer/napibusy)",
        )
    elif presets:
        p = presets[0]
        r.ok(name, f"{_fmt_settings(n)} {every} = preset '{p.name}' (expects {_epoll_half(p)})")
    else:
        r.ok(name, f"{_fmt_settings(n)} {every} (custom, no preset)")


def _check_irq_suspend(r: _Report) -> None:
    r.kernel(ops=("napi-set",))
    sample = r.f.sample_napi
    name = "irq-suspend-timeout"
    if sample is None:
        r.warn(
            name,
            "no NAPI in this namespace to see whether the kernel reports irq-suspend-timeout",
            "check again with --ifname of an interface that has NAPIs",
        )
    elif sample.irq_suspend_timeout is not None:
        r.ok(name, "napi-get reports the irq-suspend-timeout attribute")
    else:
        r.missing(
            name, "napi-get does not report irq-suspend-timeout", "upgrade to Linux 6.13 or newer"
        )
    iface = r.f.iface
    if iface is None or not iface.napis:
        return
    active = [n for n in iface.napis if n.irq_suspend_timeout]
    label = f"{iface.name}: suspension"
    if active:
        r.ok(
            label,
            f"armed on {len(active)} of {len(iface.napis)} NAPIs "
            f"({format_duration_ns(active[0].irq_suspend_timeout)}); takes effect only while "
            "an epoll context with prefer_busy_poll keeps finding events",
        )
    else:
        r.ok(
            label,
            "not armed (irq-suspend-timeout 0)",
            _napi_set(iface, "--preset suspend") + ", and epoll "
            "prefer_busy_poll, budget 64 in the application",
        )


def _check_devmem(r: _Report) -> None:
    f = r.f
    r.kernel(ops=("bind-rx",), label=" (RX)")
    r.kernel("devmem-tx", ops=("bind-tx",), label=" (TX)")
    cfg = r.config("CONFIG_NET_DEVMEM")
    name = "CONFIG_NET_DEVMEM"
    if cfg:
        r.ok(name, f"{cfg} in {f.config_source}")
    elif cfg == "":
        r.missing(
            name,
            f"not set in {f.config_source}: bind-rx answers EOPNOTSUPP",
            "use a kernel built with CONFIG_NET_DEVMEM=y (needs DMA_SHARED_BUFFER, "
            "GENERIC_ALLOCATOR, PAGE_POOL)",
        )
    elif r.has_op("bind-rx"):
        r.ok(
            name,
            "inferred: bind-rx is registered (the option itself shows only in the kernel "
            "config; without it bind-rx answers EOPNOTSUPP)",
        )
    else:
        r.missing(name, "bind-rx is not registered", "Linux 6.12 or newer")
    udma = r.config("CONFIG_UDMABUF")
    if f.udmabuf:
        r.ok("udmabuf", "/dev/udmabuf exists (host-memory dmabufs for tests)")
    elif udma == "m":
        r.missing("udmabuf", "no /dev/udmabuf; CONFIG_UDMABUF=m", "modprobe udmabuf")
    else:
        state = "" if udma is None else "; CONFIG_UDMABUF is not set"
        r.missing(
            "udmabuf",
            f"no /dev/udmabuf{state}",
            "a GPU dmabuf (CUDA/ROCm) works as well; for host memory use a kernel with "
            "CONFIG_UDMABUF",
        )
    if f.iface is not None:
        _driver_line(
            r,
            f.iface,
            "devmem support (queue API and unreadable-netmem page pools)",
            "devmem needs gve, mlx5, bnxt, fbnic or idpf with header split and flow steering",
        )


def _check_pp_stats(r: _Report) -> None:
    cfg = r.config("CONFIG_PAGE_POOL_STATS")
    from_cfg = "" if cfg is None else f"; config: {cfg or 'not set'}"
    name = "CONFIG_PAGE_POOL_STATS"
    if r.has_op("page-pool-stats-get"):
        r.ok(name, "page-pool-stats-get is registered" + from_cfg)
    else:
        r.missing(
            name,
            "page-pool-stats-get is not registered: the kernel was built without "
            "CONFIG_PAGE_POOL_STATS" + from_cfg,
            "use a kernel built with CONFIG_PAGE_POOL_STATS=y; page-pool-get still works",
        )


_CAPS = (
    (CAP_NET_ADMIN, "CAP_NET_ADMIN", "napi set, bind-rx/bind-tx, SO_PREFER_BUSY_POLL, budget > 64"),
    (CAP_SYS_ADMIN, "CAP_SYS_ADMIN", "entering network namespaces (--netns), the testbed"),
    (CAP_SYS_PTRACE, "CAP_SYS_PTRACE", "attach: pidfd_getfd on another user's process"),
)


def _check_privileges(r: _Report) -> None:
    eff = r.f.cap_eff
    for bit, cap, needed_for in _CAPS:
        if eff is None:
            r.warn(cap, "cannot read CapEff from /proc/self/status")
        elif eff >> bit & 1:
            r.ok(cap, f"held (needed for {needed_for})")
        else:
            r.warn(
                cap,
                f"not held: read-only here; needed for {needed_for}",
                f"run as root or grant {cap}",
            )


def _check_attach(r: _Report) -> None:
    f = r.f
    e = f.pidfd_getfd_errno
    if e in (errno.EBADF, 0):
        r.ok("pidfd_getfd", "syscall 438 is available")
    elif e == errno.ENOSYS:
        r.missing(
            "pidfd_getfd",
            "syscall 438 answers ENOSYS",
            "Linux 5.6 or newer (x86_64 / asm-generic syscall numbering)",
        )
    else:
        r.warn(
            "pidfd_getfd", f"syscall 438 answers {errno.errorcode.get(e or 0, e)} (seccomp filter?)"
        )
    scope = f.ptrace_scope
    ptrace = f.cap_eff is not None and bool(f.cap_eff >> CAP_SYS_PTRACE & 1)
    if scope is None:
        r.ok("ptrace_scope", "no Yama LSM: ordinary ptrace rules")
    elif scope >= 3:
        r.missing(
            "ptrace_scope",
            "kernel.yama.ptrace_scope=3: no process may attach to another",
            "only a reboot resets ptrace_scope 3",
        )
    elif scope >= 1 and not ptrace:
        r.warn(
            "ptrace_scope",
            f"kernel.yama.ptrace_scope={scope}: attaching needs CAP_SYS_PTRACE (or a parent)",
            "run attach as root",
        )
    else:
        r.ok("ptrace_scope", f"kernel.yama.ptrace_scope={scope}")


_PARTS: tuple[tuple[str, Callable[[_Report], None]], ...] = (
    (KERNEL, _check_kernel),
    (FAMILY, _check_family),
    (NAPI, _check_napi),
    (BUSY_POLL, _check_busy_poll),
    (QSTATS, _check_qstats),
    (QUEUE_API, _check_queue_api),
    (PER_NAPI, _check_per_napi),
    (IRQ_SUSPEND, _check_irq_suspend),
    (DEVMEM, _check_devmem),
    (PP_STATS, _check_pp_stats),
    (PRIVILEGES, _check_privileges),
    (ATTACH, _check_attach),
)


def evaluate(facts: Facts) -> list[Check]:
    """Turn *facts* into the report's lines, feature by feature. No I/O."""
    r = _Report(facts)
    for feature, part in _PARTS:
        r.feature = feature
        part(r)
    return r.checks
