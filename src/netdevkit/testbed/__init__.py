"""A two-namespace veth testbed whose traffic goes through NAPI.

Two network namespaces joined by one veth pair, built by :class:`Testbed` and
removed again on every exit path (:mod:`.lifecycle` says how); nothing is ever
configured in the caller's own namespace.

The package is split by concern:

- :mod:`.config`: :class:`TestbedConfig` and :class:`CpuPlacement`, what to
  build, validated before anything is touched;
- :mod:`.lifecycle`: :class:`Testbed`, building and tearing down, and the
  programs it runs inside;
- :mod:`.datapath`: what makes veth traffic take NAPI (the ethtool offloads,
  :func:`get_offloads`, :func:`set_offloads`) and the ``SO_INCOMING_NAPI_ID``
  probe, plus :func:`socket_in_netns`;
- CPU lists and affinity (:func:`parse_cpu_list`, :func:`format_cpu_list`,
  :func:`set_affinity`, :func:`affinity_of`) come from :mod:`netdevkit._os`,
  re-exported here for placement code;
- :mod:`.journal`: the journal and owner markers, namespace helpers, and
  what finds leftovers again (:func:`list_testbeds`, :func:`down_all`).

Each module lists the kernel facts (Linux 6.9-6.18, see /work/shared/KERNEL.md)
its code relies on.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names resolve on first use (PEP 562): `testbed show` and `restore` read only .journal and
# .config, and .datapath/.lifecycle import pyroute2 (about 250 ms) at top level.
_EXPORTS = {
    "netdevkit._os": ("affinity_of", "format_cpu_list", "parse_cpu_list", "set_affinity"),
    "netdevkit.testbed.config": (
        *("CLIENT_IF", "SERVER_IF", "CpuPlacement", "Side", "TestbedConfig"),
        *("MAX_MTU", "MAX_QUEUES", "MIN_MTU"),
    ),
    "netdevkit.testbed.datapath": (
        *("GRO", "GSO", "SO_INCOMING_NAPI_ID", "TSO"),
        *("get_offloads", "set_offloads", "socket_in_netns"),
    ),
    "netdevkit.testbed.journal": (
        *("ALIAS_PREFIX", "JOURNAL_DIR", "NS_SUFFIXES", "down_all", "list_testbeds"),
    ),
    "netdevkit.testbed.lifecycle": ("Testbed",),
}
#: name -> the module it lives in
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:
    from .._os import affinity_of as affinity_of
    from .._os import format_cpu_list as format_cpu_list
    from .._os import parse_cpu_list as parse_cpu_list
    from .._os import set_affinity as set_affinity
    from .config import CLIENT_IF, SERVER_IF, CpuPlacement, Side, TestbedConfig
    from .config import MAX_MTU as MAX_MTU
    from .config import MAX_QUEUES as MAX_QUEUES
    from .config import MIN_MTU as MIN_MTU
    from .datapath import GRO as GRO
    from .datapath import GSO as GSO
    from .datapath import SO_INCOMING_NAPI_ID as SO_INCOMING_NAPI_ID
    from .datapath import TSO as TSO
    from .datapath import get_offloads as get_offloads
    from .datapath import set_offloads as set_offloads
    from .datapath import socket_in_netns
    from .journal import ALIAS_PREFIX as ALIAS_PREFIX
    from .journal import JOURNAL_DIR as JOURNAL_DIR
    from .journal import NS_SUFFIXES as NS_SUFFIXES
    from .journal import down_all, list_testbeds
    from .lifecycle import Testbed

__all__ = [
    "CLIENT_IF",
    "SERVER_IF",
    "CpuPlacement",
    "Side",
    "Testbed",
    "TestbedConfig",
    "down_all",
    "list_testbeds",
    "socket_in_netns",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'netdevkit.testbed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
