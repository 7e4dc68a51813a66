"""Bindings with a lifetime: a dmabuf bound to RX queues or for TX, as an object.

A binding lives exactly as long as the netlink socket that made it (the
kernel unbinds when that socket closes; KERNEL.md), so :class:`Binding`
owns its own :class:`~netdevkit.netdev.client.Netdev` connection and
:meth:`Binding.close` (or leaving the ``with`` block) unbinds:

>>> with udmabuf(64 << 20) as buf, bind_rx("eth1", [14, 15], buf) as b:  # doctest: +SKIP
...     print(b.id, b.queues, b.ifname)

``queue show`` and ``page-pool show`` list the binding id in their DMABUF
column while it lives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from .._argcheck import fail, int_arg, str_arg
from ..errors import RequestError
from ..netdev.client import Netdev, ifindex_of
from .dmabuf import Dmabuf, DmabufFd

#: the kernel's bounds for rx-page-size (Linux 7.3): PAGE_SIZE .. 2 MiB
RX_PAGE_SIZE_MAX = 2 << 20


@dataclass(slots=True)
class Binding:
    """A live dmabuf binding. Close it to unbind (idempotent)."""

    id: int
    direction: Literal["rx", "tx"]
    ifname: str
    ifindex: int
    queues: tuple[int, ...]
    dmabuf: Dmabuf
    netns: str | None = None
    rx_page_size: int | None = None
    _nd: Netdev | None = field(default=None, repr=False)

    @property
    def closed(self) -> bool:
        return self._nd is None

    def close(self) -> None:
        """Unbind: close the netlink socket that holds the binding."""
        if self._nd is not None:
            self._nd.close()
            self._nd = None

    def __enter__(self) -> Binding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_dmabuf(dmabuf: Dmabuf | int) -> Dmabuf:
    if isinstance(dmabuf, bool) or not isinstance(getattr(dmabuf, "fd", dmabuf), int):
        raise fail("dmabuf", "a dmabuf (udmabuf(), cuda(), DmabufFd) or its fd (an int)", dmabuf)
    if isinstance(dmabuf, int):
        if dmabuf < 0:
            raise RequestError(f"dmabuf fd must be a file descriptor, not {dmabuf}")
        return DmabufFd(dmabuf, size=0)
    return dmabuf


def _queues(queues: Iterable[int]) -> tuple[int, ...]:
    if isinstance(queues, str | bytes) or not hasattr(queues, "__iter__"):
        raise fail("queues", "an iterable of RX queue ids (ints)", queues)
    out = tuple(queues)
    if not out:
        raise RequestError("bind-rx needs at least one RX queue")
    for q in out:
        if isinstance(q, bool) or not isinstance(q, int) or q < 0:
            raise RequestError(f"RX queue ids are integers >= 0, not {q!r}")
    if len(set(out)) != len(out):
        raise RequestError(f"RX queue list {list(out)} names a queue twice")
    return out


def bind_rx(
    ifname: str,
    queues: Iterable[int],
    dmabuf: Dmabuf | int,
    *,
    rx_page_size: int | None = None,
    netns: str | None = None,
) -> Binding:
    """Bind *dmabuf* (a source or a raw dmabuf fd) to RX *queues* of *ifname*.

    *rx_page_size* (Linux 7.3+): bytes per RX buffer carved from the dmabuf,
    a power of two from the page size to 2 MiB. Refused with
    :class:`~netdevkit.errors.UnsupportedError` by older kernels.
    """
    str_arg("ifname", ifname)
    qs = _queues(queues)
    int_arg("rx_page_size", rx_page_size, none_ok=True)
    if rx_page_size is not None and (
        rx_page_size < 4096 or rx_page_size > RX_PAGE_SIZE_MAX or rx_page_size & (rx_page_size - 1)
    ):
        raise RequestError(
            f"rx_page_size must be a power of two from 4096 to {RX_PAGE_SIZE_MAX}, "
            f"not {rx_page_size}"
        )
    src = _as_dmabuf(dmabuf)
    ifindex = ifindex_of(ifname, netns)
    nd = Netdev.open(netns)
    try:
        bid = nd.bind_rx(ifindex, src.fd, qs, rx_page_size=rx_page_size)
    except BaseException:
        nd.close()
        raise
    return Binding(bid, "rx", ifname, ifindex, qs, src, netns, rx_page_size, nd)


def bind_tx(ifname: str, dmabuf: Dmabuf | int, *, netns: str | None = None) -> Binding:
    """Bind *dmabuf* for transmit through *ifname* (Linux 6.16+)."""
    str_arg("ifname", ifname)
    src = _as_dmabuf(dmabuf)
    ifindex = ifindex_of(ifname, netns)
    nd = Netdev.open(netns)
    try:
        bid = nd.bind_tx(ifindex, src.fd)
    except BaseException:
        nd.close()
        raise
    return Binding(bid, "tx", ifname, ifindex, (), src, netns, None, nd)
