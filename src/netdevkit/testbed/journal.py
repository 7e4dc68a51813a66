"""Finding testbeds again: their records, the owner markers, and removing what they left.

Every testbed is found by two markers, both written before what they describe exists:

- a record per testbed, ``$NETDEVKIT_STATE_DIR/testbeds/NAME.json`` (default state
  directory ``/run/netdevkit``), naming its namespaces, its owner and its private
  temporary directory ``testbeds/NAME.d``;
- the alias of ``lo`` inside each namespace (``netdevkit-testbed:NAME owner=PID:START
  state=TAG``, TAG naming the state directory), which finds a namespace whose record is
  lost.

Everything a testbed may leave behind when its owner is killed -- its namespaces, every
process still running inside them (a server re-parented to init), its temporary directory
and its record -- is found from those and removed by :func:`down_all` (``netdevkit testbed
down --all``) or :func:`down` (``testbed down NAME``). Only testbeds of *this* state
directory are ever touched: another user's (or another test run's) testbeds live under
another state directory and carry another tag.

The namespace helpers that :class:`~netdevkit.testbed.lifecycle.Testbed` shares
with :func:`down_all` (privilege check, netlink in a namespace, removing
``/run/netns/NAME``) live here too.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .. import netns as ndk_netns
from .._os import CAP_NET_ADMIN, CAP_SYS_ADMIN, has_capability
from .._signals import blocked
from ..errors import (
    CleanupError,
    ConflictError,
    KernelError,
    NetdevkitError,
    NotFoundError,
    PrivilegeError,
    RequestError,
)
from ..journal import state_dir

if TYPE_CHECKING:
    from pyroute2.netlink.exceptions import NetlinkError

    from .config import TestbedConfig

#: where the records live when NETDEVKIT_STATE_DIR is unset (see :func:`records_dir`)
JOURNAL_DIR = "/run/netdevkit/testbeds"
ALIAS_PREFIX = "netdevkit-testbed:"
NS_SUFFIXES = ("-srv", "-cli")


def _require_privileges() -> None:
    """setns/unshare/mount need CAP_SYS_ADMIN; links and ethtool CAP_NET_ADMIN."""
    if not has_capability(CAP_NET_ADMIN) or not has_capability(CAP_SYS_ADMIN):
        raise PrivilegeError(
            "a testbed creates network namespaces and veth pairs: needs root "
            "(CAP_NET_ADMIN and CAP_SYS_ADMIN); run as root"
        )


def _kernel_error(err: NetlinkError, operation: str) -> KernelError:
    msg = str(err.args[1]) if len(err.args) > 1 else ""
    extack = "" if msg == os.strerror(err.code) else msg
    return KernelError(err.code, operation, extack=extack)


def _remove_ns(name: str) -> bool:
    """Remove /run/netns/NAME. True if it was there. Tolerates it being gone.

    Uses pyroute2; if that fails for another reason than "already gone",
    falls back to the same two syscalls (umount2 MNT_DETACH, unlink).
    """
    path = ndk_netns.path_of(name)
    if not os.path.exists(path):
        return False
    from pyroute2 import netns as pr_netns  # here: pyroute2 takes ~250 ms to import

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


def remove_namespace(name: str) -> bool:
    """Remove /run/netns/NAME (see :func:`_remove_ns`); True if it was there."""
    return _remove_ns(name)


@contextlib.contextmanager
def _ipr(ns: str, operation: str) -> Iterator[Any]:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute(netns=ns, flags=0, ext_ack=True) as ipr:
            yield ipr
    except NetlinkError as err:
        raise _kernel_error(err, f"{operation} in netns {ns}") from err


def _lo_alias(ns: str) -> str:
    """The alias of lo in *ns* ("" if none), through one rtnetlink dump: no pyroute2, whose
    IPRoute(netns=...) forks a helper process for every namespace asked about."""
    from ..observe.rtnl import LinkDumper

    dumper = LinkDumper(ns)
    try:
        return next((link.alias for link in dumper.dump() if link.ifindex == 1), "")
    finally:
        dumper.close()


# --- records, owner and leftovers ---------------------------------------------
#
# A testbed's owner is "PID:STARTTIME" (starttime = field 22 of
# /proc/PID/stat, in clock ticks since boot), so a recycled pid is not
# mistaken for the process that built the testbed. It is written to the
# record and to the lo alias of both namespaces.


def records_dir() -> str:
    """``$NETDEVKIT_STATE_DIR/testbeds`` (``/run/netdevkit/testbeds`` by default)."""
    return os.path.join(state_dir(), "testbeds")


def state_tag() -> str:
    """A short tag of the state directory, written into the lo aliases."""
    return hashlib.sha1(os.path.abspath(state_dir()).encode()).hexdigest()[:10]


def tmpdir_of(name: str) -> str:
    """The private temporary directory of testbed *name* (removed with it)."""
    return os.path.join(records_dir(), f"{name}.d")


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
    return f"{ALIAS_PREFIX}{name} owner={owner} state={state_tag()}"


def _parse_alias(alias: str) -> tuple[str, str, str] | None:
    """(testbed name, owner token, state tag) from a lo alias, or None if not ours."""
    if not alias.startswith(ALIAS_PREFIX):
        return None
    name, _, rest = alias[len(ALIAS_PREFIX) :].partition(" owner=")
    owner, _, tag = rest.partition(" state=")
    return name, owner, tag


def _journal_path(name: str) -> str:
    return os.path.join(records_dir(), f"{name}.json")


def _write_journal(cfg: TestbedConfig, owner: str, *, kept: bool = False) -> None:
    """Write the record (signals held: it is whole, or, after a SIGKILL, unreadable and then
    known by its file name)."""
    os.makedirs(records_dir(), exist_ok=True)
    data = {
        "name": cfg.name,
        "namespaces": [cfg.server_ns, cfg.client_ns],
        "owner": owner,
        "kept": kept,
        "tmpdir": tmpdir_of(cfg.name),
        "created": time.time(),
    }
    with blocked():
        fd = os.open(_journal_path(cfg.name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps(data).encode())
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class _Rec:
    namespaces: tuple[str, ...]
    owner: str
    kept: bool


def _read_journals() -> dict[str, _Rec]:
    """testbed name -> record, for every record file (an unreadable one -- its writer was
    killed mid-write -- is known by its file name, owner unknown)."""
    out: dict[str, _Rec] = {}
    try:
        entries = sorted(os.listdir(records_dir()))
    except (FileNotFoundError, NotADirectoryError):
        return out
    for entry in entries:
        if not entry.endswith(".json"):
            continue
        name = entry[: -len(".json")]
        default = _Rec((f"{name}-srv", f"{name}-cli"), "", False)
        try:
            with open(os.path.join(records_dir(), entry), encoding="utf-8") as f:
                data = json.load(f)
            namespaces = tuple(str(ns) for ns in data["namespaces"])
            if str(data["name"]) != name or not all(ns.startswith(name) for ns in namespaces):
                raise ValueError("record does not match its file name")
            out[name] = _Rec(namespaces, str(data["owner"]), bool(data.get("kept", False)))
        except (OSError, ValueError, KeyError, TypeError):
            out[name] = default
    return out


def _remove_journal(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_journal_path(name))
    with contextlib.suppress(OSError):  # empty now: the last testbed removes the directory
        os.rmdir(records_dir())


def _remove_tmpdir(name: str) -> None:
    shutil.rmtree(tmpdir_of(name), ignore_errors=True)


# --- processes inside a namespace ----------------------------------------------------


def ns_pids(ns: str) -> list[int]:
    """Processes whose network namespace is *ns* (compared by nsfs inode), sorted."""
    try:
        st = os.stat(ndk_netns.path_of(ns))
    except (FileNotFoundError, NotFoundError, RequestError):
        return []
    want = f"net:[{st.st_ino}]"
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{entry}/ns/net") == want:
                out.append(int(entry))
    return sorted(out)


def end_processes(pids: list[int], grace: float = 2.0) -> None:
    """SIGTERM *pids*, then SIGKILL whatever still runs after *grace* seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _running(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] not in (b"Z", b"X")  # zombies have ended


# --- finding and removing ----------------------------------------------------------------

Status = Literal["running", "kept", "leftover"]


@dataclass(frozen=True, slots=True)
class TestbedInfo:
    """A testbed of this state directory as found now.

    ``status``: ``running`` (its owner process runs), ``kept`` (made by ``netdevkit testbed
    up``, which hands it over to the record) or ``leftover`` (its owner is gone).
    """

    __test__ = False  # not a pytest test class despite the name

    name: str
    namespaces: tuple[str, ...]
    status: Status
    owner_pid: int
    processes: tuple[int, ...]
    tmpdir: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespaces": list(self.namespaces),
            "status": self.status,
            "owner_pid": self.owner_pid,
            "processes": list(self.processes),
            "tmpdir": self.tmpdir,
        }


def _testbed_namespaces(prefix: str | None) -> dict[str, tuple[str, str, bool]]:
    """Existing testbed namespaces of this state directory: ns -> (name, owner, kept)."""
    found: dict[str, tuple[str, str, bool]] = {}
    existing = set(ndk_netns.list_names())
    for name, rec in _read_journals().items():
        if prefix is not None and not name.startswith(prefix):
            continue
        for ns in rec.namespaces:
            if ns in existing:
                found[ns] = (name, rec.owner, rec.kept)
    tag = state_tag()
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
        if parsed is not None and parsed[0] == name and parsed[2] == tag:
            found[ns] = (name, parsed[1], False)
    return found


def testbeds(prefix: str | None = None) -> list[TestbedInfo]:
    """Every testbed of this state directory (namespaces, a record or a temporary
    directory still there), sorted by name. *prefix* filters on the name."""
    by_name: dict[str, tuple[list[str], str, bool]] = {}
    for ns, (name, owner, kept) in _testbed_namespaces(prefix).items():
        by_name.setdefault(name, ([], owner, kept))[0].append(ns)
    for name, rec in _read_journals().items():
        if prefix is None or name.startswith(prefix):
            by_name.setdefault(name, ([], rec.owner, rec.kept))
    out = []
    for name, (namespaces, owner, kept) in sorted(by_name.items()):
        alive = _owner_alive(owner)
        status: Status = "running" if alive else ("kept" if kept else "leftover")
        pid = owner.partition(":")[0]
        procs = tuple(p for ns in sorted(namespaces) for p in ns_pids(ns))
        tmp = tmpdir_of(name)
        out.append(
            TestbedInfo(
                name,
                tuple(sorted(namespaces)),
                status,
                int(pid) if pid.isdigit() else 0,
                procs,
                tmp if os.path.isdir(tmp) else None,
            )
        )
    return out


def list_testbeds(prefix: str | None = None) -> list[str]:
    """Names of the existing namespaces that belong to netdevkit testbeds of this state
    directory (live or left over), sorted. *prefix* filters on the testbed name."""
    return sorted(_testbed_namespaces(prefix))


def leftover_testbeds(prefix: str | None = None) -> list[str]:
    """Names of the testbeds whose owner is gone (left over or kept by ``testbed up``)."""
    return [t.name for t in testbeds(prefix) if t.status != "running"]


def _remove(info: TestbedInfo) -> tuple[list[str], list[str]]:
    """End its processes, remove its namespaces, temporary directory and record.
    Returns (namespaces removed, problems)."""
    removed: list[str] = []
    problems: list[str] = []
    end_processes(list(info.processes))
    for ns in info.namespaces:
        try:
            if _remove_ns(ns):
                removed.append(ns)
        except OSError as err:
            problems.append(f"{ns}: {err}")
    if not any(ndk_netns.exists(ns) for ns in (f"{info.name}-srv", f"{info.name}-cli")):
        _remove_tmpdir(info.name)
        _remove_journal(info.name)
    return removed, problems


def down_all(prefix: str | None = None, *, include_live: bool = False) -> list[str]:
    """Remove the testbeds of this state directory whose owner is gone -- namespaces,
    the processes inside them, temporary directories, records -- and return the removed
    namespace names, sorted. *prefix* filters on the testbed name.

    A testbed whose owner still runs belongs to a live program (a bench, a test) and is
    kept unless *include_live*.
    """
    _require_privileges()
    removed: list[str] = []
    problems: list[str] = []
    for info in testbeds(prefix):
        if info.status == "running" and not include_live:
            continue
        r, p = _remove(info)
        removed += r
        problems += p
    if problems:
        raise CleanupError("could not remove testbed namespaces: " + "; ".join(problems))
    return sorted(removed)


def down(name: str, *, force: bool = False) -> list[str]:
    """Remove testbed *name* of this state directory (see :func:`down_all`); a testbed
    whose owner still runs is refused unless *force*. Returns the removed namespaces."""
    _require_privileges()
    found = [t for t in testbeds(name) if t.name == name]
    if not found:
        raise NotFoundError(
            f"no testbed named {name!r} in {records_dir()} (list them with "
            "`netdevkit testbed show`)"
        )
    info = found[0]
    if info.status == "running" and not force:
        raise ConflictError(
            f"testbed {name!r} belongs to running process {info.owner_pid}: stop that "
            "process (it removes its testbed)",
            hint="or add `force=True`",
        )
    removed, problems = _remove(info)
    if problems:
        raise CleanupError("could not remove testbed namespaces: " + "; ".join(problems))
    return sorted(removed)
