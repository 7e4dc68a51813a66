"""NAPI and IRQ tuning that can always be undone.

- :mod:`.presets` - the named modes of the IRQ-suspension evaluation, each a
  NAPI half and the epoll half the application is expected to use.
- :mod:`.model` - targets, changes and plans, validated before anything runs.
- :mod:`.backends` - per-NAPI netlink (6.13+) and the device-wide sysfs fallback.
- :mod:`.journal` - the on-disk record of previous values that ``restore`` reads.
- :mod:`.napi` - :class:`Tuner`: plan, apply with rollback, undo, restore, diff.
- :mod:`.context` - ``with tuned(...)``: apply, and restore on exit and signals.
- :mod:`.profile` - declarative TOML profiles for ``netdevkit apply``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Resolved on first use, so that importing ``netdevkit.tuning.presets`` (as the
# read-only CLI commands do) does not pull in the netlink client and journal.
_LAZY = {
    "PRESETS": ".presets",
    "NapiSettings": ".presets",
    "Preset": ".presets",
    "get_preset": ".presets",
    "Tuner": ".napi",
    "tuned": ".context",
    "load_profile": ".profile",
    "parse_profile": ".profile",
    "plan_profile": ".profile",
}

if TYPE_CHECKING:
    from .context import tuned
    from .napi import Tuner
    from .presets import PRESETS, NapiSettings, Preset, get_preset
    from .profile import load_profile, parse_profile, plan_profile

__all__ = [
    "PRESETS",
    "NapiSettings",
    "Preset",
    "Tuner",
    "get_preset",
    "load_profile",
    "parse_profile",
    "plan_profile",
    "tuned",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'netdevkit.tuning' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
