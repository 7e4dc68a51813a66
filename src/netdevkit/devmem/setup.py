"""NIC preparation for Device Memory TCP, every change journaled and undoable.

What a NIC needs before ``bind-rx`` works (KERNEL.md, devmem.rst):

1. header split: ``tcp-data-split`` on and ``hds-thresh`` 0 (ethtool rings);
2. ntuple filters on (feature ``rx-ntuple-filter``) and a rule steering the
   flow to a devmem queue (``ETHTOOL_SRXCLSRLINS``: netlink has no command);
3. RSS kept off the devmem queues: the default context's indirection table
   spread over the other queues only;
4. a driver with the queue management API and unreadable-netmem page pools
   (gve, mlx5, bnxt, fbnic, idpf).

:func:`plan` reads the device and returns the :class:`Requirement` lines and
the :class:`Step` list (nothing changes); :func:`apply` refuses unless every
requirement holds, then runs the steps one by one, each journaled *before*
its change (kinds in :mod:`.records`), and undoes the steps already made if
one fails or the process is interrupted; :func:`teardown` puts back what
the journal holds for the device. ``netdevkit restore`` undoes the same
records after a crash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._drivers import DEVMEM_DRIVERS, NO_DEVMEM_DRIVERS
from .._os import format_cpu_list  # queue ids are written in the same range syntax
from ..errors import NetdevkitError, RequestError, UnsupportedError
from ..ethtool.client import Channels, Features, Rings, Rss
from ..ethtool.family import TcpDataSplit
from ..ethtool.ioctl import Flow
from ..journal import Journal, Record
from . import records as rec
from .nic import Nic

REQUIREMENTS = ("driver", "queue API", "header split", "ntuple", "RSS", "queues")


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


@dataclass(frozen=True, slots=True)
class Plan:
    ifname: str
    netns: str | None
    queues: tuple[int, ...]
    flow: Flow
    requirements: tuple[Requirement, ...]
    steps: tuple[Step, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.requirements)

    def refusal(self) -> str:
        missing = [f"{r.name}: {r.detail}" for r in self.requirements if not r.ok]
        return f"devmem setup refused for {self.ifname}, nothing was changed: " + "; ".join(missing)


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


def _queues_req(queues: Sequence[int], chans: object, err: str) -> Requirement:
    if not isinstance(chans, Channels):
        return Requirement("queues", False, err or "cannot count the RX queues")
    n = chans.rx_queues
    bad = [q for q in queues if q >= n]
    if not queues:
        return Requirement("queues", False, "no devmem queue given")
    if bad:
        return Requirement("queues", False, f"queues {bad} out of range 0..{n - 1}")
    if len(set(queues)) >= n:
        return Requirement("queues", False, f"all {n} RX queues asked: none left for RSS")
    return Requirement("queues", True, f"{len(queues)} of {n} RX queues for devmem")


def requirements(
    nic: Nic, ifname: str, queues: Sequence[int] | None
) -> tuple[list[Requirement], dict[str, object]]:
    """The per-requirement lines for *ifname*, and what was read (for :func:`plan`).

    *queues* None leaves out the ``queues`` line (``doctor`` asks no queues).
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
    if queues is not None:
        out.append(_queues_req(queues, chans, chans_err))
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


def plan(nic: Nic, ifname: str, queues: Sequence[int], flow: Flow) -> Plan:
    """Read *ifname* and plan the changes; changes nothing."""
    qs = tuple(sorted(set(queues)))
    reqs, facts = requirements(nic, ifname, qs)
    steps: list[Step] = []
    if all(r.ok for r in reqs):
        steps = _steps(nic.netns, ifname, qs, flow, facts)
    return Plan(ifname, nic.netns, qs, flow, tuple(reqs), tuple(steps))


def _steps(
    netns: str | None, ifname: str, qs: tuple[int, ...], flow: Flow, facts: dict[str, object]
) -> list[Step]:
    rings, feats, rss, chans = facts["rings"], facts["features"], facts["rss"], facts["channels"]
    assert isinstance(rings, Rings) and isinstance(feats, Features)
    assert isinstance(rss, Rss) and isinstance(chans, Channels)
    steps: list[Step] = []
    split = rings.tcp_data_split
    thresh = rings.hds_thresh
    if split is not TcpDataSplit.ENABLED or thresh not in (0, None):
        new_thresh = None if thresh is None else 0
        steps.append(
            Step(
                f"header split on (was {split.name.lower() if split else '?'}), "
                f"hds-thresh 0 (was {thresh})",
                rec.rings_record(netns, ifname, int(split or 0), thresh),
                lambda nic: nic.rings_set(
                    ifname, tcp_data_split=TcpDataSplit.ENABLED, hds_thresh=new_thresh
                ),
            )
        )
    if rec.NTUPLE_FEATURE not in feats.active:
        steps.append(
            Step(
                "ntuple filters on (were off)",
                rec.features_record(netns, ifname, False),
                lambda nic: nic.features_set(ifname, {rec.NTUPLE_FEATURE: True}),
            )
        )
    others = [q for q in range(chans.rx_queues) if q not in qs]
    new = [others[i % len(others)] for i in range(len(rss.indir))]
    if any(q in qs for q in rss.indir):
        steps.append(
            Step(
                f"RSS indirection table over queues {format_cpu_list(others)} only "
                f"(keeps {format_cpu_list(qs)} for devmem)",
                rec.rss_record(netns, ifname, list(rss.indir), new),
                lambda nic: nic.rss_set(ifname, new),
            )
        )
    steps.append(
        Step(
            f"ntuple rule: {flow.describe()} -> queue {qs[0]}",
            rec.ntuple_record(netns, ifname, flow, qs[0]),
            lambda nic: nic.ntuple_insert(ifname, flow, qs[0]),
        )
    )
    return steps


# -- changing it ---------------------------------------------------------------------


def apply(
    p: Plan,
    nic: Nic,
    journal: Journal | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> list[Record]:
    """Run *p*'s steps, each journaled before its change; returns the records written.

    Refuses (:class:`UnsupportedError`, nothing changed) unless every
    requirement holds. If a step fails, or the process is interrupted, the
    steps already made are undone (newest first) before the error propagates.
    """
    if not p.ok:
        raise UnsupportedError(p.refusal())
    journal = journal if journal is not None else Journal()
    written: list[Record] = []
    try:
        for step in p.steps:
            if on_step is not None:
                on_step(step)
            with journal.intent([step.record]) as added:
                if step.record.kind == rec.NTUPLE and not added:
                    # an earlier setup's rule for this flow is journaled and still steers it
                    continue
                written += added
                result = step.run(nic)
            if step.record.kind == rec.NTUPLE and added:
                info = {**step.record.info, "location": result}
                journal.update([dataclasses.replace(step.record, info=info)])
                written[-1] = dataclasses.replace(written[-1], info=info)
    except BaseException:
        _undo(nic, journal, written)
        raise
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
