"""An open-loop memcached load generator that does not lie about latency.

``python -m netdevkit.bench.loadgen.mcload --host H --port P --rate R --duration S
--connections C [-j]`` sends memcached text-protocol ``get``/``set`` requests
at a fixed aggregate rate over many connections and reports latency
percentiles from an HDR histogram.

Measuring honestly:

- **Open loop, no coordinated omission.** Request *i* is *scheduled* at
  ``t0 + i / rate`` whatever happened to earlier requests, and its latency is
  ``answer time - scheduled time``. A server that stalls for 10 ms shows up
  as 10 ms of latency on every request that was due meanwhile, not as one
  slow request (Gil Tene's point about closed-loop load generators).
- **Precise wake-ups without spinning.** asyncio's timers have millisecond
  resolution (epoll_wait's timeout is in ms); every request would start up
  to 1 ms late. The scheduler instead waits on a ``timerfd`` armed with the
  absolute CLOCK_MONOTONIC time of the next request (``time.monotonic`` is
  CLOCK_MONOTONIC on Linux), which wakes epoll within microseconds.
- **The generator reports its own limits.** It records its send lag (actual
  send - scheduled) in a second histogram, its CPU use, and its *ceiling*:
  requests per CPU-second of this single-threaded process, i.e. the rate at
  which it would saturate one core. A sample is ``client_limited`` when the
  generator sent less than 95% of the target, sent late (median lag over
  200 us, or p99 lag over 2 ms), or the target is above 60% of its ceiling.
  Smaller send-lag jitter (a busy 2-core machine gives some) is reported,
  and it is part of the measured latency, as it should be. Such a result
  describes the client, and the bench never presents it as the server's.
- Requests still unanswered when the drain timeout ends are recorded with
  the latency they had reached by then and counted as ``timeouts``.

Per connection, memcached answers in order, so each connection keeps a FIFO
of scheduled times. The response parser (:class:`ResponseParser`) does no
I/O and is tested on byte strings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from ...errors import DecodeError, NetdevkitError, RequestError, ToolError, translate_oserror

__all__ = [
    "LoadConfig",
    "LoadReport",
    "ResponseParser",
    "client_limits",
    "main",
    "run_load",
]

#: the generator is late systematically (median send lag), not just jittery
LAG_P50_LIMIT_US = 200.0
#: bursts of lateness: the generator falls behind for milliseconds at a time
LAG_P99_LIMIT_US = 2000.0
SENT_FRACTION = 0.95
#: a single-threaded generator busier than this queues its own requests
CEILING_FRACTION = 0.6
_HIST_MAX_US = 60_000_000  # 60 s
_MAX_OUTSTANDING = 100_000  # per connection; beyond it the client gives up
_FINAL = {b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND", b"DELETED", b"TOUCHED"}
_ERRORS = (b"ERROR", b"SERVER_ERROR", b"CLIENT_ERROR")


# --- the protocol, without I/O -------------------------------------------------


class ResponseParser:
    """Counts complete memcached text-protocol responses in a byte stream.

    A ``get`` answer is zero or more ``VALUE <key> <flags> <bytes> [<cas>]``
    blocks (header line, data, CRLF) ended by ``END``; storage commands end
    with one status line; errors with an ``ERROR``/``SERVER_ERROR``/
    ``CLIENT_ERROR`` line. Data blocks are skipped by their byte count, so a
    value that contains ``END\\r\\n`` cannot confuse the parser.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._values_in_response = 0
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def feed(self, data: bytes) -> int:
        """Add *data*; return how many responses it completed."""
        buf = self._buf
        buf += data
        done = 0
        pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            line = bytes(buf[pos:eol])
            if line.startswith(b"VALUE "):
                parts = line.split()
                if len(parts) < 4 or not parts[3].isdigit():
                    raise DecodeError(f"memcached: malformed VALUE line {line!r}")
                end = eol + 2 + int(parts[3]) + 2
                if len(buf) < end:
                    break  # wait for the whole data block
                self._values_in_response += 1
                pos = end
                continue
            pos = eol + 2
            if line == b"END":
                if self._values_in_response:
                    self.hits += 1
                else:
                    self.misses += 1
                self._values_in_response = 0
            elif line in _FINAL:
                pass
            elif line.startswith(_ERRORS):
                self.errors += 1
            else:
                raise DecodeError(f"memcached: unexpected response line {line!r}")
            done += 1
        del buf[:pos]
        return done


def get_request(key: bytes) -> bytes:
    return b"get " + key + b"\r\n"


def set_request(key: bytes, value: bytes) -> bytes:
    return b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value)


# --- configuration and report --------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """What to send. Validated on construction (:class:`RequestError`)."""

    host: str
    port: int = 11211
    rate: float = 1000.0
    duration: float = 5.0
    connections: int = 16
    get_ratio: float = 0.9
    keys: int = 1000
    value_size: int = 32
    warmup: float = 0.5
    drain: float = 1.0
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise RequestError(f"port {self.port}: must be 1..65535")
        if not self.rate > 0:
            raise RequestError(f"rate {self.rate}: must be > 0 requests per second")
        if not self.duration > 0:
            raise RequestError(f"duration {self.duration}: must be > 0 seconds")
        if not 1 <= self.connections <= 10_000:
            raise RequestError(f"connections {self.connections}: must be 1..10000")
        if not 0.0 <= self.get_ratio <= 1.0:
            raise RequestError(f"get ratio {self.get_ratio}: must be within 0..1")
        if self.keys < 1 or not 1 <= self.value_size <= 1_000_000:
            raise RequestError("keys must be >= 1 and value size 1..1000000 bytes")
        if self.warmup < 0 or self.drain < 0:
            raise RequestError("warm-up and drain times must be >= 0")


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What happened; latencies in microseconds from the scheduled send time."""

    target_rate: float
    achieved_rate: float
    sent_rate: float
    duration: float
    connections: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    mean: float
    count: int
    lag_p50: float
    lag_p99: float
    lag_max: float
    client_cpu: float
    client_ceiling: float
    client_limited: bool
    reasons: tuple[str, ...] = ()
    timeouts: int = 0
    errors: int = 0
    hits: int = 0
    misses: int = 0
    loop: str = "asyncio"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


# --- precise wake-ups: timerfd -------------------------------------------------

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


class _TimerFd:
    """A one-shot CLOCK_MONOTONIC timerfd armed at absolute times (ns)."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fd = self._libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise translate_oserror(ctypes.get_errno(), "timerfd_create")
        self.fd = int(fd)

    def arm_at(self, when_ns: int) -> None:
        when_ns = max(when_ns, 1)  # 0 would disarm
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(when_ns // 10**9, when_ns % 10**9))
        if self._libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            raise translate_oserror(ctypes.get_errno(), "timerfd_settime")

    def ack(self) -> None:
        # EAGAIN: woken by something else, nothing expired
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        os.close(self.fd)


# --- the generator -------------------------------------------------------------


class _Conn(asyncio.Protocol):
    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.parser = ResponseParser()
        self.pending: deque[tuple[int, bool]] = deque()  # (scheduled ns, recorded?)
        self.transport: asyncio.WriteTransport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both can write.
        self.transport = cast(asyncio.WriteTransport, transport)

    def data_received(self, data: bytes) -> None:
        n = self.parser.feed(data)
        if not n:
            return
        now = time.monotonic_ns()
        for _ in range(n):
            sched, recorded = self.pending.popleft()
            if recorded:
                self.gen.record(now - sched)
        self.gen.answered(n)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class _Generator:
    def __init__(self, cfg: LoadConfig, on_window: Callable[[str], None] | None = None) -> None:
        from hdrh.histogram import HdrHistogram

        self.cfg = cfg
        self.on_window = on_window
        self.hist = HdrHistogram(1, _HIST_MAX_US, 3)
        self.lag = HdrHistogram(1, _HIST_MAX_US, 3)
        self.rng = random.Random(cfg.seed)
        self.keys = [b"ndk:%d" % i for i in range(cfg.keys)]
        self.value = b"v" * cfg.value_size
        self.conns: list[_Conn] = []
        self.outstanding = 0
        self.recorded = 0
        self.sent_in_window = 0
        self.gave_up = 0
        self.idle: asyncio.Event | None = None

    def record(self, ns: int) -> None:
        self.hist.record_value(max(1, min(ns // 1000, _HIST_MAX_US)))
        self.recorded += 1

    def answered(self, n: int) -> None:
        self.outstanding -= n
        if self.outstanding <= 0 and self.idle is not None:
            self.idle.set()

    def request(self) -> bytes:
        key = self.keys[self.rng.randrange(len(self.keys))]
        if self.rng.random() < self.cfg.get_ratio:
            return get_request(key)
        return set_request(key, self.value)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.cfg.connections):
            try:
                _, proto = await loop.create_connection(
                    lambda: _Conn(self), self.cfg.host, self.cfg.port
                )
            except OSError as err:
                raise ToolError(
                    f"mcload: cannot connect to memcached at {self.cfg.host}:{self.cfg.port}: {err}"
                ) from err
            self.conns.append(proto)

    async def preload(self) -> None:
        """Store every key once (closed loop) so gets hit."""
        self.idle = asyncio.Event()
        for i, key in enumerate(self.keys):
            conn = self.conns[i % len(self.conns)]
            conn.pending.append((time.monotonic_ns(), False))
            self.outstanding += 1
            assert conn.transport is not None
            conn.transport.write(set_request(key, self.value))
        if self.outstanding:
            await asyncio.wait_for(self.idle.wait(), timeout=10.0)

    async def run(self) -> tuple[int, int, float, int]:
        """Send on schedule; returns (window start ns, window end ns, cpu s, drain end ns)."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        interval_ns = 1e9 / cfg.rate
        t0 = time.monotonic_ns() + 20_000_000
        w0 = t0 + int(cfg.warmup * 1e9)
        w1 = w0 + int(cfg.duration * 1e9)
        total = int((w1 - t0) / interval_ns)
        timer = _TimerFd()
        finished: asyncio.Future[None] = loop.create_future()
        next_i = 0
        cpu0 = 0.0
        nconn = len(self.conns)

        def fire() -> None:
            nonlocal next_i, cpu0
            timer.ack()
            now = time.monotonic_ns()
            i = next_i
            while i < total:
                sched = t0 + int(i * interval_ns)
                if sched > now:
                    break
                conn = self.conns[i % nconn]
                in_window = w0 <= sched < w1
                if in_window and not self.sent_in_window:
                    cpu0 = time.process_time()
                    if self.on_window is not None:
                        self.on_window("start")
                if len(conn.pending) >= _MAX_OUTSTANDING or conn.transport is None:
                    self.gave_up += 1
                else:
                    conn.pending.append((sched, in_window))
                    self.outstanding += 1
                    conn.transport.write(self.request())
                    if in_window:
                        self.sent_in_window += 1
                        self.lag.record_value(max(1, min((now - sched) // 1000, _HIST_MAX_US)))
                i += 1
            next_i = i
            if i >= total:
                if not finished.done():
                    if self.on_window is not None:
                        self.on_window("end")
                    finished.set_result(None)
                return
            timer.arm_at(t0 + int(i * interval_ns))

        loop.add_reader(timer.fd, fire)
        try:
            timer.arm_at(t0)
            await finished
            cpu = time.process_time() - cpu0
            await self._drain(cfg.drain)
            return w0, w1, cpu, time.monotonic_ns()
        finally:
            loop.remove_reader(timer.fd)
            timer.close()

    async def _drain(self, timeout: float) -> None:
        """Wait up to *timeout* s for the outstanding answers (the unanswered ones are
        counted as timeouts afterwards)."""
        self.idle = asyncio.Event()
        if self.outstanding > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), timeout=timeout)

    def timeouts(self, drain_end: int) -> int:
        """Record every in-window request still unanswered with the latency it reached."""
        n = 0
        for conn in self.conns:
            for sched, recorded in conn.pending:
                if recorded:
                    self.hist.record_value(max(1, min((drain_end - sched) // 1000, _HIST_MAX_US)))
                    n += 1
        return n


def client_limits(
    target: float, sent_rate: float, lag_p50: float, lag_p99: float, ceiling: float, gave_up: int
) -> list[str]:
    """Why a sample describes the generator rather than the server (empty: it does not)."""
    reasons: list[str] = []
    if sent_rate < SENT_FRACTION * target:
        reasons.append(f"sent {sent_rate:.0f}/s of the {target:.0f}/s target")
    if lag_p50 > LAG_P50_LIMIT_US:
        reasons.append(f"send lag p50 {lag_p50:.0f} us > {LAG_P50_LIMIT_US:.0f} us")
    if lag_p99 > LAG_P99_LIMIT_US:
        reasons.append(f"send lag p99 {lag_p99:.0f} us > {LAG_P99_LIMIT_US:.0f} us")
    if target > CEILING_FRACTION * ceiling:
        reasons.append(f"target above {CEILING_FRACTION:.0%} of the client ceiling {ceiling:.0f}/s")
    if gave_up:
        reasons.append(f"{gave_up} requests not sent ({_MAX_OUTSTANDING} outstanding)")
    return reasons


async def run_load(cfg: LoadConfig, on_window: Callable[[str], None] | None = None) -> LoadReport:
    """Connect, preload the keys, send at ``cfg.rate`` for ``cfg.duration`` seconds.

    *on_window* is called with ``"start"`` when the first measured request is
    sent and ``"end"`` when the last one is (the bench samples CPU there).
    """
    gen = _Generator(cfg, on_window)
    try:
        await gen.connect()
        await gen.preload()
        w0, w1, cpu, drain_end = await gen.run()
    finally:
        for conn in gen.conns:
            if conn.transport is not None:
                conn.transport.close()
    timeouts = gen.timeouts(drain_end)
    window = (w1 - w0) / 1e9
    h, lag = gen.hist, gen.lag
    answered = gen.recorded
    achieved = answered / window
    sent_rate = gen.sent_in_window / window
    ceiling = gen.sent_in_window / cpu if cpu > 0 else float("inf")
    has_lag = lag.get_total_count() > 0
    lag_p50 = float(lag.get_value_at_percentile(50.0)) if has_lag else 0.0
    lag_p99 = float(lag.get_value_at_percentile(99.0)) if has_lag else 0.0
    reasons = client_limits(cfg.rate, sent_rate, lag_p50, lag_p99, ceiling, gen.gave_up)
    errors = sum(c.parser.errors for c in gen.conns)
    return LoadReport(
        target_rate=cfg.rate,
        achieved_rate=achieved,
        sent_rate=sent_rate,
        duration=window,
        connections=cfg.connections,
        p50=float(h.get_value_at_percentile(50.0)),
        p90=float(h.get_value_at_percentile(90.0)),
        p99=float(h.get_value_at_percentile(99.0)),
        p999=float(h.get_value_at_percentile(99.9)),
        max=float(h.get_max_value()),
        mean=float(h.get_mean_value()),
        count=int(h.get_total_count()),
        lag_p50=lag_p50,
        lag_p99=lag_p99,
        lag_max=float(lag.get_max_value()),
        client_cpu=cpu / window,
        client_ceiling=ceiling,
        client_limited=bool(reasons),
        reasons=tuple(reasons),
        timeouts=timeouts,
        errors=errors,
        hits=sum(c.parser.hits for c in gen.conns),
        misses=sum(c.parser.misses for c in gen.conns),
        loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
    )


# --- command line --------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m netdevkit.bench.loadgen.mcload",
        description="Open-loop memcached load at a fixed rate; latency from scheduled send time.",
    )
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=11211)
    p.add_argument("--rate", type=float, required=True, help="requests per second, all connections")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--get-ratio", type=float, default=0.9)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--value-size", type=int, default=32)
    p.add_argument("--warmup", type=float, default=0.5, help="seconds sent but not measured")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("-j", "--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--markers",
        action="store_true",
        help="print 'mcload: window start/end' lines to stderr as the measured window opens/closes",
    )
    return p


def _loop_factory(name: str) -> Any:
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            return None
        return uvloop.new_event_loop
    return None


def _print_marker(what: str) -> None:
    print(f"mcload: window {what}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = LoadConfig(
            host=args.host,
            port=args.port,
            rate=args.rate,
            duration=args.duration,
            connections=args.connections,
            get_ratio=args.get_ratio,
            keys=args.keys,
            value_size=args.value_size,
            warmup=args.warmup,
        )
        with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
            rep = runner.run(run_load(cfg, _print_marker if args.markers else None))
    except NetdevkitError as err:
        print(f"mcload: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, RequestError) else 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(rep.to_dict()))
        return 0
    print(
        f"target {rep.target_rate:.0f}/s  achieved {rep.achieved_rate:.0f}/s  "
        f"(sent {rep.sent_rate:.0f}/s, ceiling {rep.client_ceiling:.0f}/s, "
        f"client cpu {rep.client_cpu:.2f} cores, {rep.loop})\n"
        f"latency us from scheduled send: p50 {rep.p50:.0f}  p90 {rep.p90:.0f}  "
        f"p99 {rep.p99:.0f}  p99.9 {rep.p999:.0f}  max {rep.max:.0f}  (n={rep.count}, "
        f"timeouts {rep.timeouts}, errors {rep.errors})\n"
        f"send lag us: p50 {rep.lag_p50:.0f}  p99 {rep.lag_p99:.0f}  max {rep.lag_max:.0f}"
    )
    if rep.client_limited:
        print("CLIENT-LIMITED: " + "; ".join(rep.reasons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
