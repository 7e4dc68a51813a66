"""Keep a tuning profile applied: what ``netdevkit apply --watch`` runs.

:class:`ProfileWatcher` applies a profile, then listens for the events after which the
kernel may have dropped its settings (an interface that appears, comes back, or gets
new NAPIs) and re-applies, journaled like any change, one log line per re-application
saying why. The library logs through a callback and never prints.

Kernel facts relied on ([seen] on Linux 6.18 with veth):

- The netdev family has no notification for NAPIs: none when they are created,
  deleted or changed by napi-set (KERNEL.md; its ``mgmt`` group announces devices
  only). What recreates a device's NAPIs is announced on the device, though: toggling
  GRO (``ethtool -K``) and changing the queue count (``ethtool -L``) each send
  ``RTM_NEWLINK`` on rtnetlink's link group and ``dev-change-ntf`` on the netdev
  ``mgmt`` group; creating and deleting a device send ``RTM_NEWLINK``/``RTM_DELLINK``
  and ``dev-add-ntf``/``dev-del-ntf``. So recreated NAPIs are noticed through those
  device notifications plus a re-read: a notification only says *when* to look; what
  changed is found by reading the NAPIs again and comparing ids and values.
- A NAPI setting changed behind our back (napi-set, a sysfs write) announces nothing:
  ``recheck_s`` re-reads periodically when asked to.
- A socket whose queue overflowed fails one ``recv`` with ENOBUFS and stays usable.
  Lost notifications cost nothing here: the re-read sees the whole state, so an
  overrun just means "look again".
- ``RTM_NEWLINK`` = 16, ``RTM_DELLINK`` = 17, link group ``RTNLGRP_LINK`` = 1 (bind
  mask 1); joining a generic netlink group is ``setsockopt(SOL_NETLINK = 270,
  NETLINK_ADD_MEMBERSHIP = 1, group id)``.
- A netlink socket keeps its network namespace alive after ``ip netns del``: like
  ``monitor``, a watcher of a named namespace compares the inode of
  ``/run/netns/NAME`` every :data:`CHECK_S` seconds, closes its sockets when the name
  is gone, and opens new ones (and re-applies) when a namespace of that name exists.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import selectors
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..errors import NetdevkitError, NotFoundError, UnsupportedError
from ..netdev.client import Netdev, ifnames
from ..netlink import codec
from ..netns import entered, path_of
from ..observe.rtnl import NETLINK_ROUTE, parse_link
from .model import Plan
from .napi import Applied, Outcome, Tuner
from .profile import Profile, plan_profile

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTMGRP_LINK = 1
NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
#: how often (seconds) a watcher of a named namespace checks that the namespace exists
CHECK_S = 0.5
#: how long (seconds) after the first notification of a burst the re-read happens
DEBOUNCE_S = 0.2

Log = Callable[[str], None]
#: ifname -> (ifindex, NAPI ids on it: () without NAPIs, (None,) device-wide sysfs)
Snapshot = dict[str, tuple[int, tuple[int | None, ...]]]


def _ns_inode(netns: str | None) -> int | None:
    if netns is None:
        return None
    try:
        return os.stat(path_of(netns)).st_ino
    except FileNotFoundError:
        return None


def _in(netns: str | None) -> str:
    return f" in network namespace {netns}" if netns else ""


class _Listener:
    """The two notification sockets of one namespace, made inside it."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self.inode = _ns_inode(netns)
        try:
            with Netdev.open(netns) as nd:  # NotFoundError: no such namespace
                group = nd.info.mcast_groups.get("mgmt")
        except UnsupportedError:  # before 6.9: no netdev family, rtnetlink only
            group = None
        self.socks: list[socket.socket] = []
        try:
            with entered(netns):
                self.socks.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE))
                if group is not None:
                    gen = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
                    self.socks.append(gen)
            self.socks[0].bind((0, RTMGRP_LINK))
            if group is not None:
                gen.bind((0, 0))
                gen.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
            for s in self.socks:
                s.setblocking(False)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []

    def drain(self, sock: socket.socket) -> set[str]:
        """Read what *sock* has queued: the names of the links rtnetlink announced, and
        ``""`` for a netdev notification or an overrun (a device not named: look anyway)."""
        names: set[str] = set()
        while True:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                return names
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                names.add("")  # notifications were lost: the re-read sees everything
                continue
            if sock is not self.socks[0]:
                names.add("")
                continue
            for msg in codec.decode_messages(data):
                if msg.type in (RTM_NEWLINK, RTM_DELLINK):
                    names.add(parse_link(msg.payload).ifname)


@dataclass(slots=True)
class _Namespace:
    """What the watcher knows about one namespace of the profile."""

    netns: str | None
    patterns: tuple[str, ...]
    listener: _Listener | None = None
    snapshot: Snapshot = field(default_factory=dict)
    #: ifname -> the ifindex it had when last seen (to tell "came back" from "appeared")
    seen: dict[str, int] = field(default_factory=dict)
    #: when to re-read (monotonic), and the hint of why, while a re-read is pending
    due: float | None = None
    hint: str = ""

    def listener_inode(self) -> int | None:
        return None if self.listener is None else self.listener.inode

    def relevant(self, names: Iterable[str]) -> bool:
        return any(n == "" or any(fnmatch.fnmatchcase(n, p) for p in self.patterns) for n in names)


def compare(
    old: Snapshot, new: Snapshot, seen: dict[str, int] | None = None
) -> tuple[list[str], list[str]]:
    """Why a re-application is due (reasons) and what else happened (notes), per interface.

    *seen* (ifname -> ifindex when last seen) tells an interface that comes back after it
    was gone from one seen for the first time.
    """
    reasons: list[str] = []
    notes: list[str] = []
    for name, (ifindex, ids) in sorted(new.items()):
        prev = old.get(name)
        last = (seen or {}).get(name)
        if prev is None and not ids:
            continue  # nothing to tune on it (yet): said once it has NAPIs
        if prev is None and last is not None:
            reasons.append(f"{name} came back (ifindex {last} -> {ifindex})")
        elif prev is None:
            reasons.append(f"{name} appeared ({_napis(ids)})")
        elif prev[0] != ifindex:
            reasons.append(f"{name} was recreated (ifindex {prev[0]} -> {ifindex})")
        elif prev[1] != ids and not ids:
            notes.append(f"{name} has no NAPIs now (down, or veth with GRO off): waiting")
        elif prev[1] != ids and not prev[1]:
            reasons.append(f"{name} can be tuned now ({_napis(ids)})")
        elif len(prev[1]) != len(ids):
            reasons.append(
                f"{name} has {len(ids)} NAPIs, not {len(prev[1])} (queue count changed; "
                f"ids {_ids(prev[1])} -> {_ids(ids)})"
            )
        elif prev[1] != ids:
            reasons.append(f"{name}'s NAPIs were recreated (ids {_ids(prev[1])} -> {_ids(ids)})")
    for name in sorted(set(old) - set(new)):
        notes.append(f"{name} is gone: waiting for it to come back")
    return reasons, notes


def _napis(ids: tuple[int | None, ...]) -> str:
    return "device-wide sysfs" if ids == (None,) else f"{len(ids)} NAPI(s)"


def _ids(ids: tuple[int | None, ...]) -> str:
    return ",".join("device" if i is None else str(i) for i in ids)


def snapshot(names: Iterable[str], ifindex: dict[str, int], plan: Plan) -> Snapshot:
    """The interfaces matched (*names*) with their ifindex and the NAPI ids *plan* found."""
    ids: dict[str, list[int | None]] = {}
    for c in plan.changes:
        ids.setdefault(c.target.ifname, []).append(c.target.napi_id)
    return {
        n: (ifindex[n], tuple(sorted(ids.get(n, []), key=lambda i: -1 if i is None else i)))
        for n in names
        if n in ifindex
    }


class ProfileWatcher:
    """Apply *profile* with *tuner*, then keep it applied (see the module docstring).

    :meth:`start` applies what matches now and opens the listeners; :meth:`run` waits
    for notifications until *should_stop* says so; :meth:`undo_all` puts back what this
    watcher applied (``--restore-on-exit``); :meth:`close` closes the sockets. Each
    application is journaled by the tuner first, so ``restore`` undoes them all, also
    after a SIGKILL of the watcher.
    """

    def __init__(
        self,
        profile: Profile,
        tuner: Tuner,
        log: Log,
        *,
        debounce_s: float = DEBOUNCE_S,
        recheck_s: float | None = None,
    ) -> None:
        self.profile = profile
        self.tuner = tuner
        self.log = log
        self.debounce_s = debounce_s
        self.recheck_s = recheck_s
        #: every application made, oldest first
        self.applied: list[Applied] = []
        self.reapplications = 0
        by_ns: dict[str | None, list[str]] = {}
        for rule in profile.rules:
            by_ns.setdefault(rule.netns, []).append(rule.match)
        self._spaces = {ns: _Namespace(ns, tuple(p)) for ns, p in by_ns.items()}
        self._sel: selectors.BaseSelector | None = None

    def __enter__(self) -> ProfileWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for space in self._spaces.values():
            self._let_go(space)
        if self._sel is not None:
            self._sel.close()
            self._sel = None

    # -- start -----------------------------------------------------------------------

    def start(self) -> Plan:
        """Open the listeners, then apply what matches now; returns that plan.

        Listening starts first, so that nothing happening during the first application
        is missed. A namespace that does not exist yet, or a rule that matches nothing
        yet, is waited for (logged once). Bad profiles raise as ``apply`` does.
        """
        self._sel = selectors.DefaultSelector()
        for space in self._spaces.values():
            if space.netns is None or _ns_inode(space.netns) is not None:
                self._listen(space)
            else:
                self.log(f"network namespace {space.netns} does not exist yet: waiting for it")
        live = [s.netns for s in self._spaces.values() if s.listener is not None]
        plan = plan_profile(self.tuner, self.profile, missing_ok=True, namespaces=live)
        for space in self._spaces.values():
            if space.listener is not None:
                space.snapshot = self._snapshot(space, plan)
                space.seen = {name: ifindex for name, (ifindex, _ids) in space.snapshot.items()}
                self._say_waiting(space)
        if not plan.empty:
            self.applied.append(self.tuner.apply(plan))
        return plan

    def _say_waiting(self, space: _Namespace) -> None:
        for rule in self.profile.rules:
            if rule.netns != space.netns:
                continue
            names = [n for n in space.snapshot if fnmatch.fnmatchcase(n, rule.match)]
            if not names:
                self.log(f"{rule.where}: no interface matches{_in(rule.netns)} yet: waiting")
            elif not any(space.snapshot[n][1] for n in names):
                self.log(
                    f"{rule.where}: {', '.join(sorted(names))} has no NAPIs{_in(rule.netns)} "
                    "(down, or veth with GRO off): waiting"
                )

    def _snapshot(self, space: _Namespace, plan: Plan) -> Snapshot:
        index = {name: i for i, name in ifnames(space.netns).items()}
        matched = [n for n in index if space.relevant([n])]
        ns_plan = Plan(tuple(c for c in plan.changes if c.target.netns == space.netns))
        return snapshot(matched, index, ns_plan)

    def _listen(self, space: _Namespace) -> bool:
        try:
            space.listener = _Listener(space.netns)
        except NotFoundError:  # deleted again in between
            return False
        assert self._sel is not None
        for s in space.listener.socks:
            self._sel.register(s, selectors.EVENT_READ, space)
        return True

    def _let_go(self, space: _Namespace) -> None:
        if space.listener is None:
            return
        if self._sel is not None:
            for s in space.listener.socks:
                self._sel.unregister(s)
        space.listener.close()
        space.listener = None

    # -- the loop --------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool], wake_fd: int | None = None) -> None:
        """Wait for notifications and re-apply until *should_stop()* is true.

        *wake_fd* (readable when a stop was asked, e.g. the fd given to
        ``signal.set_wakeup_fd``) makes the wait end at once. A signal that lands while a
        re-application is being written rolls that one back and raises
        :class:`~netdevkit._signals.Interrupted` (see :meth:`Tuner.apply`).
        """
        assert self._sel is not None, "start() first"
        if wake_fd is not None:
            self._sel.register(wake_fd, selectors.EVENT_READ, None)
        try:
            self._loop(should_stop, wake_fd)
        finally:
            if wake_fd is not None:
                self._sel.unregister(wake_fd)

    def _loop(self, should_stop: Callable[[], bool], wake_fd: int | None) -> None:
        assert self._sel is not None
        now = time.monotonic()
        next_check = now + CHECK_S
        next_recheck = now + self.recheck_s if self.recheck_s else float("inf")
        while not should_stop():
            wakes = [next_check, next_recheck] + [
                s.due for s in self._spaces.values() if s.due is not None
            ]
            for key, _ in self._sel.select(max(0.0, min(wakes) - time.monotonic())):
                if key.data is None:
                    _drain_fd(key.fd)
                    continue
                space: _Namespace = key.data
                if space.listener is not None and space.relevant(
                    space.listener.drain(key.fileobj)  # type: ignore[arg-type]
                ):
                    self._mark(space, "")
            now = time.monotonic()
            if now >= next_check:
                self._check_namespaces()
                next_check = now + CHECK_S
            if now >= next_recheck:
                for space in self._spaces.values():
                    if space.listener is not None:
                        self._mark(space, "")
                next_recheck = now + (self.recheck_s or 0)
            for space in self._spaces.values():
                if space.due is not None and space.due <= now and not should_stop():
                    self._reapply(space)

    def _mark(self, space: _Namespace, hint: str) -> None:
        if space.due is None:  # a burst is read once, DEBOUNCE_S after its first event
            space.due = time.monotonic() + self.debounce_s
        if hint:
            space.hint = hint

    def _check_namespaces(self) -> None:
        for space in self._spaces.values():
            if space.netns is None:
                continue
            inode = _ns_inode(space.netns)
            if space.listener is not None and inode != space.listener.inode:
                self._let_go(space)  # our sockets would keep the deleted namespace alive
                space.snapshot, space.due = {}, None
                self.log(f"network namespace {space.netns} is gone: waiting for it to exist")
            if space.listener is None and inode is not None and self._listen(space):
                self._mark(space, f"network namespace {space.netns} exists")

    def _reapply(self, space: _Namespace) -> None:
        """Re-read *space*'s interfaces; apply what differs from the profile, logging why."""
        hint, space.due, space.hint = space.hint, None, ""
        try:
            plan = plan_profile(self.tuner, self.profile, missing_ok=True, namespaces=[space.netns])
            new = self._snapshot(space, plan)
        except NotFoundError as err:
            if space.netns is not None and _ns_inode(space.netns) != space.listener_inode():
                return  # the namespace went while we read it: the next check says so
            self.log(f"could not re-apply{_in(space.netns)}: {err}")
            return
        except NetdevkitError as err:
            self.log(f"could not read{_in(space.netns)}: {err}")
            return
        reasons, notes = compare(space.snapshot, new, space.seen)
        space.snapshot = new
        space.seen.update((name, ifindex) for name, (ifindex, _ids) in new.items())
        for note in notes:
            self.log(note + _in(space.netns))
        if plan.empty:
            if reasons:
                self.log(f"{'; '.join(reasons)}{_in(space.netns)}: nothing to re-apply")
            return
        why = "; ".join(([hint] if hint else []) + reasons) or (
            "settings differed from the profile (changed outside netdevkit)"
        )
        targets = sorted({c.target.ifname for c in plan.effective})
        try:
            applied = self.tuner.apply(plan)
        except NetdevkitError as err:
            self.log(f"could not re-apply to {', '.join(targets)}{_in(space.netns)} ({why}): {err}")
            return
        self.applied.append(applied)
        self.reapplications += 1
        self.log(
            f"re-applied {len(applied.changes)} change(s) to {', '.join(targets)}"
            f"{_in(space.netns)}: {why}"
        )

    # -- the end ---------------------------------------------------------------------

    def undo_all(self) -> list[Outcome]:
        """Put back what this watcher applied, newest first (``--restore-on-exit``)."""
        out: list[Outcome] = []
        while self.applied:
            out.extend(self.tuner.undo(self.applied.pop()))
        return out


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def sd_notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Tell systemd *state* (``READY=1``) through ``$NOTIFY_SOCKET``; False without one.

    The protocol is one datagram on an AF_UNIX socket; a name starting with ``@`` is in
    the abstract namespace (a leading NUL byte). No dependency on libsystemd.
    """
    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not path or path[0] not in "/@":
        return False
    address = "\0" + path[1:] if path[0] == "@" else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(state.encode(), address)
        except OSError:
            return False
    return True
