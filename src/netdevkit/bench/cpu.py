"""CPU accounting for a bench run window, from ``/proc``.

Two numbers per sample, both in *cores* (CPU seconds per wall-clock second):

- the server's user+system time: the scheduler's own runtime of every
  thread (first field of ``/proc/PID/task/TID/schedstat``, nanoseconds) of
  the server process and of every live descendant (walked through
  ``/proc/*/stat``'s ppid, so a server that forks workers is counted whole).
  Not ``utime + stime`` of ``/proc/PID/stat``: those are sampled at the tick,
  and a server that runs in short bursts between ticks is missed (an example
  is in ``docs/bench.md``, "Reading the numbers"). Without
  ``schedstat`` (CONFIG_SCHED_INFO off) the ticks are used instead.
- softirq time: the ``softirq`` column (7th value) of each ``cpuN`` line of
  ``/proc/stat``. On veth the "interrupt" is the sender's napi_schedule, so
  NAPI polls that are not busy polled run here, on whichever CPU raised them:
  the sum over all CPUs is reported, and the per-CPU split is kept. This one
  *is* tick-sampled (without CONFIG_IRQ_TIME_ACCOUNTING), and softirqs that
  run on a task's ``local_bh_enable`` are charged to that task, so it is a
  coarse lower bound; the server's share of it is in its own runtime.

Counters of the receive path come from ``/proc/net/softnet_stat`` (per CPU,
hex: processed, dropped, time_squeeze, ...) and the NET_RX/NET_TX rows of
``/proc/softirqs``. All of them are global to the machine, not to one
namespace: the bench runs nothing else, so the deltas are the bench's own
traffic plus background noise.

Two more per-server counters explain *how* the server spent its CPU:

- ``server_sleeps``: voluntary context switches of the server's threads
  (``voluntary_ctxt_switches`` in ``/proc/PID/task/TID/status``): how often
  it blocked, e.g. in ``epoll_wait`` after a busy poll found nothing.
- ``server_busypoll_rx`` and ``server_ip_in``: ``TcpExt: BusyPollRxPackets``
  and ``Ip: InReceives`` of the server's namespace (``/proc/PID/net/netstat``
  and ``snmp`` are per network namespace): the packets delivered by busy
  polling (LINUX_MIB_BUSYPOLLRXPACKETS, counted by ``napi_busy_loop``) and
  all IPv4 packets received there.

Parsers take text and do no I/O; the ``read_*`` functions do the reading.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..errors import NotFoundError
from ..procfs import CLK_TCK, descendants, parse_netstat, parse_softnet, parse_stat, read_text

__all__ = [
    "CpuSnapshot",
    "CpuUsage",
    "Watch",
    "descendants",
    "ksoftirqd_pids",
    "parse_cpu_times",
    "parse_proc_net_pairs",
    "parse_proc_stat",
    "parse_softirqs",
    "parse_softnet_stat",
    "parse_stat_line",
    "process_cpu_seconds",
    "server_counters",
    "snapshot",
]


def parse_stat_line(text: str) -> tuple[int, int, int]:
    """``(ppid, utime, stime)`` in clock ticks from one ``/proc/PID/stat`` line."""
    st = parse_stat(text)
    return st.ppid, st.utime, st.stime


def parse_proc_stat(text: str) -> dict[int, int]:
    """Softirq clock ticks per CPU number from ``/proc/stat``."""
    out: dict[int, int] = {}
    for line in text.splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            parts = line.split()
            out[int(parts[0][3:])] = int(parts[7])
    return out


def parse_softirqs(text: str, rows: Iterable[str] = ("NET_RX", "NET_TX")) -> dict[str, int]:
    """Total count (all CPUs) of the named rows of ``/proc/softirqs``."""
    wanted = set(rows)
    out: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        name, _, values = line.partition(":")
        name = name.strip()
        if name in wanted:
            out[name] = sum(int(v) for v in values.split())
    return out


def parse_softnet_stat(text: str) -> dict[str, int]:
    """Sums over CPUs of ``processed``, ``dropped`` and ``time_squeeze``
    (columns 1-3 of ``/proc/net/softnet_stat``, hexadecimal)."""
    rows = parse_softnet(text)
    return {
        "processed": sum(r.processed for r in rows),
        "dropped": sum(r.dropped for r in rows),
        "time_squeeze": sum(r.time_squeeze for r in rows),
    }


def parse_cpu_times(text: str) -> dict[int, tuple[int, int]]:
    """(busy, steal) clock ticks per CPU number from ``/proc/stat``: busy is user + nice +
    system + irq + softirq (columns 1-3, 6-7), steal column 8."""
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            v = [int(x) for x in line.split()[1:9]]
            out[int(line.split()[0][3:])] = (v[0] + v[1] + v[2] + v[5] + v[6], v[7])
    return out


def ksoftirqd_pids() -> dict[int, int]:
    """{cpu: pid} of the ``ksoftirqd/N`` kthreads (the softirq work a CPU defers runs
    there: the bench's own network processing, not another task)."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            comm = read_text(f"/proc/{name}/comm").strip()
        except OSError:
            continue
        if comm.startswith("ksoftirqd/") and comm[10:].isdigit():
            out[int(comm[10:])] = int(name)
    return out


@dataclass(frozen=True, slots=True)
class Watch:
    """Processes a snapshot reads besides the server: the client, the NAPI kthreads (their
    CPU is the server's: threaded NAPI polls for it) and ``ksoftirqd`` per CPU."""

    client: int | None = None
    kthreads: tuple[int, ...] = ()
    ksoftirqd: Mapping[int, int] = field(default_factory=dict)


def _schedstat(pid: int) -> tuple[float, float]:
    """(runtime, run-queue delay) in seconds of every live thread of *pid*."""
    run = delay = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = read_text(f"/proc/{pid}/task/{tid}/schedstat").split()
        except FileNotFoundError:
            continue
        run += int(fields[0])
        delay += int(fields[1])
    return run / 1e9, delay / 1e9


def _runtime_or_none(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return _schedstat(pid)[0]
    except (OSError, ValueError, IndexError):
        return None


#: ``/proc/net/netstat`` or ``/proc/net/snmp`` as {"TcpExt:BusyPollRxPackets": n, ...}
parse_proc_net_pairs = parse_netstat


def _runtime_seconds(pid: int) -> float:
    """CPU seconds of every live thread of *pid*: schedstat, else stat ticks."""
    total_ns = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        for tid in tids:
            try:
                total_ns += int(read_text(f"/proc/{pid}/task/{tid}/schedstat").split()[0])
            except FileNotFoundError:
                continue  # the thread exited meanwhile
        return total_ns / 1e9
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            raise
    return parse_stat(read_text(f"/proc/{pid}/stat")).cpu_seconds


def _voluntary_switches(pid: int) -> int:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            for line in read_text(f"/proc/{pid}/task/{tid}/status").splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


def server_counters(pid: int) -> dict[str, int]:
    """Sleeps (voluntary switches, process and live descendants) and the busy-poll /
    IPv4 receive counters of *pid*'s network namespace; {} if *pid* is gone."""
    try:
        sleeps = _voluntary_switches(pid)
        for child in descendants(pid):
            with contextlib.suppress(OSError, ValueError):
                sleeps += _voluntary_switches(child)
        netstat = parse_netstat(read_text(f"/proc/{pid}/net/netstat"))
        snmp = parse_netstat(read_text(f"/proc/{pid}/net/snmp"))
    except (FileNotFoundError, ProcessLookupError):
        return {}
    out = {"server_sleeps": sleeps}
    if "TcpExt:BusyPollRxPackets" in netstat:
        out["server_busypoll_rx"] = netstat["TcpExt:BusyPollRxPackets"]
    if "Ip:InReceives" in snmp:
        out["server_ip_in"] = snmp["Ip:InReceives"]
    return out


def process_cpu_seconds(pid: int, *, with_descendants: bool = True) -> float:
    """CPU seconds (user+system) of *pid*'s threads and, by default, of its live
    descendants. Raises :class:`NotFoundError` if *pid* is gone."""
    try:
        total = _runtime_seconds(pid)
    except FileNotFoundError:
        raise NotFoundError(f"process {pid} does not exist (exited?)") from None
    if with_descendants:
        for child in descendants(pid):
            try:
                total += _runtime_seconds(child)
            except (OSError, ValueError, IndexError):
                continue
    return total


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """Counters at one instant; subtract two with :meth:`usage_since`."""

    wall: float
    process: float | None
    softirq_ticks: Mapping[int, int]
    counters: Mapping[str, int] = field(default_factory=dict)
    #: per CPU: (busy, steal) ticks (:func:`parse_cpu_times`)
    cpu_ticks: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    #: seconds the server's threads waited runnable (schedstat field 2), None: unknown
    run_delay: float | None = None
    #: CPU seconds of the client, of the NAPI kthreads, of ksoftirqd per CPU
    client: float | None = None
    kthreads: float = 0.0
    ksoftirqd: Mapping[int, float] = field(default_factory=dict)

    def usage_since(self, before: CpuSnapshot) -> CpuUsage:
        """What happened between *before* and this snapshot."""
        wall = self.wall - before.wall
        if wall <= 0:
            raise ValueError("snapshots out of order")

        def rate(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else (a - b) / wall

        per_cpu = {
            cpu: (ticks - before.softirq_ticks.get(cpu, ticks)) / CLK_TCK / wall
            for cpu, ticks in self.softirq_ticks.items()
        }
        deltas = {k: v - before.counters.get(k, v) for k, v in self.counters.items()}
        busy, steal = {}, {}
        for cpu, (b, st) in self.cpu_ticks.items():
            b0, st0 = before.cpu_ticks.get(cpu, (b, st))
            busy[cpu] = (b - b0) / CLK_TCK / wall
            steal[cpu] = (st - st0) / CLK_TCK / wall
        soft_k = {
            cpu: (t - before.ksoftirqd.get(cpu, t)) / wall for cpu, t in self.ksoftirqd.items()
        }
        return CpuUsage(
            wall,
            rate(self.process, before.process),
            sum(per_cpu.values()),
            per_cpu,
            deltas,
            busy_per_cpu=busy,
            steal_per_cpu=steal,
            run_delay_share=rate(self.run_delay, before.run_delay),
            client_cores=rate(self.client, before.client),
            kthread_cores=(self.kthreads - before.kthreads) / wall,
            ksoftirqd_cores=soft_k,
        )


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """CPU use over a window, in cores; ``counters`` are deltas over the window."""

    wall: float
    process_cores: float | None
    softirq_cores: float
    softirq_per_cpu: Mapping[int, float]
    counters: Mapping[str, int]
    #: per CPU: cores busy (ticks) and stolen
    busy_per_cpu: Mapping[int, float] = field(default_factory=dict)
    steal_per_cpu: Mapping[int, float] = field(default_factory=dict)
    run_delay_share: float | None = None
    client_cores: float | None = None
    kthread_cores: float = 0.0
    ksoftirqd_cores: Mapping[int, float] = field(default_factory=dict)


def snapshot(pid: int | None = None, watch: Watch | None = None) -> CpuSnapshot:
    """Read every counter now; *pid* is the server (``None``: no process), *watch* the
    other processes whose CPU the validity rules need."""
    proc = None
    delay = None
    if pid is not None:
        try:
            proc = process_cpu_seconds(pid)
            delay = _schedstat(pid)[1]
            for child in descendants(pid):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    delay += _schedstat(child)[1]
        except (NotFoundError, FileNotFoundError, IndexError, ValueError):
            proc = delay = None
    w = watch or Watch()
    kthreads = sum(x for x in (_runtime_or_none(k) for k in w.kthreads) if x is not None)
    soft_k = {c: t for c, k in w.ksoftirqd.items() if (t := _runtime_or_none(k)) is not None}
    softnet = parse_softnet_stat(read_text("/proc/net/softnet_stat"))
    softirqs = parse_softirqs(read_text("/proc/softirqs"))
    counters = {f"softnet_{k}": v for k, v in softnet.items()}
    counters.update({f"softirqs_{k.lower()}": v for k, v in softirqs.items()})
    if pid is not None:
        counters.update(server_counters(pid))
    stat = read_text("/proc/stat")
    return CpuSnapshot(
        time.monotonic(),
        proc,
        parse_proc_stat(stat),
        counters,
        cpu_ticks=parse_cpu_times(stat),
        run_delay=delay,
        client=_runtime_or_none(w.client),
        kthreads=kthreads,
        ksoftirqd=soft_k,
    )
