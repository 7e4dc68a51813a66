"""argparse ``type=`` converters shared by the commands (argparse names the option)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_at_least"]


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer (decimal, or 0x/0o/0b prefixed) of at least *low*.

    Errors read e.g. "argument --ifindex: must be a positive integer, not 0".
    """
    bound = {0: "0 or more", 1: "a positive integer"}.get(low, f"at least {low}")

    def convert(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {bound}, not {value}")
        return value

    return convert
