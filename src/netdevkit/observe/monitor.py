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
- A netlink socket keeps its network namespace alive after ``ip netns del``: a
  monitor that kept its socket would watch a namespace nobody can reach, print
  nothing more, and keep it (and its devices) from being freed. So a monitor of
  a named namespace compares the inode of ``/run/netns/NAME`` with the one it
  opened every :data:`CHECK_S` seconds; when the name is gone (or names another
  namespace) it closes its socket and yields ``gone``, and when a namespace of
  that name exists again it subscribes there and yields ``back`` followed by a
  resync of the new namespace's devices and page pools.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import NotFoundError, NotificationsLost
from ..netdev.client import Dev, Netdev, PagePool
from ..netns import path_of

GROUPS = ("mgmt", "page-pool")
#: how often (seconds) a monitor of a named namespace checks that the namespace still exists
CHECK_S = 0.5


@dataclass(frozen=True, slots=True)
class Event:
    """One thing the monitor saw.

    ``kind`` is ``notification`` (``name`` is the operation, e.g.
    ``dev-add-ntf``), ``overrun`` (notifications were lost), ``resync``
    (``name`` is ``dev`` or ``page-pool``: an object from the dump that
    follows an overrun or ``back``), ``resynced`` (the dump is complete),
    ``gone`` (the watched namespace, ``name``, was deleted: the monitor let go
    of it and waits) or ``back`` (a namespace of that name exists again).
    """

    kind: str
    name: str
    obj: Dev | PagePool | None
    #: wall-clock time, seconds since the epoch
    time: float


class Monitor:
    """Subscribed netdev connection in the current or a named namespace."""

    def __init__(
        self, netns: str | None = None, rcvbuf: int | None = None, check_s: float = CHECK_S
    ) -> None:
        self.netns = netns
        self.check_s = check_s
        self._rcvbuf = rcvbuf
        self._inode = self._ns_inode()
        self._nd: Netdev | None = self._subscribed()

    def _ns_inode(self) -> int | None:
        """The inode of ``/run/netns/NAME`` now (None: no such name, or no name)."""
        if self.netns is None:
            return None
        try:
            return os.stat(path_of(self.netns)).st_ino
        except FileNotFoundError:
            return None

    def _subscribed(self) -> Netdev:
        nd = Netdev.open(self.netns)  # NotFoundError for a namespace that does not exist
        try:
            if self._rcvbuf is not None:
                sock = socket.socket(fileno=nd.fileno())
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
                finally:
                    sock.detach()
            for group in GROUPS:
                nd.subscribe(group)
        except BaseException:
            nd.close()
            raise
        return nd

    def close(self) -> None:
        if self._nd is not None:
            self._nd.close()
            self._nd = None

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def gone(self) -> bool:
        """Whether the watched namespace was deleted (the monitor waits for it)."""
        return self._nd is None

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
        last = time.monotonic()
        while True:
            wait = None if timeout is None else last + timeout - time.monotonic()
            if wait is not None and wait <= 0:
                return
            if self.netns is not None:
                wait = self.check_s if wait is None else min(wait, self.check_s)
            n = 0
            for e in self._next_events(wait):
                n += 1
                yield e
            if n:
                last = time.monotonic()

    def _next_events(self, wait: float | None) -> Iterator[Event]:
        """What arrives within *wait* seconds, then ``gone``/``back`` if the namespace went
        or came back."""
        if self._nd is None:  # gone: is it back?
            time.sleep(wait or 0)
            if self._ns_inode() is not None:
                yield from self._back()
            return
        try:
            for n in self._nd.notifications(wait):
                yield Event("notification", n.name, n.obj, time.time())
        except NotificationsLost:
            yield Event("overrun", "enobufs", None, time.time())
            yield from self.resync()
        if self.netns is not None and self._ns_inode() != self._inode:
            self.close()  # our socket would keep the deleted namespace alive
            yield Event("gone", self.netns, None, time.time())

    def _back(self) -> Iterator[Event]:
        assert self.netns is not None
        inode = self._ns_inode()
        try:
            self._nd = self._subscribed()
            state = list(self.resync())
        except NotFoundError:  # gone again before we got there
            self.close()
            return
        self._inode = inode
        yield Event("back", self.netns, None, time.time())
        yield from state
