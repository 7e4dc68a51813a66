"""The bench's peer host: clients started over the system ``ssh``, and nothing left there.

``netdevkit bench --ifname IF --peer [user@]host`` runs the servers here, bound to IF's
address, and every client on the peer. netdevkit handles no password: ssh runs with
``BatchMode=yes`` and the user's own keys and configuration (``--ssh-config FILE`` and
``--ssh-option K=V`` add to them). Nothing is changed on the peer: no file is written
there, no setting touched; the clients are ordinary programs that end with the run.

How every remote process ends with the run, whatever way the run ends:

- Each client is started by a small wrapper (:data:`WRAPPER`, run with the peer's Python)
  that puts the client in a session (and process group) of its own and watches its own
  stdin, the ssh channel: when the channel closes (the local ssh ended: a normal end, an
  exception, Ctrl-C, or a SIGKILL of the bench, after which the local ssh gets SIGKILL
  from ``PR_SET_PDEATHSIG``) sshd closes the wrapper's stdin, and the wrapper kills the
  client's whole group (SIGTERM, then SIGKILL). sshd also signals it (SIGHUP) when the
  connection drops; the wrapper treats that the same way.
- Every remote process of a run carries ``NETDEVKIT_REMOTE_RUN=<tag>`` in its environment
  (children inherit it). When the run ends, one more ssh call lists the processes of the
  peer whose environment holds the tag (:data:`LEFTOVERS`); any found are killed, and
  the run says so.

Pre-checks (:func:`check_peer`), before anything changes: the peer answers over ssh (one
line and exit 1 when it does not), its Python imports netdevkit (the peer's version is
reported; how to install it when it does not), each client program is there (a missing
one named with its Debian package), and traffic between the two crosses IF: ``ip route
get PEER_ADDR`` here says ``dev IF`` from IF's address, ``ip route get OUR_ADDR`` on the
peer leaves from PEER_ADDR. No clock sync is needed: every latency is a round trip
measured on the peer (sockperf's half-RTT is half of one).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass

from ..errors import NetdevkitError, RequestError, ToolError

__all__ = [
    "CLIENT_PROGRAMS",
    "LEFTOVERS",
    "TAG_ENV",
    "WRAPPER",
    "Peer",
    "PeerFacts",
    "check_peer",
    "leftovers",
    "route_dev",
    "ssh_argv",
]

#: the environment variable every remote process of a run carries
TAG_ENV = "NETDEVKIT_REMOTE_RUN"

#: workload (or --client) -> programs its client needs on the peer, with Debian packages
CLIENT_PROGRAMS: dict[str, tuple[tuple[str, str], ...]] = {
    "echo": (("sockperf", "sockperf"), ("stdbuf", "coreutils")),
    "sockperf": (("sockperf", "sockperf"), ("stdbuf", "coreutils")),
    "memcached": (),
    "redis": (("redis-benchmark", "redis-tools"),),
    "http": (("wrk", "wrk"),),
}

#: run on the peer with its Python: ``PY -c WRAPPER ARGV...``; see the module docstring
WRAPPER = r"""
import os, signal, subprocess, sys, threading, time
try:
    p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, start_new_session=True)
except OSError as e:
    sys.stderr.write("peer: cannot start %s: %s\n" % (sys.argv[1], e.strerror))
    sys.exit(127)
def end(*_):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except OSError:
            return
        time.sleep(0.5)
def on_signal(signum, frame):
    end()
    os._exit(128 + signum)
for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
    signal.signal(s, on_signal)
def watch():
    while True:
        try:
            if not os.read(0, 4096):
                break
        except OSError:
            break
    end()
    os._exit(129)
threading.Thread(target=watch, daemon=True).start()
rc = p.wait()
try:
    os.killpg(p.pid, signal.SIGKILL)
except OSError:
    pass
sys.exit(rc if rc >= 0 else 128 - rc)
"""

#: run on the peer: ``PY -c LEFTOVERS TAG [kill]``: the pids whose environment holds the
#: tag (only our own processes are readable, which is all that can carry it)
LEFTOVERS = r"""
import os, signal, sys
want = ("%s=%s" % (sys.argv[1], sys.argv[2])).encode()
me, found = os.getpid(), []
for name in os.listdir("/proc"):
    if not name.isdigit() or int(name) == me:
        continue
    try:
        with open("/proc/%s/environ" % name, "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        continue
    if want in env:
        found.append(int(name))
        if len(sys.argv) > 3:
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
print(" ".join(map(str, found)))
"""

#: run on the peer: ``PY -c CHECK OUR_ADDR PROGRAM...``: one JSON line of facts
CHECK = r"""
import json, shutil, subprocess, sys
out = {"python": sys.version.split()[0], "netdevkit": None, "missing": [], "route": None}
try:
    import netdevkit
    out["netdevkit"] = getattr(netdevkit, "__version__", "?")
except Exception as e:
    out["import_error"] = "%s: %s" % (type(e).__name__, e)
out["missing"] = [p for p in sys.argv[2:] if shutil.which(p) is None]
ip = shutil.which("ip") or "/usr/sbin/ip"
try:
    r = subprocess.run([ip, "-j", "route", "get", sys.argv[1]], capture_output=True, text=True)
    out["route"] = json.loads(r.stdout)[0] if r.returncode == 0 else None
    out["route_error"] = r.stderr.strip()
except (OSError, ValueError, IndexError) as e:
    out["route_error"] = str(e)
print(json.dumps(out))
"""


@dataclass(frozen=True, slots=True)
class Peer:
    """Where the clients run, and how to reach it."""

    #: ``[user@]host`` as ssh takes it
    target: str
    #: the peer's address on IF's network (what the servers here see as the client)
    addr: str
    #: ``ssh -F FILE`` ("" : the user's own ~/.ssh/config)
    ssh_config: str = ""
    #: ``ssh -o K=V`` each
    ssh_options: tuple[str, ...] = ()
    #: the peer's Python (it must import netdevkit)
    python: str = "python3"
    #: network namespace the local ssh runs in (None: this one)
    netns: str | None = None

    def describe(self) -> str:
        return f"{self.target} ({self.addr})"


@dataclass(frozen=True, slots=True)
class PeerFacts:
    """What :func:`check_peer` found on the peer."""

    python: str
    netdevkit: str
    route_src: str


def ssh_argv(peer: Peer, remote: list[str], *, tag: str = "") -> list[str]:
    """The local argv that runs *remote* on the peer (quoted for its login shell); with
    *tag*, under :data:`WRAPPER` and with the run's tag in its environment."""
    ssh = shutil.which("ssh") or "ssh"
    argv = [ssh, "-T", "-o", "BatchMode=yes"]
    if peer.ssh_config:
        argv += ["-F", peer.ssh_config]
    for opt in peer.ssh_options:
        argv += ["-o", opt]
    if tag:
        remote = ["env", f"{TAG_ENV}={tag}", peer.python, "-c", WRAPPER, *remote]
    argv += ["--", peer.target, " ".join(shlex.quote(x) for x in remote)]
    if peer.netns:
        ip = shutil.which("ip") or "/usr/sbin/ip"
        argv = [ip, "netns", "exec", peer.netns, *argv]
    return argv


def _ssh(peer: Peer, remote: list[str], timeout: float = 30.0) -> str:
    """Run *remote* on the peer to its end; its stdout. ssh failing is one line."""
    try:
        r = subprocess.run(
            ssh_argv(peer, remote),
            stdin=subprocess.DEVNULL,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ToolError(f"peer {peer.target}: ssh gave no answer in {timeout:.0f} s") from None
    except OSError as err:
        raise ToolError(f"cannot run ssh: {err.strerror}") from None
    if r.returncode == 255:  # ssh's own failure (connection, authentication)
        said = [x for x in r.stderr.strip().splitlines() if x.strip()]
        why = said[-1] if said else "ssh exited with status 255"
        raise ToolError(f"cannot reach the peer {peer.target} over ssh: {why}")
    if r.returncode == 127:
        raise ToolError(
            f"peer {peer.target}: no {peer.python} there: install Python 3 and netdevkit "
            "on the peer (pip install netdevkit), or name its Python (peer_python)"
        )
    if r.returncode != 0:
        said = r.stderr.strip().splitlines()
        raise ToolError(
            f"peer {peer.target}: {remote[0]} exited with status {r.returncode}"
            + (f": {said[-1]}" if said else "")
        )
    return r.stdout


def route_dev(addr: str, netns: str | None = None) -> tuple[str, str]:
    """``ip route get ADDR`` here: (device, preferred source address)."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    argv = [ip, "-j", "route", "get", addr]
    if netns:
        argv = [ip, "-n", netns, "-j", "route", "get", addr]
    r = subprocess.run(argv, check=False, capture_output=True, text=True)
    try:
        route = json.loads(r.stdout)[0]
    except (ValueError, IndexError):
        said = r.stderr.strip().splitlines()
        raise RequestError(
            f"no route to the peer's address {addr}" + (f": {said[-1]}" if said else "")
        ) from None
    return str(route.get("dev", "")), str(route.get("prefsrc", ""))


def check_peer(
    peer: Peer, ifname: str, our_addr: str, programs: list[tuple[str, str]]
) -> PeerFacts:
    """The pre-checks of the module docstring; raises one clear error for the first that
    fails. Changes nothing, here or there."""
    dev, src = route_dev(peer.addr, peer.netns)
    if dev != ifname:
        raise RequestError(
            f"traffic to the peer's address {peer.addr} leaves through {dev or 'no device'}, "
            f"not {ifname} (ip route get {peer.addr}): give the peer's address on "
            f"{ifname}'s network (peer_addr)"
        )
    progs = sorted({p for p, _ in programs})
    text = _ssh(peer, [peer.python, "-c", CHECK, our_addr, *progs])
    try:
        facts = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ToolError(f"peer {peer.target}: the check printed no answer") from None
    if facts.get("netdevkit") is None:
        from .. import __version__

        raise ToolError(
            f"peer {peer.target}: {peer.python} cannot import netdevkit "
            f"({facts.get('import_error', 'not installed')}): install it there "
            f"(pip install netdevkit=={__version__}) or name a Python that has it "
            "(peer_python)"
        )
    missing = [f"{p} (Debian package '{pkg}')" for p, pkg in programs if p in facts["missing"]]
    if missing:
        raise ToolError(f"peer {peer.target} lacks client programs: {', '.join(missing)}")
    route = facts.get("route") or {}
    if route.get("prefsrc") not in (None, peer.addr) or not route:
        why = facts.get("route_error") or f"it leaves from {route.get('prefsrc')}"
        raise RequestError(
            f"peer {peer.target}: ip route get {our_addr} there does not leave from "
            f"{peer.addr}: {why}"
        )
    return PeerFacts(str(facts["python"]), str(facts["netdevkit"]), src)


def leftovers(peer: Peer, tag: str, *, kill: bool = False) -> list[int]:
    """Pids on the peer still carrying the run's *tag* (killed first when *kill*)."""
    remote = [peer.python, "-c", LEFTOVERS, TAG_ENV, tag] + (["kill"] if kill else [])
    try:
        text = _ssh(peer, remote, timeout=20.0)
    except NetdevkitError:
        raise
    return [int(x) for x in text.split()]


def peer_address(target: str, peer: Peer | None = None) -> str:
    """The IPv4 address ssh would connect to for *target* (``ssh -G`` applies the user's
    config: a Host alias gets its HostName)."""
    import socket

    host = target.rpartition("@")[2]
    if peer is not None:
        argv = ssh_argv(peer, ["true"])
        at = argv.index("--")
        argv = [*argv[:at], "-G", peer.target]
        r = subprocess.run(argv, check=False, capture_output=True, text=True)
        for line in r.stdout.splitlines():
            key, _, value = line.partition(" ")
            if key == "hostname" and value:
                host = value.strip()
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET)
    except OSError:
        raise RequestError(
            f"peer {target}: cannot resolve {host!r}: give its address (peer_addr)"
        ) from None
    return str(infos[0][4][0])


def remote_argv(argv: list[str], python: str) -> list[str]:
    """A client argv built for this machine, for the peer: this Python becomes the peer's,
    and absolute program paths become names the peer's PATH resolves."""
    import sys

    out = []
    for i, arg in enumerate(argv):
        if arg == sys.executable:
            out.append(python)
        elif (i == 0 or out[-1:] == ["-oL"]) and os.path.isabs(arg):
            out.append(os.path.basename(arg))
        else:
            out.append(arg)
    return out
