"""The running kernel's version, for code and tests that depend on it.

>>> at_least("6.13")                 # doctest: +SKIP
True

Only the numeric ``major.minor[.patch]`` prefix of ``uname -r`` counts:
``6.12.117+deb12-amd64`` is (6, 12, 117). Prefer asking the kernel (an
operation's presence, a refusal) to comparing versions; use these where the
kernel offers no way to ask, and in tests that say what each kernel must do.
"""

from __future__ import annotations

import os
import re

_NUMERIC = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def parse(text: str) -> tuple[int, int, int]:
    """``"6.12.117+deb12-amd64"`` -> ``(6, 12, 117)``; ``"6.19"`` -> ``(6, 19, 0)``."""
    m = _NUMERIC.match(text.strip())
    if m is None:
        raise ValueError(f"not a kernel version: {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def release() -> str:
    """``uname -r`` of the running kernel."""
    return os.uname().release


def version() -> tuple[int, int, int]:
    """The running kernel's (major, minor, patch)."""
    return parse(release())


def at_least(wanted: str) -> bool:
    """Whether the running kernel is *wanted* (``"6.19"``) or newer."""
    return version() >= parse(wanted)


def config() -> dict[str, str] | None:
    """The running kernel's build configuration (``{"CONFIG_X": "y"}``), if readable.

    From /proc/config.gz (CONFIG_IKCONFIG_PROC), else the distribution's copy
    in /boot/config-RELEASE or /usr/lib/modules/RELEASE/config; None if none.
    """
    import gzip

    rel = release()
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            text = f.read()
    except OSError:
        for path in (f"/boot/config-{rel}", f"/usr/lib/modules/{rel}/config"):
            try:
                with open(path) as f:
                    text = f.read()
                break
            except OSError:
                continue
        else:
            return None
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("CONFIG_"):
            out[name] = value
    return out
