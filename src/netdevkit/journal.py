"""The one write-ahead journal of everything netdevkit changes on a system.

One JSON file, ``$NETDEVKIT_STATE_DIR/journal.json`` (``/run/netdevkit`` unless the
environment variable names another directory), lists a :class:`Record` per object that
netdevkit changed and has not put back yet: NAPI settings (kind ``napi``), epoll
parameters set by ``attach`` (kind ``epoll``) and the kinds other modules register
(the devmem setup's ethtool changes). ``/run`` is a tmpfs: a reboot empties it, and a
reboot also resets everything recorded there.

The rules every writer follows:

- **Intent first.** :meth:`Journal.intent` makes the record -- with the value *before* the
  change -- durable (written to a fixed temporary name, fsync'd, renamed over the journal,
  directory fsync'd) before its body makes the kernel call. A process killed at any point
  leaves a journal that :func:`restore_all` can act on; a recorded change that never
  happened restores as a no-op, because restorers compare with the object's current value.
- **The oldest value wins.** A record for an object already journaled keeps the older
  ``before``: it is the value before netdevkit's *first* change.
- **Signals wait.** SIGINT, SIGTERM and SIGHUP are blocked while the file is written (and,
  in the main thread, caught and held, in case another thread of the process receives
  them) and acted on right after, at a point where the journal is whole.
- **No temporary file survives.** The temporary name is fixed (``journal.json.tmp``) and
  only written under the lock, so a leftover from a killed writer is removed by the next
  process that takes the lock.
- **One writer at a time.** Every read-modify-write holds ``flock(journal.lock)``; the lock
  is re-entrant within one :class:`Journal` object (restorers run while
  :func:`restore_all` holds it and must not open a second :class:`Journal`).

Kinds plug in with :func:`register_kind` (a :class:`Restorer` puts ``before`` back and
reads the current value for diffs). This module imports no higher layer: the modules that
register kinds are listed in :data:`KIND_MODULES` and imported when a restore needs them.

The previous format (version 1: NAPI entries only, written by netdevkit before the journal
held several kinds) is read and rewritten as version 2 on the next write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from . import _fault
from ._signals import Deferral, blocked
from .errors import JournalError, NetdevkitError, RequestError

STATE_DIR_ENV = "NETDEVKIT_STATE_DIR"
DEFAULT_STATE_DIR = "/run/netdevkit"
JOURNAL_NAME = "journal.json"
TMP_NAME = JOURNAL_NAME + ".tmp"
LOCK_NAME = "journal.lock"
#: the lock file's mode: read-write for its owner, no execute bit
LOCK_MODE = 0o600
FORMAT_VERSION = 2

#: Modules that register journal kinds, imported by :func:`load_kind_modules` (and so by
#: ``netdevkit restore`` and ``napi diff``). Add yours here.
KIND_MODULES: tuple[str, ...] = (
    "netdevkit.tuning.records",
    "netdevkit.attach.records",
    "netdevkit.devmem.records",
)


def state_dir() -> str:
    """``$NETDEVKIT_STATE_DIR`` or ``/run/netdevkit``."""
    return os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR


def key_of(*parts: object) -> str:
    """A record key from its parts: ``key_of("netlink", "lab", 5, 8193)`` -> ``netlink/lab/5/8193``.

    ``None`` is written ``-``. Parts must not contain ``/`` (names of namespaces and
    interfaces cannot).
    """
    return "/".join("-" if p is None else str(p) for p in parts)


@dataclass(frozen=True, slots=True)
class Record:
    """One object netdevkit changed: enough to put it back, and to tell a human what it is.

    ``before`` is the JSON-able value to restore, ``info`` a JSON-able description (ifname,
    netns, what changed). ``pid`` and ``recorded_at`` are filled in when the record is
    written (the process that wrote it, seconds since the epoch).
    """

    kind: str
    key: str
    before: dict[str, Any]
    info: dict[str, Any]
    pid: int = 0
    recorded_at: float = 0.0

    @property
    def ident(self) -> tuple[str, str]:
        return (self.kind, self.key)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "before": self.before,
            "info": self.info,
            "pid": self.pid,
            "recorded_at": self.recorded_at,
        }

    @classmethod
    def from_json(cls, d: object) -> Record:
        if not isinstance(d, dict):
            raise ValueError(f"a record must be an object, not {type(d).__name__}")
        missing = [k for k in ("kind", "key", "before") if k not in d]
        if missing:
            raise ValueError(f"an entry has no {missing[0]!r} field ({_brief(d)})")
        kind, key, before, info = d["kind"], d["key"], d["before"], d.get("info", {})
        if not isinstance(kind, str) or not kind or not isinstance(key, str) or not key:
            raise ValueError(f"kind and key must be non-empty strings: {kind!r}, {key!r}")
        if not isinstance(before, dict) or not isinstance(info, dict):
            raise ValueError(f"record {kind}/{key}: 'before' and 'info' must be objects")
        pid, at = d.get("pid", 0), d.get("recorded_at", 0.0)
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise ValueError(f"record {kind}/{key}: pid {pid!r} is not an integer")
        if isinstance(at, bool) or not isinstance(at, int | float):
            raise ValueError(f"record {kind}/{key}: recorded_at {at!r} is not a number")
        return cls(kind, key, before, info, pid, float(at))


def _brief(d: dict[Any, Any]) -> str:
    """A record as a human can find it in the file: its first few fields."""
    text = json.dumps(d, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _from_v1(e: object) -> Record:
    """A version-1 (NAPI-only) entry as a ``napi`` record (same key as netdevkit.tuning)."""
    if not isinstance(e, dict):
        raise ValueError("an entry must be an object")
    target = {k: e.get(k) for k in ("backend", "netns", "ifname", "ifindex", "napi_id")}
    target["position"] = e.get("position")
    if "baseline" not in e:
        raise ValueError(f"an entry has no 'baseline' field ({_brief(e)})")
    if target["backend"] not in ("netlink", "sysfs") or not isinstance(e["baseline"], dict):
        raise ValueError(f"unknown backend {target['backend']!r}")
    key = key_of(target["backend"], target["netns"], target["ifindex"], target["napi_id"])
    return Record(
        "napi",
        key,
        dict(e["baseline"]),
        target,
        int(e.get("pid", 0)),
        float(e.get("recorded_at", 0.0)),
    )


# --- kinds --------------------------------------------------------------------------------


class Restorer(Protocol):
    """What a module registers for its kind of record."""

    def restore(self, record: Record) -> str:
        """Put ``record.before`` back; idempotent; a no-op (saying so) if already equal or
        the object is gone. Raise :class:`NetdevkitError` if it cannot."""
        ...

    def current(self, record: Record) -> dict[str, Any] | None:
        """The object's value now, in ``before``'s terms (for diffs); None if it is gone."""
        ...


Status = Literal["restored", "unchanged", "gone", "kept", "failed"]


@dataclass(frozen=True, slots=True)
class RestoreOutcome:
    """What :func:`restore_all` did with one record. ``failed`` records stay journaled."""

    record: Record
    status: Status
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.record.kind,
            "key": self.record.key,
            "status": self.status,
            "message": self.message,
            **self.details,
        }


class DetailedRestorer(Restorer, Protocol):
    """A restorer that says more than a message (optional; ``napi`` has one)."""

    def restore_outcome(self, record: Record) -> RestoreOutcome: ...


_KINDS: dict[str, Restorer] = {}


def register_kind(kind: str, restorer: Restorer) -> None:
    """Make ``restore`` and ``napi diff`` handle records of *kind* with *restorer*."""
    if not kind or "/" in kind:
        raise RequestError(f"journal kind {kind!r}: a non-empty name without '/'")
    _KINDS[kind] = restorer


def registered_kinds() -> dict[str, Restorer]:
    return dict(_KINDS)


def load_kind_modules() -> list[str]:
    """Import every module of :data:`KIND_MODULES`; returns the ones that failed, with why."""
    failed = []
    for name in KIND_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as err:
            failed.append(f"{name}: {err}")
    return failed


# --- the file -----------------------------------------------------------------------------


class Journal:
    """The journal in *directory* (default: :func:`state_dir` at the time of use)."""

    def __init__(self, directory: str | None = None) -> None:
        self._dir = directory
        self._lock_fd: int | None = None
        self._depth = 0
        self._mutex = threading.RLock()

    @property
    def directory(self) -> str:
        return self._dir if self._dir is not None else state_dir()

    @property
    def path(self) -> str:
        return os.path.join(self.directory, JOURNAL_NAME)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the journal's lock (blocks while another process holds it); re-entrant."""
        with self._mutex:
            if self._depth == 0:
                self._lock_fd = self._acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = None

    def _acquire(self) -> int:
        try:
            os.makedirs(self.directory, mode=0o755, exist_ok=True)
            # 0600: a lock file is never executed, and only root takes it for writing.
            fd = os.open(
                os.path.join(self.directory, LOCK_NAME),
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                LOCK_MODE,
            )
            if os.fstat(fd).st_mode & 0o7777 != LOCK_MODE:  # one made 0755 by an older netdevkit
                with contextlib.suppress(OSError):
                    os.fchmod(fd, LOCK_MODE)
        except OSError as err:
            raise JournalError(
                f"cannot open the journal lock in {self.directory}: {err.strerror} "
                f"(run as root, or point ${STATE_DIR_ENV} at a writable directory)"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # We hold the lock: a temporary file now is a killed writer's leftover.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, TMP_NAME))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def records(self, kind: str | None = None) -> list[Record]:
        """The records (of *kind*), oldest first; an absent file is an empty journal."""
        return [r for r in self._load() if kind is None or r.kind == kind]

    def _load(self) -> list[Record]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise JournalError(f"cannot read the journal {self.path}: {err.strerror}") from err
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise JournalError(
                f"the journal {self.path} is not a netdevkit journal (not JSON: {err}); fix or "
                "remove it (it lists the settings to restore)"
            ) from None
        try:
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            version, entries = data.get("version"), data.get("entries")
            if not isinstance(entries, list):
                raise ValueError("'entries' is not a list")
            if version == 1:
                return [_from_v1(e) for e in entries]
            if version != FORMAT_VERSION:
                raise ValueError(f"format version {version!r}")
            return [Record.from_json(e) for e in entries]
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as err:
            why = f"a field is missing: {err.args[0]!r}" if isinstance(err, KeyError) else err
            raise JournalError(
                f"the journal {self.path} is not a netdevkit journal (format "
                f"{FORMAT_VERSION}): {why}; fix or remove it"
            ) from None

    def _save(self, records: Sequence[Record]) -> None:
        """Replace the journal atomically and durably (call with the lock held)."""
        _fault.point("journal-write")
        tmp = os.path.join(self.directory, TMP_NAME)
        # Blocked in this thread, and recorded (main thread) if another thread of the
        # process takes the signal: either way it acts once the journal is whole.
        with Deferral(), blocked():
            try:
                if not records:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                else:
                    data = {"version": FORMAT_VERSION, "entries": [r.to_json() for r in records]}
                    body = (json.dumps(data, indent=1) + "\n").encode("utf-8")
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                    try:
                        os.write(fd, body)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    os.replace(tmp, self.path)
                self._fsync_dir()
            except OSError as err:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise JournalError(f"cannot write the journal {self.path}: {err.strerror}") from err

    def _fsync_dir(self) -> None:
        # A rename or unlink is durable only once the directory itself is synced.
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- operations --------------------------------------------------------------------------

    def add(self, records: Iterable[Record]) -> list[Record]:
        """Journal *records* not journaled yet (by kind and key); returns the ones added.

        A record whose object is already journaled is skipped: the older ``before`` is the
        value before netdevkit's first change.
        """
        with self.locked():
            existing = self._load()
            known = {r.ident for r in existing}
            now, pid = time.time(), os.getpid()
            added: list[Record] = []
            for r in records:
                if r.ident in known:
                    continue
                known.add(r.ident)
                added.append(dataclasses.replace(r, pid=r.pid or pid, recorded_at=now))
            if added:
                self._save([*existing, *added])
            return added

    @contextlib.contextmanager
    def intent(self, records: Sequence[Record]) -> Iterator[list[Record]]:
        """Durably journal *records*, then run the body (the kernel calls) under the lock.

        Yields the records that were added (those already journaled keep their older
        ``before``). The records stay journaled whatever the body does: the caller
        :meth:`forget`\\ s them once the change is undone, or knows it never happened.
        """
        with self.locked():
            yield self.add(records)

    def forget(self, items: Iterable[Record | tuple[str, str] | str]) -> None:
        """Drop records from the journal: their change is undone (or never happened).

        Items are records, ``(kind, key)`` pairs, or bare keys (every kind's record with
        that key).
        """
        idents: set[tuple[str, str]] = set()
        keys: set[str] = set()
        for i in items:
            if isinstance(i, Record):
                idents.add(i.ident)
            elif isinstance(i, str):
                keys.add(i)
            else:
                idents.add((i[0], i[1]))
        if not idents and not keys:
            return
        with self.locked():
            existing = self._load()
            kept = [r for r in existing if r.ident not in idents and r.key not in keys]
            if len(kept) != len(existing):
                self._save(kept)

    def update(self, records: Iterable[Record]) -> None:
        """Replace the ``info`` of journaled records (``before`` is never replaced)."""
        new = {r.ident: r for r in records}
        if not new:
            return
        with self.locked():
            existing = self._load()
            changed = [
                dataclasses.replace(r, info=new[r.ident].info) if r.ident in new else r
                for r in existing
            ]
            if changed != existing:
                self._save(changed)

    def replace_kind(self, kind: str, records: Sequence[Record]) -> None:
        """Make *records* the journal's records of *kind* (others kept as they are)."""
        with self.locked():
            others = [r for r in self._load() if r.kind != kind]
            self._save([*others, *records])


# --- restore and diff, for every kind ------------------------------------------------------

Match = Callable[[Record], bool]


def _selected(journal: Journal, kinds: Iterable[str] | None, match: Match | None) -> list[Record]:
    wanted = None if kinds is None else set(kinds)
    return [
        r
        for r in journal.records()
        if (wanted is None or r.kind in wanted) and (match is None or match(r))
    ]


def _restore_one(record: Record) -> RestoreOutcome:
    restorer = _KINDS.get(record.kind)
    if restorer is None:
        return RestoreOutcome(
            record,
            "failed",
            f"{record.kind} {record.key}: no restorer for kind {record.kind!r} (is the module "
            "that wrote it installed?); left in the journal",
        )
    try:
        detailed = getattr(restorer, "restore_outcome", None)
        if detailed is not None:
            out = detailed(record)
            assert isinstance(out, RestoreOutcome)
            return out
        return RestoreOutcome(record, "restored", restorer.restore(record))
    except (NetdevkitError, OSError) as err:
        return RestoreOutcome(record, "failed", f"{record.kind} {record.key}: {err}")
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        return RestoreOutcome(
            record, "failed", f"{record.kind} {record.key}: malformed record ({err!r})"
        )


def restore_all(
    journal: Journal | None = None,
    *,
    kinds: Iterable[str] | None = None,
    match: Match | None = None,
) -> list[RestoreOutcome]:
    """Restore every journaled record (of *kinds*, for which *match* is true), newest first.

    Records restored, already at their ``before``, or whose object is gone leave the
    journal; failed ones stay so that a later restore retries them.

    The journal is rewritten once, after the last record (also when interrupted), not once
    per record: that was a rewrite of the whole file per record, quadratic in their number
    (5000 epoll contexts took minutes). A restore killed before that write leaves records
    already put back journaled; restoring them again is a no-op, since every restorer
    compares with the object's current value first.
    """
    load_kind_modules()
    journal = journal if journal is not None else Journal()
    out: list[RestoreOutcome] = []
    with journal.locked():
        try:
            for record in reversed(_selected(journal, kinds, match)):
                out.append(_restore_one(record))
        finally:
            journal.forget(o.record for o in out if o.status != "failed")
    _close_restorers()
    return out


def _close_restorers() -> None:
    """Restorers may hold connections (netlink sockets per namespace) between records."""
    for restorer in {id(r): r for r in _KINDS.values()}.values():
        close = getattr(restorer, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True, slots=True)
class DiffOutcome:
    """One record against the system now. ``current`` None: the object is gone."""

    record: Record
    current: dict[str, Any] | None
    differs: dict[str, tuple[Any, Any]]
    error: str = ""

    @property
    def status(self) -> str:
        if self.error:
            return "unknown"
        if self.current is None:
            return "gone"
        return "differs" if self.differs else "same"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.record.kind,
            "key": self.record.key,
            "info": self.record.info,
            "status": self.status,
            "before": self.record.before,
            "current": self.current,
            "differs": {k: {"before": b, "now": a} for k, (b, a) in self.differs.items()},
            **({"error": self.error} if self.error else {}),
        }


def diff_all(
    journal: Journal | None = None,
    *,
    kinds: Iterable[str] | None = None,
    match: Match | None = None,
) -> list[DiffOutcome]:
    """Every selected record's ``before`` against its object's current value, oldest first."""
    load_kind_modules()
    journal = journal if journal is not None else Journal()
    out = []
    for record in _selected(journal, kinds, match):
        restorer = _KINDS.get(record.kind)
        if restorer is None:
            out.append(DiffOutcome(record, None, {}, f"no restorer for kind {record.kind!r}"))
            continue
        try:
            now = restorer.current(record)
        except (NetdevkitError, OSError, KeyError, TypeError, ValueError, OverflowError) as err:
            out.append(DiffOutcome(record, None, {}, str(err)))
            continue
        differs = (
            {}
            if now is None
            else {k: (b, now.get(k)) for k, b in record.before.items() if k in now and now[k] != b}
        )
        out.append(DiffOutcome(record, now, differs))
    _close_restorers()
    return out
