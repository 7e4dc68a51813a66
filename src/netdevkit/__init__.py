"""netdevkit: the 2024 Linux networking features, usable from Python and the shell.

The package imports nothing heavy at top level; the names below resolve on
first use so ``import netdevkit`` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Netdev": "netdevkit.netdev.client",
    "Napi": "netdevkit.netdev.client",
    "Queue": "netdevkit.netdev.client",
    "Dev": "netdevkit.netdev.client",
    "QStats": "netdevkit.netdev.client",
    "PagePool": "netdevkit.netdev.client",
    "PagePoolStats": "netdevkit.netdev.client",
    "QueueType": "netdevkit.netdev.family",
    "NapiThreaded": "netdevkit.netdev.family",
    "NetdevkitError": "netdevkit.errors",
    "KernelError": "netdevkit.errors",
    "RequestError": "netdevkit.errors",
    "NotFoundError": "netdevkit.errors",
    "UnsupportedError": "netdevkit.errors",
    "PermissionDenied": "netdevkit.errors",
    "DecodeError": "netdevkit.errors",
}

if TYPE_CHECKING:
    from .errors import (
        DecodeError,
        KernelError,
        NetdevkitError,
        NotFoundError,
        PermissionDenied,
        RequestError,
        UnsupportedError,
    )
    from .netdev.client import Dev, Napi, Netdev, PagePool, PagePoolStats, QStats, Queue
    from .netdev.family import NapiThreaded, QueueType

__all__ = [
    "DecodeError",
    "Dev",
    "KernelError",
    "Napi",
    "NapiThreaded",
    "Netdev",
    "NetdevkitError",
    "NotFoundError",
    "PagePool",
    "PagePoolStats",
    "PermissionDenied",
    "QStats",
    "Queue",
    "QueueType",
    "RequestError",
    "UnsupportedError",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'netdevkit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
