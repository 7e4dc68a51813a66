"""Where the bench's server and client run: what the runner needs of it.

Two kinds of site run the same measurement code (:mod:`.runner`, :mod:`.workloads`):

- :class:`netdevkit.testbed.Testbed`: two namespaces and a veth pair on this machine.
- :class:`NicSite`: the servers here on a real interface (``--ifname``, optionally in a
  network namespace, ``--netns``), the clients on a peer host over ssh (:mod:`.remote`).

:class:`Site` is the protocol both satisfy. A client started with ``popen("client", ...)``
on a :class:`NicSite` is the local ``ssh`` process; its output is the remote client's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Protocol

from .. import _fault
from .._os import SignalScope, set_affinity
from ..errors import NetdevkitError, NotFoundError, RequestError, ToolError
from ..procs import stop_all
from ..testbed import CpuPlacement
from . import remote
from .nic import NicInfo, nic_info
from .results import RunConfig

__all__ = ["NicOptions", "NicSite", "Site", "check_nic", "interface_addr", "nic_marks"]


@dataclass(frozen=True, slots=True)
class NicOptions:
    """``--ifname IF --peer HOST``: run on a real interface, the load from a peer."""

    ifname: str
    peer: remote.Peer
    #: network namespace IF is in (None: this one)
    netns: str | None = None


def check_nic(nic: NicOptions, workloads: tuple[str, ...]) -> remote.PeerFacts:
    """Before anything changes: IF has an address, the peer answers, has netdevkit and
    every client program of *workloads*, and traffic crosses IF (:func:`.remote.check_peer`)."""
    addr = interface_addr(nic.ifname, nic.netns)
    programs = [x for w in workloads for x in remote.CLIENT_PROGRAMS.get(w, ())]
    return remote.check_peer(nic.peer, nic.ifname, addr, programs)


class Site(Protocol):
    """What the runner uses of where it runs (a :class:`~netdevkit.testbed.Testbed` has
    all of it)."""

    @property
    def server_addr(self) -> str: ...
    @property
    def server_ns(self) -> str | None: ...
    @property
    def server_if(self) -> str: ...
    @property
    def server_ifindex(self) -> int: ...
    @property
    def tmpdir(self) -> str: ...

    def popen(self, side: Any, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]: ...
    def socket(
        self, side: Any, family: int = ..., type: int = ..., proto: int = ...
    ) -> socket.socket: ...
    def cpus_of(self, role: str) -> frozenset[int] | None: ...
    def pin_napi_threads(self, side: Any = ...) -> dict[int, int]: ...


def interface_addr(ifname: str, netns: str | None = None) -> str:
    """The first IPv4 address of *ifname* (the servers bind to it)."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    argv = [ip, *(["-n", netns] if netns else []), "-j", "-4", "addr", "show", "dev", ifname]
    r = subprocess.run(argv, check=False, capture_output=True, text=True)
    if r.returncode != 0:
        where = f" in netns {netns}" if netns else ""
        raise RequestError(f"interface {ifname}: no such interface{where}")
    import json

    for link in json.loads(r.stdout or "[]"):
        for a in link.get("addr_info", ()):
            if a.get("family") == "inet":
                return str(a["local"])
    raise RequestError(f"interface {ifname}: has no IPv4 address for the servers to bind to")


def nic_marks(site: NicSite, config: RunConfig) -> RunConfig:
    """*config* marked with the interface, its driver, firmware, link speed, interrupt
    CPUs and the peer, so that runs on different NICs compare (``bench compare``)."""
    info = site.info()
    where = f"{site.ifname} (netns {site.netns})" if site.netns else site.ifname
    return dataclasses.replace(
        config,
        ifname=where,
        driver=info.driver or "unknown",
        firmware=info.firmware or "none",
        link_speed=info.describe_speed(),
        irq_cpus=info.describe_irqs(),
        peer=site.peer.describe(),
    )


#: the run's temporary directory (the sockperf server's feed file): ``PREFIX<pid>-*``
_TMP_PREFIX = "ndkbench-nic-"


def _remove_stale_tmpdirs() -> None:
    """Remove the temporary directories of runs that were SIGKILLed (their pid is gone)."""
    base = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            if not name.startswith(_TMP_PREFIX):
                continue
            pid = name[len(_TMP_PREFIX) :].partition("-")[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _die_with_parent(parent: int) -> None:
    from ..testbed.lifecycle import _die_with_parent as die

    die(parent)


class NicSite:
    """The servers here on *ifname*, the clients on *peer*; see the module docstring.

    A context manager: leaving it (normally, on an exception, Ctrl-C, SIGTERM or SIGHUP)
    stops every local server and every ssh, then checks the peer for processes of this
    run (:func:`.remote.leftovers`), kills any found and records them in
    :attr:`leftover`."""

    def __init__(
        self,
        ifname: str,
        peer: remote.Peer,
        *,
        netns: str | None = None,
        cpus: CpuPlacement | None = None,
    ) -> None:
        self.ifname = ifname
        self.peer = peer
        self.netns = netns
        self.cpus = cpus
        self.addr = interface_addr(ifname, netns)
        from ..netdev.client import ifindex_of

        self.ifindex = ifindex_of(ifname, netns)
        self.tag = uuid.uuid4().hex[:16]
        self.leftover: list[int] = []
        self._tmp: str | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._scope = SignalScope((signal.SIGTERM, signal.SIGHUP), self._on_signal)

    # -- the Site protocol ------------------------------------------------------

    @property
    def server_addr(self) -> str:
        return self.addr

    @property
    def server_ns(self) -> str | None:
        return self.netns

    @property
    def server_if(self) -> str:
        return self.ifname

    @property
    def server_ifindex(self) -> int:
        return self.ifindex

    @property
    def tmpdir(self) -> str:
        if self._tmp is None:
            raise ToolError("the bench's site is not open")
        return self._tmp

    def cpus_of(self, role: str) -> frozenset[int] | None:
        """The CPUs of *role* here; the client runs on the peer (None)."""
        if self.cpus is None or role == "client":
            return None
        return self.cpus.for_role(role)

    def popen(self, side: Any, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        """A server here (in the namespace, pinned to the server CPUs), or a client on the
        peer (the local ssh; the remote program under :data:`.remote.WRAPPER`). Both die
        with this process (``PR_SET_PDEATHSIG``)."""
        self._procs = [p for p in self._procs if p.poll() is None]
        kw.setdefault("preexec_fn", functools.partial(_die_with_parent, os.getpid()))
        if side == "client":
            _fault.point("remote-start")
            kw.setdefault("stdin", subprocess.PIPE)  # its end is the wrapper's signal
            # a terminal's Ctrl-C reaches the bench, which ends the ssh itself
            kw.setdefault("start_new_session", True)
            run = remote.ssh_argv(
                self.peer, remote.remote_argv(argv, self.peer.python), tag=self.tag
            )
            p: subprocess.Popen[bytes] = subprocess.Popen(run, **kw)
            self._procs.append(p)
            return p
        _fault.point("process-start")
        if self.netns:
            ip = shutil.which("ip") or "/usr/sbin/ip"
            argv = [ip, "netns", "exec", self.netns, *argv]
        p = subprocess.Popen(argv, **kw)
        self._procs.append(p)
        cpus = self.cpus_of("server")
        if cpus is not None:
            try:
                set_affinity(p.pid, cpus)
            except NotFoundError:
                pass  # it exited: the caller sees its status
            except NetdevkitError:
                p.kill()
                p.wait()
                raise
        return p

    def socket(
        self,
        side: Any,
        family: int = socket.AF_INET,
        type: int = socket.SOCK_STREAM,
        proto: int = 0,
    ) -> socket.socket:
        """A socket here (in the namespace): the runner's "is it listening" probe."""
        from ..netns import entered

        with entered(self.netns):
            return socket.socket(family, type, proto)

    def pin_napi_threads(self, side: Any = "server") -> dict[int, int]:
        """Pin IF's threaded-NAPI kthreads to the placement's ``napi`` CPUs."""
        cpus = self.cpus_of("napi")
        if cpus is None:
            return {}
        from ..netdev.client import Netdev

        with Netdev.open(self.netns) as nd:
            napis = nd.napi_dump(ifindex=self.ifindex)
        pinned: dict[int, int] = {}
        for n in napis:
            if n.pid:
                set_affinity(n.pid, cpus)
                pinned[n.id] = n.pid
        return pinned

    # -- what the report says about it -----------------------------------------

    def info(self) -> NicInfo:
        return nic_info(self.ifname, self.netns)

    # -- lifetime -------------------------------------------------------------------

    def __enter__(self) -> NicSite:
        _remove_stale_tmpdirs()
        self._tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-")
        self._scope.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through tuned() and close()

    def close(self) -> None:
        """Stop what this site started, here and on the peer (idempotent)."""
        self._scope.restore()
        procs, self._procs = self._procs, []
        stop_all(procs, timeout=2.0)
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        # a wrapper whose channel just closed is still ending its group: give it a moment
        if remote.leftovers(self.peer, self.tag):
            time.sleep(1.5)
            self.leftover = remote.leftovers(self.peer, self.tag, kill=True)
