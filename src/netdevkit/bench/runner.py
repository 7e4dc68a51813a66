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

With :attr:`BenchOptions.nic` the site is a :class:`.site.NicSite` instead of a testbed:
the servers here on a real interface, the clients on a peer host over ssh (docs/bench.md,
"On a real NIC").

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

from .._os import affinity_of, format_cpu_list
from ..errors import NetdevkitError, PrivilegeError, RequestError, ToolError
from ..procs import stop
from ..testbed import CpuPlacement, Testbed, TestbedConfig
from ..tuning.presets import PRESETS, Preset
from . import sweep, validity
from .cpu import Watch, ksoftirqd_pids
from .modes import ALL_MODES, THREADED_BUSY_POLL, ModeSpec, get_mode, threaded_busy_poll_absent
from .results import PING_PONG, Capacity, NoiseFloor, Results, RunConfig, Sample, Skip
from .site import NicOptions, NicSite, Site, check_nic, nic_marks
from .workloads import (
    OPEN_LOOP,
    SERVERS,
    WORKLOADS,
    ClientResult,
    ServerSpec,
    missing_peers,
    run_client,
    server_specs,
)

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

MODES = tuple(ALL_MODES)
SERVER_PORT = 11111
#: the recommendation's p99 target unless ``--target-p99`` says another (us)
DEFAULT_TARGET_P99_US = 100.0


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to run. :func:`validate` checks it; nothing is checked on construction
    so that the CLI can report every problem with one message."""

    modes: tuple[str, ...] = MODES
    workloads: tuple[str, ...] = ("echo", "sockperf")
    #: fixed loads besides the sweep's (0 is ping-pong)
    loads: tuple[int, ...] = ()
    duration: float = 3.0
    repeat: int = 1
    quick: bool = False
    testbed_name: str = ""
    #: pin server programs, client programs and NAPI kthreads; None: no pinning
    cpus: CpuPlacement | None = None
    #: per-workload loads overriding :attr:`loads`, e.g. (("echo", (0,)),)
    workload_loads: tuple[tuple[str, tuple[int, ...]], ...] = ()
    #: open-loop sweep: fractions of each server's probed capacity (empty: no sweep)
    sweep: tuple[float, ...] = sweep.SWEEP_FULL
    #: servers to measure (empty: every server of each workload)
    servers: tuple[str, ...] = ()
    #: the recommendation's p99 target (us)
    target_p99_us: float = DEFAULT_TARGET_P99_US
    #: ``--server``: the user's command line with {addr} and {port}, and its client
    server_cmd: str = ""
    client: str = "sockperf"
    #: microseconds of CPU work per answer of the echo ``fast`` server (``--work-us``)
    work_us: float = 0.0
    #: connections of the open-loop generator (0: each workload's default)
    connections: int = 0
    #: measure the testbed's noise floor (C sockperf, base, light load vs ping-pong)
    noise_floor: bool = True
    #: ``--ifname IF --peer HOST``: a real interface here, the clients on a peer (None:
    #: the veth testbed)
    nic: NicOptions | None = None

    def loads_of(self, workload: str) -> tuple[int, ...]:
        """The fixed loads *workload* is driven at (before the workload's own limits)."""
        return dict(self.workload_loads).get(workload, self.loads)


#: ``--quick``: every mode on netdevkit's FastLoop echo server (the one server that
#: runs netdevkit's own modes too) with 20 us of work per request (so that one client core
#: reaches its knee: docs/bench.md, "Which load, and why"), swept at 10/50/90% of the knee
#: found open loop: 27 samples of 0.5 s, the probe and the noise floor.
QUICK = BenchOptions(
    modes=MODES,
    workloads=("echo",),
    servers=("fast",),
    loads=(),
    sweep=sweep.SWEEP_QUICK,
    duration=0.5,
    quick=True,
    work_us=20.0,
)
#: seconds of each probe step (the ramp is short: only the knee is wanted)
PROBE_DURATION = 0.4
#: the noise floor's light open-loop rate (requests/s)
NOISE_RATE = 2000
#: what a probe is expected to take, for the progress bar before it ran
_PROBE_STEPS_GUESS = 7


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
    return _parse_list(value, MODES, "mode")


def parse_servers(value: str) -> tuple[str, ...]:
    known = tuple(dict.fromkeys(x for names in SERVERS.values() for x in names))
    return _parse_list(value, known, "server")


def parse_sweep(value: str) -> tuple[float, ...]:
    """``0.1,0.5,0.9`` (fractions of capacity) or ``10%,90%``; ``off`` is no sweep."""
    if value.strip().lower() in ("off", "none", "no"):
        return ()
    out = []
    for item in (x.strip() for x in value.split(",") if x.strip()):
        pct = item.endswith("%")
        try:
            f = float(item[:-1]) / 100 if pct else float(item)
        except ValueError:
            raise RequestError(
                f"sweep {item!r}: fractions of the capacity, e.g. 0.1,0.5,0.9 or 10%,90%, or off"
            ) from None
        if not 0 < f <= 1.5:
            raise RequestError(f"sweep {item!r}: a fraction of the capacity in (0, 1.5]")
        out.append(f)
    if not out:
        raise RequestError("sweep: no fraction given (or 'off')")
    return tuple(sorted(set(out)))


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
    if any(x < 0 for x in opts.loads) or not (opts.loads or opts.sweep):
        raise RequestError("loads must be >= 0 (0 is ping-pong), or a sweep asked for")
    if opts.servers:
        parse_servers(",".join(opts.servers))
    if not 0 < opts.target_p99_us < 1e9:
        raise RequestError(f"target p99 {opts.target_p99_us}: must be > 0 us")
    if not 0 <= opts.work_us <= 100_000:
        raise RequestError(f"work per request {opts.work_us:g} us: must be 0..100000")
    if not 0 <= opts.connections <= 1000:
        raise RequestError(f"connections {opts.connections}: must be 1..1000")
    if opts.server_cmd:
        from .byo import check_template

        check_template(opts.server_cmd, opts.client)
    for workload, loads in opts.workload_loads:
        _parse_list(workload, WORKLOADS, "workload")
        if not loads or any(x < 0 for x in loads):
            raise RequestError(f"{workload} loads must be >= 0 (0 is ping-pong)")
    if opts.cpus is not None:
        opts.cpus.check_machine()
    missing = [] if opts.server_cmd else missing_peers(opts.workloads)
    if missing:
        raise ToolError("missing peer programs: " + "; ".join(missing))
    if opts.nic is not None:
        _validate_nic(opts)
    if os.geteuid() != 0:
        raise PrivilegeError(
            "netdevkit bench builds a testbed (network namespaces, a veth pair) and changes "
            "NAPI settings: run it as root"
        )


def _validate_nic(opts: BenchOptions) -> None:
    """A run on a real interface: placement here only, then the peer's pre-checks."""
    assert opts.nic is not None
    if opts.cpus is not None and opts.cpus.client is not None:
        raise RequestError(
            "a client placement (client=...): the clients run on the peer; place server and napi"
        )
    check_nic(opts.nic, _workloads(opts))


def _loads_for(
    workload: str, loads: tuple[int, ...], swept: tuple[int, ...] = ()
) -> tuple[int, ...]:
    """The loads *workload* can be driven at: the fixed ones plus the sweep's rates."""
    if not sweep.sweeps(workload):
        return (PING_PONG,)
    return tuple(sorted(set(loads) | set(swept))) or (PING_PONG,)


def _servers_of(opts: BenchOptions, workload: str) -> tuple[str, ...]:
    if opts.server_cmd:
        return ("byo",)
    names = SERVERS.get(workload, (workload,))
    return tuple(x for x in names if not opts.servers or x in opts.servers)


def _modes_for(opts: BenchOptions, server: str) -> list[str]:
    return [m for m in opts.modes if get_mode(m).applies_to(server) and _absent(m) is None]


def _absent(mode: str) -> str | None:
    """Why *mode* cannot run on this kernel, or None."""
    if mode == THREADED_BUSY_POLL:  # the preset exists everywhere; the kernel may lack it
        return threaded_busy_poll_absent()
    return None


def _workloads(opts: BenchOptions) -> tuple[str, ...]:
    return (opts.client,) if opts.server_cmd else opts.workloads


def count_steps(opts: BenchOptions) -> int:
    """Samples the run will take, probes included (for a progress bar)."""
    total = 2 if opts.noise_floor else 0
    for w in _workloads(opts):
        n_loads = (len(opts.loads_of(w)) + len(opts.sweep) or 1) if sweep.sweeps(w) else 1
        for server in _servers_of(opts, w):
            if opts.sweep and sweep.sweeps(w):
                total += _PROBE_STEPS_GUESS  # the knee probe (its real count replaces this)
            total += len(_modes_for(opts, server)) * n_loads * opts.repeat
    return total


# --- one server ----------------------------------------------------------------


def _wait_listening(tb: Site, port: int, exited: Callable[[], str | None], timeout: float) -> None:
    """Connect from the client namespace until the server accepts (or dies: *exited* says
    how, None while it runs)."""
    deadline = time.monotonic() + timeout
    while True:
        how = exited()
        if how is not None:
            raise ToolError(f"the server exited before it listened: {how}")
        with tb.socket("client", socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.3)
            try:
                s.connect((tb.server_addr, port))
                return
            except OSError as err:
                if time.monotonic() > deadline:
                    raise ToolError(
                        f"server did not listen on {tb.server_addr}:{port} within {timeout:.0f} s"
                    ) from err
        time.sleep(0.05)


@contextlib.contextmanager
def _server(tb: Site, spec: ServerSpec, preset: Preset) -> Iterator[tuple[int, list[str]]]:
    """Start *spec*'s server, give it the epoll half, yield (pid, notes); stop it after."""
    import subprocess

    proc = tb.popen("server", spec.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    notes: list[str] = []

    def exited() -> str | None:
        if proc.poll() is None:
            return None
        said = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        tail = said.splitlines()[-1] if said else ""
        return f"exit status {proc.returncode}" + (f" ({tail})" if tail else "")

    try:
        _wait_listening(tb, spec.port, exited, 10.0)
        if spec.attach and preset.epoll.enabled:
            from ..attach import attach

            result = attach(proc.pid, preset.epoll)
            notes += list(result.warnings)
        yield proc.pid, notes
    finally:
        stop(proc, timeout=3)
        if proc.stderr is not None:
            proc.stderr.close()


def _napi_state(tb: Site) -> dict[str, float]:
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


@dataclass(frozen=True, slots=True)
class _Measured:
    """One client run with what the validity rules made of it."""

    res: ClientResult
    napi: dict[str, float]
    server_cpu: float
    softirq_cpu: float
    wall: float
    evidence: validity.Evidence
    disturbed: tuple[str, ...]


def _measure(
    tb: Site, spec: ServerSpec, mode: str, pid: int, load: int, duration: float, soft: Watch
) -> _Measured:
    """Drive *spec*'s server once; its CPU counts the NAPI kthread (threaded modes), and
    the sample carries its evidence and verdict (:mod:`.validity`)."""
    state = _napi_state(tb)
    kthread = int(state.get("napi_kthread_pid", 0))
    watch = Watch(None, (kthread,) if kthread else (), soft.ksoftirqd)
    res = run_client(tb, spec, pid, load, duration, watch)
    usage = res.cpu_after.usage_since(res.cpu_before)
    napi: dict[str, float] = {k: float(v) for k, v in usage.counters.items()}
    napi.update(_derived(napi, usage.wall))
    napi.update(state)
    napi.update({k: float(v) for k, v in res.extra.items()})
    process = usage.process_cores if usage.process_cores is not None else 0.0
    napi["server_process_cores"] = process
    napi["napi_kthread_cores"] = usage.kthread_cores
    ev = validity.evidence(
        usage,
        server_cpus=tb.cpus_of("server"),
        client_cpus=tb.cpus_of("client"),
        napi_cpus=tb.cpus_of("napi"),
        generator_spins=res.spins and not isinstance(tb, NicSite),
    )
    return _Measured(
        res,
        napi,
        process + usage.kthread_cores,
        usage.softirq_cores,
        usage.wall,
        ev,
        validity.judge(ev, mode),
    )


def _sample(
    tb: Site,
    spec: ServerSpec,
    mode: str,
    pid: int,
    load: int,
    rep: int,
    opts: BenchOptions,
    notes: list[str],
    soft: Watch,
) -> Sample:
    m = _measure(tb, spec, mode, pid, load, opts.duration, soft)
    res = m.res
    placement = dict(res.placement)
    if isinstance(tb, NicSite):  # the client's process here is its ssh, not the client
        placement.pop("client", None)
    kthread = int(m.napi.get("napi_kthread_pid", 0))
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
        server_cpu=m.server_cpu,
        softirq_cpu=m.softirq_cpu,
        repeat=rep,
        client_ceiling=res.client_ceiling,
        client_limited=res.client_limited,
        duration=m.wall,
        napi=m.napi,
        notes=tuple(notes) + res.notes,
        placement=placement,
        disturbed=m.disturbed,
        checks=m.evidence.to_mapping(),
    )


# --- the run -------------------------------------------------------------------


def _run_config(opts: BenchOptions) -> RunConfig:
    from .. import __version__ as version

    return RunConfig(
        modes=opts.modes,
        workloads=_workloads(opts),
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
        sweep=opts.sweep,
        target_p99_us=opts.target_p99_us,
        servers=opts.servers,
        server_cmd=opts.server_cmd,
        client=opts.client if opts.server_cmd else "",
        work_us=int(opts.work_us),
        connections=tuple(
            (w, opts.connections or OPEN_LOOP[w][1]) for w in _workloads(opts) if w in OPEN_LOOP
        ),
    )


def _specs(opts: BenchOptions, tb: Site, workload: str, mode: str, tmp: str) -> list[ServerSpec]:
    """The servers of *workload* for *mode* (loads filled in later)."""
    if opts.server_cmd:
        from .byo import byo_spec

        specs = [byo_spec(opts.server_cmd, opts.client, tb, SERVER_PORT, ())]
    else:
        specs = server_specs(workload, tb, SERVER_PORT, mode, (), tmp, opts.work_us)
    allowed = _servers_of(opts, workload)
    return [
        dataclasses.replace(x, connections=opts.connections) for x in specs if x.server in allowed
    ]


class _Run:
    """The state of one run: samples, skips, capacities and progress."""

    def __init__(self, opts: BenchOptions, progress: Callable[[Step], None] | None) -> None:
        self.opts = opts
        self.progress = progress
        self.total = count_steps(opts)
        self.done = 0
        self.samples: list[Sample] = []
        self.skipped: list[Skip] = []
        self.capacities: dict[tuple[str, str], Capacity] = {}
        #: ksoftirqd of every CPU: their CPU is the bench's own network processing
        self.soft = Watch(ksoftirqd=ksoftirqd_pids())

    def report(self, label: str, sample: Sample | None = None) -> None:
        if self.progress is not None:
            self.progress(Step(self.done, self.total, label, sample))

    def loads(self, spec: ServerSpec) -> tuple[int, ...]:
        cap = self.capacities.get((spec.workload, spec.server))
        swept = cap.loads if cap is not None else ()
        return _loads_for(spec.workload, self.opts.loads_of(spec.workload), swept)

    def probe(self, tb: Site, tmp: str) -> None:
        """Find each server's knee open loop with the driver-default NAPI settings (base)."""
        opts = self.opts
        if not opts.sweep:
            return
        for workload in _workloads(opts):
            if not sweep.sweeps(workload):
                continue
            for found in _specs(opts, tb, workload, "base", tmp):
                label = f"knee probe {workload}/{found.server}"
                try:
                    with _server(tb, found, PRESETS["base"]) as (pid, _notes):
                        cap = self._ramp(tb, found, pid, label)
                except NetdevkitError as err:
                    self.skipped.append(Skip("base", f"{workload}/{found.server}", f"probe: {err}"))
                    self._probe_done(0)
                    self.report(f"{label}: failed")
                    continue
                self.capacities[(workload, found.server)] = cap
                self.report(f"{label}: knee {cap.rate:.0f}/s")

    def _ramp(self, tb: Site, spec: ServerSpec, pid: int, label: str) -> Capacity:
        """Ping-pong, then open-loop rates rising to the knee (:mod:`.sweep`)."""
        pp = _measure(tb, spec, "base", pid, PING_PONG, PROBE_DURATION, self.soft).res
        self.done += 1
        self.report(f"{label}: ping-pong {pp.achieved_rate:.0f}/s")
        steps: list[sweep.RampStep] = []
        while (rate := sweep.next_rate(steps, pp.achieved_rate)) is not None:
            m = _measure(tb, spec, "base", pid, rate, PROBE_DURATION, self.soft)
            steps.append(
                sweep.RampStep(
                    rate, m.res.achieved_rate, m.res.latency.p50, m.res.client_limited, m.disturbed
                )
            )
            self.done += 1
            self.report(f"{label}: {rate}/s -> {m.res.achieved_rate:.0f}/s answered")
        self._probe_done(1 + len(steps))
        return sweep.knee(
            spec.workload,
            spec.server,
            steps,
            pp.achieved_rate,
            self.opts.sweep,
            ping_pong_p50=pp.latency.p50,
            ping_pong_p99=pp.latency.p99,
        )

    def _probe_done(self, taken: int) -> None:
        """Replace the probe's guessed step count in the total with what it took."""
        self.total += taken - _PROBE_STEPS_GUESS
        self.done += 0

    def noise_floor(self, tb: Site, tmp: str) -> NoiseFloor | None:
        """The testbed's own tail: C sockperf server, base, light open loop vs ping-pong."""
        if not self.opts.noise_floor or missing_peers(("sockperf",)):
            return None
        spec = server_specs("sockperf", tb, SERVER_PORT, "base", (), tmp)[0]
        try:
            with _server(tb, spec, PRESETS["base"]) as (pid, _notes):
                pp = _measure(tb, spec, "base", pid, PING_PONG, self.opts.duration, self.soft)
                self.done += 1
                self.report("noise floor: ping-pong")
                ol = _measure(tb, spec, "base", pid, NOISE_RATE, self.opts.duration, self.soft)
                self.done += 1
                self.report("noise floor: open loop")
        except NetdevkitError as err:
            self.skipped.append(Skip("base", "noise floor", str(err)))
            return None
        return NoiseFloor(
            NOISE_RATE,
            ol.res.latency,
            pp.res.latency,
            pp.res.achieved_rate,
            tuple(f"open loop: {x}" for x in ol.disturbed)
            + tuple(f"ping-pong: {x}" for x in pp.disturbed)
            + tuple(f"open loop: {x}" for x in ol.res.notes if x.startswith("client-limited")),
        )

    def mode(self, tb: Site, mode: str, rnd: int, tmp: str) -> None:
        """One mode in one round: its NAPI half, then every server that can run it."""
        from ..tuning import context as tuning_context

        spec_mode: ModeSpec = get_mode(mode)
        opts = self.opts
        todo = [
            (w, s)
            for w in _workloads(opts)
            for s in _specs(opts, tb, w, mode, tmp)
            if spec_mode.applies_to(s.server)
        ]
        preset = PRESETS[spec_mode.napi_preset]
        try:
            with tuning_context.tuned(tb.server_if, preset=preset.name, netns=tb.server_ns):
                tb.pin_napi_threads("server")  # threaded NAPI's kthreads exist by now
                for workload, spec in todo:
                    with_loads = dataclasses.replace(spec, loads=self.loads(spec))
                    self._server_samples(tb, with_loads, mode, preset, rnd, workload)
        except NetdevkitError as err:
            if rnd == 0:
                self.skipped.append(Skip(mode, "*", f"mode not applied: {err}"))
            self.done += sum(len(self.loads(s)) for _, s in todo)
            self.report(f"{mode}: skipped")

    def _server_samples(
        self, tb: Site, spec: ServerSpec, mode: str, preset: Preset, rnd: int, workload: str
    ) -> None:
        label = f"round {rnd + 1} {mode} {workload}/{spec.server}"
        try:
            with _server(tb, spec, preset) as (pid, notes):
                for load in spec.loads:
                    s = _sample(tb, spec, mode, pid, load, rnd, self.opts, notes, self.soft)
                    self.samples.append(s)
                    self.done += 1
                    self.report(label, s)
        except NetdevkitError as err:
            self.skipped.append(Skip(mode, f"{workload}/{spec.server}", f"round {rnd + 1}: {err}"))
            self.done += len(spec.loads)
            self.report(f"{label}: skipped")


def run_bench(opts: BenchOptions, progress: Callable[[Step], None] | None = None) -> Results:
    """Validate, then measure everything *opts* asks for; see the module docstring.

    First the testbed's noise floor is measured (Debian's C sockperf server, base mode,
    a light open-loop load beside ping-pong), then each server's knee is probed open
    loop (the load sweep's rates are fractions of it); then rounds: every round runs
    every mode once, each mode every server that can run it at every load, so that the
    repeats of two modes are paired round by round (latency drifts between minutes:
    docs/bench.md). A server or mode that fails is recorded as a :class:`Skip` with the
    error and the run goes on; a mode this kernel lacks (threaded busy polling before
    6.19) is recorded as a Skip saying so. KeyboardInterrupt and SystemExit stop the
    run (after the cleanup of every context manager on the way out).
    """
    validate(opts)
    config = _run_config(opts)  # its start time is now
    run = _Run(opts, progress)
    for mode in opts.modes:
        why = _absent(mode)
        if why is not None:
            run.skipped.append(Skip(mode, "*", why))
    name = opts.testbed_name or f"ndkbench-{os.getpid()}"
    site: contextlib.AbstractContextManager[Site] = Testbed(
        TestbedConfig(name=name, queues=1, cpus=opts.cpus)
    )
    if opts.nic is not None:
        site = NicSite(opts.nic.ifname, opts.nic.peer, netns=opts.nic.netns, cpus=opts.cpus)
    with site as tb:
        if isinstance(tb, NicSite):
            config = nic_marks(tb, config)
        tmp = tb.tmpdir  # removed with the testbed, also by `testbed down` after a SIGKILL
        noise = run.noise_floor(tb, tmp)
        run.probe(tb, tmp)
        for rnd in range(opts.repeat):
            for mode in opts.modes:
                if _absent(mode) is None:
                    run.mode(tb, mode, rnd, tmp)
    if isinstance(tb, NicSite) and tb.leftover:
        run.skipped.append(
            Skip(
                "*",
                "peer",
                f"{len(tb.leftover)} remote processes were left after the run and were killed",
            )
        )
    caps = tuple(run.capacities.values())
    return Results(
        config, tuple(run.samples), tuple(run.skipped), capacities=caps, noise_floor=noise
    )
