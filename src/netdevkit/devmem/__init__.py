"""Device Memory TCP from Python: dmabufs, bindings, receive, send, NIC preparation.

- :mod:`.dmabuf`: :func:`udmabuf`, :func:`cuda`, :class:`DmabufFd` (any dmabuf fd);
- :mod:`.binding`: :func:`bind_rx` / :func:`bind_tx` return a :class:`Binding`
  that owns its netlink socket (closing it unbinds);
- :mod:`.rx`: :class:`DevmemReceiver` (batches of numpy arrays, automatic
  token return) and :class:`AsyncDevmemReceiver`;
- :mod:`.tx`: :class:`DevmemSender` (zerocopy sends from dmabuf offsets,
  completions from the error queue);
- :mod:`.setup`: NIC preparation (header split, RSS, ntuple) with a journal;
- :mod:`.fake`: :class:`FakeKernel`, the syscall-boundary fake tests use;
- :mod:`.cmsg`, :mod:`.syscalls`, :mod:`.uapi`: the wire formats and calls.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names resolve on first use (PEP 562): .rx imports numpy (about 120 ms), which `doctor`,
# `devmem setup` and `restore` (through .nic, .setup, .records) never need.
_EXPORTS = {
    "binding": ("Binding", "bind_rx", "bind_tx"),
    "dmabuf": ("CudaDmabuf", "Dmabuf", "DmabufFd", "Udmabuf", "cuda", "udmabuf"),
    "rx": (
        *("AsyncDevmemReceiver", "DevmemReceiver", "Fragment", "OutstandingLimit"),
        *("RxBatch", "RxStats", "TokenReturnError"),
    ),
    "tx": ("DevmemSender", "Send"),
}
#: name -> the module of this package it lives in
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:
    from .binding import Binding, bind_rx, bind_tx
    from .dmabuf import CudaDmabuf, Dmabuf, DmabufFd, Udmabuf, cuda, udmabuf
    from .rx import (
        AsyncDevmemReceiver,
        DevmemReceiver,
        Fragment,
        OutstandingLimit,
        RxBatch,
        RxStats,
        TokenReturnError,
    )
    from .tx import DevmemSender, Send

__all__ = [
    "AsyncDevmemReceiver",
    "Binding",
    "CudaDmabuf",
    "DevmemReceiver",
    "DevmemSender",
    "Dmabuf",
    "DmabufFd",
    "Fragment",
    "OutstandingLimit",
    "RxBatch",
    "RxStats",
    "Send",
    "TokenReturnError",
    "Udmabuf",
    "bind_rx",
    "bind_tx",
    "cuda",
    "udmabuf",
]


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'netdevkit.devmem' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
