"""A two-namespace veth testbed whose traffic goes through NAPI.

``Testbed`` builds two network namespaces, ``<name>-srv`` and ``<name>-cli``,
joined by one veth pair (``ndk-s`` in the server namespace, ``ndk-c`` in the
client namespace), and removes them again on every exit path: normal exit,
exception, ``KeyboardInterrupt``, ``SIGTERM`` (while up, in the main thread)
and interpreter exit. Nothing is ever configured in the caller's own
namespace: the veth pair is created inside the server namespace with its peer
placed straight into the client namespace.

Kernel facts relied on (Linux 6.9-6.18, see /work/shared/KERNEL.md):

- veth has NAPI instances only while the device is up with GRO enabled (or
  an XDP program attached); ``veth_newlink`` creates pairs with GRO off. One
  NAPI per rx queue, so ``numrxqueues`` N gives N NAPIs on that side.
- A packet takes the receiver's NAPI only when the *sending* veth has every
  TSO feature off (``veth_skb_is_eligible_for_gro`` tests ``NETIF_F_ALL_TSO``
  of the sender); otherwise it goes through the per-CPU backlog and carries
  no NAPI id. Both sides therefore get GRO on and TSO/GSO off, so that both
  directions of a request/response exchange take the NAPI path.
- NAPI ids of veth are not persistent: toggling GRO or bringing the link
  down and up gives new ids. The testbed sets the features while the links
  are still down, so the NAPIs are created once, at open.
- The receiving socket records the NAPI id of the skb that filled it; it is
  readable as ``SO_INCOMING_NAPI_ID`` (SOL_SOCKET, 56) and is 0 for traffic
  that came through no NAPI. ``up()`` proves the data path with one UDP
  datagram in each direction and fails if either arrives with id 0.
- A socket stays in the namespace it was created in; ``setns`` moves only
  the calling thread (see :mod:`netdevkit.netns`).
- Removing ``/run/netns/NAME`` (lazy unmount + unlink) drops the name's
  reference; the namespace and its veth end die once no process or socket
  holds it. That is why ``down()`` first stops the processes it started and
  deletes the veth pair explicitly.

Leftover testbeds (a process killed with SIGKILL) are found by two markers:
a journal file per testbed under ``/run/netdevkit/testbeds`` written *before*
anything is created, and the alias of ``lo`` inside each namespace
(``netdevkit-testbed:<name>``). :func:`down_all` removes both.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import errno
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Literal

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.ethtool.ioctl import IoctlEthtool, NotSupportedError
from pyroute2.netlink.exceptions import NetlinkError

from . import netns as ndk_netns
from .errors import KernelError, NetdevkitError, RequestError, UnsupportedError

__all__ = [
    "CLIENT_IF",
    "SERVER_IF",
    "Side",
    "Testbed",
    "TestbedConfig",
    "down_all",
    "list_testbeds",
    "socket_in_netns",
]

Side = Literal["server", "client"]

SERVER_IF = "ndk-s"
CLIENT_IF = "ndk-c"
SO_INCOMING_NAPI_ID = 56  # SOL_SOCKET, read only
JOURNAL_DIR = "/run/netdevkit/testbeds"
ALIAS_PREFIX = "netdevkit-testbed:"
NS_SUFFIXES = ("-srv", "-cli")
MAX_QUEUES = 1024
MIN_MTU = 68  # IPv4 minimum, veth's min_mtu
MAX_MTU = 65535  # ETH_MAX_MTU, veth's max_mtu without XDP
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21

# ethtool feature names (ETH_SS_FEATURES strings). "tso off" of the ethtool
# binary clears every NETIF_F_ALL_TSO bit; all of them are named
# "tx-tcp*-segmentation" (6.18 adds tx-tcp-accecn-segmentation).
GRO = "rx-gro"
GSO = "tx-generic-segmentation"
TSO = "tx-tcp-segmentation"


def _is_tso_feature(name: str) -> bool:
    return name.startswith("tx-tcp") and name.endswith("-segmentation")


@dataclass(frozen=True, slots=True)
class TestbedConfig:
    """What to build. Validated on construction: a bad config raises
    :class:`RequestError` before anything on the system is touched."""

    __test__ = False  # not a pytest test class despite the name

    name: str = "ndk"
    queues: int = 1
    server_addr: str = "10.201.0.1"
    client_addr: str = "10.201.0.2"
    mtu: int = 1500

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise RequestError(
                f"testbed name {self.name!r}: use 1-24 characters of [a-z0-9-], "
                "starting with a letter or digit"
            )
        if isinstance(self.queues, bool) or not isinstance(self.queues, int):
            raise RequestError(f"queues={self.queues!r}: must be an integer 1..{MAX_QUEUES}")
        if not 1 <= self.queues <= MAX_QUEUES:
            raise RequestError(
                f"queues={self.queues}: veth supports 1..{MAX_QUEUES} queues per side"
            )
        if isinstance(self.mtu, bool) or not isinstance(self.mtu, int):
            raise RequestError(f"mtu={self.mtu!r}: must be an integer")
        if not MIN_MTU <= self.mtu <= MAX_MTU:
            raise RequestError(f"mtu={self.mtu}: veth accepts {MIN_MTU}..{MAX_MTU}")
        srv = _parse_host_addr("server_addr", self.server_addr)
        cli = _parse_host_addr("client_addr", self.client_addr)
        if srv == cli:
            raise RequestError(f"server_addr and client_addr are both {srv}: they must differ")
        net = ipaddress.IPv4Network(f"{srv}/24", strict=False)
        if cli not in net:
            raise RequestError(
                f"server_addr {srv} and client_addr {cli} are not in the same /24 ({net})"
            )

    @property
    def server_ns(self) -> str:
        return f"{self.name}-srv"

    @property
    def client_ns(self) -> str:
        return f"{self.name}-cli"


def _parse_host_addr(field: str, value: object) -> ipaddress.IPv4Address:
    if not isinstance(value, str):
        raise RequestError(f"{field}={value!r}: must be an IPv4 address string")
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError as err:
        raise RequestError(f"{field}={value!r}: not an IPv4 address ({err})") from err
    if addr.is_multicast or addr.is_loopback or addr.is_unspecified or addr.is_link_local:
        raise RequestError(f"{field}={value}: must be a unicast, non-loopback address")
    host = int(addr) & 0xFF
    if host in (0, 255):
        raise RequestError(f"{field}={value}: network or broadcast address of its /24")
    return addr


# --- small helpers ---------------------------------------------------------


def _require_privileges() -> None:
    """setns/unshare/mount need CAP_SYS_ADMIN; links and ethtool CAP_NET_ADMIN."""
    eff = 0
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    eff = int(line.split()[1], 16)
    except OSError:
        eff = (1 << 64) - 1 if os.geteuid() == 0 else 0
    if not (eff >> _CAP_NET_ADMIN) & 1 or not (eff >> _CAP_SYS_ADMIN) & 1:
        raise NetdevkitError(
            "a testbed creates network namespaces and veth pairs: needs root "
            "(CAP_NET_ADMIN and CAP_SYS_ADMIN); run as root"
        )


@contextlib.contextmanager
def _sigterm_blocked() -> Iterator[None]:
    """Hold SIGTERM back for the body (the handler runs right after it).

    pyroute2's netns.create forks a child that makes the bind mount. A
    SIGTERM handled while that child is still working would find no
    namespace to remove, and the child would then create it: a leak. With
    the signal blocked the child finishes first (it inherits the mask and
    exits on its own), then the handler tears down what now exists.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _kernel_error(err: NetlinkError, operation: str) -> KernelError:
    msg = str(err.args[1]) if len(err.args) > 1 else ""
    extack = "" if msg == os.strerror(err.code) else msg
    return KernelError(err.code, operation, extack=extack)


def socket_in_netns(
    ns: str,
    family: int = socket.AF_INET,
    type: int = socket.SOCK_STREAM,
    proto: int = 0,
) -> socket.socket:
    """A socket created inside network namespace *ns*.

    The socket lives in *ns* for its whole life (bind, connect, routing),
    whatever namespace the thread is in later.
    """
    with ndk_netns.entered(ns):
        return socket.socket(family, type, proto)


def _remove_ns(name: str) -> bool:
    """Remove /run/netns/NAME. True if it was there. Tolerates it being gone.

    Uses pyroute2; if that fails for another reason than "already gone",
    falls back to the same two syscalls (umount2 MNT_DETACH, unlink).
    """
    path = ndk_netns.path_of(name)
    if not os.path.exists(path):
        return False
    try:
        pr_netns.remove(name)
        return True
    except FileNotFoundError:
        return False
    except Exception:  # fall back below; the caller reports if that fails too
        pass
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.umount2(path.encode(), 2)  # MNT_DETACH; EINVAL if not mounted is fine
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def _ipr(ns: str, operation: str) -> Iterator[Any]:
    try:
        with IPRoute(netns=ns, flags=0, ext_ack=True) as ipr:
            yield ipr
    except NetlinkError as err:
        raise _kernel_error(err, f"{operation} in netns {ns}") from err


def _lo_alias(ns: str) -> str:
    with _ipr(ns, "read lo alias") as ipr:
        links = ipr.get_links(1)
    if not links:
        return ""
    alias = links[0].get_attr("IFLA_IFALIAS")
    return str(alias) if alias else ""


# --- journal, owner and leftovers ---------------------------------------------
#
# A testbed's owner is "PID:STARTTIME" (starttime = field 22 of
# /proc/PID/stat, in clock ticks since boot), so a recycled pid is not
# mistaken for the process that built the testbed. It is written to the
# journal and to the lo alias of both namespaces.


def _starttime(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    return stat[stat.rindex(b")") + 2 :].split()[19].decode()


def _owner_token() -> str:
    pid = os.getpid()
    return f"{pid}:{_starttime(pid)}"


def _owner_alive(token: str) -> bool:
    """Whether the process named by an owner token still runs. Unknown or
    malformed tokens count as dead (the testbed is then a leftover)."""
    pid, _, start = token.partition(":")
    try:
        return _starttime(int(pid)) == start
    except (OSError, ValueError, IndexError):
        return False


def _alias(name: str, owner: str) -> str:
    return f"{ALIAS_PREFIX}{name} owner={owner}"


def _parse_alias(alias: str) -> tuple[str, str] | None:
    """(testbed name, owner token) from a lo alias, or None if not ours."""
    if not alias.startswith(ALIAS_PREFIX):
        return None
    name, _, owner = alias[len(ALIAS_PREFIX) :].partition(" owner=")
    return name, owner


def _journal_path(name: str) -> str:
    return os.path.join(JOURNAL_DIR, f"{name}.json")


def _write_journal(cfg: TestbedConfig, owner: str) -> None:
    os.makedirs(JOURNAL_DIR, exist_ok=True)
    data = {"name": cfg.name, "namespaces": [cfg.server_ns, cfg.client_ns], "owner": owner}
    tmp = _journal_path(cfg.name) + f".{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, _journal_path(cfg.name))


def _read_journals() -> dict[str, tuple[list[str], str]]:
    """testbed name -> (namespace names, owner), from every readable journal."""
    out: dict[str, tuple[list[str], str]] = {}
    try:
        entries = sorted(os.listdir(JOURNAL_DIR))
    except FileNotFoundError:
        return out
    for entry in entries:
        if not entry.endswith(".json"):
            continue
        try:
            with open(os.path.join(JOURNAL_DIR, entry), encoding="utf-8") as f:
                data = json.load(f)
            out[str(data["name"])] = ([str(ns) for ns in data["namespaces"]], str(data["owner"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _remove_journal(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_journal_path(name))


@dataclass(frozen=True, slots=True)
class _Found:
    name: str  # testbed name
    owner: str  # owner token


def _testbed_namespaces(prefix: str | None) -> dict[str, _Found]:
    """Existing testbed namespaces, found by journal or by lo alias."""
    found: dict[str, _Found] = {}
    existing = set(ndk_netns.list_names())
    for name, (namespaces, owner) in _read_journals().items():
        if prefix is not None and not name.startswith(prefix):
            continue
        for ns in namespaces:
            if ns in existing:
                found[ns] = _Found(name, owner)
    for ns in sorted(existing - found.keys()):
        if not ns.endswith(NS_SUFFIXES):
            continue
        name = ns[: -len("-srv")]
        if prefix is not None and not name.startswith(prefix):
            continue
        try:
            parsed = _parse_alias(_lo_alias(ns))
        except (NetdevkitError, OSError):
            continue
        if parsed is not None and parsed[0] == name:
            found[ns] = _Found(name, parsed[1])
    return found


def list_testbeds(prefix: str | None = None) -> list[str]:
    """Names of the existing namespaces that belong to netdevkit testbeds
    (live or left over), sorted.

    A namespace counts when a testbed journal lists it or its ``lo`` carries
    the testbed alias. *prefix* filters on the testbed name.
    """
    return sorted(_testbed_namespaces(prefix))


def down_all(prefix: str | None = None, *, include_live: bool = False) -> list[str]:
    """Remove leftover testbed namespaces (and their journals); returns the
    removed namespace names, sorted. *prefix* filters on the testbed name.

    A leftover is a testbed whose owning process is gone (killed with
    SIGKILL, crashed in C, ``os._exit``). Testbeds whose owner still runs
    belong to someone else's live test and are kept unless *include_live*.
    Processes still running inside a removed namespace keep it alive
    anonymously until they exit; they are not killed here.
    """
    _require_privileges()
    removed: list[str] = []
    failed: list[str] = []
    names: set[str] = set()
    for ns, found in sorted(_testbed_namespaces(prefix).items()):
        if not include_live and _owner_alive(found.owner):
            continue
        names.add(found.name)
        try:
            if _remove_ns(ns):
                removed.append(ns)
        except OSError as err:
            failed.append(f"{ns}: {err}")
    for name, (_namespaces, owner) in _read_journals().items():
        if (prefix is None or name.startswith(prefix)) and (
            include_live or not _owner_alive(owner)
        ):
            names.add(name)
    for name in names:
        if not any(ndk_netns.exists(ns) for ns in (f"{name}-srv", f"{name}-cli")):
            _remove_journal(name)
    if failed:
        raise NetdevkitError("could not remove testbed namespaces: " + "; ".join(failed))
    return removed


# --- the testbed -------------------------------------------------------------

_SigHandler = Callable[[int, FrameType | None], Any] | int | None


class Testbed:
    """Two namespaces and a NAPI-carrying veth pair; see the module docstring.

    Use as a context manager, or call :meth:`up` and :meth:`down` (``down``
    is idempotent and also registered with :mod:`atexit` while up).
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, config: TestbedConfig | None = None) -> None:
        self.config = config if config is not None else TestbedConfig()
        self.server_ns = self.config.server_ns
        self.client_ns = self.config.client_ns
        self.server_if = SERVER_IF
        self.client_if = CLIENT_IF
        self.server_addr = self.config.server_addr
        self.client_addr = self.config.client_addr
        self._ifindex: dict[Side, int] = {}
        self._created: list[str] = []  # namespaces this object created
        self._journal = False
        self._procs: list[subprocess.Popen[bytes]] = []
        self._is_up = False
        self._in_down = False
        self._sigterm_pending = False
        self._terminated = False  # the SIGTERM handler ran
        self._prev_sigterm: _SigHandler = None
        self._sigterm_installed = False
        self._atexit = False
        self._owner_pid = 0  # the process that built it; forked children never tear down
        self._owner = ""
        self.up_seconds = 0.0
        self.down_seconds = 0.0
        self.probe_napi_ids: tuple[int, int] = (0, 0)

    def __repr__(self) -> str:
        state = "up" if self._is_up else "down"
        return f"Testbed({self.config!r}, {state})"

    # -- names ----------------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._is_up

    @property
    def server_ifindex(self) -> int:
        return self._index("server")

    @property
    def client_ifindex(self) -> int:
        return self._index("client")

    def _index(self, side: Side) -> int:
        if not self._is_up:
            raise NetdevkitError(f"testbed {self.config.name!r} is not up: call up() first")
        return self._ifindex[side]

    def ns_of(self, side: Side) -> str:
        if side == "server":
            return self.server_ns
        if side == "client":
            return self.client_ns
        raise RequestError(f"side={side!r}: must be 'server' or 'client'")

    def if_of(self, side: Side) -> str:
        self.ns_of(side)  # validates
        return self.server_if if side == "server" else self.client_if

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> Testbed:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self) -> Testbed:
        """Build the testbed; on any failure (or signal) tear down and re-raise."""
        if self._is_up:
            return self
        _require_privileges()
        for ns in (self.server_ns, self.client_ns):
            if ndk_netns.exists(ns):
                raise NetdevkitError(
                    f"namespace {ns} already exists: another testbed named "
                    f"{self.config.name!r} is up, or a leftover (remove it with "
                    "netdevkit.testbed.down_all)"
                )
        start = time.monotonic()
        self._owner_pid = os.getpid()
        self._terminated = False
        self._install_handlers()
        try:
            self._build()
            if self._terminated:
                raise SystemExit(128 + signal.SIGTERM)
        except BaseException as err:
            self.down()
            if self._terminated and not isinstance(err, SystemExit):
                # The handler tore down, but its SystemExit was swallowed:
                # Python ignores exceptions raised in at-fork callbacks and
                # __del__ methods (pyroute2 forks for every netns socket and
                # drops event loops), so the build ran on into a vanished
                # namespace. Report the SIGTERM, not that.
                raise SystemExit(128 + signal.SIGTERM) from err
            raise
        self._is_up = True
        self.up_seconds = time.monotonic() - start
        return self

    def _build(self) -> None:
        cfg = self.config
        self._owner = _owner_token()
        # Bookkeeping first, then the action: a signal between the two must
        # not leave something down() does not know about.
        self._journal = True
        _write_journal(cfg, self._owner)
        for ns in (self.server_ns, self.client_ns):
            self._created.append(ns)
            try:
                with _sigterm_blocked():
                    pr_netns.create(ns)
            except FileExistsError as err:
                self._created.remove(ns)  # someone else's: never remove it
                raise NetdevkitError(f"namespace {ns} appeared while building the testbed") from err
        q = cfg.queues
        with _ipr(self.server_ns, f"create veth {SERVER_IF}<->{CLIENT_IF}") as ipr:
            # Peer attributes are separate: without num_rx_queues in the peer
            # the client end gets the kernel default (number of possible CPUs).
            ipr.link(
                "add",
                ifname=SERVER_IF,
                kind="veth",
                num_rx_queues=q,
                num_tx_queues=q,
                mtu=cfg.mtu,
                peer={
                    "ifname": CLIENT_IF,
                    "net_ns_fd": self.client_ns,
                    "num_rx_queues": q,
                    "num_tx_queues": q,
                    "mtu": cfg.mtu,
                },
            )
        for side in ("server", "client"):
            self._configure_side(side)
        self._wait_ready(deadline=time.monotonic() + 5.0)
        self.probe_napi_ids = self.probe_napi()

    def _configure_side(self, side: Side) -> None:
        ns, ifname = self.ns_of(side), self.if_of(side)
        addr = self.server_addr if side == "server" else self.client_addr
        with _ipr(ns, f"configure {ifname}") as ipr:
            ipr.link("set", index=1, ifalias=_alias(self.config.name, self._owner))
            ipr.link("set", index=1, state="up")
            idx = ipr.link_lookup(ifname=ifname)
            if not idx:
                raise NetdevkitError(f"{ifname} missing in {ns} right after creating it")
            self._ifindex[side] = int(idx[0])
            ipr.addr("add", index=idx[0], address=addr, prefixlen=24)
        # Features while the link is down, so the NAPIs are created once at open.
        set_offloads(ns, ifname)
        with _ipr(ns, f"bring {ifname} up") as ipr:
            ipr.link("set", index=self._ifindex[side], state="up")

    def _wait_ready(self, deadline: float) -> None:
        """Both ends report operstate UP (veth turns carrier on once both are up)."""
        pending: list[Side] = ["server", "client"]
        while True:
            for side in list(pending):
                with _ipr(self.ns_of(side), "read link state") as ipr:
                    link = ipr.get_links(self._ifindex[side])[0]
                if link.get_attr("IFLA_OPERSTATE") == "UP":
                    pending.remove(side)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise NetdevkitError(f"veth ends {pending} not operationally up after 5 s")
            time.sleep(0.01)

    def probe_napi(self, timeout: float = 2.0) -> tuple[int, int]:
        """Send one UDP datagram each way; return the SO_INCOMING_NAPI_ID seen
        by (server socket, client socket). Raises if either is 0, i.e. the
        traffic bypassed NAPI."""
        to_srv = _udp_napi_id(self.client_ns, self.server_ns, self.server_addr, timeout)
        to_cli = _udp_napi_id(self.server_ns, self.client_ns, self.client_addr, timeout)
        if to_srv == 0 or to_cli == 0:
            raise UnsupportedError(
                f"veth traffic carried no NAPI id (client->server {to_srv}, "
                f"server->client {to_cli}): needs CONFIG_NET_RX_BUSY_POLL and veth GRO "
                "with TSO off on the sender"
            )
        return to_srv, to_cli

    def features(self, side: Side) -> dict[str, bool]:
        """Active GRO, TSO (all tx-tcp*-segmentation) and GSO state of one end,
        as {"rx-gro", "tx-tcp-segmentation", "tx-generic-segmentation"} plus
        every other TSO feature name the kernel lists."""
        return get_offloads(self.ns_of(side), self.if_of(side))

    def down(self) -> None:
        """Tear down: stop started processes, delete the veth pair, remove both
        namespaces, the journal and the handlers. Idempotent; keeps going past
        failures and raises one NetdevkitError at the end if a namespace
        could not be removed."""
        if self._in_down:
            return
        if self._owner_pid and os.getpid() != self._owner_pid:
            # A forked child (pyroute2 forks one per netns socket, and
            # multiprocessing does too) inherits this object, the atexit
            # entry and the SIGTERM handler. It must not tear down its
            # parent's testbed.
            return
        self._in_down = True
        start = time.monotonic()
        problems: list[str] = []
        try:
            self._stop_procs()
            if self.server_ns in self._created and ndk_netns.exists(self.server_ns):
                # Deleting one end deletes both. Failure is fine: the
                # namespace removal below takes the veth with it.
                with (
                    contextlib.suppress(Exception),
                    IPRoute(netns=self.server_ns, flags=0) as ipr,
                ):
                    ipr.link("del", ifname=SERVER_IF)
            for ns in list(self._created):
                try:
                    _remove_ns(ns)
                    self._created.remove(ns)
                except OSError as err:
                    problems.append(f"{ns}: {err}")
            if self._journal and not self._created:
                with contextlib.suppress(OSError):
                    _remove_journal(self.config.name)
                self._journal = False
            self._is_up = False
            self._ifindex.clear()
        finally:
            self._remove_handlers()
            self._in_down = False
            self.down_seconds = time.monotonic() - start
        if self._sigterm_pending:
            self._sigterm_pending = False
            raise SystemExit(128 + signal.SIGTERM)
        if problems:
            raise NetdevkitError("testbed teardown left namespaces behind: " + "; ".join(problems))

    def _stop_procs(self) -> None:
        procs, self._procs = self._procs, []
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        for p in procs:
            try:
                p.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()

    # -- signals and atexit ---------------------------------------------------

    def _install_handlers(self) -> None:
        if not self._atexit:
            atexit.register(self.down)
            self._atexit = True
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal works only in the main thread
        prev = signal.getsignal(signal.SIGTERM)
        if prev is signal.SIG_IGN:
            return  # the process ignores SIGTERM, so it will not die of it
        self._prev_sigterm = prev
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._sigterm_installed = True

    def _remove_handlers(self) -> None:
        if self._atexit:
            atexit.unregister(self.down)
            self._atexit = False
        if not self._sigterm_installed:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        # Restore only if ours is still on top; a handler installed later
        # (another testbed) chains to ours, which stays harmless once down.
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            prev = self._prev_sigterm
            signal.signal(signal.SIGTERM, prev if prev is not None else signal.SIG_DFL)
        self._sigterm_installed = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        prev = self._prev_sigterm
        if os.getpid() != self._owner_pid:
            # Inherited across fork: behave as the handler before ours did.
            signal.signal(signal.SIGTERM, prev if prev is not None else signal.SIG_DFL)
            if callable(prev):
                prev(signum, frame)
            else:
                os.kill(os.getpid(), signum)
            return
        self._terminated = True
        if self._in_down:
            # Interrupted teardown: let it finish, then exit.
            self._sigterm_pending = True
            return
        self.down()
        if callable(prev):
            prev(signum, frame)
            return
        raise SystemExit(128 + signum)

    # -- running programs -----------------------------------------------------

    def _ns_argv(self, side: Side, argv: list[str]) -> list[str]:
        ns = self.ns_of(side)
        if not self._is_up:
            raise NetdevkitError(f"testbed {self.config.name!r} is not up: call up() first")
        ip = shutil.which("ip") or "/usr/sbin/ip"
        # `ip netns exec` setns()es, remounts /sys for the namespace and
        # execs argv without forking, so Popen.pid is the program itself.
        return [ip, "netns", "exec", ns, *argv]

    def popen(self, side: Side, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        """Start *argv* inside a side's namespace. ``down()`` terminates it
        (SIGTERM, then SIGKILL after 2 s) if it is still running."""
        self._procs = [p for p in self._procs if p.poll() is None]
        p: subprocess.Popen[bytes] = subprocess.Popen(self._ns_argv(side, argv), **kw)
        self._procs.append(p)
        return p

    def run(self, side: Side, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        """Run *argv* to completion inside a side's namespace (``subprocess.run``)."""
        check = bool(kw.pop("check", False))
        result: subprocess.CompletedProcess[bytes] = subprocess.run(
            self._ns_argv(side, argv), check=check, **kw
        )
        return result

    def socket(
        self,
        side: Side,
        family: int = socket.AF_INET,
        type: int = socket.SOCK_STREAM,
        proto: int = 0,
    ) -> socket.socket:
        """A socket created inside a side's namespace."""
        return socket_in_netns(self.ns_of(side), family, type, proto)


# --- offloads via the ethtool ioctl (pyroute2) --------------------------------


@contextlib.contextmanager
def _ethtool(ns: str, ifname: str) -> Iterator[Any]:
    # IoctlEthtool opens its AF_INET socket in __init__, so creating it inside
    # the namespace makes every SIOCETHTOOL go to that namespace's device.
    with ndk_netns.entered(ns):
        eth = IoctlEthtool(ifname)
    try:
        yield eth
    finally:
        eth.close()


def get_offloads(ns: str, ifname: str) -> dict[str, bool]:
    """Active state of rx-gro, tx-generic-segmentation and every TSO feature."""
    with _ethtool(ns, ifname) as eth:
        try:
            feats = eth.get_features()
        except OSError as err:
            raise KernelError(err.errno or errno.EIO, f"ETHTOOL_GFEATURES {ifname}") from err
        return {
            name: bool(feats[name])
            for name in feats.keys()  # noqa: SIM118 - not a dict
            if name in (GRO, GSO) or _is_tso_feature(name)
        }


def set_offloads(ns: str, ifname: str) -> dict[str, bool]:
    """GRO on, GSO and every TSO feature off (``ethtool -K IF gro on tso off
    gso off``); returns the state read back. Raises UnsupportedError when the
    kernel did not take a change."""
    with _ethtool(ns, ifname) as eth:
        try:
            feats = eth.get_features()
            wanted = {
                name: name == GRO
                for name in feats.keys()  # noqa: SIM118 - not a dict
                if name in (GRO, GSO) or _is_tso_feature(name)
            }
            for name, value in wanted.items():
                if bool(feats[name]) != value:
                    feats[name] = value
            # ETHTOOL_SFEATURES returns a positive ETHTOOL_F_* when the result
            # differs from the request; pyroute2 turns that into
            # NotSupportedError. The read-back below is the real check.
            with contextlib.suppress(NotSupportedError):
                eth.set_features(feats)
            after = eth.get_features()
        except OSError as err:
            raise KernelError(
                err.errno or errno.EIO, f"ETHTOOL_SFEATURES {ifname} in netns {ns}"
            ) from err
        got = {name: bool(after[name]) for name in wanted}
    # The other TSO bits matter too, but a device that keeps one of them on
    # is caught by Testbed.probe_napi (traffic without a NAPI id).
    wrong = sorted(n for n in (GRO, GSO, TSO) if n in wanted and got[n] != wanted[n])
    if wrong:
        raise UnsupportedError(
            f"{ifname} in netns {ns}: could not set {', '.join(wrong)} "
            "(wanted rx-gro on, TSO/GSO off)"
        )
    return got


def _udp_napi_id(src_ns: str, dst_ns: str, dst_addr: str, timeout: float) -> int:
    """One datagram src -> dst; the receiving socket's SO_INCOMING_NAPI_ID.

    An unconnected UDP socket records the NAPI id of the first datagram it
    queues (sk_mark_napi_id_once); a fresh socket per attempt keeps it honest.
    """
    deadline = time.monotonic() + timeout
    last = 0
    while True:
        with (
            socket_in_netns(dst_ns, socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket_in_netns(src_ns, socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.bind((dst_addr, 0))
            rx.settimeout(0.2)
            tx.sendto(b"netdevkit-probe", rx.getsockname())
            try:
                rx.recv(64)
                last = rx.getsockopt(socket.SOL_SOCKET, SO_INCOMING_NAPI_ID)
            except TimeoutError:
                pass
        if last != 0 or time.monotonic() > deadline:
            return last
