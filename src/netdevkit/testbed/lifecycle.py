"""Building and tearing down a testbed: :class:`Testbed`.

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
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from .. import _fault
from .. import netns as ndk_netns
from .._os import SignalScope, mask_signals, set_affinity
from ..errors import (
    CleanupError,
    ConflictError,
    NetdevkitError,
    NotFoundError,
    RequestError,
    StateError,
    UnsupportedError,
)
from ..procs import stop_all
from .config import CLIENT_IF, SERVER_IF, Side, TestbedConfig
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
    with mask_signals(_STOP_SIGNALS):
        yield


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
        self._signals = SignalScope((signal.SIGTERM, signal.SIGHUP), self._on_sigterm)
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
            raise StateError(f"testbed {self.config.name!r} is not up: call up() first")
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
                raise ConflictError(
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
                raise ConflictError(f"namespace {ns} appeared while building the testbed") from err
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
                raise NotFoundError(f"{ifname} missing in {ns} right after creating it")
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
                raise StateError(f"veth ends {pending} not operationally up after 5 s")
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
        with mask_signals(_STOP_SIGNALS):
            try:
                self._teardown(problems)
            finally:
                self._remove_handlers()
                self._in_down = False
                self.down_seconds = time.monotonic() - start
        if self._sigterm_pending:
            self._sigterm_pending = False
            raise SystemExit(128 + (self._terminated or signal.SIGTERM))
        if problems:
            raise CleanupError("testbed teardown left namespaces behind: " + "; ".join(problems))

    def _teardown(self, problems: list[str]) -> None:
        """Stop every process inside, delete the veth pair, remove the namespaces this
        object created and, once they are gone, the journal; failures go to *problems*."""
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

    def keep(self) -> None:
        """Hand the testbed over to its record: it stays up after this process exits
        (``netdevkit testbed up``), until ``netdevkit testbed down NAME`` (or ``--all``)
        removes it. Programs started with :meth:`popen` are not kept: they are stopped."""
        if not self._is_up:
            raise StateError(f"testbed {self.config.name!r} is not up: call up() first")
        _write_journal(self.config, self._owner, kept=True)
        self._stop_procs()
        self._remove_handlers()
        self._created.clear()
        self._journal = False
        self._is_up = False

    def _stop_procs(self) -> None:
        procs, self._procs = self._procs, []
        stop_all(procs, timeout=2.0)

    # -- signals and atexit ---------------------------------------------------

    def _install_handlers(self) -> None:
        if not self._atexit:
            atexit.register(self.down)
            self._atexit = True
        self._signals.install()

    def _remove_handlers(self) -> None:
        if self._atexit:
            atexit.unregister(self.down)
            self._atexit = False
        # Restored only if ours is still on top; a handler installed later
        # (another testbed) chains to ours, which stays harmless once down.
        self._signals.restore()

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM or SIGHUP: tear down, then behave as the previous handler would."""
        prev = self._signals.previous_of(signum)
        if os.getpid() != self._owner_pid:
            # Inherited across fork: behave as the handler before ours did.
            self._signals.restore()
            self._signals.chain(signum, frame, prev)
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
            raise StateError(f"testbed {self.config.name!r} is not up: call up() first")
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
