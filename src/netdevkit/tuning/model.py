"""The change-plan model of NAPI tuning: knobs, targets, changes, plans.

Pure data and validation, no I/O. The flow of every tuning command is

1. validate the requested values (:func:`validate_settings`) -- nothing has
   been read or written yet;
2. resolve the targets (a NAPI id, all NAPIs of an interface, a list) and read
   their current values (:mod:`.backends`);
3. build a :class:`Plan` of :class:`Change` objects, one per target, each
   holding the values before and after;
4. journal, then apply in order, rolling back on the first refusal
   (:mod:`.napi`).

Kernel facts (netdev family, ``napi`` attribute set, Linux 6.13+):

- ``defer-hard-irqs`` is a u32 whose policy caps it at S32_MAX;
- ``gro-flush-timeout`` and ``irq-suspend-timeout`` are ``uint`` nanoseconds
  (up to u64);
- ``threaded`` is a u32 enum, 0 disabled / 1 enabled / 2 busy-poll (6.19+;
  6.18 rejects 2 with ERANGE). Settings carry False/True or
  ``NapiThreaded.BUSY_POLL``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from ..errors import RequestError

# Defined in errors.py; importable from here as before.
from ..errors import TuningError as TuningError  # noqa: PLC0414
from ..netdev.family import NapiThreaded
from ..units import format_duration_ns, parse_duration_ns
from .presets import NapiSettings

S32_MAX = 2**31 - 1
U64_MAX = 2**64 - 1

BackendName = Literal["netlink", "sysfs"]

#: Python field name -> the kernel's attribute / CLI / profile name.
KNOBS: dict[str, str] = {
    "defer_hard_irqs": "defer-hard-irqs",
    "gro_flush_timeout": "gro-flush-timeout",
    "irq_suspend_timeout": "irq-suspend-timeout",
    "threaded": "threaded",
}
DURATION_KNOBS = frozenset({"gro_flush_timeout", "irq_suspend_timeout"})
_BY_KERNEL_NAME = {v: k for k, v in KNOBS.items()}

UNSET = NapiSettings()


# -- values -----------------------------------------------------------------------


def validate_settings(s: NapiSettings, what: str = "") -> NapiSettings:
    """Check every value against the kernel's policy; returns *s* unchanged.

    Raises :class:`RequestError` naming the knob, before anything is sent.
    """
    where = f"{what}: " if what else ""
    for name in ("defer_hard_irqs", "gro_flush_timeout", "irq_suspend_timeout"):
        v = getattr(s, name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise RequestError(f"{where}{KNOBS[name]}={v!r}: must be a whole number")
        if v < 0:
            raise RequestError(f"{where}{KNOBS[name]}={v}: must not be negative")
        # defer-hard-irqs: the kernel's napi-set policy caps it at S32_MAX
        # (and sysfs napi_defer_hard_irqs refuses more with EINVAL).
        limit = S32_MAX if name == "defer_hard_irqs" else U64_MAX
        if v > limit:
            raise RequestError(
                f"{where}{KNOBS[name]}={v}: above the kernel's maximum {limit}"
                + (" (S32_MAX)" if limit == S32_MAX else " ns")
            )
    if (
        s.threaded is not None
        and not isinstance(s.threaded, bool)
        and s.threaded is not NapiThreaded.BUSY_POLL
    ):
        raise RequestError(f"{where}threaded={s.threaded!r}: must be on, off or busy-poll")
    return s


#: The longest gro-flush-timeout / irq-suspend-timeout netdevkit takes from a user (ns).
#: Both arm the NAPI's hrtimer with the device IRQ masked (napi_complete_done,
#: napi_suspend_irqs): packets that reach a quiet NAPI wait up to that long. The
#: kernel takes any u64 (NLA_UINT without a range) and converts it with ns_to_ktime()
#: to a signed ktime, so values above KTIME_MAX (S64_MAX ns) even wrap to "now"; long
#: before that a value stops making sense: TCP's largest retransmission timeout
#: (TCP_RTO_MAX, 120 s) is where peers give up on a connection whose packets are held.
#: :func:`validate_settings` keeps the kernel's own u64 limit, so that ``restore`` can
#: always put back a value the system had.
MAX_USER_TIMEOUT_NS = 120 * 1_000_000_000


def check_user_timeout(knob: str, ns: int) -> int:
    """Refuse a user's timeout above :data:`MAX_USER_TIMEOUT_NS`, saying why."""
    if ns > MAX_USER_TIMEOUT_NS:
        raise RequestError(
            f"{knob}={format_duration_ns(ns)}: above netdevkit's bound of 120s; a quiet "
            "NAPI holds packets up to this long with its IRQ masked, and past TCP's largest "
            "retransmission timeout (TCP_RTO_MAX, 120s) connections die (typical values: "
            "gro-flush-timeout 10us-1ms, irq-suspend-timeout 1-100ms)"
        )
    return ns


def parse_count(text: str, knob: str = "defer-hard-irqs") -> int:
    """A non-negative integer as a user typed it, with a clear error."""
    if len(text) > 32:
        raise RequestError(f"{knob}={text[:20]!r}...: expected a whole number 0..{S32_MAX}")
    try:
        v = int(text.strip(), 10)
    except ValueError:
        raise RequestError(f"{knob}={text!r}: expected a whole number 0..{S32_MAX}") from None
    if v < 0:
        raise RequestError(f"{knob}={v}: must not be negative")
    return v


def parse_threaded(text: str, knob: str = "threaded") -> bool | NapiThreaded:
    """on/off, or busy-poll (a busy-polling kthread per NAPI, Linux 6.19+)."""
    if text.strip().lower() in ("busy-poll", "busy_poll"):
        return NapiThreaded.BUSY_POLL
    try:
        return parse_onoff(text, knob)
    except RequestError:
        raise RequestError(f"{knob}={text!r}: expected on, off or busy-poll") from None


def threaded_value(v: object) -> bool | NapiThreaded | None:
    """A stored threaded value (bool, or 2 from JSON) as settings carry it."""
    if v is None:
        return None
    if not isinstance(v, bool) and v == NapiThreaded.BUSY_POLL:
        return NapiThreaded.BUSY_POLL
    return bool(v)


def parse_onoff(text: str, knob: str = "threaded") -> bool:
    t = text.strip().lower()
    if t in ("on", "1", "true", "yes", "enabled"):
        return True
    if t in ("off", "0", "false", "no", "disabled"):
        return False
    raise RequestError(f"{knob}={text!r}: expected on or off")


def parse_knob(name: str, value: object) -> int | bool:
    """One knob from a CLI string or a TOML value (kernel name, e.g. ``gro-flush-timeout``).

    Durations accept ``200us``-style strings or an integer of nanoseconds.
    """
    field = _BY_KERNEL_NAME.get(name)
    if field is None:
        raise RequestError(f"unknown setting {name!r} (known: {', '.join(KNOBS.values())})")
    if field == "threaded":
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return parse_threaded(value, name)
        raise RequestError(f"{name}={value!r}: expected on/off/busy-poll or true/false")
    if isinstance(value, bool):
        raise RequestError(f"{name}={value!r}: expected a number, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise RequestError(f"{name}={value}: must not be negative")
        return check_user_timeout(name, value) if field in DURATION_KNOBS else value
    if isinstance(value, str):
        if field in DURATION_KNOBS:
            return check_user_timeout(name, parse_duration_ns(value))
        return parse_count(value, name)
    if field in DURATION_KNOBS:
        raise RequestError(
            f"{name}={value!r}: expected a duration, a string like '200us' or a whole number "
            "of nanoseconds"
        )
    raise RequestError(
        f"{name}={value!r}: a count is a whole number 0..{S32_MAX} (no fraction, no unit)"
    )


def settings_from_mapping(values: Mapping[str, object], what: str = "") -> NapiSettings:
    """``{"defer-hard-irqs": 100, "gro-flush-timeout": "200us"}`` -> validated settings."""
    kw: dict[str, Any] = {}
    for name, value in values.items():
        try:
            kw[_BY_KERNEL_NAME.get(name, name)] = parse_knob(name, value)
        except RequestError as err:
            if not what:
                raise
            raise RequestError(f"{what}: {err.args[0]}", hint=err.hint) from None
    return validate_settings(NapiSettings(**kw), what)


def settings_of(d: Mapping[str, int | bool | None]) -> NapiSettings:
    """NapiSettings from ``{field: value}`` (fields not in *d* stay None)."""
    defer, gro, suspend, thr = (d.get(k) for k in KNOBS)
    return NapiSettings(
        None if defer is None else int(defer),
        None if gro is None else int(gro),
        None if suspend is None else int(suspend),
        threaded_value(thr),
    )


def overlay(base: NapiSettings, top: NapiSettings) -> NapiSettings:
    """*base* with every knob that *top* sets replaced."""
    merged = as_dict(base)
    merged.update({k: v for k, v in as_dict(top).items() if v is not None})
    return settings_of(merged)


def as_dict(s: NapiSettings) -> dict[str, int | bool | None]:
    return {f.name: getattr(s, f.name) for f in fields(s)}


def is_empty(s: NapiSettings) -> bool:
    return all(v is None for v in as_dict(s).values())


def format_value(knob: str, v: int | bool | None) -> str:
    if v is None:
        return "-"
    if knob == "threaded":
        if threaded_value(v) is NapiThreaded.BUSY_POLL:
            return "busy-poll"
        return "on" if v else "off"
    if knob in DURATION_KNOBS:
        return format_duration_ns(int(v))
    return str(int(v))


def settings_to_json(s: NapiSettings) -> dict[str, int | bool | None]:
    """snake_case keys (as ``napi show -j``), durations in integer ns, threaded a bool:
    the journal's and ``-j``'s encoding."""
    return as_dict(s)


def settings_from_json(d: Mapping[str, Any]) -> NapiSettings:
    return settings_of({k: d.get(k) for k in KNOBS})


def describe_settings(s: NapiSettings) -> str:
    parts = [f"{KNOBS[k]} {format_value(k, v)}" for k, v in as_dict(s).items() if v is not None]
    return ", ".join(parts) or "nothing"


# -- targets and changes ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """What a change applies to: one NAPI instance, or a whole device (sysfs).

    ``position`` is the NAPI's rank on its device by ascending id, which is
    the rx queue order for drivers that create NAPIs queue by queue (veth
    does; its queue-get does not link queues to NAPI ids). Profiles and the
    journal use it to find "the same" NAPI after its id changed.
    """

    backend: BackendName
    netns: str | None
    ifname: str
    ifindex: int
    napi_id: int | None = None
    position: int | None = None

    @property
    def device_wide(self) -> bool:
        return self.napi_id is None

    @property
    def key(self) -> tuple[str, str | None, int, int | None]:
        return (self.backend, self.netns, self.ifindex, self.napi_id)

    @property
    def label(self) -> str:
        where = f", netns {self.netns}" if self.netns else ""
        if self.napi_id is None:
            return f"{self.ifname} (device-wide sysfs, all its NAPIs{where})"
        pos = f" #{self.position}" if self.position is not None else ""
        return f"NAPI {self.napi_id} ({self.ifname}{pos}{where})"

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "netns": self.netns,
            "ifname": self.ifname,
            "ifindex": self.ifindex,
            "napi_id": self.napi_id,
            "position": self.position,
        }


@dataclass(frozen=True, slots=True)
class Change:
    """One target: its values before and the values wanted after."""

    target: Target
    before: NapiSettings
    after: NapiSettings

    @property
    def delta(self) -> dict[str, tuple[int | bool | None, int | bool | None]]:
        """knob -> (before, after) for the knobs that change."""
        b, a = as_dict(self.before), as_dict(self.after)
        return {k: (b[k], a[k]) for k in KNOBS if a[k] is not None and a[k] != b[k]}

    @property
    def changed(self) -> bool:
        return bool(self.delta)

    def forward(self) -> NapiSettings:
        """Only the knobs to send."""
        return settings_of({k: a for k, (_b, a) in self.delta.items()})

    def backward(self) -> NapiSettings:
        """The values that undo :meth:`forward`."""
        return settings_of({k: b for k, (b, _a) in self.delta.items()})

    def describe(self) -> str:
        d = self.delta
        if not d:
            return "no change"
        return ", ".join(
            f"{KNOBS[k]} {format_value(k, b)} -> {format_value(k, a)}" for k, (b, a) in d.items()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.to_json(),
            "before": settings_to_json(self.before),
            "after": settings_to_json(self.after),
            "changed": list(self.delta),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """Changes in the order they will be applied (targets that need nothing included)."""

    changes: tuple[Change, ...]

    @property
    def effective(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.changed)

    @property
    def empty(self) -> bool:
        return not self.effective

    def lines(self) -> list[str]:
        """Human before -> after lines; ``no changes`` when there is nothing to do."""
        eff = self.effective
        if not eff:
            return ["no changes"]
        out = [f"{c.target.label}: {c.describe()}" for c in eff]
        unchanged = len(self.changes) - len(eff)
        if unchanged:
            out.append(f"({unchanged} target(s) already as requested)")
        return out

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.changes]


def make_plan(pairs: Iterable[tuple[Target, NapiSettings, NapiSettings]]) -> Plan:
    """``(target, current, wanted)`` triples -> a plan; refuses duplicate targets."""
    seen: dict[tuple[Any, ...], Target] = {}
    changes = []
    for target, current, wanted in pairs:
        if target.key in seen:
            raise RequestError(f"{target.label} is named twice in one request")
        seen[target.key] = target
        changes.append(Change(target, current, overlay(current, wanted)))
    return Plan(tuple(changes))
