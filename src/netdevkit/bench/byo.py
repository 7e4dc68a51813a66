"""Bring your own server: ``netdevkit bench --server 'CMD {addr} {port}' --client KIND``.

The user's program is started in the testbed's server namespace with ``{addr}``
and ``{port}`` replaced by the address and port it must listen on, and is treated
like every other unmodified server: once it listens, its epoll contexts get each
mode's epoll half through :func:`netdevkit.attach.attach`, and the mode's NAPI half
goes on the testbed's NAPI. netdevkit's own loop modes (adaptive window, hot-socket
spin, hybrid) need netdevkit's loop and are not run on it.

Clients (``--client``):

=========  ==================================================================
sockperf   Debian's sockperf client: the server speaks sockperf's framing
           (14-byte header; see :mod:`netdevkit.bench.servers.rr`); swept open loop
memcached  :mod:`netdevkit.bench.loadgen.mcload` (memcached text protocol), open loop
redis      ``redis-benchmark -c 1 -t get`` (closed loop: ping-pong only)
http       ``wrk -t 1 -c 1 --latency`` on ``http://ADDR:PORT/`` (Debian package
           wrk; closed loop: ping-pong only)
=========  ==================================================================

:func:`check_template` validates a command line without starting anything.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import string

from ..errors import RequestError, ToolError
from .site import Site
from .workloads import ServerSpec

__all__ = ["CLIENTS", "argv_of", "byo_spec", "check_template"]

#: client kind -> (what it speaks, the program it needs, its Debian package)
CLIENTS: dict[str, tuple[str, str, str]] = {
    "sockperf": ("sockperf framing", "sockperf", "sockperf"),
    "memcached": ("memcached text protocol", "", ""),
    "redis": ("redis protocol", "redis-benchmark", "redis-tools"),
    "http": ("HTTP/1.1", "wrk", "wrk"),
}
_FIELDS = ("addr", "port")
BYO_SERVER = "byo"


def _fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise RequestError(
            f"server command {template!r}: {err} (write literal braces as {{{{ }}}})"
        ) from None


def check_template(template: str, client: str) -> None:
    """Raise :class:`RequestError` (one line) unless *template* can be started."""
    if client not in CLIENTS:
        raise RequestError(f"unknown client {client!r} (known: {', '.join(CLIENTS)})")
    if not template.strip():
        raise RequestError("server command: empty command line")
    names = _fields(template)
    unknown = sorted({n for n in names if n not in _FIELDS})
    if unknown:
        raise RequestError(
            f"server command: unknown placeholder {{{unknown[0]}}} (known: {{addr}}, {{port}})"
        )
    if "port" not in names:
        raise RequestError(
            "server command: the command line must contain {port} (the port the bench drives), "
            "e.g. 'python3 myserver.py --host {addr} --port {port}'"
        )
    try:
        argv = shlex.split(template)
    except ValueError as err:
        raise RequestError(f"server command: cannot split the command line: {err}") from None
    prog = argv[0]
    if ("/" in prog and not os.access(prog, os.X_OK)) or (
        "/" not in prog and shutil.which(prog) is None
    ):
        raise RequestError(f"server command: program {prog!r} not found or not executable")
    need, pkg = CLIENTS[client][1:]
    if need and shutil.which(need) is None:
        raise RequestError(f"client {client} needs {need}: install the Debian package '{pkg}'")


def argv_of(template: str, addr: str, port: int) -> list[str]:
    """The command line with ``{addr}`` and ``{port}`` filled in (split like a shell)."""
    return [part.format(addr=addr, port=port) for part in shlex.split(template)]


def byo_spec(template: str, client: str, tb: Site, port: int, loads: tuple[int, ...]) -> ServerSpec:
    """The user's server as a :class:`ServerSpec` configured through attach."""
    check_template(template, client)
    return ServerSpec(
        client, BYO_SERVER, argv_of(template, tb.server_addr, port), port, True, loads, client
    )


_WRK_PCT = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_UNIT = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_wrk(text: str) -> tuple[dict[int, float], float]:
    """wrk ``--latency`` output -> ({50: us, 75: us, 90: us, 99: us}, requests/s)."""
    pct = {int(p): float(v) * _UNIT[u] for p, v, u in _WRK_PCT.findall(text)}
    rps = _WRK_RPS.search(text)
    if 50 not in pct or 99 not in pct or rps is None:
        tail = " / ".join(text.strip().splitlines()[-4:])
        raise ToolError(f"wrk printed no latency distribution: {tail}")
    return pct, float(rps.group(1))
