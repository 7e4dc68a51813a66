"""The bench's open-loop load: one thread that spins, sends on schedule and reads in the same loop.

``python -m netdevkit.bench.loadgen.openloop --host H --port P --protocol sockperf|memcached|resp
--rate R --duration S [--connections C] [-j] [--markers]`` sends requests at a fixed aggregate
rate over C connections (request *i* on connection ``i % C``) and times every answer from the
request's *intended* send time ``t0 + i / R``.

Why this design, measured on the 2-vCPU testbed (``../shared/KERNEL.md``, "Measured on the
testbed"):

- ``sockperf under-load`` runs a pacing thread that spins and a receiving thread blocked in
  ``recvfrom``. Pinned to one CPU the receiver runs only when the scheduler preempts the
  spinner, so each answer waits up to a scheduler slice: p99 1.9 ms at 15k/s on plain loopback
  against 58 us in ping-pong. The tails it reports are its own.
- A single thread that *sleeps* until the next send (timers, ``select`` timeouts) was worse:
  an idle vCPU here wakes from a timer late, often by hundreds of microseconds.
- A single thread that *spins*, sending when a request is due and reading every socket without
  blocking in the same loop, kept p99 within 2x of ping-pong's at light load and paced 45k/s.

So this generator never blocks and never sleeps: one ``epoll_wait(timeout=0)`` per turn of the
loop (it never busy polls: a zero timeout does not), sends whatever is due, reads whatever
arrived. It uses one core all the time by design; whether it *kept up* is what it measures
about itself:

- **send lag**: actual send time - intended send time, per request (p50, p99, max);
- **busy share**: the share of its time spent in turns of the loop that sent or read something.
  A generator busy most of the time is the bottleneck, not the server.

A sample is ``client_limited`` when the generator sent under 95% of the target in the window,
its median lag exceeded :data:`LAG_P50_LIMIT_US` or its p99 lag :data:`LAG_P99_LIMIT_US`, or
its busy share exceeded :data:`BUSY_LIMIT`. Its numbers then describe the client; the bench
never presents them as the server's.

Latency is from the intended send time, so a server (or client) that stalls shows up in every
request that was due meanwhile (no coordinated omission, as wrk2 measures). Requests still
unanswered when the drain ends are counted as ``timeouts`` and recorded with the latency they
had reached.

Every protocol here has a fixed-size answer (one key read back, set once before the load
starts), so answers are counted by bytes: ``sockperf`` framing (a 14-byte message with
``CLIENT | PONG_REQUEST``, echoed), memcached ``get`` of one 32-byte value, and RESP ``GET`` of
one 32-byte value (redis). The first answer on every connection is checked byte for byte.
``--rate 0`` is ping-pong: one request in flight on one connection, the next sent as soon as
the answer came.
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from ...errors import NetdevkitError, RequestError, ToolError, translate_oserror

__all__ = [
    "BUSY_LIMIT",
    "PROTOCOLS",
    "LoadSpec",
    "OpenLoopReport",
    "Protocol",
    "client_limits",
    "main",
    "percentiles",
    "run",
]

#: the generator is late systematically, not just jittery (us)
LAG_P50_LIMIT_US = 20.0
#: the generator falls behind in bursts (us)
LAG_P99_LIMIT_US = 200.0
#: share of its time the generator spent working; above it, it is the bottleneck
BUSY_LIMIT = 0.9
SENT_FRACTION = 0.95
_VALUE = b"n" * 32
_KEY = b"ndkload"


@dataclass(frozen=True, slots=True)
class Protocol:
    """A request with a fixed-size answer, and what to send once per connection first."""

    name: str
    request: bytes
    reply: bytes
    #: sent once on every connection before the load; answered by *setup_reply*
    setup: bytes = b""
    setup_reply: bytes = b""
    #: the latency reported is half the round trip (sockperf's convention)
    half_rtt: bool = False

    def check(self, first: bytes) -> None:
        """Raise :class:`ToolError` unless *first* is the answer this protocol expects."""
        if first != self.reply:
            raise ToolError(
                f"{self.name}: the server answered {first[:40]!r}, expected {self.reply[:40]!r} "
                f"(is it a {self.name} server?)"
            )


def _sockperf() -> Protocol:
    # 14-byte header: u64 sequence 0, u16 flags CLIENT|PONG_REQUEST, u32 total length 14;
    # the answer is the same message with CLIENT cleared (bench.servers.framing).
    req = (0).to_bytes(8, "big") + (0x3).to_bytes(2, "big") + (14).to_bytes(4, "big")
    rep = (0).to_bytes(8, "big") + (0x2).to_bytes(2, "big") + (14).to_bytes(4, "big")
    return Protocol("sockperf", req, rep, half_rtt=True)


def _memcached() -> Protocol:
    setup = b"set %s 0 0 %d\r\n%s\r\n" % (_KEY, len(_VALUE), _VALUE)
    reply = b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (_KEY, len(_VALUE), _VALUE)
    return Protocol("memcached", b"get %s\r\n" % _KEY, reply, setup, b"STORED\r\n")


def _resp() -> Protocol:
    def bulk(x: bytes) -> bytes:
        return b"$%d\r\n%s\r\n" % (len(x), x)

    setup = b"*3\r\n" + bulk(b"SET") + bulk(_KEY) + bulk(_VALUE)
    request = b"*2\r\n" + bulk(b"GET") + bulk(_KEY)
    return Protocol("resp", request, bulk(_VALUE), setup, b"+OK\r\n")


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (_sockperf(), _memcached(), _resp())}


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to send. Validated on construction (:class:`RequestError`)."""

    host: str
    port: int
    protocol: str = "sockperf"
    #: requests/s over all connections; 0 is ping-pong (one in flight, one connection)
    rate: float = 1000.0
    duration: float = 1.0
    connections: int = 1
    warmup: float = 0.3
    drain: float = 0.5

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            known = ", ".join(PROTOCOLS)
            raise RequestError(f"protocol {self.protocol!r}: one of {known}")
        if not 0 < self.port < 65536:
            raise RequestError(f"port {self.port}: must be 1..65535")
        if not 0 <= self.rate <= 5_000_000:
            raise RequestError(f"rate {self.rate}: 0 (ping-pong) .. 5000000 requests/s")
        if not 0 < self.duration <= 3600:
            raise RequestError(f"duration {self.duration}: must be > 0 and <= 3600 seconds")
        if not 1 <= self.connections <= 1000:
            raise RequestError(f"connections {self.connections}: must be 1..1000")
        if self.rate == 0 and self.connections != 1:
            raise RequestError("ping-pong (rate 0) runs on one connection")
        if self.warmup < 0 or self.drain < 0:
            raise RequestError("warm-up and drain must be >= 0 seconds")


@dataclass(frozen=True, slots=True)
class OpenLoopReport:
    """What happened in the measured window; latencies in microseconds."""

    protocol: str
    target_rate: float
    achieved_rate: float
    sent_rate: float
    duration: float
    connections: int
    #: latency percentiles (whole round trips; half for sockperf framing when half_rtt)
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    mean: float
    count: int
    half_rtt: bool
    lag_p50: float
    lag_p99: float
    lag_max: float
    #: share of the window the loop spent in turns that sent or read something
    busy_share: float
    #: the generator's own CPU over the window (cores)
    client_cpu: float
    timeouts: int
    client_limited: bool
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


def percentiles(values_ns: Sequence[int] | object, pcts: Sequence[float]) -> list[float]:
    """Percentiles (nearest rank, inclusive) of nanosecond values, in microseconds."""
    import numpy as np

    arr = np.sort(np.asarray(values_ns, dtype=np.int64))
    if arr.size == 0:
        return [0.0 for _ in pcts]
    out = []
    for p in pcts:
        rank = max(1, int(np.ceil(p / 100.0 * arr.size)))
        out.append(float(arr[rank - 1]) / 1000.0)
    return out


def client_limits(
    target: float, sent_rate: float, lag_p50: float, lag_p99: float, busy_share: float
) -> list[str]:
    """Why a sample describes the generator rather than the server (pure; empty: it does not)."""
    out = []
    if target > 0 and sent_rate < SENT_FRACTION * target:
        out.append(f"sent {sent_rate:.0f}/s of {target:.0f}/s")
    if lag_p50 > LAG_P50_LIMIT_US:
        out.append(f"median send lag {lag_p50:.0f} us")
    if lag_p99 > LAG_P99_LIMIT_US:
        out.append(f"p99 send lag {lag_p99:.0f} us")
    if busy_share > BUSY_LIMIT:
        out.append(f"generator busy {busy_share:.0%} of its time")
    return out


class _Conn:
    """One connection: its socket, the FIFO of outstanding request numbers, partial bytes."""

    __slots__ = ("fifo", "first", "partial", "sock", "unsent", "verified")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fifo: deque[int] = deque()
        self.partial = 0
        self.unsent = b""
        self.verified = False
        self.first = bytearray()  # the first answer, until it is whole and checked

    def check_first(self, proto: Protocol, data: memoryview) -> None:
        """Collect the first answer across reads; check it once it is whole."""
        self.first += data[: len(proto.reply) - len(self.first)]
        if len(self.first) >= len(proto.reply):
            proto.check(bytes(self.first))
            self.verified = True


def _connect(spec: LoadSpec, proto: Protocol) -> list[_Conn]:
    conns: list[_Conn] = []
    for _ in range(spec.connections):
        try:
            s = socket.create_connection((spec.host, spec.port), timeout=5.0)
        except OSError as err:
            for c in conns:
                c.sock.close()
            raise translate_oserror(err, f"connect to {spec.host}:{spec.port}") from None
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(_Conn(s))
        if proto.setup:
            s.sendall(proto.setup)
            got = b""
            while len(got) < len(proto.setup_reply):
                chunk = s.recv(4096)
                if not chunk:
                    raise ToolError(f"{proto.name}: the server closed the connection at setup")
                got += chunk
            if got != proto.setup_reply:
                for c in conns:
                    c.sock.close()
                raise ToolError(
                    f"{proto.name}: the server answered the setup with {got[:40]!r}, expected "
                    f"{proto.setup_reply!r} (is it a {proto.name} server?)"
                )
        s.setblocking(False)
    return conns


class _Window:
    """Prints the window markers once, when the first measured request is due and at its end."""

    def __init__(self, markers: Callable[[str], None] | None) -> None:
        self.markers = markers
        self.opened = False
        self.closed = False
        self.cpu0 = 0.0
        self.cpu1 = 0.0

    def open(self) -> None:
        self.opened = True
        self.cpu0 = _cpu_seconds()
        if self.markers is not None:
            self.markers("start")

    def close(self) -> None:
        self.closed = True
        self.cpu1 = _cpu_seconds()
        if self.markers is not None:
            self.markers("end")


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run(spec: LoadSpec, markers: Callable[[str], None] | None = None) -> OpenLoopReport:
    """Drive the server; see the module docstring. Raises :class:`NetdevkitError` on errors."""
    proto = PROTOCOLS[spec.protocol]
    conns = _connect(spec, proto)
    try:
        if spec.rate == 0:
            return _ping_pong(spec, proto, conns[0], _Window(markers))
        return _open_loop(spec, proto, conns, _Window(markers))
    finally:
        for c in conns:
            c.sock.close()


def _open_loop(spec: LoadSpec, proto: Protocol, conns: list[_Conn], win: _Window) -> OpenLoopReport:
    import numpy as np

    interval = 1e9 / spec.rate
    first = int(spec.warmup * spec.rate)  # the first measured request
    total = first + max(1, int(spec.duration * spec.rate))
    lat = np.full(total, -1, dtype=np.int64)
    lag = np.zeros(total, dtype=np.int64)
    ep = select.epoll()
    by_fd = {c.sock.fileno(): c for c in conns}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)
    req, size = proto.request, len(proto.reply)
    nconn = len(conns)
    clock = time.perf_counter_ns
    t0 = clock() + 1_000_000
    end_ns = t0 + int(total * interval)
    deadline = end_ns + int(spec.drain * 1e9)
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    unsent = [0]  # connections with bytes still to send
    nxt = 0
    outstanding = 0
    busy_ns = 0
    win_busy0 = 0
    win_busy = 0
    try:
        while True:
            turn = clock()
            worked = False
            while nxt < total:
                due = t0 + int(nxt * interval)
                if due > turn:
                    break
                if nxt == first:
                    win.open()
                    win_busy0 = busy_ns
                c = conns[nxt % nconn]
                lag[nxt] = clock() - due  # how late the send starts
                _send(c, req, unsent)
                c.fifo.append(nxt)
                nxt += 1
                outstanding += 1
                worked = True
            for fd, _ev in ep.poll(0):
                c = by_fd[fd]
                try:
                    n = c.sock.recv_into(buf)
                except BlockingIOError:
                    continue
                if n == 0:
                    raise ToolError(f"{proto.name}: the server closed a connection")
                now = clock()
                if not c.verified:
                    c.check_first(proto, view[:n])
                done, c.partial = divmod(c.partial + n, size)
                for _ in range(done):
                    i = c.fifo.popleft()
                    lat[i] = now - (t0 + int(i * interval))
                outstanding -= done
                worked = True
            if unsent[0]:  # a send that did not go whole (a full socket buffer)
                for c in conns:
                    if c.unsent:
                        _send(c, b"", unsent)
            if worked:
                busy_ns += clock() - turn
            if nxt >= total and not win.closed:
                win.close()
                win_busy = busy_ns - win_busy0
            if nxt >= total and outstanding == 0:
                break
            if turn > deadline:
                break
    finally:
        ep.close()
    if not win.opened:
        win.open()
    if not win.closed:
        win.close()
        win_busy = busy_ns - win_busy0
    window = (total - first) * interval / 1e9
    measured = lat[first:]
    timeouts = int((measured < 0).sum())
    if timeouts:
        stop = clock()
        idx = np.nonzero(measured < 0)[0] + first
        measured = measured.copy()
        measured[idx - first] = stop - (t0 + (idx * interval).astype(np.int64))
    answered_in_window = int((lat[first:] >= 0).sum())
    return _report(
        spec,
        proto,
        measured,
        lag[first:],
        answered=answered_in_window,
        sent=total - first,
        window=window,
        busy=win_busy / (window * 1e9) if window > 0 else 0.0,
        cpu=(win.cpu1 - win.cpu0) / window if window > 0 else 0.0,
        timeouts=timeouts,
    )


def _send(c: _Conn, data: bytes, unsent: list[int]) -> None:
    """Send *data* after anything still unsent on *c*, without blocking; *unsent* counts
    the connections that hold bytes back."""
    had = bool(c.unsent)
    out = c.unsent + data if had else data
    if not out:
        return
    try:
        n = c.sock.send(out)
    except BlockingIOError:
        n = 0
    except OSError as err:
        raise translate_oserror(err, "send") from None
    c.unsent = out[n:]
    unsent[0] += bool(c.unsent) - had


def _ping_pong(spec: LoadSpec, proto: Protocol, c: _Conn, win: _Window) -> OpenLoopReport:
    """One request in flight: send, spin on the socket until the whole answer came, repeat."""
    import numpy as np

    clock = time.perf_counter_ns
    req, size = proto.request, len(proto.reply)
    buf = bytearray(1 << 16)
    sock = c.sock
    start = clock()
    measure_from = start + int(spec.warmup * 1e9)
    stop = measure_from + int(spec.duration * 1e9)
    lat: list[int] = []
    held = [0]
    opened = False
    while True:
        sent = clock()
        if sent >= stop:
            break
        if not opened and sent >= measure_from:
            win.open()
            opened = True
        _send(c, req, held)
        while c.unsent:  # one request in flight: finish sending it first
            _send(c, b"", held)
        got = 0
        while got < size:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                if clock() - sent > 5_000_000_000:
                    raise ToolError(f"{proto.name}: no answer in 5 s") from None
                continue
            if n == 0:
                raise ToolError(f"{proto.name}: the server closed the connection")
            if not c.verified:
                c.check_first(proto, memoryview(buf)[:n])
            got += n
        if opened:
            lat.append(clock() - sent)
    if not opened:
        win.open()
    win.close()
    window = (clock() - measure_from) / 1e9
    arr = np.asarray(lat, dtype=np.int64)
    return _report(
        spec,
        proto,
        arr,
        np.zeros(0, dtype=np.int64),
        answered=len(lat),
        sent=len(lat),
        window=window,
        busy=1.0,
        cpu=(win.cpu1 - win.cpu0) / window if window > 0 else 0.0,
        timeouts=0,
    )


def _report(
    spec: LoadSpec,
    proto: Protocol,
    lat_ns: object,
    lag_ns: object,
    *,
    answered: int,
    sent: int,
    window: float,
    busy: float,
    cpu: float,
    timeouts: int,
) -> OpenLoopReport:
    import numpy as np

    arr = np.asarray(lat_ns, dtype=np.int64)
    scale = 0.5 if proto.half_rtt else 1.0
    p50, p90, p99, p999 = (x * scale for x in percentiles(arr, (50, 90, 99, 99.9)))
    mx = float(arr.max()) / 1000 * scale if arr.size else 0.0
    mean = float(arr.mean()) / 1000 * scale if arr.size else 0.0
    lag50, lag99, lagmax = percentiles(lag_ns, (50, 99, 100))
    sent_rate = sent / window if window > 0 else 0.0
    closed = spec.rate == 0
    reasons = [] if closed else client_limits(spec.rate, sent_rate, lag50, lag99, busy)
    return OpenLoopReport(
        protocol=proto.name,
        target_rate=spec.rate,
        achieved_rate=answered / window if window > 0 else 0.0,
        sent_rate=sent_rate,
        duration=window,
        connections=spec.connections,
        p50=p50,
        p90=p90,
        p99=p99,
        p999=p999,
        max=mx,
        mean=mean,
        count=int(arr.size),
        half_rtt=proto.half_rtt,
        lag_p50=lag50,
        lag_p99=lag99,
        lag_max=lagmax,
        busy_share=min(1.0, busy),
        client_cpu=cpu,
        timeouts=timeouts,
        client_limited=bool(reasons),
        reasons=tuple(reasons),
    )


# --- command line --------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m netdevkit.bench.loadgen.openloop",
        description="Open-loop request/response load from one spinning thread; latency "
        "timed from each request's intended send time.",
    )
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--protocol", default="sockperf", help=", ".join(PROTOCOLS))
    p.add_argument("--rate", type=float, default=1000.0, help="requests/s; 0 = ping-pong")
    p.add_argument("--duration", type=float, default=1.0, help="measured seconds")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--warmup", type=float, default=0.3, help="seconds sent before measuring")
    p.add_argument("--drain", type=float, default=0.5, help="seconds to wait for late answers")
    p.add_argument("-j", "--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--markers",
        action="store_true",
        help="print 'openloop: window start/end' lines as the measured window opens/closes",
    )
    return p


def _marker(what: str) -> None:
    print(f"openloop: window {what}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        spec = LoadSpec(
            args.host,
            args.port,
            args.protocol,
            args.rate,
            args.duration,
            args.connections,
            args.warmup,
            args.drain,
        )
        rep = run(spec, _marker if args.markers else None)
    except NetdevkitError as err:
        print(f"openloop: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, RequestError) else 1
    if args.json:
        print(json.dumps(rep.to_dict()), flush=True)
        return 0
    kind = "half round trip" if rep.half_rtt else "round trip"
    print(
        f"{rep.protocol}: {rep.achieved_rate:.0f}/s answered of {rep.target_rate:.0f}/s over "
        f"{rep.connections} connection(s); latency ({kind}) p50 {rep.p50:.1f} p90 {rep.p90:.1f} "
        f"p99 {rep.p99:.1f} p99.9 {rep.p999:.1f} max {rep.max:.1f} us; send lag p50 "
        f"{rep.lag_p50:.1f} p99 {rep.lag_p99:.1f} us; generator busy {rep.busy_share:.0%}"
    )
    if rep.client_limited:
        print("CLIENT-LIMITED: " + "; ".join(rep.reasons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
