"""Short real runs: netdevkit's own modes, and a server the user brings (--server).

Each runs ``netdevkit bench`` as a process against the real kernel (a testbed of
its own, removed at the end), with one sweep level to stay short.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from netdevkit import kver
from netdevkit.bench.results import Results
from netdevkit.netns import list_names

BENCH = [sys.executable, "-m", "netdevkit", "bench"]

#: a user's server: sockperf framing on plain asyncio (an epoll loop), nothing of netdevkit
SERVER = textwrap.dedent(
    """
    import asyncio, struct, sys
    H = struct.Struct(">QHI")

    async def handle(r, w):
        try:
            while True:
                seq, flags, length = H.unpack(await r.readexactly(14))
                body = await r.readexactly(length - 14) if length > 14 else b""
                if flags & 2:
                    w.write(H.pack(seq, flags & ~1, length) + body)
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    async def main():
        srv = await asyncio.start_server(handle, sys.argv[1], int(sys.argv[2]))
        async with srv:
            await srv.serve_forever()

    asyncio.run(main())
    """
)


def _run(argv: list[str], timeout: float = 120) -> tuple[Results, subprocess.Popen[bytes]]:
    proc = subprocess.Popen([*BENCH, *argv, "-j"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr.decode()
    assert not [ns for ns in list_names() if ns.startswith(f"ndkbench-{proc.pid}")]
    return Results.from_json(stdout.decode()), proc


@pytest.mark.kernel
@pytest.mark.slow
def test_netdevkit_modes_on_the_fast_loop(tmp_path: Path) -> None:
    modes = "adaptive-window,hot-spin,hybrid,busy-poll-thread"
    res, _ = _run(
        [
            *("--modes", modes, "--workload", "echo", "--servers", "fast", "--sweep", "0.5"),
            *("--duration", "0.5", "--out", str(tmp_path / "out")),
        ]
    )
    by_mode = {s.mode: s for s in res.samples}
    assert set(by_mode) >= {"adaptive-window", "hot-spin", "hybrid"}
    for s in by_mode.values():
        assert s.server == "fast" and s.latency.p50 > 0 and s.achieved_rate > 0
        assert s.server_cpu > 0
    # each mode's NAPI half, read back from the kernel while it ran
    assert by_mode["adaptive-window"].napi["irq_suspend_timeout"] == 20_000_000
    assert by_mode["hot-spin"].napi["defer_hard_irqs"] == 0
    assert by_mode["hybrid"].napi["gro_flush_timeout"] == 0
    if not kver.at_least("6.19"):  # threaded busy polling: said to be absent, not failed
        (skip,) = [k for k in res.skipped if k.mode == "busy-poll-thread"]
        assert "needs Linux 6.19" in skip.reason
        assert "busy-poll-thread" not in by_mode


@pytest.mark.kernel
@pytest.mark.slow
def test_bring_your_own_server(tmp_path: Path) -> None:
    server = tmp_path / "my_server.py"
    server.write_text(SERVER)
    res, _ = _run(
        [
            *("--server", f"{sys.executable} {server} {{addr}} {{port}}", "--client", "sockperf"),
            *("--modes", "base,fullbusy", "--sweep", "0.5", "--duration", "0.5"),
            *("--out", str(tmp_path / "out")),
        ]
    )
    assert res.config.server_cmd.endswith("{addr} {port}") and res.config.client == "sockperf"
    by_mode = {s.mode: s for s in res.samples}
    assert set(by_mode) == {"base", "fullbusy"}
    assert all(s.server == "byo" and s.latency.kind == "half-rtt" for s in res.samples)
    # fullbusy's epoll half reached the user's asyncio loop through attach: it busy polls
    full, base = by_mode["fullbusy"], by_mode["base"]
    assert full.napi["busy_polled_share"] > 0.5 and base.napi.get("busy_polled_share", 0) < 0.2
    # and it spins instead of sleeping in epoll_wait once per request as base does
    assert full.napi["server_sleeps_per_s"] < 0.5 * base.napi["server_sleeps_per_s"]
    assert (tmp_path / "out" / "tradeoff.png").stat().st_size > 5000


@pytest.mark.kernel
@pytest.mark.slow
def test_bring_your_own_http_server_with_wrk(tmp_path: Path) -> None:
    assert shutil.which("wrk"), "wrk is a Debian peer of the Makefile (apt-get install wrk)"
    (tmp_path / "index.html").write_text("hello\n")
    cmd = f"{sys.executable} -m http.server --bind {{addr}} --directory {tmp_path} {{port}}"
    res, _ = _run(
        [
            *("--server", cmd, "--client", "http", "--modes", "base", "--duration", "0.5"),
            *("--out", str(tmp_path / "out")),
        ]
    )
    (s,) = res.samples
    assert s.workload == "http" and s.load_target == 0 and s.latency.kind == "rtt"
    assert s.achieved_rate > 0 and 0 < s.latency.p50 <= s.latency.p99


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--server", "python3 srv.py --host {addr}"], "must contain {port}"),
        (["--server", "python3 srv.py {port} {user}"], "unknown placeholder {user}"),
        (["--server", "no-such-program-xyz {port}"], "not found"),
        (["--server", "python3 x.py {port}", "--workload", "echo"], "drop --workload"),
        (["--client", "redis"], "--client drives --server"),
        (["--target-p99", "soon"], "target 'soon'"),
        (["--modes", "base,warp"], "unknown mode warp"),
        (["--servers", "nginx"], "unknown server nginx"),
        (["--sweep", "lots"], "sweep 'lots'"),
    ],
)
def test_bad_input_one_line_exit_2(argv: list[str], needle: str) -> None:
    proc = subprocess.Popen([*BENCH, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, raw = proc.communicate(timeout=60)
    err = raw.decode()
    assert proc.returncode == 2, err
    assert needle in err and len(err.strip().splitlines()) == 1
    # nothing created: no testbed of this bench process
    assert not [ns for ns in list_names() if ns.startswith(f"ndkbench-{proc.pid}")]
