"""The NAPI view of the one journal (:mod:`netdevkit.journal`): records of kind ``napi``.

Each record holds the values a NAPI (or, with the sysfs backend, a whole device) had
before netdevkit first changed it -- its *baseline* -- and is written before the change
it covers (see :mod:`netdevkit.journal` for the write-ahead rules). Records are keyed by
(backend, netns, ifindex, napi id) and also describe the interface name and the NAPI's
position on its device, so a NAPI whose id vanished can be reported by name and its
successor found.

:class:`Journal` is :class:`netdevkit.journal.Journal` with NAPI-typed helpers
(:meth:`Journal.load`, :meth:`Journal.add_baselines`, :meth:`Journal.remove`); records of
other kinds in the same file are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import JournalError
from ..journal import DEFAULT_STATE_DIR, JOURNAL_NAME, STATE_DIR_ENV, Record, key_of, state_dir
from ..journal import Journal as _Journal
from .model import Target, settings_from_json, settings_to_json
from .presets import NapiSettings

KIND = "napi"

__all__ = [
    "DEFAULT_STATE_DIR",
    "JOURNAL_NAME",
    "KIND",
    "STATE_DIR_ENV",
    "Journal",
    "JournalEntry",
    "state_dir",
]


def target_key(t: Target) -> str:
    """The record key of *t* (the same parts as :attr:`Target.key`)."""
    return key_of(t.backend, t.netns, t.ifindex, t.napi_id)


def target_from_json(d: dict[str, Any]) -> Target:
    backend = d["backend"]
    if backend not in ("netlink", "sysfs"):
        raise ValueError(f"unknown backend {backend!r}")
    netns, napi_id, position = d.get("netns"), d.get("napi_id"), d.get("position")
    if netns is not None and not isinstance(netns, str):
        raise ValueError(f"netns {netns!r} is not a string")
    return Target(
        backend,
        netns,
        str(d["ifname"]),
        int(d["ifindex"]),
        None if napi_id is None else int(napi_id),
        None if position is None else int(position),
    )


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One ``napi`` record, typed."""

    target: Target
    baseline: NapiSettings
    #: seconds since the epoch when the baseline was recorded
    recorded_at: float
    #: the process that recorded it
    pid: int

    def to_record(self) -> Record:
        return Record(
            KIND,
            target_key(self.target),
            settings_to_json(self.baseline),
            self.target.to_json(),
            self.pid,
            self.recorded_at,
        )

    @classmethod
    def from_record(cls, r: Record) -> JournalEntry:
        try:
            return cls(
                target_from_json(r.info),
                settings_from_json(r.before),
                r.recorded_at,
                r.pid,
            )
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise JournalError(
                f"journal record napi/{r.key} is not a NAPI record: {err!r}; fix or remove it"
            ) from None

    def to_json(self) -> dict[str, Any]:
        return self.to_record().to_json()


def baseline_record(target: Target, before: NapiSettings) -> Record:
    return Record(KIND, target_key(target), settings_to_json(before), target.to_json())


class Journal(_Journal):
    """The journal file in *directory* (default: the state directory at use time)."""

    def load(self) -> list[JournalEntry]:
        """The ``napi`` records, oldest first; an absent file is an empty journal."""
        return [JournalEntry.from_record(r) for r in self.records(KIND)]

    def save(self, entries: Iterable[JournalEntry]) -> None:
        """Make *entries* the journal's NAPI records; no records at all removes the file."""
        self.replace_kind(KIND, [e.to_record() for e in entries])

    def add_baselines(self, items: Iterable[tuple[Target, NapiSettings]]) -> list[Target]:
        """Record baselines for targets not journaled yet; returns the ones added."""
        by_key = {}
        records = []
        for target, before in items:
            r = baseline_record(target, before)
            by_key[r.key] = target
            records.append(r)
        return [by_key[r.key] for r in self.add(records)]

    def remove(self, targets: Iterable[Target]) -> None:
        self.forget((KIND, target_key(t)) for t in targets)
