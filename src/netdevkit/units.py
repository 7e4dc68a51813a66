"""Durations as users write them (``200us``, ``20ms``) and as the kernel wants them (ns)."""

from __future__ import annotations

import re

from .errors import RequestError

_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s)?\s*")


def parse_duration_ns(text: str, default_unit: str = "ns") -> int:
    """``"200us"`` -> ``200000``. A bare number is in *default_unit*.

    Raises :class:`RequestError` for negative numbers, unknown units and
    fractions of a nanosecond.
    """
    if len(text) > 64:
        raise RequestError(
            f"invalid duration {text[:20]!r}... ({len(text)} characters): expected a number "
            "with an optional unit ns, us, ms or s (e.g. 200us, 20ms)"
        )
    m = _DURATION.fullmatch(text)
    if m is None:
        raise RequestError(
            f"invalid duration {text!r}: expected a non-negative number with an optional unit "
            "ns, us, ms or s (e.g. 200us, 20ms)"
        )
    number, unit = m.group(1), m.group(2) or default_unit
    value = float(number) * _UNITS_NS[unit] if "." in number else int(number) * _UNITS_NS[unit]
    if value != int(value):
        raise RequestError(f"invalid duration {text!r}: not a whole number of nanoseconds")
    return int(value)


def format_duration_ns(ns: int | None) -> str:
    """``200000`` -> ``"200us"``; exact, picking the largest unit that divides."""
    if ns is None:
        return "-"
    if ns == 0:
        return "0"
    for unit in ("s", "ms", "us"):
        if ns % _UNITS_NS[unit] == 0:
            return f"{ns // _UNITS_NS[unit]}{unit}"
    return f"{ns}ns"
