"""Run the bench: modes x workloads x servers x loads x repeats, in one testbed.

For each mode (in order): the mode's NAPI half is applied to the server end's
NAPIs with :class:`netdevkit.tuning.tuned` (undone when the mode ends, on
error and on SIGINT/SIGTERM); then each workload's server(s) start in the
server namespace, get the mode's epoll half (their own flag, or
:func:`netdevkit.attach.attach` for unmodified servers), and are driven by
their client at each load; CPU is sampled over the client's window.

What is left behind: nothing. The testbed (two namespaces, one veth pair, a
private temporary directory) is built once and removed on every exit path (it
also stops every server it started); the NAPI settings live on the testbed's
own veth and are restored before it goes; the host's interfaces are never
touched. After a SIGKILL the servers die with the bench (``PR_SET_PDEATHSIG``)
and ``netdevkit testbed down --all`` removes the namespaces, the temporary
directory and the record.

Validation happens before anything changes: unknown modes/workloads
(:class:`RequestError` listing the known ones), missing peer programs (an
error naming the Debian package), not root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import platform
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .. import kver
from ..errors import NetdevkitError, RequestError
from ..netdev.family import THREADED_BUSY_POLL_SINCE
from ..procs import stop
from ..testbed import Testbed, TestbedConfig
from ..testbed.core import CpuPlacement, affinity_of, format_cpu_list
from ..tuning.presets import PRESETS, Preset
from .results import PING_PONG, Results, RunConfig, Sample, Skip
from .workloads import WORKLOADS, ServerSpec, missing_peers, run_client, server_specs

__all__ = [
    "MODES",
    "QUICK",
    "WORKLOADS",
    "BenchOptions",
    "Step",
    "count_steps",
    "run_bench",
    "validate",
]

#: the modes this kernel can run: busy-poll-thread needs threaded busy-poll (6.19+)
MODES = tuple(
    m for m in PRESETS if m != "busy-poll-thread" or kver.at_least(THREADED_BUSY_POLL_SINCE)
)
SERVER_PORT = 11111


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to run. :func:`validate` checks it; nothing is checked on construction
    so that the CLI can report every problem with one message."""

    modes: tuple[str, ...] = MODES
    workloads: tuple[str, ...] = ("echo", "sockperf")
    loads: tuple[int, ...] = (PING_PONG,)
    duration: float = 3.0
    repeat: int = 1
    quick: bool = False
    testbed_name: str = ""
    #: pin server programs, client programs and NAPI kthreads; None: no pinning
    cpus: CpuPlacement | None = None
    #: per-workload loads overriding :attr:`loads`, e.g. (("echo", (0,)),)
    workload_loads: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def loads_of(self, workload: str) -> tuple[int, ...]:
        """The loads *workload* is driven at (before the workload's own limits)."""
        return dict(self.workload_loads).get(workload, self.loads)


#: ``--quick``: every mode, echo and sockperf, ping-pong, 24 samples. A 0.5 s
#: sample is ``sockperf -t 1``: about 0.55 s measured (thousands of round
#: trips), but each run also costs sockperf's fixed ~2 s start-up.
QUICK = BenchOptions(
    modes=MODES, workloads=("echo", "sockperf"), loads=(PING_PONG,), duration=0.5, quick=True
)


@dataclass(frozen=True, slots=True)
class Step:
    """Progress report: one sample finished (or a server/mode was skipped)."""

    done: int
    total: int
    label: str
    sample: Sample | None = None


def _parse_list(value: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in value.split(",") if x.strip())
    unknown = [x for x in items if x not in known]
    if unknown or not items:
        bad = ", ".join(unknown) or "(empty)"
        raise RequestError(f"unknown {what} {bad} (known: {', '.join(known)})")
    return items


def parse_modes(value: str) -> tuple[str, ...]:
    """``base,defer`` -> ('base', 'defer'); unknown names raise RequestError listing the known."""
    if "busy-poll-thread" in value.split(",") and "busy-poll-thread" not in MODES:
        raise RequestError(
            f"mode busy-poll-thread needs threaded busy-poll, Linux {THREADED_BUSY_POLL_SINCE} "
            f"or newer; this is {kver.release()}"
        )
    return _parse_list(value, MODES, "mode")


def parse_workloads(value: str) -> tuple[str, ...]:
    return _parse_list(value, WORKLOADS, "workload")


def parse_workload_loads(value: str) -> tuple[str, tuple[int, ...]]:
    """``sockperf=0,5k,20k`` -> ('sockperf', (0, 5000, 20000))."""
    name, eq, loads = value.partition("=")
    if not eq:
        raise RequestError(f"{value!r}: WORKLOAD=LOADS, e.g. sockperf=0,5k,20k")
    return _parse_list(name, WORKLOADS, "workload")[0], parse_loads(loads)


def parse_loads(value: str) -> tuple[int, ...]:
    """``0,5000,20k`` -> (0, 5000, 20000); 0 or ``pp`` is ping-pong."""
    out = []
    for item in (x.strip().lower() for x in value.split(",") if x.strip()):
        mult = 1000 if item.endswith("k") else 1
        text = item[:-1] if mult > 1 else item
        if item in ("pp", "ping-pong"):
            out.append(PING_PONG)
            continue
        try:
            rate = int(float(text) * mult)
        except ValueError:
            raise RequestError(
                f"load {item!r}: a rate in requests/s (e.g. 5000 or 20k), or 0/pp for ping-pong"
            ) from None
        if rate < 0 or rate > 10_000_000:
            raise RequestError(f"load {item!r}: must be 0 (ping-pong) .. 10000000 requests/s")
        out.append(rate)
    if not out:
        raise RequestError("no load given")
    return tuple(sorted(set(out)))


def validate(opts: BenchOptions) -> None:
    """Raise before anything changes: bad options, missing programs, not root."""
    _parse_list(",".join(opts.modes), MODES, "mode")
    _parse_list(",".join(opts.workloads), WORKLOADS, "workload")
    if not opts.duration > 0 or opts.duration > 3600:
        raise RequestError(f"duration {opts.duration}: must be > 0 and <= 3600 seconds")
    if opts.repeat < 1 or opts.repeat > 100:
        raise RequestError(f"repeat {opts.repeat}: must be 1..100")
    if not opts.loads or any(x < 0 for x in opts.loads):
        raise RequestError("loads must be >= 0 (0 is ping-pong)")
    for workload, loads in opts.workload_loads:
        _parse_list(workload, WORKLOADS, "workload")
        if not loads or any(x < 0 for x in loads):
            raise RequestError(f"{workload} loads must be >= 0 (0 is ping-pong)")
    if opts.cpus is not None:
        opts.cpus.check_machine()
    missing = missing_peers(opts.workloads)
    if missing:
        raise NetdevkitError("missing peer programs: " + "; ".join(missing))
    if os.geteuid() != 0:
        raise NetdevkitError(
            "netdevkit bench builds a testbed (network namespaces, a veth pair) and changes "
            "NAPI settings: run it as root"
        )


def _loads_for(workload: str, loads: tuple[int, ...]) -> tuple[int, ...]:
    if workload == "memcached":
        return tuple(x for x in loads if x > 0) or (2000,)
    if workload == "redis":
        return (PING_PONG,)
    return loads


def count_steps(opts: BenchOptions) -> int:
    """Samples the run will take (for a progress bar)."""
    per_mode = 0
    for w in opts.workloads:
        servers = 3 if w == "echo" else 1
        per_mode += servers * len(_loads_for(w, opts.loads_of(w))) * opts.repeat
    return per_mode * len(opts.modes)


# --- one server ----------------------------------------------------------------


def _wait_listening(tb: Testbed, port: int, proc_alive: Callable[[], bool], timeout: float) -> None:
    """Connect from the client namespace until the server accepts (or dies)."""
    deadline = time.monotonic() + timeout
    while True:
        if not proc_alive():
            raise NetdevkitError("the server exited before it listened")
        with tb.socket("client", socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.3)
            try:
                s.connect((tb.server_addr, port))
                return
            except OSError as err:
                if time.monotonic() > deadline:
                    raise NetdevkitError(
                        f"server did not listen on {tb.server_addr}:{port} within {timeout:.0f} s"
                    ) from err
        time.sleep(0.05)


def _epoll_params(preset: Preset) -> object:
    from ..busypoll.epoll import EpollParams

    e = preset.epoll
    return EpollParams(e.busy_poll_usecs, e.busy_poll_budget, e.prefer_busy_poll)


@contextlib.contextmanager
def _server(tb: Testbed, spec: ServerSpec, preset: Preset) -> Iterator[tuple[int, list[str]]]:
    """Start *spec*'s server, give it the epoll half, yield (pid, notes); stop it after."""
    import subprocess

    proc = tb.popen("server", spec.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    notes: list[str] = []
    try:
        _wait_listening(tb, spec.port, lambda: proc.poll() is None, 10.0)
        if spec.attach and preset.epoll.enabled:
            from ..attach import attach
            from ..busypoll.epoll import EpollParams

            params = _epoll_params(preset)
            assert isinstance(params, EpollParams)
            result = attach(proc.pid, params)
            notes += list(result.warnings)
        yield proc.pid, notes
    finally:
        stop(proc, timeout=3)
        if proc.stderr is not None:
            proc.stderr.close()


def _napi_state(tb: Testbed) -> dict[str, float]:
    """The server end's NAPI settings as the kernel reports them now."""
    from ..netdev.client import Netdev

    out: dict[str, float] = {}
    with Netdev.open(tb.server_ns) as nd:
        napis = nd.napi_dump(ifindex=tb.server_ifindex)
    for n in napis[:1]:  # one queue: one NAPI
        out["napi_id"] = n.id
        for name in ("defer_hard_irqs", "gro_flush_timeout", "irq_suspend_timeout"):
            v = getattr(n, name)
            if v is not None:
                out[name] = v
        if n.threaded is not None:
            out["threaded"] = int(n.threaded)
        if n.pid:
            out["napi_kthread_pid"] = n.pid
    return out


def _derived(counters: dict[str, float], wall: float) -> dict[str, float]:
    """Rates that explain the server's CPU: sleeps/s, and the share of the
    packets received in the server namespace that busy polling delivered
    (BusyPollRxPackets counts packets before GRO and InReceives after it,
    so the share is capped at 1)."""
    out: dict[str, float] = {}
    if "server_sleeps" in counters and wall > 0:
        out["server_sleeps_per_s"] = counters["server_sleeps"] / wall
    ip_in = counters.get("server_ip_in", 0.0)
    if "server_busypoll_rx" in counters and ip_in > 0:
        out["busy_polled_share"] = min(1.0, counters["server_busypoll_rx"] / ip_in)
    return out


def _sample(
    tb: Testbed,
    spec: ServerSpec,
    mode: str,
    pid: int,
    load: int,
    rep: int,
    opts: BenchOptions,
    notes: list[str],
) -> Sample:
    res = run_client(tb, spec, pid, load, opts.duration)
    usage = res.cpu_after.usage_since(res.cpu_before)
    napi: dict[str, float] = {k: float(v) for k, v in usage.counters.items()}
    napi.update(_derived(napi, usage.wall))
    napi.update(_napi_state(tb))
    napi.update({k: float(v) for k, v in res.extra.items()})
    placement = dict(res.placement)
    kthread = int(napi.get("napi_kthread_pid", 0))
    if kthread:
        with contextlib.suppress(OSError):  # threaded NAPI was turned off meanwhile
            placement["napi"] = format_cpu_list(affinity_of(kthread))
    return Sample(
        mode=mode,
        workload=spec.workload,
        server=spec.server,
        load_target=load,
        achieved_rate=res.achieved_rate,
        latency=res.latency,
        server_cpu=usage.process_cores if usage.process_cores is not None else 0.0,
        softirq_cpu=usage.softirq_cores,
        repeat=rep,
        client_ceiling=res.client_ceiling,
        client_limited=res.client_limited,
        duration=usage.wall,
        napi=napi,
        notes=tuple(notes) + res.notes,
        placement=placement,
    )


# --- the run -------------------------------------------------------------------


def _run_config(opts: BenchOptions) -> RunConfig:
    from .. import __version__ as version

    return RunConfig(
        modes=opts.modes,
        workloads=opts.workloads,
        loads=opts.loads,
        duration=opts.duration,
        repeat=opts.repeat,
        quick=opts.quick,
        kernel=platform.release(),
        cpus=os.cpu_count() or 0,
        started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        netdevkit_version=str(version),
        placement=opts.cpus.describe() if opts.cpus is not None else "",
        workload_loads=opts.workload_loads,
    )


def run_bench(opts: BenchOptions, progress: Callable[[Step], None] | None = None) -> Results:
    """Validate, then measure everything *opts* asks for; see the module docstring.

    A server or mode that fails is recorded as a :class:`Skip` with the error
    and the run goes on; KeyboardInterrupt and SystemExit stop it (after the
    cleanup of every context manager on the way out).
    """
    from ..tuning import context as tuning_context

    validate(opts)
    total = count_steps(opts)
    done = 0
    samples: list[Sample] = []
    skipped: list[Skip] = []
    config = _run_config(opts)

    def report(label: str, sample: Sample | None = None) -> None:
        if progress is not None:
            progress(Step(done, total, label, sample))

    name = opts.testbed_name or f"ndkbench-{os.getpid()}"
    with Testbed(TestbedConfig(name=name, queues=1, cpus=opts.cpus)) as tb:
        tmp = tb.tmpdir  # removed with the testbed, also by `testbed down` after a SIGKILL
        for mode in opts.modes:
            preset = PRESETS[mode]
            mode_end = done + count_steps(dataclasses.replace(opts, modes=(mode,)))
            try:
                tuned = tuning_context.tuned(tb.server_if, preset=mode, netns=tb.server_ns)
                with tuned:
                    # threaded NAPI's kthreads exist once the mode turned it on
                    tb.pin_napi_threads("server")
                    for workload in opts.workloads:
                        loads = _loads_for(workload, opts.loads_of(workload))
                        specs = server_specs(workload, tb, SERVER_PORT, mode, loads, tmp)
                        for spec in specs:
                            label = f"{mode} {workload}/{spec.server}"
                            try:
                                with _server(tb, spec, preset) as (pid, notes):
                                    for load in spec.loads:
                                        for rep in range(opts.repeat):
                                            s = _sample(tb, spec, mode, pid, load, rep, opts, notes)
                                            samples.append(s)
                                            done += 1
                                            report(label, s)
                            except NetdevkitError as err:
                                skipped.append(Skip(mode, f"{workload}/{spec.server}", str(err)))
                                done += len(spec.loads) * opts.repeat
                                report(f"{label}: skipped")
            except NetdevkitError as err:
                skipped.append(Skip(mode, "*", f"mode not applied: {err}"))
                done = mode_end
                report(f"{mode}: skipped")
    return Results(config, tuple(samples), tuple(skipped))
