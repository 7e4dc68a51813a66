"""What a testbed is: :class:`TestbedConfig` (names, queues, addresses, MTU) and
:class:`CpuPlacement` (which CPUs each side's programs and the NAPI kthreads run on).

Both are validated on construction: a bad configuration raises
:class:`~netdevkit.errors.RequestError` before anything on the system is touched.
Building and tearing down is :mod:`netdevkit.testbed.lifecycle`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Literal

from .._os import format_cpu_list, parse_cpu_list, usable_cpus
from ..errors import RequestError

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
        avail = usable if usable is not None else usable_cpus()
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
