"""Declarative tuning profiles (TOML), resolved against the kernel at apply time.

A profile names interfaces (exact names or shell globs) and queue positions,
never NAPI ids: ids change whenever a device is reset (veth: GRO toggled,
link down/up), so they are looked up when the profile is applied. The format
is documented in ``docs/tuning.md``; an example is ``examples/profile.toml``::

    backend = "auto"                  # optional: auto | netlink | sysfs
    netns = "lab"                     # optional default for every [[interface]]

    [[interface]]
    match = "eth*"                    # exact name or glob
    preset = "suspend"                # optional; explicit values below override it
    gro-flush-timeout = "50us"

    [[interface.napi]]                # per-NAPI overrides, by position on the device
    positions = [0, 1]
    defer-hard-irqs = 200

Parsing (:func:`parse_profile`) checks every key and value and touches
nothing; :func:`plan_profile` resolves the interfaces and builds one plan.
Applying twice changes nothing the second time: the plan compares with the
current values and keeps only the knobs that differ.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .._argcheck import path_arg, str_arg
from ..errors import NotFoundError, RequestError
from ..netdev.client import ifnames
from ..suggest import did_you_mean
from .backends import check_choice
from .model import KNOBS, Plan, Target, is_empty, overlay, settings_from_mapping
from .napi import Tuner
from .presets import NapiSettings, get_preset

MAX_PROFILE_BYTES = 1 << 20
TOP_KEYS = ("version", "backend", "netns", "interface")
RULE_KEYS = ("match", "netns", "preset", *KNOBS.values(), "napi")
OVERRIDE_KEYS = ("position", "positions", *KNOBS.values())
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class NapiOverride:
    positions: tuple[int, ...]
    settings: NapiSettings


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[interface]]`` table."""

    where: str
    match: str
    netns: str | None
    settings: NapiSettings
    overrides: tuple[NapiOverride, ...]

    @property
    def is_glob(self) -> bool:
        return any(c in _GLOB_CHARS for c in self.match)


@dataclass(frozen=True, slots=True)
class Profile:
    backend: str | None
    rules: tuple[Rule, ...]
    source: str = "<profile>"


def _check_keys(table: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            raise RequestError(
                f"{where}: unknown key {key!r}{did_you_mean(key, known)} (known keys: "
                f"{', '.join(known)})"
            )


def _str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise RequestError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _knobs(table: Mapping[str, Any]) -> dict[str, object]:
    return {k: v for k, v in table.items() if k in KNOBS.values()}


def _positions(table: Mapping[str, Any], where: str) -> tuple[int, ...]:
    if ("position" in table) == ("positions" in table):
        raise RequestError(f"{where}: give exactly one of 'position' or 'positions'")
    raw = table.get("positions", [table.get("position")])
    if not isinstance(raw, list) or not raw:
        raise RequestError(f"{where}: 'positions' must be a non-empty list of integers")
    out = []
    for p in raw:
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise RequestError(f"{where}: position {p!r} must be an integer >= 0")
        out.append(p)
    return tuple(out)


def _rule(table: object, i: int, default_netns: str | None) -> Rule:
    where = f"[[interface]] #{i + 1}"
    if not isinstance(table, dict):
        raise RequestError(f"{where}: expected a table")
    _check_keys(table, RULE_KEYS, where)
    if "match" not in table:
        raise RequestError(f"{where}: missing 'match' (an interface name or glob like 'eth*')")
    match = _str(table["match"], f"{where}.match")
    where = f"{where} (match {match!r})"
    netns = _str(table["netns"], f"{where}.netns") if "netns" in table else default_netns
    base = NapiSettings()
    if "preset" in table:
        try:
            base = get_preset(_str(table["preset"], f"{where}.preset")).napi
        except RequestError as err:
            raise RequestError(f"{where}: {err}") from None
    settings = overlay(base, settings_from_mapping(_knobs(table), where))
    raw_overrides = table.get("napi", [])
    if not isinstance(raw_overrides, list):
        raise RequestError(f"{where}.napi: expected [[interface.napi]] tables")
    overrides = []
    named: dict[int, str] = {}
    for j, o in enumerate(raw_overrides):
        owhere = f"{where} [[interface.napi]] #{j + 1}"
        if not isinstance(o, dict):
            raise RequestError(f"{owhere}: expected a table")
        _check_keys(o, OVERRIDE_KEYS, owhere)
        positions = _positions(o, owhere)
        for p in positions:
            if p in named:
                raise RequestError(
                    f"{owhere}: position {p} is already set by {named[p]}; give each "
                    "position once (one [[interface.napi]] table, or one 'positions' list)"
                )
            named[p] = f"[[interface.napi]] #{j + 1}"
        osettings = settings_from_mapping(_knobs(o), owhere)
        if is_empty(osettings):
            raise RequestError(f"{owhere}: sets no value")
        overrides.append(NapiOverride(positions, osettings))
    if is_empty(settings) and not overrides:
        raise RequestError(f"{where}: sets nothing (give a preset or values)")
    return Rule(where, match, netns, settings, tuple(overrides))


_TABLES = "interfaces are [[interface]] tables (double brackets), one per interface rule"


def _toml_type(value: object) -> str:
    """A TOML value's kind, as a profile's author wrote it."""
    if isinstance(value, dict):
        return "a single [interface] table"
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a float"}
    return f"{names.get(type(value), 'a ' + type(value).__name__)} ({value!r})"


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """Parse and check a profile; raises :class:`RequestError` naming the bad key."""
    str_arg("text", text)
    str_arg("source", source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RequestError(f"{source}: not valid TOML: {err}") from None
    _check_keys(data, TOP_KEYS, source)
    if data.get("version", 1) != 1:
        raise RequestError(f"{source}: version {data['version']!r} (this netdevkit reads 1)")
    backend = None
    if "backend" in data:
        backend = check_choice(_str(data["backend"], f"{source}: backend"), "backend")
    netns = _str(data["netns"], f"{source}: netns") if "netns" in data else None
    rules = data.get("interface")
    if rules is not None and not isinstance(rules, list):
        raise RequestError(f"{source}: interface = {_toml_type(rules)}: {_TABLES}")
    if not rules:
        raise RequestError(f"{source}: no [[interface]] tables: nothing to apply")
    return Profile(backend, tuple(_rule(r, i, netns) for i, r in enumerate(rules)), source)


def load_profile(path: str) -> Profile:
    path_arg("path", path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as err:
        raise RequestError(f"cannot read profile {path}: {err.strerror}") from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise RequestError(f"{path}: larger than {MAX_PROFILE_BYTES >> 10} KiB, not a profile")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(f"{path}: not a profile (binary, not UTF-8 TOML text)") from None
    return parse_profile(text, path)


def _match_rule(
    tuner: Tuner, rule: Rule, names: list[str], missing_ok: bool = False
) -> list[tuple[Target, NapiSettings, NapiSettings]]:
    if rule.is_glob:
        matched = sorted(n for n in names if fnmatch.fnmatchcase(n, rule.match))
        if not matched and missing_ok:
            return []
        if not matched:
            raise NotFoundError(
                f"{rule.where}: no interface matches{_in(rule.netns)} "
                f"(interfaces: {', '.join(sorted(names))})"
            )
    elif rule.match in names:
        matched = [rule.match]
    elif missing_ok:
        return []
    else:
        raise NotFoundError(f"{rule.where}: no interface named {rule.match!r}{_in(rule.netns)}")
    out = []
    for ifname in matched:
        try:
            resolved = tuner.resolve(netns=rule.netns, ifname=ifname)
        except NotFoundError:
            if rule.is_glob or missing_ok:
                continue  # a glob also matches devices without NAPIs (lo): skip them
            raise
        out.extend(_with_overrides(rule, ifname, resolved))
    if not out and not missing_ok:
        raise NotFoundError(f"{rule.where}: no matching interface has NAPI instances")
    return out


def _with_overrides(
    rule: Rule, ifname: str, resolved: list[tuple[Target, NapiSettings]]
) -> list[tuple[Target, NapiSettings, NapiSettings]]:
    per_pos: dict[int, NapiSettings] = {}
    for o in rule.overrides:
        for p in o.positions:
            per_pos[p] = overlay(per_pos.get(p, NapiSettings()), o.settings)
    if per_pos and any(t.device_wide for t, _ in resolved):
        raise RequestError(
            f"{rule.where}: per-NAPI overrides need per-NAPI settings (napi-set, Linux "
            "6.13+); the sysfs backend is device-wide"
        )
    have = {t.position for t, _ in resolved}
    missing = sorted(set(per_pos) - have)
    if missing:
        raise NotFoundError(
            f"{rule.where}: {ifname} has {len(resolved)} NAPI(s), positions 0.."
            f"{len(resolved) - 1}; no NAPI at position(s) {', '.join(map(str, missing))}"
        )
    out = []
    for t, cur in resolved:
        wanted = rule.settings
        if t.position in per_pos:
            wanted = overlay(wanted, per_pos[t.position])
        if not is_empty(wanted):
            out.append((t, cur, wanted))
    return out


def _in(netns: str | None) -> str:
    return f" in network namespace {netns!r}" if netns else ""


def plan_profile(
    tuner: Tuner,
    profile: Profile,
    *,
    missing_ok: bool = False,
    namespaces: Collection[str | None] | None = None,
) -> Plan:
    """Resolve every rule now and build one plan; nothing is written.

    *missing_ok* (what ``apply --watch`` uses): a rule that matches no interface with
    NAPIs yet contributes nothing instead of failing; *namespaces* (names, None for the
    current one) limits the plan to the rules of those network namespaces.
    """
    triples: list[tuple[Target, NapiSettings, NapiSettings]] = []
    owner: dict[tuple[Any, ...], str] = {}
    names_by_ns: dict[str | None, list[str]] = {}
    for rule in profile.rules:
        if namespaces is not None and rule.netns not in namespaces:
            continue
        if rule.netns not in names_by_ns:
            names_by_ns[rule.netns] = list(ifnames(rule.netns).values())
        matches = _match_rule(tuner, rule, names_by_ns[rule.netns], missing_ok)
        for t, cur, wanted in matches:
            if t.key in owner:
                raise RequestError(
                    f"{t.ifname}{_in(t.netns)} is matched by both {owner[t.key]} and "
                    f"{rule.where}: make the patterns disjoint"
                )
            owner[t.key] = rule.where
            triples.append((t, cur, wanted))
    return tuner.plan(triples)
