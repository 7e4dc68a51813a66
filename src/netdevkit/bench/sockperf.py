"""Debian's sockperf (3.7) as bench server and client, with its report parsed.

The client is used in two ways:

- ``sockperf ping-pong --tcp``: one message in flight, the next sent when the
  answer came; the latency of every round trip is recorded.
- ``sockperf under-load --tcp --mps=N --reply-every 1``: messages paced at N
  per second, each answered (reply-every 1 makes it an open-loop
  request-response at a fixed rate); every answer is timed.

What sockperf reports, and how it is read here:

- Latency is *half* the round trip unless ``--full-rtt`` is given
  ("avg-latency", "percentile NN = X" in microseconds). netdevkit keeps
  sockperf's convention for comparability with published sockperf numbers
  and marks these samples ``Latency.kind == "half-rtt"``.
- Only the "[Valid Duration]" window counts (sockperf drops the warm-up and
  the tail): the achieved rate is its ReceivedMessages / RunTime. That is what
  the server really answered, never the requested ``--mps``.
- "The requested message-per-second rate is too high" means the client could
  not pace at the asked rate: such a sample is client-limited.

The server side is ``sockperf server``. With a single ``--tcp -i ADDR`` it
blocks in ``recvfrom`` and has no epoll context (nothing for epoll busy-poll
parameters to act on); given a feed file (``-f FILE -F epoll``) the same
server multiplexes with ``epoll_wait``, so the bench starts it that way and
configures its epoll context like any other unmodified server.

sockperf's framing (for servers other than sockperf's own): each message
starts with a big-endian u64 sequence number, u16 flags and u32 total
length, 14 bytes; the server returns the message with flag bit 0x1 cleared.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..errors import RequestError, ToolError
from .results import Latency

__all__ = [
    "MIN_MSG_SIZE",
    "SockperfReport",
    "client_argv",
    "parse_report",
    "run_client",
    "server_argv",
    "sockperf_path",
    "write_feed_file",
]

MIN_MSG_SIZE = 14
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_VALID = re.compile(
    r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); ReceivedMessages=(\d+)"
)
_PCT = re.compile(r"---> percentile\s+([\d.]+)\s*=\s*([\d.]+)")
_MAX = re.compile(r"---> <MAX> observation\s*=\s*([\d.]+)")
_MIN = re.compile(r"---> <MIN> observation\s*=\s*([\d.]+)")
_AVG = re.compile(r"avg-(?:latency|rtt)=([\d.]+)")
_TOTAL = re.compile(r"Total (\d+) observations")
_LOSS = re.compile(
    r"# dropped messages = (\d+); # duplicated messages = (\d+); # out-of-order messages = (\d+)"
)
_TOO_HIGH = "requested message-per-second rate is too high"


def sockperf_path() -> str:
    """Absolute path of the sockperf binary, or an error naming the Debian package."""
    path = shutil.which("sockperf")
    if path is None:
        raise ToolError(
            "sockperf not found: install the Debian package 'sockperf' (apt-get install sockperf)"
        )
    return path


@dataclass(frozen=True, slots=True)
class SockperfReport:
    """What one sockperf client run printed (valid-duration window only)."""

    run_time: float
    sent: int
    received: int
    #: percentile (50.0, 99.9, ...) -> microseconds
    percentiles: dict[float, float] = field(default_factory=dict)
    observations: int = 0
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    dropped: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    rate_too_high: bool = False
    full_rtt: bool = False

    @property
    def received_rate(self) -> float:
        """Answers per second in the valid window: the achieved rate."""
        return self.received / self.run_time if self.run_time > 0 else 0.0

    @property
    def sent_rate(self) -> float:
        return self.sent / self.run_time if self.run_time > 0 else 0.0

    def percentile(self, pct: float) -> float:
        """The value sockperf printed for *pct*; the nearest printed one above if not printed."""
        if pct in self.percentiles:
            return self.percentiles[pct]
        above = [p for p in self.percentiles if p >= pct]
        if not above:
            raise ToolError(f"sockperf printed no percentile at or above {pct}")
        return self.percentiles[min(above)]

    def latency(self) -> Latency:
        """p50/p90/p99/p99.9 as a :class:`Latency` (``half-rtt`` unless ``--full-rtt``)."""
        return Latency(
            p50=self.percentile(50.0),
            p90=self.percentile(90.0),
            p99=self.percentile(99.0),
            p999=self.percentile(99.9),
            kind="rtt" if self.full_rtt else "half-rtt",
            count=self.observations,
            mean=self.avg,
            max=self.max,
        )


def parse_report(text: str, *, full_rtt: bool = False) -> SockperfReport:
    """Parse a sockperf client's combined stdout/stderr.

    Raises :class:`NetdevkitError` quoting sockperf's last lines when the run
    produced no valid-duration line or no percentiles (server unreachable,
    nothing answered).
    """
    text = _ANSI.sub("", text)
    valid = _VALID.search(text)
    pcts = {float(p): float(v) for p, v in _PCT.findall(text)}
    if valid is None or not pcts:
        tail = "\n".join(text.strip().splitlines()[-6:])
        raise ToolError(f"sockperf client produced no latency report; it said:\n{tail}")
    loss = _LOSS.search(text)
    total = _TOTAL.search(text)
    avg, lo, hi = _AVG.search(text), _MIN.search(text), _MAX.search(text)
    return SockperfReport(
        run_time=float(valid.group(1)),
        sent=int(valid.group(2)),
        received=int(valid.group(3)),
        percentiles=pcts,
        observations=int(total.group(1)) if total else 0,
        avg=float(avg.group(1)) if avg else None,
        min=float(lo.group(1)) if lo else None,
        max=float(hi.group(1)) if hi else None,
        dropped=int(loss.group(1)) if loss else 0,
        duplicated=int(loss.group(2)) if loss else 0,
        out_of_order=int(loss.group(3)) if loss else 0,
        rate_too_high=_TOO_HIGH in text,
        full_rtt=full_rtt,
    )


def write_feed_file(directory: str, addr: str, port: int) -> str:
    """A sockperf feed file (``T:ADDR:PORT``) for ``sockperf server -f FILE -F epoll``."""
    path = os.path.join(directory, f"sockperf-{port}.feed")
    with open(path, "w", encoding="ascii") as f:
        f.write(f"T:{addr}:{port}\n")
    return path


def server_argv(
    addr: str, port: int, *, feed_file: str | None = None, lls_usecs: int = 0
) -> list[str]:
    """argv of a sockperf TCP server; with *feed_file* it waits in ``epoll_wait``.

    *lls_usecs* > 0 sets ``SO_BUSY_POLL`` on its sockets (sockperf ``--lls``).
    """
    argv = [sockperf_path(), "server"]
    if feed_file is not None:
        argv += ["-f", feed_file, "-F", "epoll"]
    else:
        argv += ["--tcp", "-i", addr, "-p", str(port)]
    if lls_usecs:
        argv += ["--lls", str(lls_usecs)]
    return argv


def client_argv(
    addr: str,
    port: int,
    seconds: int,
    *,
    mps: int = 0,
    msg_size: int = MIN_MSG_SIZE,
    full_rtt: bool = False,
) -> list[str]:
    """argv of a sockperf TCP client.

    *mps* 0 is ``ping-pong`` (one message in flight); *mps* > 0 is
    ``under-load`` at that many messages per second, each one answered.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise RequestError(f"sockperf duration {seconds!r}: whole seconds, at least 1")
    if mps < 0:
        raise RequestError(f"sockperf rate {mps}: must be >= 0 (0 is ping-pong)")
    if msg_size < MIN_MSG_SIZE:
        raise RequestError(f"sockperf message size {msg_size}: at least {MIN_MSG_SIZE} bytes")
    argv = [sockperf_path()]
    if mps == 0:
        argv += ["ping-pong"]
    else:
        argv += ["under-load", f"--mps={mps}", "--reply-every", "1"]
    argv += ["--tcp", "-i", addr, "-p", str(port), "-t", str(seconds), "-m", str(msg_size)]
    if full_rtt:
        argv.append("--full-rtt")
    return argv


class NamespaceRunner(Protocol):
    """What :func:`run_client` needs of a testbed (``Testbed.run``)."""

    def run(
        self, side: Literal["server", "client"], argv: list[str], **kw: Any
    ) -> subprocess.CompletedProcess[bytes]: ...


def run_client(
    runner: NamespaceRunner,
    addr: str,
    port: int,
    seconds: int,
    *,
    mps: int = 0,
    msg_size: int = MIN_MSG_SIZE,
    full_rtt: bool = False,
) -> SockperfReport:
    """Run a sockperf client in the testbed's client namespace and parse its report.

    Blocks for about *seconds* plus sockperf's warm-up; a client that hangs
    is killed after *seconds* + 30 s and reported as an error.
    """
    argv = client_argv(addr, port, seconds, mps=mps, msg_size=msg_size, full_rtt=full_rtt)
    try:
        cp = runner.run(
            "client",
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=seconds + 30,
        )
    except subprocess.TimeoutExpired as err:
        raise ToolError(f"sockperf client {' '.join(argv)} did not finish in time") from err
    text = cp.stdout.decode(errors="replace")
    if cp.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-6:])
        raise ToolError(f"sockperf client exited with status {cp.returncode}:\n{tail}")
    return parse_report(text, full_rtt=full_rtt)
