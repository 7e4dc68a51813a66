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
    """The running kernel's build configuration (``{"CONFIG_X": "y"}``), if readable
    (see :func:`read_config`); None if none is."""
    return read_config()[0]


def parse_config(text: str) -> dict[str, str]:
    """A kernel .config as ``{"CONFIG_X": "y"}``; ``# CONFIG_X is not set`` is left out
    and a string value loses its quotes."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


def read_config(rel: str | None = None) -> tuple[dict[str, str] | None, str, str]:
    """(configuration, the file it came from, why none could be read) of kernel *rel*
    (default: the running one).

    From /proc/config.gz (CONFIG_IKCONFIG_PROC, the running kernel's), else the
    distribution's copy in /boot/config-RELEASE or /usr/lib/modules/RELEASE/config. The
    reason is empty when no file exists, and names the file when one exists but cannot be
    read (not root, say).
    """
    import gzip

    rel = rel if rel is not None else release()
    error = ""
    for path in ("/proc/config.gz", f"/boot/config-{rel}", f"/usr/lib/modules/{rel}/config"):
        try:
            if path.endswith(".gz"):
                with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                    return parse_config(f.read()), path, ""
            with open(path, encoding="utf-8", errors="replace") as f:
                return parse_config(f.read()), path, ""
        except FileNotFoundError:
            continue
        except PermissionError:
            error = f"{path} is not readable: run as root to check"
        except OSError as err:
            error = f"{path}: {err.strerror}"
    return None, "", error
