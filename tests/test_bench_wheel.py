"""``netdevkit bench`` from an installed wheel, away from the source checkout.

Builds a wheel of this checkout (offline: ``pip wheel --no-build-isolation``, with the
setuptools of this environment), installs it into a fresh virtual environment (the
dependencies come from this environment's site-packages through a ``.pth`` file; the
checkout is nowhere on the path) and runs a short real bench of the echo servers from an
empty directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from netdevkit.bench.results import Results

ROOT = Path(__file__).resolve().parent.parent


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.returncode == 0, f"{argv[:4]}: {out.stderr[-2000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout's sources."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "netdevkit-src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", "dist", str(src)],
        tmp,
    )
    (whl,) = (tmp / "dist").glob("netdevkit-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed (and this one's dependencies)."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)], root.parent)
    python = root / "bin" / "python"
    pip = [
        sys.executable,
        "-m",
        "pip",
        "--disable-pip-version-check",
        "-q",
        "--python",
        str(python),
    ]
    _run([*pip, "install", "--no-deps", "--no-index", str(wheel)], root.parent)
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root)
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(site.stdout.strip(), "_netdevkit_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return root


def test_the_wheel_carries_the_bench_servers(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("rr", "fast", "threads", "framing", "napiecho", "stockecho"):
        assert f"netdevkit/bench/servers/{module}.py" in names
    assert "netdevkit/bench/loadgen/mcload.py" in names
    assert "netdevkit/py.typed" in names


def test_installed_netdevkit_is_the_wheel(venv: Path, tmp_path: Path) -> None:
    out = _run(
        [str(venv / "bin" / "python"), "-c", "import netdevkit; print(netdevkit.__file__)"],
        tmp_path,
    )
    assert Path(out.stdout.strip()).is_relative_to(venv)


@pytest.mark.kernel
@pytest.mark.slow
def test_bench_runs_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    """The echo servers that used to be read from the checkout (the dispatcher server, its
    handler on stock asyncio) and the FastLoop server, one short sample each."""
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    argv = [str(venv / "bin" / "netdevkit"), "bench", "--modes", "base", "--workload", "echo"]
    argv += ["--servers", "netdevkit,asyncio,fast", "--sweep", "0.5", "--duration", "0.5"]
    out = _run([*argv, "--out", "out", "-j"], run_dir)
    res = Results.from_json(out.stdout)
    by_server = {s.server: s for s in res.samples}
    assert set(by_server) == {"netdevkit", "asyncio", "fast"}, json.dumps(res.to_dict())[:2000]
    for s in by_server.values():
        assert s.latency.p50 > 0 and s.achieved_rate > 0 and s.server_cpu > 0
    written = {p.name for p in (run_dir / "out").iterdir()}
    assert {"results.json", "report.md", "tradeoff.png"} <= written
