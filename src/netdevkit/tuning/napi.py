"""Apply NAPI settings as a plan that is journaled first and rolled back on refusal.

>>> with Tuner() as tuner:                                   # doctest: +SKIP
...     plan = tuner.plan_for(get_preset("suspend").napi, ifname="eth0")
...     print("\\n".join(plan.lines()))
...     applied = tuner.apply(plan)
...     ...
...     tuner.undo(applied)          # or later, any process: tuner.restore()

Order of work, so that bad input changes nothing:

1. :meth:`Tuner.plan_for` / :meth:`Tuner.plan` validate every value (sign,
   S32_MAX, units), resolve every target (unknown ids and interfaces fail
   here), read the current values and ask the backend whether it can set
   each knob -- all before the first write.
2. :meth:`Tuner.apply` records the baselines in the journal (fsync'd), then
   writes change 1..n in order. If the kernel refuses change k, changes
   1..k-1 are written back and :class:`~.model.TuningError` names change k
   with the kernel's extack text.
3. :meth:`Tuner.undo` puts back what one ``apply`` changed;
   :meth:`Tuner.restore` puts back everything the journal lists (any process,
   also after a crash); :meth:`Tuner.diff` compares now with the baselines.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .. import _fault
from .._argcheck import instance_arg, ints_arg, str_arg
from .._signals import Deferral, Interrupted
from ..errors import NetdevkitError, NotFoundError, RequestError, TuningError, UnsupportedError
from ..netdev.client import ifindex_of
from ..netns import exists as netns_exists
from .backends import (
    Backend,
    BackendChoice,
    NetlinkBackend,
    Resolved,
    SysfsBackend,
    check_choice,
    default_choice,
)
from .journal import Journal, JournalEntry
from .model import (
    KNOBS,
    Change,
    Plan,
    Target,
    as_dict,
    format_value,
    is_empty,
    make_plan,
    settings_of,
    settings_to_json,
    validate_settings,
)
from .presets import NapiSettings

Status = Literal["restored", "unchanged", "gone", "failed", "kept"]
Delta = dict[str, tuple[int | bool | None, int | bool | None]]


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`Tuner.apply` did: the changes written, the journal entries it added."""

    plan: Plan
    changes: tuple[Change, ...]
    journaled: tuple[Target, ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One target of a restore or undo."""

    target: Target
    status: Status
    message: str
    delta: Delta = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.to_json(),
            "status": self.status,
            "message": self.message,
            "changed": {k: {"from": b, "to": a} for k, (b, a) in self.delta.items()},
        }


@dataclass(frozen=True, slots=True)
class DiffRow:
    """One journal entry compared with the kernel now.

    ``current`` is None when the target is gone; ``successor`` is the NAPI
    holding the same position on the same device now, if any, and
    ``current`` then holds *its* values.
    """

    entry: JournalEntry
    current: NapiSettings | None
    delta: Delta
    successor: Target | None = None

    @property
    def status(self) -> str:
        if self.current is None:
            return "gone"
        if self.successor is not None:
            return "replaced"
        return "differs" if self.delta else "same"

    def line(self) -> str:
        t = self.entry.target
        head = t.label
        if self.current is None:
            return f"{head}: gone ({_gone_reason(t)})"
        changes = ", ".join(
            f"{KNOBS[k]} {format_value(k, b)} -> {format_value(k, a)}"
            for k, (b, a) in self.delta.items()
        )
        if self.successor is not None:
            return f"{head}: gone; position {t.position} is now NAPI {self.successor.napi_id}" + (
                f", which differs from the baseline: {changes}" if changes else ", at baseline"
            )
        return f"{head}: {changes} (baseline -> now)" if changes else f"{head}: at baseline"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "napi",
            "target": self.entry.target.to_json(),
            "status": self.status,
            "baseline": settings_to_json(self.entry.baseline),
            "current": None if self.current is None else settings_to_json(self.current),
            "successor_napi_id": None if self.successor is None else self.successor.napi_id,
            "differs": {k: {"baseline": b, "now": a} for k, (b, a) in self.delta.items()},
        }


def _delta(frm: NapiSettings, to: NapiSettings) -> Delta:
    """knob -> (from, to) for the knobs *to* sets that differ in *frm*."""
    f, t = as_dict(frm), as_dict(to)
    return {k: (f[k], t[k]) for k in KNOBS if t[k] is not None and f[k] != t[k]}


def _gone_reason(t: Target) -> str:
    if t.netns is not None and not netns_exists(t.netns):
        return f"network namespace {t.netns} no longer exists"
    try:
        ifindex = ifindex_of(t.ifname, t.netns)
    except NotFoundError:
        return f"{t.ifname} no longer exists"
    if ifindex != t.ifindex:
        return f"{t.ifname} was recreated (ifindex {t.ifindex} -> {ifindex})"
    return "GRO toggled or link flapped"


def _gone_message(t: Target) -> str:
    if t.napi_id is None:
        return f"{t.ifname}: {_gone_reason(t)}; nothing to restore"
    return f"NAPI {t.napi_id} of {t.ifname} is gone ({_gone_reason(t)})"


# What the kernel does to a device's NAPIs when it recreates them (GRO or XDP toggled on
# veth, a driver's reconfiguration), read in net/core/dev.c (6.13-7.x):
# - netif_napi_add_weight_locked() gives a new NAPI the *device-wide* defer-hard-irqs and
#   gro-flush-timeout (dev->napi_defer_hard_irqs, dev->gro_flush_timeout: the sysfs
#   values) and a new id; it does not touch irq_suspend_timeout.
# - Drivers that register NAPIs with an index (netif_napi_add_config) get per-index
#   storage, dev->napi_config[index]: napi_disable() saves defer/gro/irq-suspend (and the
#   id) there (napi_save_config), napi_enable() loads them back (napi_restore_config),
#   so such NAPIs keep id and settings across a reset. napi-set writes both the NAPI and
#   its config slot.
# - veth registers without an index (netif_napi_add) and embeds its NAPIs in a
#   per-queue array that lives as long as the device: re-added NAPIs come back with the
#   device-wide defer/gro, but the irq_suspend_timeout written before the reset is still
#   in the struct [seen on 6.18: suspend preset, GRO off/on: defer 0, gro 0, 20ms].
# So a recreated NAPI's values are whatever the kernel kept: restore reads them and puts
# the baseline back on the NAPI now at the same position, knob by knob, like any other.


def _successor_head(t: Target, succ: Target) -> str:
    return (
        f"{_gone_message(t)}; position {t.position} is now NAPI {succ.napi_id}"
        f" ({succ.ifname} #{succ.position}{f', netns {succ.netns}' if succ.netns else ''})"
    )


def _changes(delta: Delta) -> str:
    return ", ".join(
        f"{KNOBS[k]} {format_value(k, b)} -> {format_value(k, a)}" for k, (b, a) in delta.items()
    )


class Tuner:
    """Reads, plans, applies and undoes NAPI settings. Close it (or use ``with``).

    *backend* is ``auto`` (per-NAPI netlink where the kernel has napi-set,
    device-wide sysfs elsewhere), ``netlink`` or ``sysfs``; ``None`` reads
    ``$NETDEVKIT_TUNING_BACKEND``. *journal* ``None`` uses the default
    journal file; pass ``journal=False`` to apply without journaling.
    """

    def __init__(
        self, backend: str | None = None, journal: Journal | Literal[False] | None = None
    ) -> None:
        str_arg("backend", backend, none_ok=True)
        if journal is not False:
            instance_arg("journal", journal, (Journal, type(None)), "a Journal, False or None")
        self.choice: BackendChoice = default_choice() if backend is None else check_choice(backend)
        self.journal: Journal | None = (
            None if journal is False else (journal if journal is not None else Journal())
        )
        self._netlink: NetlinkBackend | None = None
        self._sysfs: SysfsBackend | None = None
        #: what the last :meth:`apply` completed (all its changes made), else None: a
        #: caller that gets a KeyboardInterrupt can tell whether the changes stand
        self.completed: Applied | None = None

    def __enter__(self) -> Tuner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None

    # -- backends -------------------------------------------------------------------

    def backend_named(self, name: str) -> Backend:
        if name == "netlink":
            if self._netlink is None:
                self._netlink = NetlinkBackend()
            return self._netlink
        if self._sysfs is None:
            self._sysfs = SysfsBackend(forced=self.choice == "sysfs")
        return self._sysfs

    def backend_for(self, netns: str | None) -> Backend:
        """The backend that tunes *netns*, per :attr:`choice`."""
        if self.choice != "auto":
            return self.backend_named(self.choice)
        nl = self.backend_named("netlink")
        assert isinstance(nl, NetlinkBackend)
        try:
            per_napi = nl.supported(netns)
        except UnsupportedError:  # before 6.9 there is no netdev family at all
            per_napi = False
        return nl if per_napi else self.backend_named("sysfs")

    # -- resolve and plan ----------------------------------------------------------------

    def resolve(
        self,
        *,
        netns: str | None = None,
        ifname: str | None = None,
        napi_ids: Sequence[int] | None = None,
    ) -> Resolved:
        """Targets and their current values: all NAPIs of *ifname*, or *napi_ids*."""
        str_arg("netns", netns, none_ok=True)
        str_arg("ifname", ifname, none_ok=True)
        ints_arg("napi_ids", napi_ids, none_ok=True)
        if (ifname is None) == (napi_ids is None):
            raise RequestError("name either an interface or NAPI ids (not both, not neither)")
        backend = self.backend_for(netns)
        if ifname is not None:
            return backend.interface(netns, ifname)
        assert napi_ids is not None
        if not napi_ids:
            raise RequestError("no NAPI ids given")
        return backend.ids(netns, list(napi_ids))

    def plan(self, requests: Iterable[tuple[Target, NapiSettings, NapiSettings]]) -> Plan:
        """``(target, current, wanted)`` -> a checked plan. Writes nothing."""
        reqs = []
        for target, current, asked in requests:
            validate_settings(asked, target.label)
            # the backend drops what needs no write (sysfs: irq-suspend-timeout 0)
            wanted = self.backend_named(target.backend).check(target, current, asked)
            reqs.append((target, current, wanted))
        return make_plan(reqs)

    def plan_for(
        self,
        settings: NapiSettings,
        *,
        netns: str | None = None,
        ifname: str | None = None,
        napi_ids: Sequence[int] | None = None,
    ) -> Plan:
        """One set of values for all NAPIs of *ifname* or for *napi_ids*."""
        validate_settings(settings)
        if is_empty(settings):
            raise RequestError(
                "nothing to set",
                hint="give a preset or at least one of `defer_hard_irqs`, `gro_flush_timeout`, "
                "`irq_suspend_timeout`, `threaded`",
            )
        resolved = self.resolve(netns=netns, ifname=ifname, napi_ids=napi_ids)
        return self.plan((t, cur, settings) for t, cur in resolved)

    # -- apply and undo ----------------------------------------------------------------

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return self.journal.locked() if self.journal is not None else contextlib.nullcontext()

    def apply(self, plan: Plan) -> Applied:
        """Journal the baselines, then write each change; roll back on refusal or signal.

        While it runs (in the main thread), SIGINT, SIGTERM and SIGHUP are held and looked
        at between two writes: a signal rolls back every change made so far -- including
        one the kernel was making when the signal came -- and raises
        :class:`~netdevkit._signals.Interrupted` saying so. The journal keeps any target
        whose rollback failed, so ``restore`` can finish the job.
        """
        self.completed = None
        todo = plan.effective
        if not todo:
            return Applied(plan, (), ())
        with Deferral() as signals, self._locked():
            added: list[Target] = []
            if self.journal is not None:
                added = self.journal.add_baselines((c.target, c.before) for c in todo)
            done: list[Change] = []
            for k, change in enumerate(todo, 1):
                self._check_signal(signals, done, added, len(todo))
                try:
                    _fault.point("napi-write")
                    self.backend_named(change.target.backend).write(change.target, change.forward())
                except NetdevkitError as err:  # the kernel refused: change k did not happen
                    rolled, failures, stuck = self._rollback(done)
                    self._forget(added, stuck)
                    raise TuningError(k, len(todo), change, err, rolled, failures) from err
                except BaseException:
                    # KeyboardInterrupt and friends (outside the main thread, where signals
                    # are not held): the write in flight may have reached the kernel, so it
                    # is undone as well (writing the old values back is a no-op otherwise).
                    _rolled, _failures, stuck = self._rollback([*done, change])
                    self._forget(added, stuck)
                    raise
                done.append(change)
            _fault.point("napi-applied")  # not a change: where a late signal lands
            self.completed = Applied(plan, tuple(done), tuple(added))
            self._check_signal(signals, done, added, len(todo))
        return self.completed

    def _forget(self, added: list[Target], stuck: set[tuple[Any, ...]]) -> None:
        if self.journal is not None:
            self.journal.remove(t for t in added if t.key not in stuck)

    def _check_signal(
        self, signals: Deferral, done: list[Change], added: list[Target], total: int
    ) -> None:
        """A safe point of :meth:`apply`: on a pending signal, roll back and raise."""
        signum = signals.take()
        if signum is None:
            return
        self.completed = None
        rolled, failures, stuck = self._rollback(done)
        self._forget(added, stuck)
        name = signal.Signals(signum).name
        msg = f"{name} after {len(done)} of {total} change(s): " + (
            f"rolled back the {len(rolled)} made, nothing changed" if done else "nothing changed"
        )
        if failures:
            msg += (
                "; ROLLBACK INCOMPLETE: "
                + "; ".join(failures)
                + " (they stay in the journal: run `netdevkit restore`)"
            )
        raise Interrupted(signum, msg)

    def _rollback(
        self, done: list[Change]
    ) -> tuple[tuple[Change, ...], tuple[str, ...], set[tuple[Any, ...]]]:
        rolled: list[Change] = []
        failures: list[str] = []
        stuck: set[tuple[Any, ...]] = set()
        for change in reversed(done):
            try:
                _fault.point("napi-rollback")
                self.backend_named(change.target.backend).write(change.target, change.backward())
                rolled.append(change)
            except NetdevkitError as err:
                failures.append(f"{change.target.label}: {err}")
                stuck.add(change.target.key)
        return tuple(rolled), tuple(failures), stuck

    def undo(self, applied: Applied) -> list[Outcome]:
        """Put back what *applied* changed, knob by knob.

        A knob that someone else changed after us is left alone (reported as
        ``kept``); a NAPI that vanished is reported ``gone``. Journal entries
        that *applied* added are removed unless undoing them failed.
        """
        out: list[Outcome] = []
        with self._locked():
            stuck: set[tuple[Any, ...]] = set()
            for change in reversed(applied.changes):
                o = self._undo_one(change)
                out.append(o)
                if o.status == "failed":
                    stuck.add(change.target.key)
            if self.journal is not None:
                self.journal.remove(t for t in applied.journaled if t.key not in stuck)
        return out

    def _undo_one(self, change: Change) -> Outcome:
        t = change.target
        backend = self.backend_named(t.backend)
        now, succ = self.read_or_successor(t)
        if now is None and succ is None:
            return Outcome(t, "gone", _gone_message(t))
        where = t if succ is None else succ[0]
        current = now if succ is None else succ[1]
        assert current is not None
        ours = {k: b for k, (b, a) in change.delta.items() if as_dict(current)[k] == a}
        # On a successor, knobs the kernel reset to the baseline are nobody's change.
        theirs = sorted(
            KNOBS[k]
            for k, (b, _a) in change.delta.items()
            if k not in ours and (succ is None or as_dict(current)[k] != b)
        )
        back = settings_of(ours)
        head = t.label if succ is None else _successor_head(t, where)
        try:
            if ours:
                _fault.point("napi-undo")
                backend.write(where, back)
        except NotFoundError:
            return Outcome(t, "gone", _gone_message(t))
        except NetdevkitError as err:
            return Outcome(t, "failed", f"{head}: could not put back: {err}")
        delta = _delta(current, back)
        msg = f"{head}: restored " + (_changes(delta) or "nothing")
        if theirs:
            msg += f"; left {', '.join(theirs)} as is (changed by someone else since)"
        return Outcome(t, "restored" if delta else "kept", msg, delta)

    # -- the journal: restore and diff ----------------------------------------------------

    def _entries(self, netns: str | None, ifname: str | None) -> list[JournalEntry]:
        if self.journal is None:
            raise RequestError("this Tuner was made without a journal")
        return [
            e
            for e in self.journal.load()
            if (netns is None or e.target.netns == netns)
            and (ifname is None or e.target.ifname == ifname)
        ]

    def restore(self, *, netns: str | None = None, ifname: str | None = None) -> list[Outcome]:
        """Put every journaled target back to its baseline (newest first).

        Restored, unchanged and gone entries leave the journal; failed ones
        stay so that a later restore retries them.
        """
        if self.journal is None:
            raise RequestError("this Tuner was made without a journal")
        out: list[Outcome] = []
        with self.journal.locked():
            entries = self._entries(netns, ifname)
            stuck: set[tuple[Any, ...]] = set()
            for entry in reversed(entries):
                o = self.restore_entry(entry)
                out.append(o)
                if o.status == "failed":
                    stuck.add(entry.target.key)
            self.journal.remove(e.target for e in entries if e.target.key not in stuck)
        return out

    def read_or_successor(
        self, t: Target
    ) -> tuple[NapiSettings | None, tuple[Target, NapiSettings] | None]:
        """*t*'s values now, or (None, the NAPI now at its position and its values)."""
        try:
            if t.netns is not None and not netns_exists(t.netns):
                return None, None
            return self.backend_named(t.backend).read(t), None
        except NotFoundError:
            pass
        try:
            return None, self.backend_named(t.backend).successor(t)
        except NetdevkitError:
            return None, None

    def restore_entry(self, entry: JournalEntry) -> Outcome:
        """Put one journaled target back to its baseline (what ``restore`` does per entry).

        The values compared are the kernel's, never assumed: a NAPI whose id vanished is
        restored through the NAPI that now holds its position on the same device (see
        the kernel notes above :class:`Tuner`: a recreated NAPI may keep settings).
        """
        t = entry.target
        now, succ = self.read_or_successor(t)
        if now is None and succ is None:
            return Outcome(t, "gone", _gone_message(t))
        where = t if succ is None else succ[0]
        current = now if succ is None else succ[1]
        assert current is not None
        head = t.label if succ is None else _successor_head(t, where)
        delta = _delta(current, entry.baseline)
        if not delta:
            return Outcome(t, "unchanged", f"{head}: already at its baseline")
        try:
            _fault.point("napi-restore")
            self.backend_named(t.backend).write(
                where, settings_of({k: a for k, (_b, a) in delta.items()})
            )
        except NotFoundError:
            return Outcome(t, "gone", _gone_message(t))
        except NetdevkitError as err:
            return Outcome(t, "failed", f"{head}: could not restore: {err}")
        return Outcome(t, "restored", f"{head}: restored {_changes(delta)}", delta)

    def diff(self, *, netns: str | None = None, ifname: str | None = None) -> list[DiffRow]:
        """Every journal entry against the kernel now (oldest first)."""
        rows = []
        for entry in self._entries(netns, ifname):
            now, succ = self.read_or_successor(entry.target)
            if now is not None:
                rows.append(DiffRow(entry, now, _delta(entry.baseline, now)))
            elif succ is not None:
                rows.append(DiffRow(entry, succ[1], _delta(entry.baseline, succ[1]), succ[0]))
            else:
                rows.append(DiffRow(entry, None, {}))
        return rows


def journal_entries(journal: Journal | None = None) -> Iterator[JournalEntry]:
    """The entries of *journal* (default: the state directory's), oldest first."""
    yield from (journal or Journal()).load()
