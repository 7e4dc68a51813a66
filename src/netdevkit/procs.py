"""Helper processes (servers, clients, targets) that netdevkit starts and must stop."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterable


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """Stop *proc*: SIGTERM, then SIGKILL after *timeout* seconds; return its exit status.

    Does nothing to a process that already exited, and tolerates one that
    exits between the checks.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    return proc.wait()


def stop_all(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 2.0) -> None:
    """Stop every process of *procs* at once: SIGTERM to all first (so they end in
    parallel), then each gets *timeout* seconds before SIGKILL."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()
