"""Was a sample undisturbed? The rules, as pure functions of what the sample recorded.

A bench sample is a claim about the server under one mode and load. It is only that when
nothing else took the server's CPU, the load generator kept its own schedule, the
hypervisor did not take the vCPUs away, and a busy-polling mode really got the core it
spins on. Each sample carries the evidence (:class:`Evidence`, measured over the client's
window by :func:`netdevkit.bench.cpu.snapshot`), and :func:`judge` turns it into the
reasons it was *disturbed* (empty: clean). A disturbed sample is kept in results.json and
shown, with ``disturbed: <why>`` in the notes column, but no claim and no recommendation
uses it (:meth:`netdevkit.bench.results.Results.select`).

The rules and why each limit is where it is (2-vCPU VM; ``docs/bench.md``, "Is a sample
clean?"):

- **run-queue delay**: the server's threads were runnable but waiting for a CPU for more
  than :data:`RUN_DELAY_SHARE` of the window (``/proc/PID/task/*/schedstat``, field 2) beyond
  what its own helpers on its CPUs explain (threaded NAPI's kthread pinned beside it, and
  ``ksoftirqd``: waiting for those is the mode at work). A
  wake-up onto an idle CPU is enqueued there after the CPU woke, so the halt exit of an
  idle vCPU is not in it: a quiet pinned server waits almost never.
- **other tasks on the server's CPUs** (``/proc/stat`` busy ticks of those CPUs, minus
  the runtime of the server, its NAPI kthread and ``ksoftirqd`` there) above
  :data:`OTHERS_SERVER_CORES`, and **on the client's CPUs** above
  :data:`OTHERS_CLIENT_CORES`. Ticks are sampled (10 ms each): over a 0.5 s window one
  CPU's count is good to about +-0.07 cores, hence limits well above that.
- **steal**: the hypervisor ran something else on these vCPUs for more than
  :data:`STEAL_SHARE` of the window.
- **the load generator did not get its core**: the open-loop generator spins by design
  (``netdevkit.bench.loadgen.openloop``), so under :data:`GENERATOR_MIN_CORES` of a core
  means something else ran on its CPU and its schedule slipped.
- **a busy-polling mode did not get its core**: fullbusy's server (and busy-poll-thread's
  kthread) spin while requests come; under :data:`BUSY_POLL_MIN_CORES` its poll loop was
  preempted, and then a request waits for the 5 ms gro-flush timer (docs/bench.md, "Why
  fullbusy's server is not always at one core here").

Client saturation (the generator busy most of its time, or sending late) is not a
disturbance: it makes the sample ``client_limited`` (the generator's own rules), which is
excluded the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cpu import CpuUsage
    from .results import NoiseFloor, Sample

__all__ = [
    "BUSY_POLL_MIN_CORES",
    "GENERATOR_MIN_CORES",
    "OTHERS_CLIENT_CORES",
    "OTHERS_SERVER_CORES",
    "RUN_DELAY_SHARE",
    "SPINNING_MODES",
    "STEAL_SHARE",
    "Evidence",
    "evidence",
    "judge",
    "noise_line",
    "run_warning",
    "summary",
]

RUN_DELAY_SHARE = 0.05
OTHERS_SERVER_CORES = 0.15
OTHERS_CLIENT_CORES = 0.2
STEAL_SHARE = 0.03
GENERATOR_MIN_CORES = 0.85
BUSY_POLL_MIN_CORES = 0.8
#: the noise floor's target: light open-loop p99 within this many times ping-pong's
NOISE_P99_RATIO = 3.0
#: modes whose server (or NAPI kthread) spins while requests come
SPINNING_MODES = ("fullbusy", "busy-poll-thread")


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a sample measured about its own conditions, over the client's window.

    Cores are CPU seconds per second of the window; ``None`` where the machine did not say
    (no schedstat, a generator that does not spin).
    """

    #: share of the window the server's threads were runnable but not running
    server_run_delay_share: float | None = None
    #: cores other tasks used on the server's CPUs (all CPUs when nothing was pinned)
    others_server_cores: float | None = None
    #: cores other tasks used on the client's CPUs (None when nothing was pinned)
    others_client_cores: float | None = None
    #: share of the window stolen by the hypervisor (mean over the CPUs involved)
    steal_share: float = 0.0
    #: the spinning generator's own CPU (None: the client does not spin)
    generator_cores: float | None = None
    #: the server's CPU, its NAPI kthread's included
    server_cores: float = 0.0
    #: cores the server's own helpers used on its CPUs (its NAPI kthread, ksoftirqd): the
    #: server waiting for them is the mode at work, not a disturbance
    own_helpers_cores: float = 0.0

    @classmethod
    def from_mapping(cls, m: Mapping[str, float]) -> Evidence:
        """From a sample's ``checks`` mapping (keys are the field names)."""
        names = cls.__dataclass_fields__
        return cls(**{k: float(v) for k, v in m.items() if k in names})

    def to_mapping(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            if v is not None:
                out[name] = float(v)
        return out


def evidence(
    usage: CpuUsage,
    *,
    server_cpus: Set[int] | None,
    client_cpus: Set[int] | None,
    napi_cpus: Set[int] | None = None,
    generator_spins: bool = False,
) -> Evidence:
    """The :class:`Evidence` of one window's :class:`~netdevkit.bench.cpu.CpuUsage`, given
    where server, client and NAPI kthreads were pinned (None: not pinned)."""
    server = (usage.process_cores or 0.0) + usage.kthread_cores
    client = usage.client_cores or 0.0
    all_cpus = set(usage.busy_per_cpu)

    def busy(cpus: Set[int]) -> float:
        return sum(usage.busy_per_cpu.get(c, 0.0) - usage.ksoftirqd_cores.get(c, 0.0) for c in cpus)

    apart = (
        server_cpus is not None
        and client_cpus is not None
        and not (set(server_cpus) & set(client_cpus))
    )
    others_client: float | None = None
    if apart:
        assert server_cpus is not None and client_cpus is not None
        srv = set(server_cpus) | (set(napi_cpus) if napi_cpus is not None else set())
        others_server = busy(srv) - server
        others_client = busy(client_cpus) - client
        involved = srv | set(client_cpus)
        shares = napi_cpus is None or bool(set(napi_cpus) & set(server_cpus))
        helpers = (usage.kthread_cores if shares else 0.0) + sum(
            usage.ksoftirqd_cores.get(c, 0.0) for c in server_cpus
        )
    else:
        others_server = busy(all_cpus) - server - client
        involved = all_cpus
        helpers = usage.kthread_cores + sum(usage.ksoftirqd_cores.values())
    steal = [usage.steal_per_cpu.get(c, 0.0) for c in involved]
    return Evidence(
        server_run_delay_share=usage.run_delay_share,
        others_server_cores=max(0.0, others_server),
        others_client_cores=None if others_client is None else max(0.0, others_client),
        steal_share=sum(steal) / len(steal) if steal else 0.0,
        generator_cores=client if generator_spins and usage.client_cores is not None else None,
        server_cores=server,
        own_helpers_cores=helpers,
    )


def judge(ev: Evidence, mode: str) -> tuple[str, ...]:
    """Why a sample of *mode* with evidence *ev* is disturbed; empty when it is clean."""
    out = []
    delay = ev.server_run_delay_share
    if delay is not None and delay > RUN_DELAY_SHARE + ev.own_helpers_cores:
        out.append(f"server waited for a CPU {delay:.0%} of the time")
    if ev.others_server_cores is not None and ev.others_server_cores > OTHERS_SERVER_CORES:
        out.append(f"other tasks used {ev.others_server_cores:.2f} cores of the server's CPUs")
    if ev.others_client_cores is not None and ev.others_client_cores > OTHERS_CLIENT_CORES:
        out.append(f"other tasks used {ev.others_client_cores:.2f} cores of the client's CPUs")
    if ev.steal_share > STEAL_SHARE:
        out.append(f"steal time {ev.steal_share:.0%}")
    if ev.generator_cores is not None and ev.generator_cores < GENERATOR_MIN_CORES:
        out.append(f"the load generator got {ev.generator_cores:.2f} of its core")
    if mode in SPINNING_MODES and ev.server_cores < BUSY_POLL_MIN_CORES:
        out.append(f"busy-polling {mode} got {ev.server_cores:.2f} of its core")
    return tuple(out)


def run_warning(samples: Sequence[Sample]) -> str:
    """The first line of a run some of whose samples were disturbed ('' when none was)."""
    return summary(sum(1 for s in samples if s.disturbed), len(samples))


def noise_line(floor: NoiseFloor | None) -> str:
    """One sentence on the testbed's noise floor ('' when the run did not measure it)."""
    if floor is None:
        return ""
    ol, pp = floor.open_loop, floor.ping_pong
    verdict = "within" if floor.p99_ratio <= NOISE_P99_RATIO else "NOT within"
    text = (
        f"noise floor (Debian's C sockperf server, base mode): open loop at {floor.rate}/s "
        f"p50 {ol.p50:.1f} / p99 {ol.p99:.1f} us against ping-pong p50 {pp.p50:.1f} / p99 "
        f"{pp.p99:.1f} us ({floor.p99_ratio:.1f}x at p99, {verdict} {NOISE_P99_RATIO:g}x): "
        "differences between modes smaller than this gap are the testbed's"
    )
    if floor.disturbed:
        text += " -- disturbed: " + "; ".join(floor.disturbed)
    return text


def summary(disturbed: int, total: int) -> str:
    """The first line of a run with disturbed samples ('' when there are none)."""
    if not disturbed:
        return ""
    return (
        f"WARNING: {disturbed} of {total} samples were disturbed (see 'disturbed:' in the "
        "notes); no claim or recommendation uses them. Re-run on a quiet machine."
    )
