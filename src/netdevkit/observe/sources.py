"""One read of everything ``top`` and the exporter show, into a :class:`Snapshot`.

Sources, per network namespace:

- queue statistics of the netdev family (``qstats-get``), per device and per
  queue, for the drivers that report them;
- rtnetlink link counters (``IFLA_STATS64``, :mod:`.rtnl`) for every link:
  the fallback where a driver reports no qstats (veth);
- per-queue ethtool statistics (:mod:`.ethtool`) for links without qstats,
  when asked for (``qstats balance``, ``top``);
- NAPI instances and their settings, page pools (pages in flight, dmabuf);
- ``TcpExt: BusyPollRxPackets`` from the namespace's ``/proc/net/netstat``;

and machine-wide: ``/proc/net/softnet_stat`` (per CPU), the NAPI kthreads'
CPU time (``/proc/PID/stat``), the busy-poll sysctls and the epoll contexts
netdevkit has attached to (the journal's ``epoll`` records).

Kernel facts relied on:

- Sockets stay in the namespace they were made in (:mod:`netdevkit.netns`),
  and a socket keeps its namespace alive after ``ip netns del``: so each
  read first checks that the name still points at the namespace the
  sockets were made in (the inode of ``/run/netns/NAME``).
- ``/proc/thread-self/net/*`` shows the calling thread's namespace, and an
  open file of it keeps showing that namespace (re-read from offset 0).
- ``qstats-get`` filtered by ifindex fails with EOPNOTSUPP on drivers
  without qstats (veth, lo on 6.18): only unfiltered dumps are made.
- ``/proc/PID/stat``: after the ``(comm)`` field, utime and stime are the
  12th and 13th fields, in clock ticks (``SC_CLK_TCK``).
- ``/proc/net/softnet_stat``: one line per online CPU, hex columns:
  processed, dropped, time_squeeze, ..., and (4.19+) the CPU number in the
  13th column.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .. import procfs
from .._os import process_start_time
from ..errors import KernelError, NetdevkitError, NotFoundError, UnsupportedError

# Defined in errors.py; importable from here as before.
from ..errors import NamespaceGone as NamespaceGone  # noqa: PLC0414
from ..netdev.client import Napi, Netdev, PagePool, QStats
from ..netdev.family import QueueType
from ..netns import entered, path_of

# Defined in procfs.py; importable from here as before.
from ..procfs import SoftnetCpu as SoftnetCpu  # noqa: PLC0414
from ..procfs import parse_softnet as parse_softnet  # noqa: PLC0414
from .ethtool import EthtoolReader
from .rtnl import LinkDumper, LinkRow

_EMPTY: Mapping[str, int] = MappingProxyType({})

#: rtnetlink IFLA_STATS64 counters kept for each link
LINK_COUNTERS = (
    "rx_packets",
    "tx_packets",
    "rx_bytes",
    "tx_bytes",
    "rx_dropped",
    "tx_dropped",
    "rx_errors",
    "tx_errors",
)

#: the per-queue counters read from ethtool statistics (those rates use)
QUEUE_COUNTERS = frozenset(
    {
        "packets",
        "bytes",
        "drops",
        "alloc_fail",
        "hw_drops",
        "hw_drop_overruns",
        "hw_drop_ratelimits",
        "hw_drop_errors",
    }
)

#: machine-wide sysctls shown by ``top`` and exported (all in microseconds or counts)
SYSCTLS = (
    "net.core.busy_poll",
    "net.core.busy_read",
    "net.core.netdev_budget",
    "net.core.netdev_budget_usecs",
)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Run the body with Python's cyclic garbage collector paused.

    One read of a big namespace makes tens of thousands of short-lived,
    acyclic objects (rows, strings); reference counting frees them all. With
    the collector running, its generation passes over them took about as
    long as the kernel dumps themselves (see docs/observe.md), so the readers
    pause it for the read; it runs again afterwards as usual.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass(frozen=True, slots=True)
class Link:
    ifindex: int
    ifname: str
    #: rtnetlink link kind ("veth", ...), None for a plain device
    kind: str | None
    operstate: str
    #: LINK_COUNTERS from IFLA_STATS64
    counters: Mapping[str, int] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class QueueCounters:
    """Counters of one queue, with the names of qstats without the rx/tx prefix
    (``packets``, ``bytes``, ``alloc_fail``, ``hw_drops`` ...)."""

    ifindex: int
    queue_type: str
    queue_id: int
    #: "qstats" (netdev family) or "ethtool" (the driver's ethtool statistics)
    source: str
    counters: Mapping[str, int] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class EpollContext:
    """An epoll context ``netdevkit attach`` set busy-poll parameters on."""

    pid: int
    tid: int
    fd: int
    busy_poll_usecs: int
    busy_poll_budget: int
    prefer_busy_poll: bool
    napi_ids: tuple[int, ...]
    #: the attached process is still running (same pid and start time)
    alive: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything read from one namespace at one moment (``taken``: monotonic s)."""

    netns: str | None
    taken: float
    links: Mapping[int, Link]
    #: per-device qstats rows: ifindex -> counters with rx-/tx- names in snake case
    dev_qstats: Mapping[int, Mapping[str, int]]
    queues: tuple[QueueCounters, ...]
    napis: tuple[Napi, ...]
    #: kthread pid -> CPU seconds (user + system) of the threaded NAPIs
    kthread_cpu: Mapping[int, float]
    pools: tuple[PagePool, ...]
    #: TcpExt BusyPollRxPackets of the namespace (None: not readable)
    busy_poll_rx_packets: int | None
    softnet: tuple[SoftnetCpu, ...]
    sysctls: Mapping[str, int]
    #: one line per source that failed in this read (the others were read)
    errors: tuple[str, ...] = ()
    #: facts about this read a user should know ("this kernel lacks qstats")
    notes: tuple[str, ...] = ()


# -- machine-wide /proc readers (pure parsers + thin readers) -------------------


def parse_netstat(text: str, section: str, name: str) -> int | None:
    """Value of *name* in *section* of /proc/net/netstat (header line, value line)."""
    return procfs.parse_netstat(text).get(f"{section}:{name}")


def parse_proc_stat_cpu(text: str) -> float:
    """User + system CPU seconds from the text of /proc/PID/stat."""
    return procfs.parse_stat(text).cpu_seconds


def read_softnet() -> tuple[SoftnetCpu, ...]:
    return parse_softnet(procfs.read_text("/proc/net/softnet_stat"))


def read_sysctls() -> dict[str, int]:
    out = {}
    for name in SYSCTLS:
        try:
            out[name] = int(procfs.read_text("/proc/sys/" + name.replace(".", "/")).split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def read_kthread_cpu(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            out[pid] = parse_proc_stat_cpu(procfs.read_text(f"/proc/{pid}/stat"))
        except (OSError, ValueError, IndexError):
            continue  # the kthread ended (threaded mode turned off, device gone)
    return out


def _start_time(pid: int) -> int | None:
    try:
        return process_start_time(pid)
    except OSError:
        return None


def _netns_inode(pid: str) -> int | None:
    """The inode of /proc/PID/ns/net: the same number as the namespace's /run/netns file."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def read_attached_epolls(state_dir: str) -> list[EpollContext]:
    """The epoll contexts ``netdevkit attach`` changed and has not restored.

    Reads the ``epoll`` records of the journal under *state_dir* (see
    :mod:`netdevkit.attach.records`: ``info`` holds pid, start_time, tid, fd
    and the ``new`` parameters). Kept in this one function so that a change
    of where attach keeps its records changes only this reader. A journal
    that cannot be read gives no contexts (the journal's own commands report
    it); so does a record of another shape.
    """
    from ..journal import Journal

    try:
        records = Journal(state_dir).records("epoll")
    except (NetdevkitError, OSError):
        return []
    out = []
    for rec in records:
        try:
            info = rec.info
            new = info["new"]
            pid = int(info["pid"])
            out.append(
                EpollContext(
                    pid,
                    int(info["tid"]),
                    int(info["fd"]),
                    int(new["busy_poll_usecs"]),
                    int(new["busy_poll_budget"]),
                    bool(new["prefer_busy_poll"]),
                    tuple(int(i) for i in info.get("napi_ids", ())),
                    _start_time(pid) == int(info["start_time"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return out


# -- the per-namespace reader ---------------------------------------------------


def _qstats_counters(s: QStats) -> dict[str, int]:
    return {k.replace("-", "_"): v for k, v in s.counters.items()}


def _queue_from_qstats(s: QStats) -> QueueCounters | None:
    if s.queue_id is None or s.queue_type is None:
        return None
    qtype = "rx" if s.queue_type == QueueType.RX else "tx" if s.queue_type == QueueType.TX else "?"
    prefix = qtype + "-"
    counters = {}
    for name, value in s.counters.items():  # rx-alloc-fail on an rx queue -> alloc_fail
        short = name[len(prefix) :] if name.startswith(prefix) else name
        counters[short.replace("-", "_")] = value
    return QueueCounters(s.ifindex, qtype, s.queue_id, "qstats", counters)


def _link(row: LinkRow) -> Link:
    counters = {k: row.counters[k] for k in LINK_COUNTERS if k in row.counters}
    return Link(row.ifindex, row.ifname, row.kind, row.operstate, counters)


class NamespaceReader:
    """Reads :class:`Snapshot` objects of one namespace (``None``: the current one).

    ``ethtool_queues`` adds per-queue ethtool counters for links without
    qstats; ``ifindex`` keeps one interface's queues, NAPIs and pools (links
    are always all read: they are few). Sockets are opened by :meth:`open`
    (or the first :meth:`read`) and reopened when the namespace was replaced.
    """

    def __init__(
        self,
        netns: str | None = None,
        *,
        ethtool_queues: bool = False,
        ifindex: int | None = None,
        state_dir: str | None = None,
    ) -> None:
        self.netns = netns
        self.ethtool_queues = ethtool_queues
        self.ifindex = ifindex
        self.state_dir = state_dir
        self._nd: Netdev | None = None
        self._rtnl: LinkDumper | None = None
        self._netstat: int | None = None
        self._eth: EthtoolReader | None = None
        self._inode: int | None = None

    # -- lifecycle ---------------------------------------------------------

    def _ns_inode(self) -> int | None:
        if self.netns is None:
            return None
        try:
            return os.stat(path_of(self.netns)).st_ino
        except FileNotFoundError:
            if self._inode is None:  # never opened: the name was wrong from the start
                raise NotFoundError(
                    f"network namespace {self.netns!r} does not exist (see `ip netns list`)"
                ) from None
            raise NamespaceGone(f"network namespace {self.netns!r} is gone") from None

    def open(self) -> None:
        self.close()
        self._inode = self._ns_inode()
        self._nd = Netdev.open(self.netns)
        try:
            self._rtnl = LinkDumper(self.netns)
            with entered(self.netns):
                # bound to the namespace at open: no setns on every read
                self._netstat = os.open("/proc/thread-self/net/netstat", os.O_RDONLY | os.O_CLOEXEC)
            if self.ethtool_queues:
                self._eth = EthtoolReader(self.netns, QUEUE_COUNTERS)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for obj in (self._nd, self._rtnl, self._eth):
            if obj is not None:
                obj.close()
        self._nd = self._rtnl = self._eth = None
        if self._netstat is not None:
            os.close(self._netstat)
            self._netstat = None

    def __enter__(self) -> NamespaceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------

    def read(self) -> Snapshot:
        """Read every source; a source that fails adds a line to ``errors``.

        Raises :class:`NamespaceGone` when the namespace no longer exists, after closing
        the sockets (they would keep the deleted namespace alive); a later read reopens
        a namespace of that name once there is one again.
        """
        try:
            inode = self._ns_inode()
        except NamespaceGone:
            self.close()
            raise
        if self._nd is None or inode != self._inode:
            self.open()
        nd = self._nd
        assert nd is not None
        errors: list[str] = []
        notes: list[str] = []
        taken = time.monotonic()
        links = self._links(errors)
        dev_qstats, queues = self._qstats(nd, errors, notes)
        if self.ethtool_queues:
            queues += self._ethtool(links, dev_qstats, errors)
        if self.ifindex is not None and links and self.ifindex not in links:
            napis, pools = [], []  # the interface asked for is gone: nothing to filter for
        else:
            napis = self._guard(errors, "napi-get", lambda: nd.napi_dump(self.ifindex), [])
            pools = self._guard(
                errors, "page-pool-get", lambda: nd.page_pool_dump(self.ifindex), []
            )
        pids = [n.pid for n in napis if n.pid]
        return Snapshot(
            self.netns,
            taken,
            links,
            dev_qstats,
            tuple(queues),
            tuple(napis),
            read_kthread_cpu(pids),
            tuple(pools),
            self._busy_poll_rx(errors),
            self._guard(errors, "softnet_stat", read_softnet, ()),
            read_sysctls(),
            tuple(errors),
            tuple(notes),
        )

    def epolls(self) -> list[EpollContext]:
        """The attached epoll contexts of processes in this reader's namespace (a process
        whose namespace cannot be read, e.g. one that exited, is left out)."""
        from ..journal import state_dir

        here = self._inode if self.netns is not None else _netns_inode("self")
        every = read_attached_epolls(self.state_dir or state_dir())
        return [e for e in every if here is not None and _netns_inode(str(e.pid)) == here]

    @staticmethod
    def _guard(errors: list[str], what: str, fn: Any, default: Any) -> Any:
        try:
            return fn()
        except (NetdevkitError, OSError) as err:
            errors.append(f"{what}: {err}")
            return default

    def _links(self, errors: list[str]) -> dict[int, Link]:
        assert self._rtnl is not None
        try:
            return {link.ifindex: link for link in map(_link, self._rtnl.dump())}
        except (NetdevkitError, OSError) as err:
            errors.append(f"rtnetlink link dump: {err}")
            return {}

    def _qstats(
        self, nd: Netdev, errors: list[str], notes: list[str]
    ) -> tuple[dict[int, Mapping[str, int]], list[QueueCounters]]:
        if not nd.supports("qstats-get"):
            notes.append(
                "this kernel has no queue statistics (qstats-get, Linux 6.10+): link counters only"
            )
            return {}, []
        try:
            devs = nd.qstats_dump()
            rows = nd.qstats_dump(per_queue=True)
        except (KernelError, UnsupportedError) as err:
            errors.append(f"qstats-get: {err}")
            return {}, []
        keep = self.ifindex
        dev_qstats: dict[int, Mapping[str, int]] = {
            s.ifindex: _qstats_counters(s) for s in devs if keep is None or s.ifindex == keep
        }
        queues = [
            q
            for s in rows
            if (keep is None or s.ifindex == keep) and (q := _queue_from_qstats(s)) is not None
        ]
        return dev_qstats, queues

    def _ethtool(
        self, links: Mapping[int, Link], dev_qstats: Mapping[int, object], errors: list[str]
    ) -> list[QueueCounters]:
        eth = self._eth
        assert eth is not None
        out: list[QueueCounters] = []
        for link in links.values():
            if link.ifindex in dev_qstats or link.ifname == "lo":
                continue
            if self.ifindex is not None and link.ifindex != self.ifindex:
                continue
            try:
                rows = eth.queues(link.ifname, link.kind)
            except UnsupportedError:
                continue
            except (NotFoundError, OSError):
                eth.forget(link.ifname)  # vanished or renamed in between
                continue
            out += [
                QueueCounters(link.ifindex, r.queue_type, r.queue_id, "ethtool", r.counters)
                for r in rows
                if "packets" in r.counters or "bytes" in r.counters  # veth tx: XDP only
            ]
        return out

    def _busy_poll_rx(self, errors: list[str]) -> int | None:
        if self._netstat is None:
            return None
        try:
            os.lseek(self._netstat, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(self._netstat, 65536):
                chunks.append(chunk)
        except OSError as err:
            errors.append(f"/proc/net/netstat: {err}")
            return None
        return parse_netstat(
            b"".join(chunks).decode("ascii", "replace"), "TcpExt", "BusyPollRxPackets"
        )
