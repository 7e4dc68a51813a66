"""Netdev notifications as they arrive, never losing track of the state.

:class:`Monitor` joins the netdev family's ``mgmt`` (devices) and
``page-pool`` groups and yields one :class:`Event` per notification.

Kernel facts relied on (Linux 6.18, [seen]):

- Creating a veth pair sends ``dev-add-ntf`` for both ends, then
  ``dev-change-ntf`` as their XDP features are set; deleting it sends
  ``dev-del-ntf`` for both. Page pools announce themselves with
  ``page-pool-add-ntf``/``-del-ntf``/``-change-ntf`` (veth's pools are not
  tied to a netdev and are never listed or announced).
- When a netlink socket's receive queue is full the kernel drops the
  multicast messages and the next ``recv`` fails once with ENOBUFS; the
  socket stays usable. Whatever was dropped is unknowable: the only way back
  to a true picture is a fresh dump, which :class:`Monitor` makes at once (on
  a second socket, so that a new overflow cannot cut it short) and
  yields as ``resync`` events (one per device and page pool), closed by a
  ``resynced`` event.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import NotificationsLost
from ..netdev.client import Dev, Netdev, PagePool

GROUPS = ("mgmt", "page-pool")


@dataclass(frozen=True, slots=True)
class Event:
    """One thing the monitor saw.

    ``kind`` is ``notification`` (``name`` is the operation, e.g.
    ``dev-add-ntf``), ``overrun`` (notifications were lost), ``resync``
    (``name`` is ``dev`` or ``page-pool``: an object from the dump that
    follows an overrun) or ``resynced`` (the dump is complete).
    """

    kind: str
    name: str
    obj: Dev | PagePool | None
    #: wall-clock time, seconds since the epoch
    time: float


class Monitor:
    """Subscribed netdev connection in the current or a named namespace."""

    def __init__(self, netns: str | None = None, rcvbuf: int | None = None) -> None:
        self.netns = netns
        self._nd = Netdev.open(netns)
        try:
            if rcvbuf is not None:
                sock = socket.socket(fileno=self._nd.fileno())
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                finally:
                    sock.detach()
            for group in GROUPS:
                self._nd.subscribe(group)
        except BaseException:
            self._nd.close()
            raise

    def close(self) -> None:
        self._nd.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resync(self) -> Iterator[Event]:
        """The current devices and page pools, then ``resynced``."""
        # A socket of its own: the subscribed one may overflow again while the
        # dump runs (ENOBUFS would then cut the dump short).
        with Netdev.open(self.netns) as nd:
            devs, pools = nd.dev_dump(), nd.page_pool_dump()
        for d in devs:
            yield Event("resync", "dev", d, time.time())
        for p in pools:
            yield Event("resync", "page-pool", p, time.time())
        yield Event("resynced", "resynced", None, time.time())

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Events until *timeout* seconds pass without one (None: forever)."""
        while True:
            try:
                for n in self._nd.notifications(timeout):
                    yield Event("notification", n.name, n.obj, time.time())
                return
            except NotificationsLost:
                yield Event("overrun", "enobufs", None, time.time())
                yield from self.resync()
