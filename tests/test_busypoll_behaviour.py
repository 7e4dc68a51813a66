"""The busy-poll mechanism, visible from outside: round trips through a deferred veth NAPI.

Setting (issue 4, "Tests", third bullet): the server-side veth NAPI defers its "IRQs"
(defer-hard-irqs 100, gro-flush-timeout 200 us). Requests travel client -> server and are
delivered by that NAPI (the veth "IRQ" is the client's napi_schedule on it), so without
busy polling every request waits for the 200 us deferral timer. The client-side NAPI carries
only the answers; it stays at the driver default (no deferral) so both servers pay the same
for the way back, and the difference measured is the server's own receive path.

- A stock asyncio echo server (asyncio streams, unchanged code) answers with a median round
  trip above 150 us.
- The same server on netdevkit's loop with the suspend preset (NAPI half: irq-suspend-timeout
  20 ms on top of the deferral; epoll half: prefer_busy_poll, budget 64) plus a short
  in-kernel busy-poll window (busy_poll_usecs 50) answers several times faster: its
  epoll_wait polls the NAPI itself and IRQ suspension keeps the deferral timer out of the way.
  Why the window: with busy_poll_usecs 0 an epoll_wait that finds nothing polls once,
  resumes IRQs and sleeps, so a ping-pong peer (whose next request is never there yet) falls
  back to the 200 us deferral; see :mod:`netdevkit.busypoll.aio`.

The client is Debian's ``sockperf ping-pong --tcp --full-rtt`` (C, so the client adds
little): thousands of round trips per run, median as sockperf reports it. The echo server runs
in a child process inside the server namespace. A second test checks that sockperf's client
accepts :mod:`netdevkit.bench.servers.rr` as a server (valid latency lines, no loss).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from netdevkit.bench.sockperf import SockperfReport, parse_report
from netdevkit.netdev.client import Netdev
from netdevkit.procs import stop
from netdevkit.testbed import Testbed
from netdevkit.tuning.presets import PRESETS, US

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

PORT = 12345
DEFER = 100
GRO_NS = 200 * US
SUSPEND = PRESETS["suspend"]
#: The in-kernel busy-poll window added to the suspend preset's epoll half.
WINDOW_US = 50

# An echo server written against plain asyncio streams; the loop is the only variable.
# sockperf's client ignores its own bytes coming back, so the echo speaks its framing:
# read the 14-byte header (u64 seq, u16 flags, u32 total length), then the rest, and send
# the message back with the CLIENT flag (0x1) cleared.
ECHO_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from netdevkit.busypoll import BusyPollConfig, loop_factory

    async def handle(reader, writer):
        try:
            while True:
                head = bytearray(await reader.readexactly(14))
                rest = await reader.readexactly(int.from_bytes(head[10:14], "big") - 14)
                head[9] &= 0xFE
                writer.write(bytes(head) + rest)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def main(host, port, ready):
        server = await asyncio.start_server(handle, host, port, reuse_address=True)
        open(ready, "w").write("ok")
        async with server:
            await server.serve_forever()

    host, port, ready, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if kind == "stock":
        factory = asyncio.new_event_loop
    else:
        usecs, budget, prefer = (int(x) for x in sys.argv[5:8])
        factory = loop_factory(BusyPollConfig(usecs, budget, bool(prefer)))
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main(host, port, ready))
    """
)


def _require_sockperf() -> str:
    path = shutil.which("sockperf")
    if path is None:
        pytest.skip("needs Debian's sockperf client (apt-get install sockperf)")
    return path


def _set_napi(tb: Testbed, side: str, defer: int, gro_ns: int, suspend_ns: int) -> None:
    """Set and read back every NAPI of one side's veth."""
    ns = tb.ns_of("server" if side == "server" else "client")
    ifindex = tb.server_ifindex if side == "server" else tb.client_ifindex
    with Netdev.open(ns) as nd:
        napis = nd.napi_dump(ifindex)
        assert napis, f"{side} veth has no NAPI: the testbed should have turned GRO on"
        for napi in napis:
            nd.napi_set(
                napi.id,
                defer_hard_irqs=defer,
                gro_flush_timeout=gro_ns,
                irq_suspend_timeout=suspend_ns,
            )
        for napi in nd.napi_dump(ifindex):
            assert (napi.defer_hard_irqs, napi.gro_flush_timeout) == (defer, gro_ns)
            assert napi.irq_suspend_timeout in (None, suspend_ns)


@contextmanager
def _server(tb: Testbed, argv: list[str], ready: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = tb.popen("server", argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not (os.path.exists(ready) and os.path.getsize(ready)):
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"server exited with {proc.returncode} before listening: {out}")
            if time.monotonic() > deadline:
                pytest.fail("server did not listen within 15 s")
            time.sleep(0.05)
        yield proc
    finally:
        stop(proc)
        if proc.stdout:
            proc.stdout.close()


def _sockperf(tb: Testbed, seconds: int, *extra: str) -> tuple[SockperfReport, str]:
    """Run the sockperf ping-pong client against the server; its report and its output."""
    argv = [_require_sockperf(), "ping-pong", "--tcp", "-i", tb.server_addr, "-p", str(PORT)]
    argv += ["-t", str(seconds), "-m", "64", *extra]
    out = tb.run("client", argv, capture_output=True, timeout=seconds + 30)
    text = re.sub(r"\x1b\[[0-9;]*m", "", (out.stdout + out.stderr).decode(errors="replace"))
    assert out.returncode == 0, f"sockperf failed ({out.returncode}): {text[-800:]}"
    return parse_report(text, full_rtt="--full-rtt" in extra), text


def _median_rtt(tb: Testbed, server_argv: list[str], ready: str) -> float:
    with _server(tb, server_argv, ready):
        report, text = _sockperf(tb, 3, "--full-rtt")
    total = report.observations
    assert total >= 500, f"too few round trips ({total}) for a median: {text[-800:]}"
    return report.percentiles[50.0]


def test_busy_poll_loop_beats_interrupt_deferral(testbed: Testbed) -> None:
    _require_sockperf()
    tb = testbed
    _set_napi(tb, "client", 0, 0, 0)  # answers: no deferral, same for both servers
    with tempfile.TemporaryDirectory(prefix="ndk-behaviour-") as tmp:
        script = os.path.join(tmp, "echo.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(ECHO_SERVER)
        base = [sys.executable, script, tb.server_addr, str(PORT)]

        # 1. Deferral only, no busy polling: every request waits for the 200 us timer.
        _set_napi(tb, "server", DEFER, GRO_NS, 0)
        stock = _median_rtt(tb, [*base, os.path.join(tmp, "r1"), "stock"], os.path.join(tmp, "r1"))

        # 2. The suspend preset on top (NAPI half: irq-suspend-timeout) and the same server
        #    on netdevkit's loop with the preset's epoll half plus a busy-poll window.
        assert SUSPEND.napi.irq_suspend_timeout
        _set_napi(tb, "server", DEFER, GRO_NS, SUSPEND.napi.irq_suspend_timeout)
        ep = SUSPEND.epoll
        assert ep.prefer_busy_poll and ep.busy_poll_usecs == 0
        params = [str(WINDOW_US), str(ep.busy_poll_budget), str(int(ep.prefer_busy_poll))]
        ready = os.path.join(tmp, "r2")
        busy = _median_rtt(tb, [*base, ready, "netdevkit", *params], ready)

    print(f"median RTT: stock asyncio {stock} us, netdevkit suspend+window {busy} us")
    assert stock > 150, f"stock asyncio median RTT {stock} us: the NAPI deferral did not show"
    assert busy < stock / 2.5, (
        f"netdevkit loop (suspend preset + {WINDOW_US} us busy-poll window) median RTT "
        f"{busy} us vs stock asyncio {stock} us: not several times lower"
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["--loop", "netdevkit", "--preset", "napibusy"],
        ["--loop", "netdevkit", "--preset", "suspend"],  # adaptive window by default
        ["--loop", "fast", "--preset", "fullbusy"],
        ["--loop", "fast", "--usecs", "0", "--budget", "64", "--prefer", "--hybrid"],
        ["--loop", "threads", "--sock-busy-poll", "50"],
    ],
    ids=["netdevkit-napibusy", "netdevkit-suspend", "fast-fullbusy", "fast-hybrid", "threads"],
)
def test_sockperf_client_measures_rr_server(testbed: Testbed, extra: list[str]) -> None:
    _require_sockperf()
    tb = testbed
    with tempfile.TemporaryDirectory(prefix="ndk-rr-") as tmp:
        ready = os.path.join(tmp, "ready")
        argv = [sys.executable, "-m", "netdevkit.bench.servers.rr", "--host", tb.server_addr]
        argv += ["--port", str(PORT), *extra]
        with _server(tb, [*argv, "--ready-file", ready], ready) as proc:
            report, text = _sockperf(tb, 2)
            proc.terminate()
            out, _ = proc.communicate(timeout=10)
    assert report.observations >= 500, text[-800:]
    assert "# dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0" in text
    assert 0 < report.percentiles[50.0] <= report.percentiles[99.0] < 100_000
    assert proc.returncode == 0, out.decode(errors="replace")
    assert b"rr: stopped:" in out
    if "suspend" in extra:  # the default window of netdevkit's loop for IRQ suspension
        assert b"adaptive_us=50" in out
