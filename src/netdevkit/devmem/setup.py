"""NIC preparation for Device Memory TCP, every change journaled and undoable.

What a NIC needs before ``bind-rx`` works (KERNEL.md, devmem.rst):

1. header split: ``tcp-data-split`` on and ``hds-thresh`` 0 (ethtool rings);
2. ntuple filters on (feature ``rx-ntuple-filter``) and a rule steering the
   flow to a devmem queue (``ETHTOOL_SRXCLSRLINS``: netlink has no command);
3. RSS kept off the devmem queues: the default context's indirection table
   spread over the other queues only;
4. a driver with the queue management API and unreadable-netmem page pools
   (gve, mlx5, bnxt, fbnic, idpf).

Optionally (``channels=N``) the channel count is changed first, so that the
devmem queues exist (``ethtool -L combined N``).

:func:`plan` reads the device and returns the :class:`Requirement` lines and
the :class:`Step` list (nothing changes); :func:`apply` refuses unless every
requirement holds, then runs the steps one by one, each journaled *before*
its change (kinds in :mod:`.records`), and undoes the steps already made if
one fails or the process is interrupted; :func:`teardown` puts back what
the journal holds for the device. ``netdevkit restore`` undoes the same
records after a crash.

``best_effort=True`` plans every step the device can take and names, as
skipped, each one it cannot (a driver netdevkit does not know, steering done
by other means, a test NIC such as netdevsim without ntuple or RSS); only the
queues must still fit, and at least one step must be possible.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .. import _fault
from .._drivers import DEVMEM_DRIVERS, NO_DEVMEM_DRIVERS
from .._os import format_cpu_list  # queue ids are written in the same range syntax
from .._signals import Interrupted
from ..errors import NetdevkitError, RequestError, UnsupportedError
from ..ethtool.client import Channels, Features, Rings, Rss, default_indir
from ..ethtool.family import TcpDataSplit
from ..ethtool.ioctl import Flow
from ..journal import Journal, Record
from . import records as rec
from .nic import Nic

REQUIREMENTS = ("driver", "queue API", "header split", "ntuple", "RSS", "queues")
#: the requirements that carry a step: what ``best_effort`` may skip
STEP_REQUIREMENTS = ("channels", "header split", "ntuple", "RSS")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One thing devmem needs from the device: met (True), missing (False) or unknown (None)."""

    name: str
    ok: bool | None
    detail: str


@dataclass(frozen=True, slots=True)
class Step:
    """One change: what it does, its journal record, and the call that makes it."""

    description: str
    record: Record
    run: Callable[[Nic], int | None] = dataclasses.field(repr=False, compare=False)
    #: planned from a prediction (after an earlier step changes the device): called just
    #: before the step runs, it reads the device and returns the step to run, or None
    #: when nothing is left to change
    replan: Callable[[Nic], Step | None] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )


@dataclass(frozen=True, slots=True)
class Plan:
    ifname: str
    netns: str | None
    queues: tuple[int, ...]
    flow: Flow
    requirements: tuple[Requirement, ...]
    steps: tuple[Step, ...]
    #: the channel count asked (None: left as it is)
    channels: int | None = None
    best_effort: bool = False

    @property
    def skipped(self) -> tuple[Requirement, ...]:
        """With ``best_effort``: the step-bearing requirements not met, whose steps are
        left out (empty otherwise: a plan that is not best-effort skips nothing)."""
        if not self.best_effort:
            return ()
        return tuple(r for r in self.requirements if r.name in STEP_REQUIREMENTS and not r.ok)

    @property
    def ok(self) -> bool:
        if not self.best_effort:
            return all(r.ok for r in self.requirements)
        queues = all(r.ok for r in self.requirements if r.name == "queues")
        possible = any(r.ok for r in self.requirements if r.name in STEP_REQUIREMENTS)
        return queues and possible

    def refusal(self) -> str:
        head = f"devmem setup refused for {self.ifname}, nothing was changed: "
        if not self.best_effort:
            missing = [f"{r.name}: {r.detail}" for r in self.requirements if not r.ok]
            return head + "; ".join(missing)
        why = [f"queues: {r.detail}" for r in self.requirements if r.name == "queues" and not r.ok]
        if not any(r.ok for r in self.requirements if r.name in STEP_REQUIREMENTS):
            why.append(
                "no step is possible ("
                + "; ".join(f"{r.name}: {r.detail}" for r in self.skipped)
                + ")"
            )
        return head + "; ".join(why)


def parse_queues(text: str) -> tuple[int, ...]:
    """``"14-15"``, ``"3,5,7-8"`` -> queue ids (sorted, unique)."""
    out: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise RequestError(f"queues {text!r}: use ids and ranges such as 14-15 or 3,5,7-8")
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise RequestError(f"queues {text!r}: range {a}-{b} runs backwards")
        out.update(range(a, b + 1))
    return tuple(sorted(out))


# -- reading the device ------------------------------------------------------------


def _try(fn: Callable[[], object]) -> tuple[object | None, str]:
    try:
        return fn(), ""
    except NetdevkitError as err:
        return None, str(err)


def _driver_req(drv: str | None) -> Requirement:
    if drv in DEVMEM_DRIVERS:
        return Requirement("driver", True, f"{drv} carries devmem")
    if drv in NO_DEVMEM_DRIVERS or drv is None:
        return Requirement(
            "driver",
            False,
            f"{drv or 'this virtual device'} cannot carry devmem (needs one of "
            f"{', '.join(sorted(DEVMEM_DRIVERS))})",
        )
    return Requirement("driver", None, f"{drv} is not known to carry devmem")


_QUEUE_API = {
    True: "the driver has the queue management API",
    False: "the driver lacks the queue management API (the kernel refuses bind-rx)",
    None: "cannot tell without CAP_NET_ADMIN (run as root)",
}


def _header_split_req(rings: object, err: str) -> Requirement:
    if isinstance(rings, Rings) and rings.tcp_data_split is not None:
        split = rings.tcp_data_split.name.lower()
        return Requirement("header split", True, f"tcp-data-split is {split}")
    why = err or "the driver does not report tcp-data-split"
    return Requirement("header split", False, f"no header split ({why})")


def _ntuple_req(feats: object, err: str) -> Requirement:
    if isinstance(feats, Features) and rec.NTUPLE_FEATURE in feats.hw | feats.active:
        return Requirement("ntuple", True, "ntuple flow steering available")
    return Requirement("ntuple", False, err or "the driver has no ntuple flow steering")


def _rss_req(nic: Nic, rss: object, err: str) -> Requirement:
    if isinstance(rss, Rss) and rss.indir and nic.can_set_rss():
        return Requirement("RSS", True, f"indirection table of {len(rss.indir)} entries")
    if isinstance(rss, Rss) and rss.indir:
        return Requirement("RSS", False, "the RSS indirection table cannot be set")
    return Requirement("RSS", False, err or "no RSS indirection table")


def _queues_req(queues: Sequence[int], n: int | None, err: str) -> Requirement:
    """*queues* against *n* RX queues (after a channels change, if one is planned)."""
    if n is None:
        return Requirement("queues", False, err or "cannot count the RX queues")
    bad = [q for q in queues if q >= n]
    if not queues:
        return Requirement("queues", False, "no devmem queue given")
    if bad:
        return Requirement("queues", False, f"queues {bad} out of range 0..{n - 1}")
    if len(set(queues)) >= n:
        return Requirement("queues", False, f"all {n} RX queues asked: none left for RSS")
    return Requirement("queues", True, f"{len(queues)} of {n} RX queues for devmem")


def _channel_count(chans: Channels) -> tuple[str, int, int]:
    """The count ``channels=N`` sets -- combined channels, or RX ones on a device without --
    as (kind, now, maximum)."""
    if chans.combined_max > 0:
        return "combined", chans.combined_count, chans.combined_max
    return "rx", chans.rx_count, chans.rx_max


def _rx_queues_after(chans: Channels, want: int) -> int:
    """RX queues once the count ``channels=N`` sets is *want*."""
    _kind, now, _top = _channel_count(chans)
    return chans.rx_queues - now + want


def _channels_req(want: int, chans: object, err: str) -> Requirement:
    if not isinstance(chans, Channels):
        return Requirement("channels", False, err or "cannot read the channel counts")
    kind, now, top = _channel_count(chans)
    if top == 0:
        return Requirement("channels", False, "the driver's channel counts cannot be changed")
    if want > top:
        return Requirement("channels", False, f"{kind} {want} exceeds the maximum {top}")
    if want == now:
        return Requirement("channels", True, f"{kind} stays {now}")
    return Requirement("channels", True, f"{kind} {now} -> {want} (max {top})")


def requirements(
    nic: Nic, ifname: str, queues: Sequence[int] | None, channels: int | None = None
) -> tuple[list[Requirement], dict[str, object]]:
    """The per-requirement lines for *ifname*, and what was read (for :func:`plan`).

    *queues* None leaves out the ``queues`` line (``doctor`` asks no queues);
    *channels* adds a ``channels`` line, and the queues are counted as they would be
    after that change.
    """
    out = [_driver_req(nic.driver(ifname))]
    qapi = nic.queue_api(ifname)
    out.append(Requirement("queue API", qapi, _QUEUE_API[qapi]))
    rings, rings_err = _try(lambda: nic.rings_get(ifname))
    out.append(_header_split_req(rings, rings_err))
    feats, feats_err = _try(lambda: nic.features_get(ifname))
    out.append(_ntuple_req(feats, feats_err))
    rss, rss_err = _try(lambda: nic.rss_get(ifname))
    out.append(_rss_req(nic, rss, rss_err))
    chans, chans_err = _try(lambda: nic.channels_get(ifname))
    n = chans.rx_queues if isinstance(chans, Channels) else None
    if channels is not None:
        req = _channels_req(channels, chans, chans_err)
        out.append(req)
        if req.ok and isinstance(chans, Channels):
            n = _rx_queues_after(chans, channels)
    if queues is not None:
        out.append(_queues_req(queues, n, chans_err))
    facts: dict[str, object] = {"rings": rings, "features": feats, "rss": rss, "channels": chans}
    return out, facts


def tx_requirements(nic: Nic, ifname: str, bind_tx: bool) -> list[Requirement]:
    """What sending from device memory needs of *ifname*: a driver that carries devmem and
    a kernel with ``bind-tx`` (*bind_tx*: whether this kernel's netdev family has it).

    Nothing is changed and no dmabuf is needed; the kernel's ``bind-tx`` has the last word.
    """
    if bind_tx:
        kernel = Requirement("kernel", True, "bind-tx is registered")
    else:
        kernel = Requirement(
            "kernel", False, "Device Memory TCP send needs Linux 6.16 or newer (bind-tx)"
        )
    return [_driver_req(nic.driver(ifname)), kernel]


def plan(
    nic: Nic,
    ifname: str,
    queues: Sequence[int],
    flow: Flow,
    *,
    channels: int | None = None,
    best_effort: bool = False,
) -> Plan:
    """Read *ifname* and plan the changes; changes nothing.

    *channels*: set the combined channel count (RX count on a device without combined
    channels) to this first. *best_effort*: plan the steps whose requirements hold and
    skip, by name, the others (see the module docstring).
    """
    if channels is not None and channels < 1:
        raise RequestError(f"channels {channels}: a device needs at least one channel")
    qs = tuple(sorted(set(queues)))
    reqs, facts = requirements(nic, ifname, qs, channels)
    p = Plan(ifname, nic.netns, qs, flow, tuple(reqs), (), channels, best_effort)
    if not p.ok:
        return p
    met = {r.name for r in reqs if r.ok}
    steps = _steps(nic.netns, ifname, qs, flow, facts, channels, met)
    return dataclasses.replace(p, steps=tuple(steps))


def _steps(
    netns: str | None,
    ifname: str,
    qs: tuple[int, ...],
    flow: Flow,
    facts: dict[str, object],
    channels: int | None,
    met: set[str],
) -> list[Step]:
    """The steps of the requirements in *met*, in the order they must run: channels first
    (the queues must exist), then header split, ntuple on, RSS, and the rule last."""
    rings, feats, rss, chans = facts["rings"], facts["features"], facts["rss"], facts["channels"]
    steps: list[Step] = []
    n_queues = now_queues = chans.rx_queues if isinstance(chans, Channels) else 0
    if channels is not None and "channels" in met:
        assert isinstance(chans, Channels)
        ch = _channels_step(netns, ifname, chans, channels)
        if ch is not None:
            steps.append(ch)
            n_queues = _rx_queues_after(chans, channels)
    if "header split" in met:
        assert isinstance(rings, Rings)
        rs = _rings_step(netns, ifname, rings)
        if rs is not None:
            steps.append(rs)
    if "ntuple" in met:
        assert isinstance(feats, Features)
        if rec.NTUPLE_FEATURE not in feats.active:
            steps.append(
                Step(
                    "ntuple filters on (were off)",
                    rec.features_record(netns, ifname, False),
                    lambda nic: nic.features_set(ifname, {rec.NTUPLE_FEATURE: True}),
                )
            )
    if "RSS" in met:
        assert isinstance(rss, Rss)
        indir = list(rss.indir)
        replan: Callable[[Nic], Step | None] | None = None
        if steps and steps[0].record.kind == rec.CHANNELS:
            # After a channels change a driver regenerates a table the user never set,
            # and keeps one the user did: predict the first, read it again when the step
            # runs (the journal's "before" is the table as it is then).
            if indir == default_indir(len(indir), now_queues):
                indir = default_indir(len(indir), n_queues)
            after = n_queues

            def replan(nic: Nic) -> Step | None:
                return _rss_step(netns, ifname, qs, after, list(nic.rss_get(ifname).indir))

        step = _rss_step(netns, ifname, qs, n_queues, indir)
        if step is not None:
            steps.append(dataclasses.replace(step, replan=replan))
    if "ntuple" in met:
        steps.append(
            Step(
                f"ntuple rule: {flow.describe()} -> queue {qs[0]}",
                rec.ntuple_record(netns, ifname, flow, qs[0]),
                lambda nic: nic.ntuple_insert(ifname, flow, qs[0]),
            )
        )
    return steps


def _channels_step(netns: str | None, ifname: str, chans: Channels, want: int) -> Step | None:
    kind, now, _top = _channel_count(chans)
    if want == now:
        return None
    before = {"combined-count": chans.combined_count, "rx-count": chans.rx_count}

    def run(nic: Nic) -> None:
        if kind == "combined":
            nic.channels_set(ifname, combined=want)
        else:
            nic.channels_set(ifname, rx=want)

    return Step(
        f"channels: {kind} {want} (was {now})",
        rec.channels_record(netns, ifname, before, f"{kind} {want}"),
        run,
    )


def _rings_step(netns: str | None, ifname: str, rings: Rings) -> Step | None:
    split = rings.tcp_data_split
    thresh = rings.hds_thresh
    if split is TcpDataSplit.ENABLED and thresh in (0, None):
        return None
    new_thresh = None if thresh is None else 0
    return Step(
        f"header split on (was {split.name.lower() if split else '?'}), "
        f"hds-thresh 0 (was {thresh})",
        rec.rings_record(netns, ifname, int(split or 0), thresh),
        lambda nic: nic.rings_set(
            ifname, tcp_data_split=TcpDataSplit.ENABLED, hds_thresh=new_thresh
        ),
    )


def _rss_step(
    netns: str | None, ifname: str, qs: tuple[int, ...], n_queues: int, indir: list[int]
) -> Step | None:
    """The default RSS table spread over the non-devmem queues, if it points at a devmem
    queue now (None: nothing to change)."""
    if not any(q in qs for q in indir):
        return None
    others = [q for q in range(n_queues) if q not in qs]
    new = [others[i % len(others)] for i in range(len(indir))]
    return Step(
        f"RSS indirection table over queues {format_cpu_list(others)} only "
        f"(keeps {format_cpu_list(qs)} for devmem)",
        rec.rss_record(netns, ifname, indir, new),
        lambda nic: nic.rss_set(ifname, new),
    )


# -- changing it ---------------------------------------------------------------------


def apply(
    p: Plan,
    nic: Nic,
    journal: Journal | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> list[Record]:
    """Run *p*'s steps, each journaled before its change; returns the records written.

    Refuses (:class:`UnsupportedError`, nothing changed) unless every
    requirement holds (a best-effort plan: unless the queues fit and a step is
    possible). A step planned from a prediction is read again just before it runs.
    If a step fails, or the process is interrupted, the steps already made are
    undone (newest first) before the error propagates; an interruption comes out as
    :class:`~netdevkit._signals.Interrupted` saying what was undone.
    """
    if not p.ok:
        raise UnsupportedError(p.refusal())
    journal = journal if journal is not None else Journal()
    written: list[Record] = []
    try:
        for planned in p.steps:
            step = planned if planned.replan is None else planned.replan(nic)
            if step is None:
                continue  # the earlier steps left nothing for this one to change
            if on_step is not None:
                on_step(step)
            with journal.intent([step.record]) as added:
                if step.record.kind == rec.NTUPLE and not added:
                    # an earlier setup's rule for this flow is journaled and still steers it
                    continue
                written += added
                _fault.point("ethtool-set")
                result = step.run(nic)
            if step.record.kind == rec.NTUPLE and added:
                info = {**step.record.info, "location": result}
                journal.update([dataclasses.replace(step.record, info=info)])
                written[-1] = dataclasses.replace(written[-1], info=info)
    except BaseException as exc:
        undone = _undo(nic, journal, written)
        if not isinstance(exc, KeyboardInterrupt):
            raise
        failed = [u for u in undone if not u.ok]
        what = f"{len(undone) - len(failed)} of {len(written)} changes undone"
        if failed:
            what += f"; {len(failed)} stay journaled for `netdevkit restore`"
        else:
            what += ", nothing changed"
        signum = getattr(exc, "signum", signal.SIGINT)
        raise Interrupted(signum, f"devmem setup of {p.ifname}: {what}") from exc
    return written


@dataclass(frozen=True, slots=True)
class Undone:
    """What undoing one journaled change did; failed ones stay journaled."""

    record: Record
    ok: bool
    message: str


def undo(nic: Nic, records: Sequence[Record], journal: Journal | None = None) -> list[Undone]:
    """Undo *records* (as :func:`apply` returned them), newest first, and forget them."""
    return _undo(nic, journal if journal is not None else Journal(), list(records))


def _undo(nic: Nic, journal: Journal, written: list[Record]) -> list[Undone]:
    out: list[Undone] = []
    for record in reversed(written):
        fresh = {r.ident: r for r in journal.records(record.kind)}.get(record.ident, record)
        try:
            _fault.point("ethtool-undo")
            msg = rec.restore(nic, fresh)
        except (NetdevkitError, OSError) as err:
            out.append(Undone(fresh, False, f"{fresh.info.get('what', fresh.kind)}: {err}"))
            continue
        journal.forget([fresh])
        out.append(Undone(fresh, True, msg))
    return out


def teardown(nic: Nic, ifname: str, journal: Journal | None = None) -> list[Undone]:
    """Undo every journaled devmem setup change of *ifname* (newest first)."""
    journal = journal if journal is not None else Journal()
    mine = [
        r
        for r in journal.records()
        if r.kind in rec.KINDS
        and r.info.get("ifname") == ifname
        and r.info.get("netns") == nic.netns
    ]
    return _undo(nic, journal, mine)
