"""How far the kernel's NAPIs are from a profile: per interface, per setting (pure).

What the exporter publishes as ``netdevkit_profile_drift_napis`` and what
``apply --watch`` puts right. Input is what one read of a namespace gives (its
interfaces and NAPIs, as :mod:`netdevkit.observe.sources` reads them); nothing here
does I/O, so the rules are tested as tables.

A rule matches interfaces by name or glob like :func:`~.profile.plan_profile` does; the
first rule that matches an interface owns it (``apply`` refuses overlapping rules, so
for a profile that applies the two agree). NAPIs are ranked by ascending id for the
per-position overrides, as :class:`~.model.Target` documents.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..netdev.client import Napi
from .backends import napi_values
from .model import KNOBS, as_dict, overlay
from .presets import NapiSettings
from .profile import Profile, Rule


@dataclass(frozen=True, slots=True)
class DriftRow:
    """One interface a profile covers: its NAPIs, and per setting how many differ."""

    netns: str | None
    ifname: str
    napis: int
    #: kernel knob name (``defer-hard-irqs`` ...) -> NAPIs whose value differs; every
    #: setting the profile sets on the interface is listed, 0 when none differs
    differ: Mapping[str, int]

    @property
    def drifted(self) -> int:
        """NAPIs with at least one setting off the profile (counted once each)."""
        return max(self.differ.values(), default=0)


def _owner(rules: Iterable[Rule], ifname: str) -> Rule | None:
    return next((r for r in rules if fnmatch.fnmatchcase(ifname, r.match)), None)


def _wanted(rule: Rule, position: int) -> NapiSettings:
    wanted = rule.settings
    for o in rule.overrides:
        if position in o.positions:
            wanted = overlay(wanted, o.settings)
    return wanted


def drift(
    profile: Profile, netns: str | None, links: Mapping[int, str], napis: Iterable[Napi]
) -> list[DriftRow]:
    """The rows of the interfaces of *netns* (``links``: ifindex -> name) that *profile*
    covers and that have NAPIs; interfaces without NAPIs have nothing to drift."""
    rules = [r for r in profile.rules if r.netns == netns]
    by_dev: dict[int, list[Napi]] = {}
    for n in napis:
        by_dev.setdefault(n.ifindex, []).append(n)
    rows = []
    for ifindex, devs in sorted(by_dev.items()):
        ifname = links.get(ifindex)
        rule = None if ifname is None else _owner(rules, ifname)
        if rule is None or ifname is None:
            continue
        differ: dict[str, int] = {}
        for position, n in enumerate(sorted(devs, key=lambda n: n.id)):
            now, wanted = as_dict(napi_values(n)), as_dict(_wanted(rule, position))
            for knob, value in wanted.items():
                if value is None:
                    continue
                name = KNOBS[knob]
                differ[name] = differ.get(name, 0) + (now[knob] != value)
        rows.append(DriftRow(netns, ifname, len(devs), differ))
    return rows
