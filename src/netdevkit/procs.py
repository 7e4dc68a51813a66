"""Helper processes (servers, clients, targets) that netdevkit starts and must stop."""

from __future__ import annotations

import contextlib
import subprocess


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
