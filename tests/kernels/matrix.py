"""The kernel matrix: run the ``matrix`` tests inside Debian's own kernels.

``make test-kernels`` (and ``make test``, after the host suite) runs::

    python tests/kernels/matrix.py

For each kernel of :data:`fetch.DEFAULT_KERNELS` (Debian's 6.1, 6.12 and newest
7.x) it fetches and unpacks the kernel (cached under ``.cache/kernels``), boots
it under qemu (:mod:`guest`), collects the guest's JUnit report and prints one
table, test group (module) x kernel. It exits non-zero when a kernel could not
be fetched, a guest did not boot or report, or any test failed; and writes
``.cache/kernels/report.json``, which ``.ci/run`` checks to make sure the
stage ran.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from fetch import DEFAULT_KERNELS, FetchError, Kernel, KernelSpec, PrivateApt, fetch
from guest import BootResult, boot
from netdevsim import NETDEVSIM_KERNELS, NetdevsimError
from netdevsim import build as build_netdevsim

CHECKOUT = Path(__file__).resolve().parents[2]
CACHE = CHECKOUT / ".cache" / "kernels"
REPORT = CACHE / "report.json"


@dataclass(slots=True)
class Group:
    """Outcomes of one test module on one kernel."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    #: "test name: reason" of each skip and failure
    notes: list[str] = field(default_factory=list)

    def cell(self) -> str:
        parts = [f"{n} {w}" for n, w in ((self.passed, "passed"), (self.failed, "FAILED"),
                                          (self.skipped, "skipped")) if n]  # fmt: skip
        return ", ".join(parts) or "-"


def read_junit(path: Path) -> dict[str, Group]:
    """``{module: Group}`` from a pytest JUnit XML report."""
    groups: dict[str, Group] = defaultdict(Group)
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        parts = case.get("classname", "?").split(".")
        module = next((p for p in parts if p.startswith("test_")), parts[0])
        g = groups[module]
        name = case.get("name", "?")
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        skip = case.find("skipped")
        if bad is not None:
            g.failed += 1
            g.notes.append(f"FAILED {name}: {(bad.get('message') or '').splitlines()[0][:160]}")
        elif skip is not None:
            g.skipped += 1
            g.notes.append(f"skipped {name}: {(skip.get('message') or '')[:160]}")
        else:
            g.passed += 1
    return dict(groups)


def render(results: dict[str, dict[str, Group]], boots: list[BootResult]) -> str:
    """The table: one row per test group, one column per kernel; then skips and failures."""
    labels = [b.label for b in boots]
    heads = [f"{b.label} ({b.release})" for b in boots]
    modules = sorted({m for r in results.values() for m in r})
    rows = [[m, *(results.get(k, {}).get(m, Group()).cell() for k in labels)] for m in modules]
    status = []
    for b in boots:
        if b.error:
            status.append(f"NO REPORT: {b.error}")
        else:
            status.append(f"boot {b.boot_s:.0f}s tests {b.tests_s:.0f}s off {b.poweroff_s:.0f}s")
    rows.append(["(guest)", *status])
    table = [["test group", *heads], *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(heads) + 1)]
    lines = []
    for r in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if r[0] == "test group":
            lines.append("  ".join("-" * w for w in widths))
    for k in labels:
        for m in modules:
            for note in results.get(k, {}).get(m, Group()).notes:
                lines.append(f"[{k}] {m}: {note}")
    return "\n".join(lines)


def matrix_files() -> list[str]:
    """The test files that hold ``matrix`` tests (collecting only those saves the guests
    most of pytest's start-up: Python runs about 20x slower under TCG)."""
    tests = CHECKOUT / "tests"
    return [
        str(p.relative_to(CHECKOUT))
        for p in sorted(tests.rglob("test_*.py"))
        if "mark.matrix" in p.read_text()
    ]


def cache_unwritable(cache: Path) -> str | None:
    """Why the stage cannot write *cache* (kernels, the guests' logs, report.json), or None.

    Asked before anything else, so a read-only cache is one line, not a traceback halfway.
    """
    probe = cache / f".write-probe-{os.getpid()}"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        return (
            f"the kernel cache {cache} is not writable ({err.strerror}): the stage keeps its "
            "kernels, the guests' logs and report.json there; make it writable or remove it"
        )
    return None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Boot Debian's kernels under qemu and run the `matrix` tests in each."
    )
    p.add_argument(
        "--kernel",
        action="append",
        metavar="LABEL",
        help="only this kernel of the matrix (6.1, 6.12, 7.x); repeatable",
    )
    p.add_argument("--refresh", action="store_true", help="re-resolve and re-fetch the kernels")
    p.add_argument("--timeout", type=float, default=480.0, help="seconds per guest (480)")
    p.add_argument("-k", dest="select", help="pytest -k expression for the guests")
    return p.parse_args(argv)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP unwind like Ctrl-C, so guest.boot kills its qemu
    raise KeyboardInterrupt


def _fetch_all(specs: list[KernelSpec], refresh: bool) -> list[Kernel]:
    """Each kernel of *specs*, from the cache or fetched; prints one line per kernel."""
    apt = PrivateApt(CACHE / "apt")
    kernels: list[Kernel] = []
    for spec in specs:
        t = time.monotonic()
        k = fetch(spec, CACHE, apt, refresh=refresh)
        kernels.append(k)
        print(f"kernel {k.label}: {k.release} from {k.from_suite} ({time.monotonic() - t:.1f} s)")
    return kernels


def _netdevsim_all(kernels: list[Kernel]) -> None:
    """netdevsim built (or taken from the cache) and installed for each kernel that gets it;
    prints one line per kernel."""
    apt = PrivateApt(CACHE / "apt")
    for k in kernels:
        if k.label not in NETDEVSIM_KERNELS:
            continue
        t = time.monotonic()
        _ko, built = build_netdevsim(k, CACHE, apt)
        how = "built" if built else "cached"
        print(f"netdevsim {k.label}: {how} for {k.release} ({time.monotonic() - t:.1f} s)")


def _write_report(
    boots: list[BootResult], fetch_s: float, total: float, failed: list[str], empty: list[str]
) -> None:
    """``report.json``: what ``.ci/run`` checks to know the stage ran, and cleanly."""
    report = {
        "kernels": [asdict(b) for b in boots],
        "fetch_s": fetch_s,
        "total_s": total,
        "failed": sorted(set(failed)),
        "no_passing_tests": empty,
        "finished": time.time(),
    }
    REPORT.write_text(json.dumps(report, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    specs: list[KernelSpec] = [
        s for s in DEFAULT_KERNELS if not args.kernel or s.label in args.kernel
    ]
    if not specs:
        print(f"no such kernel in the matrix: {', '.join(args.kernel)}", file=sys.stderr)
        return 2
    pytest_args = matrix_files()
    if args.select:
        pytest_args += ["-k", args.select]
    unwritable = cache_unwritable(CACHE)
    if unwritable is not None:
        print(f"kernel matrix: {unwritable}", file=sys.stderr)
        return 1
    REPORT.unlink(missing_ok=True)
    t0 = time.monotonic()
    try:
        kernels = _fetch_all(specs, args.refresh)
        _netdevsim_all(kernels)
    except (FetchError, NetdevsimError) as err:
        print(f"kernel matrix: {err}", file=sys.stderr)
        return 1
    fetch_s = time.monotonic() - t0
    boots: list[BootResult] = []
    results: dict[str, dict[str, Group]] = {}
    for kernel in kernels:
        print(f"booting {kernel.label} ({kernel.release}) ...", flush=True)
        b = boot(kernel, CACHE / "runs" / kernel.label, args.timeout, pytest_args)
        boots.append(b)
        junit = Path(b.outdir) / "junit.xml"
        if junit.exists():
            results[kernel.label] = read_junit(junit)
        print(f"  {b.label}: pytest rc {b.pytest_rc}, {b.total_s:.0f} s {b.error}", flush=True)
    print()
    print(render(results, boots))
    failed = [b.label for b in boots if b.error or b.pytest_rc not in (0, 5)]
    failed += [k for k, gs in results.items() if any(g.failed for g in gs.values())]
    empty = [b.label for b in boots if not any(g.passed for g in results.get(b.label, {}).values())]
    total = time.monotonic() - t0
    _write_report(boots, fetch_s, total, failed, empty)
    print(f"\nkernel matrix: {total:.0f} s (fetch {fetch_s:.0f} s)")
    if failed or empty:
        print(
            f"kernel matrix FAILED: {', '.join(sorted(set(failed + empty)))}"
            " (logs under .cache/kernels/runs/)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("kernel matrix interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as err:  # the cache or a log became unwritable midway (disk full, ...)
        where = f"{err.filename}: " if err.filename else ""
        print(f"kernel matrix: {where}{err.strerror or err}", file=sys.stderr)
        sys.exit(1)
