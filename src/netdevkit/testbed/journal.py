"""Finding testbeds again: the journal, the owner markers and leftover removal.

Leftover testbeds (a process killed with SIGKILL) are found by two markers:
a journal file per testbed under ``/run/netdevkit/testbeds`` written *before*
anything is created, and the alias of ``lo`` inside each namespace
(``netdevkit-testbed:<name>``). :func:`down_all` removes both.

The namespace helpers that :class:`~netdevkit.testbed.core.Testbed` shares
with :func:`down_all` (privilege check, netlink in a namespace, removing
``/run/netns/NAME``) live here too.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from .. import netns as ndk_netns
from ..errors import KernelError, NetdevkitError

if TYPE_CHECKING:
    from .core import TestbedConfig

JOURNAL_DIR = "/run/netdevkit/testbeds"
ALIAS_PREFIX = "netdevkit-testbed:"
NS_SUFFIXES = ("-srv", "-cli")
_CAP_NET_ADMIN = 12
_CAP_SYS_ADMIN = 21


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


def leftover_testbeds(prefix: str | None = None) -> list[str]:
    """Names of testbeds whose owning process is gone but whose record or namespaces
    remain, sorted (``testbed down NAME`` or ``--all`` removes them)."""
    names = {
        name
        for name, (_namespaces, owner) in _read_journals().items()
        if (prefix is None or name.startswith(prefix)) and not _owner_alive(owner)
    }
    return sorted(names)
