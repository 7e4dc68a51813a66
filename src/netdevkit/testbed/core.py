"""A two-namespace veth testbed whose traffic goes through NAPI.

``Testbed`` builds two network namespaces, ``<name>-srv`` and ``<name>-cli``,
joined by one veth pair (``ndk-s`` in the server namespace, ``ndk-c`` in the
client namespace), and removes them again on every exit path: normal exit,
exception, ``KeyboardInterrupt``, ``SIGTERM`` (while up, in the main thread)
and interpreter exit. Nothing is ever configured in the caller's own
namespace: the veth pair is created inside the server namespace with its peer
placed straight into the client namespace.

Kernel facts relied on (Linux 6.9-6.18, see /work/shared/KERNEL.md); the
ones about the veth data path are in :mod:`netdevkit.testbed.datapath`:

- NAPI ids of veth are not persistent: toggling GRO or bringing the link
  down and up gives new ids. The testbed sets the features while the links
  are still down, so the NAPIs are created once, at open.
- Removing ``/run/netns/NAME`` (lazy unmount + unlink) drops the name's
  reference; the namespace and its veth end die once no process or socket
  holds it. That is why ``down()`` first stops the processes it started and
  deletes the veth pair explicitly.

Optional CPU placement (:class:`CpuPlacement`, ``TestbedConfig(cpus=...)``):
every program started with :meth:`Testbed.popen` on a side is pinned to that
side's CPUs, and :meth:`Testbed.pin_napi_threads` pins the threaded-NAPI
kthreads. Facts it relies on:

- ``sched_setaffinity`` acts on one thread; a thread created later inherits
  its creator's mask, and the mask survives ``execve`` (so pinning ``ip netns
  exec`` before it execs the program pins the program).
- NAPI kthreads (``napi/<dev>-<id>``, pid in napi-get while threaded) are
  ordinary kthreads, not per-CPU ones: their affinity can be set.
- There is no CPU to place the veth "IRQ" on: it is the sender's
  ``napi_schedule``, so a NAPI that is neither threaded nor busy polled runs
  in softirq on the CPU of the process that sent the packet.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import ipaddress
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

from .. import _fault
from .. import netns as ndk_netns
from ..errors import NetdevkitError, NotFoundError, RequestError, UnsupportedError
from .datapath import _udp_napi_id, get_offloads, set_offloads, socket_in_netns
from .journal import (
    _alias,
    _ipr,
    _owner_token,
    _remove_journal,
    _remove_ns,
    _remove_tmpdir,
    _require_privileges,
    _write_journal,
    end_processes,
    ns_pids,
    tmpdir_of,
)

Side = Literal["server", "client"]

SERVER_IF = "ndk-s"
CLIENT_IF = "ndk-c"
MAX_QUEUES = 1024
MIN_MTU = 68  # IPv4 minimum, veth's min_mtu
MAX_MTU = 65535  # ETH_MAX_MTU, veth's max_mtu without XDP
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")


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
    #: pin the server's and client's programs (and NAPI kthreads); None: no pinning
    cpus: CpuPlacement | None = None

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
        if self.cpus is not None and not isinstance(self.cpus, CpuPlacement):
            raise RequestError(f"cpus={self.cpus!r}: must be a CpuPlacement (or None)")

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


# --- CPU placement -----------------------------------------------------------

PLACEMENT_ROLES = ("server", "client", "napi")


def parse_cpu_list(text: str) -> frozenset[int]:
    """``"0-2,5"`` -> {0, 1, 2, 5} (the kernel's cpulist format, as in
    ``Cpus_allowed_list`` and ``taskset -c``)."""
    cpus: set[int] = set()
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise RequestError(f"CPU list {text!r}: {part!r} is not N or N-M") from None
        if first < 0 or last < first:
            raise RequestError(f"CPU list {text!r}: {part!r} is not a valid range")
        cpus.update(range(first, last + 1))
    if not cpus:
        raise RequestError(f"CPU list {text!r} is empty")
    return frozenset(cpus)


def format_cpu_list(cpus: frozenset[int] | set[int]) -> str:
    """{0, 1, 2, 5} -> ``"0-2,5"``."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


@dataclass(frozen=True, slots=True)
class CpuPlacement:
    """Which CPUs the server's programs, the client's programs and the NAPI
    kthreads may run on; ``None`` leaves a role unpinned.

    Written ``server=1,client=0,napi=1`` (:meth:`parse`); a role takes a
    cpulist, and a comma-separated item without ``role=`` continues the
    previous role's list: ``server=1,3,client=0`` is server {1, 3}, client {0}.
    """

    server: frozenset[int] | None = None
    client: frozenset[int] | None = None
    napi: frozenset[int] | None = None

    def __post_init__(self) -> None:
        for role in PLACEMENT_ROLES:
            cpus = getattr(self, role)
            if cpus is None:
                continue
            if not isinstance(cpus, frozenset) or not cpus:
                raise RequestError(f"{role} CPUs {cpus!r}: a non-empty frozenset of CPU numbers")
            if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in cpus):
                raise RequestError(f"{role} CPUs {sorted(cpus)}: CPU numbers are ints >= 0")

    @classmethod
    def parse(cls, text: str, *, cpu_count: int | None = None) -> CpuPlacement:
        """Parse ``server=1,client=0,napi=1``; ``auto`` is the last CPU for the
        server and its NAPI, CPU 0 for the client (needs 2 CPUs; *cpu_count*
        defaults to ``os.cpu_count()``)."""
        text = text.strip()
        if text == "auto":
            n = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
            if n < 2:
                raise RequestError(
                    f"CPU placement 'auto' puts server and client on different CPUs: this "
                    f"machine has {n} CPU, it needs at least 2",
                    hint="run without `cpus`",
                )
            last = frozenset({n - 1})
            return cls(server=last, client=frozenset({0}), napi=last)
        lists: dict[str, list[str]] = {}
        role = ""
        for item in (x.strip() for x in text.split(",")):
            if not item:
                continue
            name, eq, value = item.partition("=")
            if eq:
                role = name.strip()
                if role not in PLACEMENT_ROLES:
                    raise RequestError(
                        f"CPU placement {text!r}: unknown role {role!r} "
                        f"(roles: {', '.join(PLACEMENT_ROLES)}; e.g. server=1,client=0,napi=1)"
                    )
                if role in lists:
                    raise RequestError(f"CPU placement {text!r}: {role} given twice")
                lists[role] = [value]
            elif not role:
                raise RequestError(
                    f"CPU placement {text!r}: start with a role, e.g. server=1,client=0,napi=1"
                )
            else:
                lists[role].append(item)
        if not lists:
            raise RequestError(f"CPU placement {text!r}: e.g. server=1,client=0,napi=1 or auto")
        kw = {r: parse_cpu_list(",".join(v)) for r, v in lists.items()}
        return cls(**kw)

    def for_role(self, role: str) -> frozenset[int] | None:
        if role not in PLACEMENT_ROLES:
            raise RequestError(f"role {role!r}: one of {', '.join(PLACEMENT_ROLES)}")
        cpus: frozenset[int] | None = getattr(self, role)
        return cpus

    def describe(self) -> str:
        """The :meth:`parse` form, e.g. ``server=1,client=0,napi=1`` (``""``: no pinning)."""
        parts = []
        for role in PLACEMENT_ROLES:
            cpus = getattr(self, role)
            if cpus is not None:
                parts.append(f"{role}={format_cpu_list(cpus)}")
        return ",".join(parts)

    def check_machine(self, usable: frozenset[int] | None = None) -> None:
        """Raise :class:`RequestError` if a CPU is not one this process may use
        (*usable* defaults to ``os.sched_getaffinity(0)``: online CPUs minus
        cpuset/taskset limits), saying how many the machine has."""
        avail = usable if usable is not None else frozenset(os.sched_getaffinity(0))
        total = os.cpu_count() or len(avail)
        for role in PLACEMENT_ROLES:
            cpus = getattr(self, role)
            if cpus is None:
                continue
            bad = sorted(cpus - avail)
            if bad:
                raise RequestError(
                    f"{role}={format_cpu_list(cpus)}: CPU {format_cpu_list(set(bad))} is not "
                    f"available; this machine has {total} CPU{'s' if total != 1 else ''} and "
                    f"this process may use {format_cpu_list(avail)}"
                )


def set_affinity(pid: int, cpus: frozenset[int]) -> list[int]:
    """Pin every thread of process *pid* to *cpus* (``taskset -a -p``); return the tids.

    The main thread goes first so that threads it creates from then on
    inherit the mask; the thread list is re-read until a pass finds no
    thread it had not pinned, which closes the race with threads created
    while we were pinning. Raises :class:`NotFoundError` if *pid* is gone.
    """
    done: set[int] = set()
    try:
        os.sched_setaffinity(pid, cpus)
        done.add(pid)
        while True:
            try:
                tids = {int(t) for t in os.listdir(f"/proc/{pid}/task")}
            except FileNotFoundError:
                raise ProcessLookupError(pid) from None
            new = tids - done
            if not new:
                return sorted(done)
            for tid in new:
                with contextlib.suppress(ProcessLookupError):  # thread exited meanwhile
                    os.sched_setaffinity(tid, cpus)
                done.add(tid)
    except ProcessLookupError:
        raise NotFoundError(f"cannot pin process {pid} to CPUs {cpus}: it exited") from None
    except OSError as err:
        raise NetdevkitError(
            f"cannot pin process {pid} to CPUs {format_cpu_list(cpus)}: {err.strerror} "
            "(a CPU offline or outside this cgroup's cpuset?)"
        ) from err


def affinity_of(pid: int) -> frozenset[int]:
    """The union of ``Cpus_allowed_list`` over every thread of *pid*, from /proc
    (what the kernel will let the process run on, read back)."""
    out: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        out |= parse_cpu_list(line.split(":", 1)[1])
        except FileNotFoundError:
            continue
    return frozenset(out)


#: what a terminal, a service manager or a parent sends to stop us
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


@contextlib.contextmanager
def _sigterm_blocked() -> Iterator[None]:
    """Hold SIGTERM, SIGHUP and SIGINT back for the body (handlers run right after it).

    pyroute2's netns.create forks a child that makes the bind mount. A
    SIGTERM handled while that child is still working would find no
    namespace to remove, and the child would then create it: a leak. With
    the signal blocked the child finishes first (it inherits the mask and
    exits on its own), then the handler tears down what now exists.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(_STOP_SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _die_with_parent(parent: int) -> None:
    """In the child before exec: get SIGKILL when the process that started us dies.

    ``PR_SET_PDEATHSIG`` (prctl option 1) survives ``execve`` (of programs that are not
    set-user-ID) and ``ip netns exec`` execs without forking, so it reaches the program
    itself. It fires when the *thread* that forked us exits: the testbed's programs are
    started from the thread that owns the testbed, which outlives them.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the prctl: follow it now
        os._exit(1)


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
        self._terminated = 0  # the signal the SIGTERM/SIGHUP handler ran for
        self._prev_handlers: dict[int, _SigHandler] = {}
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
    def tmpdir(self) -> str:
        """A private temporary directory, removed with the testbed (also by
        ``netdevkit testbed down`` when the owner was killed)."""
        return tmpdir_of(self.config.name)

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
        if self.config.cpus is not None:
            self.config.cpus.check_machine()
        for ns in (self.server_ns, self.client_ns):
            if ndk_netns.exists(ns):
                raise NetdevkitError(
                    f"namespace {ns} already exists: another testbed named "
                    f"{self.config.name!r} is up, or a leftover (`netdevkit testbed show` "
                    f"lists them; `netdevkit testbed down {self.config.name}` removes it)"
                )
        start = time.monotonic()
        self._owner_pid = os.getpid()
        self._terminated = 0
        self._install_handlers()
        try:
            self._build()
            if self._terminated:
                raise SystemExit(128 + self._terminated)
        except BaseException as err:
            self.down()
            if self._terminated and not isinstance(err, SystemExit):
                # The handler tore down, but its SystemExit was swallowed:
                # Python ignores exceptions raised in at-fork callbacks and
                # __del__ methods (pyroute2 forks for every netns socket and
                # drops event loops), so the build ran on into a vanished
                # namespace. Report the SIGTERM, not that.
                raise SystemExit(128 + self._terminated) from err
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
        _fault.point("testbed-record")
        _write_journal(cfg, self._owner)
        os.makedirs(tmpdir_of(cfg.name), mode=0o755, exist_ok=True)
        for ns in (self.server_ns, self.client_ns):
            self._created.append(ns)
            try:
                _fault.point("netns-create")
                with _sigterm_blocked():
                    pr_netns.create(ns)
            except FileExistsError as err:
                self._created.remove(ns)  # someone else's: never remove it
                raise NetdevkitError(f"namespace {ns} appeared while building the testbed") from err
        q = cfg.queues
        _fault.point("veth-create")
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
        _fault.point("link-configure")
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
        # SIGINT/SIGTERM/SIGHUP wait until the teardown is complete (a KeyboardInterrupt
        # half-way would leave a namespace behind with nobody to remove it).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(_STOP_SIGNALS))
        try:
            self._stop_procs()
            # Anything else still running inside (a server's own children, a program
            # started by hand with `ip netns exec`) would keep the namespace alive.
            end_processes([p for ns in self._created for p in ns_pids(ns)])
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
                    _fault.point("netns-remove")
                    _remove_ns(ns)
                    self._created.remove(ns)
                except OSError as err:
                    problems.append(f"{ns}: {err}")
            if self._journal and not self._created:
                _remove_tmpdir(self.config.name)
                with contextlib.suppress(OSError):
                    _remove_journal(self.config.name)
                self._journal = False
            self._is_up = False
            self._ifindex.clear()
        finally:
            self._remove_handlers()
            self._in_down = False
            self.down_seconds = time.monotonic() - start
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if self._sigterm_pending:
            self._sigterm_pending = False
            raise SystemExit(128 + (self._terminated or signal.SIGTERM))
        if problems:
            raise NetdevkitError("testbed teardown left namespaces behind: " + "; ".join(problems))

    def keep(self) -> None:
        """Hand the testbed over to its record: it stays up after this process exits
        (``netdevkit testbed up``), until ``netdevkit testbed down NAME`` (or ``--all``)
        removes it. Programs started with :meth:`popen` are not kept: they are stopped."""
        if not self._is_up:
            raise NetdevkitError(f"testbed {self.config.name!r} is not up: call up() first")
        _write_journal(self.config, self._owner, kept=True)
        self._stop_procs()
        self._remove_handlers()
        self._created.clear()
        self._journal = False
        self._is_up = False

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
        for sig in (signal.SIGTERM, signal.SIGHUP):
            prev = signal.getsignal(sig)
            if prev is signal.SIG_IGN:
                continue  # the process ignores it, so it will not die of it
            self._prev_handlers[sig] = prev
            signal.signal(sig, self._on_sigterm)

    def _remove_handlers(self) -> None:
        if self._atexit:
            atexit.unregister(self.down)
            self._atexit = False
        if not self._prev_handlers:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        prev_handlers, self._prev_handlers = self._prev_handlers, {}
        for sig, prev in prev_handlers.items():
            # Restore only if ours is still on top; a handler installed later
            # (another testbed) chains to ours, which stays harmless once down.
            if signal.getsignal(sig) == self._on_sigterm:
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM or SIGHUP: tear down, then behave as the previous handler would."""
        prev = self._prev_handlers.get(signum)
        if os.getpid() != self._owner_pid:
            # Inherited across fork: behave as the handler before ours did.
            signal.signal(signum, prev if prev is not None else signal.SIG_DFL)
            if callable(prev):
                prev(signum, frame)
            else:
                os.kill(os.getpid(), signum)
            return
        self._terminated = signum
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
        (SIGTERM, then SIGKILL after 2 s) if it is still running, and the kernel
        kills it (``PR_SET_PDEATHSIG``) if this process dies without a ``down()``.

        With a :class:`CpuPlacement` for the side, the process and all its
        threads are pinned right after it starts (see :func:`set_affinity`);
        a pin that fails stops the process and raises."""
        self._procs = [p for p in self._procs if p.poll() is None]
        _fault.point("process-start")
        kw.setdefault("preexec_fn", functools.partial(_die_with_parent, os.getpid()))
        p: subprocess.Popen[bytes] = subprocess.Popen(self._ns_argv(side, argv), **kw)
        self._procs.append(p)
        cpus = self.cpus_of(side)
        if cpus is not None:
            try:
                set_affinity(p.pid, cpus)
            except NotFoundError:
                pass  # it exited before it could be pinned: the caller sees its status
            except NetdevkitError:
                p.kill()
                p.wait()
                raise
        return p

    def cpus_of(self, role: str) -> frozenset[int] | None:
        """The CPUs *role* ("server", "client", "napi") is placed on; None: unpinned."""
        cpus = self.config.cpus
        return None if cpus is None else cpus.for_role(role)

    def pin_napi_threads(self, side: Side = "server") -> dict[int, int]:
        """Pin the NAPI kthreads of one end to the placement's ``napi`` CPUs.

        Only threaded NAPIs have a kthread; call this after turning threaded
        NAPI on. Returns {napi id: kthread pid} of what was pinned (empty
        without a ``napi`` placement or without threaded NAPIs)."""
        cpus = self.cpus_of("napi")
        if cpus is None:
            return {}
        from ..netdev.client import Netdev

        with Netdev.open(self.ns_of(side)) as nd:
            napis = nd.napi_dump(ifindex=self._index(side))
        pinned: dict[int, int] = {}
        for n in napis:
            if n.pid:
                set_affinity(n.pid, cpus)
                pinned[n.id] = n.pid
        return pinned

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
