"""The ``napi`` kind of the journal: how ``netdevkit restore`` and ``napi diff`` handle it.

Registered on import (``netdevkit.journal.KIND_MODULES`` lists this module). A record is a
:class:`~.journal.JournalEntry`: the restorer puts its baseline back through the backend
that wrote it, compares with the current values first (a change that never happened, or
was already undone, is a no-op), and reports a NAPI whose id vanished as gone.
"""

from __future__ import annotations

from typing import Any

from ..journal import Record, RestoreOutcome, register_kind
from .journal import KIND, JournalEntry
from .model import settings_to_json
from .napi import Tuner


class NapiRestorer:
    """One :class:`~.napi.Tuner` (no journal of its own), opened on first use."""

    def __init__(self) -> None:
        self._tuner: Tuner | None = None

    def _t(self) -> Tuner:
        if self._tuner is None:
            self._tuner = Tuner("auto", journal=False)
        return self._tuner

    def restore_outcome(self, record: Record) -> RestoreOutcome:
        o = self._t().restore_entry(JournalEntry.from_record(record))
        js = o.to_json()
        return RestoreOutcome(
            record, o.status, o.message, {"target": js["target"], "changed": js["changed"]}
        )

    def restore(self, record: Record) -> str:
        return self.restore_outcome(record).message

    def current(self, record: Record) -> dict[str, Any] | None:
        now, succ = self._t().read_or_successor(JournalEntry.from_record(record).target)
        if now is not None:
            return settings_to_json(now)
        return None if succ is None else settings_to_json(succ[1])

    def close(self) -> None:
        if self._tuner is not None:
            self._tuner.close()
            self._tuner = None


register_kind(KIND, NapiRestorer())
