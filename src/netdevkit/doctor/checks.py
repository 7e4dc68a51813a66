"""The lines of the doctor report: :class:`Check`, the features they belong to,
and the collector the verdicts (:mod:`.verdicts`) add them through.

No I/O apart from :func:`report` naming the running kernel.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..netdev.family import NETDEV
from .facts import Facts, parse_release


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


def _since(op: str) -> Version:
    """The first kernel with netdev operation *op*, from the family declaration."""
    major, minor = NETDEV.ops_by_name[op].since.split(".")[:2]
    return int(major), int(minor)


#: First mainline release of each feature that netdevkit relies on (the
#: operations' from the family declaration, which the kernel matrix checks).
MIN_VERSION: Mapping[str, Version] = MappingProxyType(
    {
        FAMILY: (6, 9),
        NAPI: _since("napi-get"),
        BUSY_POLL: (6, 9),
        QSTATS: _since("qstats-get"),
        QUEUE_API: (6, 10),
        DEVMEM: _since("bind-rx"),
        "devmem-tx": _since("bind-tx"),
        PER_NAPI: _since("napi-set"),
        IRQ_SUSPEND: _since("napi-set"),
    }
)


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
