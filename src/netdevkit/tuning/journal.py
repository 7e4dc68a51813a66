"""The journal: the values every NAPI had before netdevkit first changed it.

One JSON file, ``$STATE_DIR/journal.json`` (``/run/netdevkit`` unless the
environment variable ``NETDEVKIT_STATE_DIR`` names another directory).
``/run`` is a tmpfs: a reboot empties it, and a reboot also resets every
NAPI setting, so the two stay consistent.

Rules:

- An entry is written -- atomically (temp file, fsync, rename, fsync of the
  directory) -- *before* the change it covers is applied, so a process killed
  at any point leaves a journal that can undo everything it did.
- An entry holds the *baseline*: the values before netdevkit's first change
  of that target. A later change of the same target keeps the older baseline.
- Entries are keyed by (backend, netns, ifindex, napi id) and also record the
  interface name and the NAPI's position on its device, so a NAPI whose id
  vanished can be reported by name and its successor found.
- Every read-modify-write holds ``flock(journal.lock)``: two netdevkit
  processes never lose each other's entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import NetdevkitError
from .model import Target, settings_from_json, settings_to_json
from .presets import NapiSettings

STATE_DIR_ENV = "NETDEVKIT_STATE_DIR"
DEFAULT_STATE_DIR = "/run/netdevkit"
JOURNAL_NAME = "journal.json"
FORMAT_VERSION = 1


def state_dir() -> str:
    """``$NETDEVKIT_STATE_DIR`` or ``/run/netdevkit``."""
    return os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR


@dataclass(frozen=True, slots=True)
class JournalEntry:
    target: Target
    baseline: NapiSettings
    #: seconds since the epoch when the baseline was recorded
    recorded_at: float
    #: the process that recorded it
    pid: int

    def to_json(self) -> dict[str, Any]:
        return {
            **self.target.to_json(),
            "baseline": settings_to_json(self.baseline),
            "recorded_at": self.recorded_at,
            "pid": self.pid,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JournalEntry:
        backend = d["backend"]
        if backend not in ("netlink", "sysfs"):
            raise ValueError(f"unknown backend {backend!r}")
        napi_id, position = d.get("napi_id"), d.get("position")
        target = Target(
            backend,
            d.get("netns"),
            str(d["ifname"]),
            int(d["ifindex"]),
            None if napi_id is None else int(napi_id),
            None if position is None else int(position),
        )
        return cls(
            target,
            settings_from_json(d["baseline"]),
            float(d.get("recorded_at", 0.0)),
            int(d.get("pid", 0)),
        )


class Journal:
    """The journal file in *directory* (default: :func:`state_dir` at use time)."""

    def __init__(self, directory: str | None = None) -> None:
        self._dir = directory

    @property
    def directory(self) -> str:
        return self._dir if self._dir is not None else state_dir()

    @property
    def path(self) -> str:
        return os.path.join(self.directory, JOURNAL_NAME)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the journal's lock (blocks while another process holds it)."""
        try:
            os.makedirs(self.directory, mode=0o755, exist_ok=True)
            fd = os.open(
                os.path.join(self.directory, "journal.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            )
        except OSError as err:
            raise NetdevkitError(
                f"cannot open the journal lock in {self.directory}: {err} "
                f"(run as root, or point ${STATE_DIR_ENV} at a writable directory)"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def load(self) -> list[JournalEntry]:
        """All entries, oldest first; an absent file is an empty journal."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as err:
            raise NetdevkitError(
                f"cannot read the journal {self.path}: {err}; fix or remove it "
                "(it lists the settings to restore)"
            ) from err
        try:
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"format version {data.get('version')!r}")
            return [JournalEntry.from_json(e) for e in data["entries"]]
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise NetdevkitError(
                f"the journal {self.path} is not a netdevkit journal "
                f"(format {FORMAT_VERSION}): {err}"
            ) from err

    def save(self, entries: Iterable[JournalEntry]) -> None:
        """Replace the journal atomically and durably; an empty one removes the file."""
        entries = list(entries)
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._fsync_dir()
            return
        data = {"version": FORMAT_VERSION, "entries": [e.to_json() for e in entries]}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise NetdevkitError(f"cannot write the journal {self.path}: {err}") from err
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        # The rename is durable only once the directory itself is synced.
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- operations (call with the lock held) ------------------------------------

    def add_baselines(self, items: Iterable[tuple[Target, NapiSettings]]) -> list[Target]:
        """Record baselines for targets not journaled yet; returns the ones added."""
        entries = self.load()
        known = {e.target.key for e in entries}
        added: list[Target] = []
        now, pid = time.time(), os.getpid()
        for target, before in items:
            if target.key in known:
                continue  # keep the older baseline
            known.add(target.key)
            entries.append(JournalEntry(target, before, now, pid))
            added.append(target)
        if added:
            self.save(entries)
        return added

    def remove(self, targets: Iterable[Target]) -> None:
        keys = {t.key for t in targets}
        if not keys:
            return
        entries = self.load()
        kept = [e for e in entries if e.target.key not in keys]
        if len(kept) != len(entries):
            self.save(kept)
