"""netdevkit.kver: the running kernel's version and build configuration."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from netdevkit import kver


@pytest.mark.parametrize(
    ("text", "want"),
    [("6.12.117+deb12-amd64", (6, 12, 117)), ("6.19", (6, 19, 0)), (" 7.1.0\n", (7, 1, 0))],
)
def test_parse(text: str, want: tuple[int, int, int]) -> None:
    assert kver.parse(text) == want


def test_parse_refuses_what_is_not_a_version() -> None:
    with pytest.raises(ValueError, match="not a kernel version"):
        kver.parse("weird")


def test_version_is_uname() -> None:
    assert kver.release() == os.uname().release
    assert kver.at_least(".".join(map(str, kver.version()[:2])))
    assert not kver.at_least(f"{kver.version()[0] + 1}.0")


def test_config_is_what_the_kernel_publishes() -> None:
    cfg, source, error = kver.read_config()
    if cfg is None:
        pytest.skip(f"no readable kernel configuration here ({error or 'none found'})")
    assert kver.config() == cfg
    raw = Path(source).read_bytes()
    text = (gzip.decompress(raw) if source.endswith(".gz") else raw).decode()
    set_lines = [x for x in text.splitlines() if x.startswith("CONFIG_")]
    assert len(cfg) == len(set_lines)
    assert not any(v.startswith('"') for v in cfg.values())  # string values unquoted


def test_read_config_of_an_unknown_release_falls_back_to_proc_or_none() -> None:
    cfg, source, error = kver.read_config("0.0-no-such-kernel")
    assert (source, error) in {("/proc/config.gz", ""), ("", "")}
    assert (cfg is None) == (source == "")
