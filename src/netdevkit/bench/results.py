"""The typed results model of ``netdevkit bench``, and its JSON form.

One :class:`Results` holds the :class:`RunConfig` the run was started with and
one :class:`Sample` per (mode, workload, server, load, repeat). Everything is a
frozen dataclass; :meth:`Results.to_json` / :meth:`Results.from_json` round-trip
exactly, and the JSON carries :data:`SCHEMA_VERSION` so that a reader refuses a
file written by an incompatible netdevkit instead of misreading it.

Units: latencies are microseconds, rates are requests (messages) per second,
CPU is cores (seconds of CPU per second of wall clock, so 1.0 is one core
busy all the time).

A sample whose load generator could not produce the requested rate is
marked ``client_limited``: its numbers describe the client, not the server,
and the report never presents them as the server's result.
"""

from __future__ import annotations

import json
import statistics
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import RequestError

__all__ = [
    "SCHEMA_VERSION",
    "Capacity",
    "Latency",
    "NoiseFloor",
    "Results",
    "RunConfig",
    "Sample",
    "Skip",
    "Spread",
]

#: Version of the JSON layout; bump on any incompatible change. Version 1 files
#: (no capacities, no sweep or target in the config) and version 2 files (no validity
#: evidence, no noise floor, capacity = ping-pong rate) are still read.
SCHEMA_VERSION = 3
_READABLE_SCHEMAS = (1, 2, 3)

#: A results.json of a long run is a few MiB; a file this large is something else.
MAX_RESULTS_BYTES = 256 << 20

#: Closed-loop load: one request in flight, sent as soon as the previous answer came.
PING_PONG = 0


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of one sample, in microseconds.

    ``kind`` says what was timed: ``"half-rtt"`` (sockperf's default report,
    half the round trip) or ``"rtt"`` (a whole request-response, as mcload and
    redis-benchmark measure it).
    """

    p50: float
    p90: float
    p99: float
    p999: float
    kind: str = "rtt"
    count: int = 0
    mean: float | None = None
    max: float | None = None

    def ordered(self) -> bool:
        """True when the percentiles do not decrease (p50 <= p90 <= p99 <= p99.9)."""
        return 0 <= self.p50 <= self.p90 <= self.p99 <= self.p999


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What was asked for, and where it ran."""

    modes: tuple[str, ...]
    workloads: tuple[str, ...]
    #: target rates; 0 (:data:`PING_PONG`) is the closed-loop ping-pong
    loads: tuple[int, ...]
    duration: float
    repeat: int = 1
    quick: bool = False
    kernel: str = ""
    cpus: int = 0
    started: str = ""
    netdevkit_version: str = ""
    #: CPU placement asked for (``server=1,client=0,napi=1``); "" is no pinning
    placement: str = ""
    #: per-workload loads that replaced :attr:`loads` for those workloads
    workload_loads: tuple[tuple[str, tuple[int, ...]], ...] = ()
    #: open-loop sweep: fractions of the capacity each server was found to have
    sweep: tuple[float, ...] = ()
    #: the p99 latency target the recommendation uses unless told another (us)
    target_p99_us: float = 0.0
    #: servers measured (empty: every server of each workload)
    servers: tuple[str, ...] = ()
    #: ``--server`` command line template and the client that drove it
    server_cmd: str = ""
    client: str = ""
    #: microseconds of work the bench's echo servers do per request (``--work-us``)
    work_us: int = 0
    #: connections of the open-loop generator, per workload
    connections: tuple[tuple[str, int], ...] = ()
    #: a run on a real interface (``--ifname``, ``--peer``): the interface, its driver,
    #: firmware and link speed, the CPUs its queue interrupts are affine to, the peer
    ifname: str = ""
    driver: str = ""
    firmware: str = ""
    link_speed: str = ""
    irq_cpus: str = ""
    peer: str = ""

    def where(self) -> str:
        """Where the run ran: the veth testbed, or the NIC with its marks and the peer."""
        if not self.ifname:
            return "the veth testbed (servers and clients on this machine)"
        return (
            f"NIC {self.ifname}: driver {self.driver}, firmware {self.firmware}, link "
            f"{self.link_speed}; queue interrupts: {self.irq_cpus}; clients on the peer "
            f"{self.peer} over ssh"
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured point.

    ``load_target`` is what was requested (0 = ping-pong, as fast as one
    request in flight allows); ``achieved_rate`` what the server answered per
    second in the measured window; ``client_ceiling`` the highest rate the
    load generator can produce on this machine (``None`` if unknown).
    ``server_cpu`` is user+system of the server process and its threads,
    ``softirq_cpu`` the softirq time of all CPUs, both in cores.
    ``napi`` holds the counters the kernel offers for the path (softnet,
    NET_RX softirqs, qstats where the driver has them) and the per-NAPI
    settings read back while the sample ran.
    """

    mode: str
    workload: str
    server: str
    load_target: int
    achieved_rate: float
    latency: Latency
    server_cpu: float
    softirq_cpu: float
    repeat: int = 0
    client_ceiling: float | None = None
    client_limited: bool = False
    duration: float = 0.0
    napi: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: role -> cpulist the kernel allowed while the sample ran (read back from
    #: /proc/PID/task/*/status Cpus_allowed_list): "server", "client", "napi"
    placement: Mapping[str, str] = field(default_factory=dict)
    #: why the sample was disturbed (:mod:`netdevkit.bench.validity`); empty: clean
    disturbed: tuple[str, ...] = ()
    #: the evidence the validity rules read (:class:`~netdevkit.bench.validity.Evidence`)
    checks: Mapping[str, float] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, int]:
        """What repeats share: (mode, workload, server, load_target)."""
        return (self.mode, self.workload, self.server, self.load_target)

    @property
    def usable(self) -> bool:
        """Neither client-limited nor disturbed: a claim about the server."""
        return not self.client_limited and not self.disturbed


@dataclass(frozen=True, slots=True)
class Skip:
    """A (mode, workload) that was asked for but not measured, and why."""

    mode: str
    workload: str
    reason: str


@dataclass(frozen=True, slots=True)
class Capacity:
    """What the run found one server could answer, and the loads it swept from it.

    ``rate`` is the knee the probe found (requests/s; version 2 files: the ping-pong
    rate) and ``method`` how it was found; ``loads`` are the open-loop rates the sweep then
    used (fractions of ``rate``, ascending). ``ping_pong_rate`` is the one-in-flight rate
    beside it; ``limited_by`` says what ended the ramp: ``"server"`` (the knee), ``"client"``
    (the generator saturated first: the knee is above ``rate``), ``"disturbed"`` (a step
    disturbed twice stopped the probe: the knee is above ``rate`` too) or ``""`` (not a
    ramp).
    ``steps`` are the ramp's (offered, answered, p50) rows.
    """

    workload: str
    server: str
    rate: float
    method: str
    loads: tuple[int, ...] = ()
    #: the probe's latency (p50, p99 in us) and whether its client was the limit
    p50: float = 0.0
    p99: float = 0.0
    client_limited: bool = False
    ping_pong_rate: float = 0.0
    limited_by: str = ""
    steps: tuple[tuple[float, float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class NoiseFloor:
    """The testbed's own tail: Debian's C sockperf server in base mode at a light open-loop
    load, beside its ping-pong, measured in the same run. Differences between modes smaller
    than the gap between these two are not the modes'."""

    rate: int
    open_loop: Latency
    ping_pong: Latency
    #: ping-pong rate (answers/s)
    ping_pong_rate: float = 0.0
    disturbed: tuple[str, ...] = ()

    @property
    def p99_ratio(self) -> float:
        """Open-loop p99 over ping-pong p99 (the target on the 2-vCPU VM: within 3x)."""
        return self.open_loop.p99 / self.ping_pong.p99 if self.ping_pong.p99 > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Spread:
    """Minimum, median and maximum of one metric across repeats."""

    min: float
    median: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        vals = sorted(values)
        if not vals:
            raise RequestError("spread of no values")
        return cls(vals[0], float(statistics.median(vals)), vals[-1], len(vals))


@dataclass(frozen=True, slots=True)
class Results:
    """A whole bench run: its configuration, samples and skipped combinations."""

    config: RunConfig
    samples: tuple[Sample, ...] = ()
    skipped: tuple[Skip, ...] = ()
    schema: int = SCHEMA_VERSION
    capacities: tuple[Capacity, ...] = ()
    noise_floor: NoiseFloor | None = None

    # -- queries --------------------------------------------------------------

    def select(
        self,
        *,
        mode: str | None = None,
        workload: str | None = None,
        server: str | None = None,
        load_target: int | None = None,
        include_client_limited: bool = False,
        include_disturbed: bool = False,
    ) -> list[Sample]:
        """Samples matching every given field; client-limited and disturbed ones only on
        request."""
        out = []
        for s in self.samples:
            if s.client_limited and not include_client_limited:
                continue
            if s.disturbed and not include_disturbed:
                continue
            if mode is not None and s.mode != mode:
                continue
            if workload is not None and s.workload != workload:
                continue
            if server is not None and s.server != server:
                continue
            if load_target is not None and s.load_target != load_target:
                continue
            out.append(s)
        return out

    def groups(self) -> dict[tuple[str, str, str, int], list[Sample]]:
        """Samples grouped by :attr:`Sample.key`, in first-seen order."""
        out: dict[tuple[str, str, str, int], list[Sample]] = {}
        for s in self.samples:
            out.setdefault(s.key, []).append(s)
        return out

    def spread(
        self, key: tuple[str, str, str, int], metric: Callable[[Sample], float]
    ) -> Spread | None:
        """Spread of *metric* over the usable repeats of *key* (not client-limited, not
        disturbed)."""
        vals = [metric(s) for s in self.groups().get(key, []) if s.usable]
        return Spread.of(vals) if vals else None

    # -- JSON -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "config": asdict(self.config),
            "samples": [_sample_to_dict(s) for s in self.samples],
            "skipped": [asdict(k) for k in self.skipped],
            "capacities": [asdict(c) for c in self.capacities],
            "noise_floor": asdict(self.noise_floor) if self.noise_floor is not None else None,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Results:
        schema = data.get("schema")
        if schema not in _READABLE_SCHEMAS:
            raise RequestError(
                f"results schema {schema!r}: this netdevkit reads schema {SCHEMA_VERSION}; "
                "re-run the bench or use the netdevkit version that wrote the file"
            )
        try:
            cfg = dict(data["config"])
            for name in ("modes", "workloads", "loads"):
                cfg[name] = tuple(cfg[name])
            cfg["workload_loads"] = tuple(
                (str(w), tuple(int(x) for x in loads)) for w, loads in cfg.get("workload_loads", ())
            )
            cfg["sweep"] = tuple(float(x) for x in cfg.get("sweep", ()))
            cfg["servers"] = tuple(str(x) for x in cfg.get("servers", ()))
            cfg["connections"] = tuple((str(w), int(n)) for w, n in cfg.get("connections", ()))
            _known_keys(cfg, RunConfig, "config")
            caps = []
            for i, raw in enumerate(data.get("capacities", ())):
                c = dict(raw)
                _known_keys(c, Capacity, f"capacities[{i}]")
                c["loads"] = tuple(int(x) for x in c.get("loads", ()))
                c["steps"] = tuple(tuple(float(v) for v in row) for row in c.get("steps", ()))
                caps.append(Capacity(**c))
            samples = []
            for i, raw in enumerate(data["samples"]):
                _known_keys(raw, Sample, f"samples[{i}]")
                samples.append(_sample_from_dict(raw))
            res = cls(
                config=RunConfig(**cfg),
                samples=tuple(samples),
                skipped=tuple(Skip(**k) for k in data.get("skipped", ())),
                capacities=tuple(caps),
                noise_floor=_noise_from(data.get("noise_floor")),
            )
        except KeyError as err:
            raise RequestError(f"malformed results file: no {err.args[0]!r} field") from None
        except (TypeError, ValueError, AttributeError) as err:
            raise RequestError(f"malformed results file: {err}") from None
        _check_types(res, "results")
        return res

    @classmethod
    def from_json(cls, text: str) -> Results:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise RequestError(f"results file is not JSON: {err}") from err
        if not isinstance(data, dict):
            raise RequestError("results file: top level must be an object")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str) -> Results:
        """Read a results.json; anything else (missing, a directory, binary, another JSON)
        raises :class:`RequestError` with one line saying what is wrong."""
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_RESULTS_BYTES + 1)
        except OSError as err:
            raise RequestError(f"cannot read results file {path}: {err.strerror}") from None
        if len(raw) > MAX_RESULTS_BYTES:
            raise RequestError(f"{path}: larger than {MAX_RESULTS_BYTES >> 20} MiB, not results")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"{path}: not a results file (binary, not UTF-8 JSON)") from None
        try:
            return cls.from_json(text)
        except RecursionError:
            raise RequestError(f"{path}: not a results file (nested too deeply)") from None

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())
            f.write("\n")


def _sample_to_dict(s: Sample) -> dict[str, Any]:
    d = asdict(s)
    d["napi"] = dict(s.napi)
    d["notes"] = list(s.notes)
    d["placement"] = dict(s.placement)
    d["disturbed"] = list(s.disturbed)
    d["checks"] = dict(s.checks)
    return d


def _check_types(value: object, where: str, hint: Any = None) -> None:
    """Raise RequestError unless *value* (a results dataclass, or a field of one, of type
    *hint*) holds what its annotations say: a file from elsewhere must not reach the
    renderers with a dict where a number belongs."""
    if hint is None:
        hints = typing.get_type_hints(type(value))
        for f in fields(value):  # type: ignore[arg-type]
            _check_types(getattr(value, f.name), f"{where}.{f.name}", hints[f.name])
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    ok: bool
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint in (str, bool):
        ok = isinstance(value, hint)
    elif origin is tuple:
        ok = isinstance(value, tuple)
        if isinstance(value, tuple):
            items = args[:-1] * len(value) if args[-1:] == (Ellipsis,) else args
            ok = len(items) == len(value)
            for i, (item, item_hint) in enumerate(zip(value, items, strict=False)):
                _check_types(item, f"{where}[{i}]", item_hint)
    elif origin in (Mapping, dict):
        ok = isinstance(value, Mapping)
        if isinstance(value, Mapping):
            for k, v in value.items():
                _check_types(k, f"{where} key", args[0])
                _check_types(v, f"{where}[{k!r}]", args[1])
    elif isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        ok = isinstance(value, hint)
        if ok:
            _check_types(value, where)
    else:
        ok = True  # a type this file format does not use
    if not ok:
        raise RequestError(
            f"malformed results file: {where} is {type(value).__name__} {value!r:.40}, "
            f"not {getattr(hint, '__name__', hint)}"
        )


def _known_keys(raw: object, cls: type, where: str) -> None:
    """RequestError naming the first field of *raw* that *cls* does not have."""
    if not isinstance(raw, Mapping):
        raise RequestError(f"malformed results file: {where} is not an object")
    names = {f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in raw if k not in names)
    if unknown:
        raise RequestError(
            f"malformed results file: {where} has unknown field(s) {', '.join(unknown)} "
            "(written by another netdevkit version?)"
        )


def _noise_from(raw: object) -> NoiseFloor | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise RequestError("malformed results file: noise_floor is not an object")
    d = dict(raw)
    _known_keys(d, NoiseFloor, "noise_floor")
    d["open_loop"] = Latency(**d["open_loop"])
    d["ping_pong"] = Latency(**d["ping_pong"])
    d["disturbed"] = tuple(str(x) for x in d.get("disturbed", ()))
    return NoiseFloor(**d)


def _sample_from_dict(d: Mapping[str, Any]) -> Sample:
    d = dict(d)
    if not isinstance(d.get("latency"), Mapping):
        raise RequestError("malformed results file: a sample has no latency object")
    _known_keys(d["latency"], Latency, "a sample's latency")
    d["latency"] = Latency(**d["latency"])
    d["disturbed"] = tuple(str(x) for x in d.get("disturbed", ()))
    d["checks"] = {str(k): v for k, v in dict(d.get("checks", {})).items()}
    d["napi"] = {str(k): v for k, v in dict(d.get("napi", {})).items()}
    d["notes"] = tuple(d.get("notes", ()))
    d["placement"] = {str(k): str(v) for k, v in dict(d.get("placement", {})).items()}
    return Sample(**d)
