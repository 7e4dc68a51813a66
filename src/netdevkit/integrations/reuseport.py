"""One NAPI per worker: SO_REUSEPORT listeners steered by the packet's receive queue.

A multi-worker server shares one listening socket, so every worker accepts connections of
every receive queue, and each worker's epoll context watches sockets of several NAPIs: it
busy polls only the NAPI of its last ready socket (``attach --show``: "mixed NAPIs").
memcached's ``-N`` is the model of the fix: here each worker gets its own ``SO_REUSEPORT``
listener on the same address, and a classic BPF program on the group picks, for each new
connection, the listener of the worker whose index is the connection's receive queue
(modulo the number of workers). With as many workers as queues, every worker's connections
come in on one queue, so its epoll context busy polls one NAPI.

    python -m netdevkit.integrations.reuseport --workers 4 --port 8000 -- \\
        uvicorn app:app --fd {fd} --loop netdevkit.integrations.uvicorn:suspend

starts the command once per worker with ``{fd}`` replaced by that worker's listener (also
in ``$NETDEVKIT_LISTEN_FD``); uvicorn ``--fd``, gunicorn ``-b fd://{fd} -w 1`` and hypercorn
``--bind fd://{fd}`` take it.

Kernel facts relied on (Linux net/core/sock_reuseport.c, filter.c, include/linux/skbuff.h):

- ``reuseport_select_sock`` runs a classic program attached with
  ``SO_ATTACH_REUSEPORT_CBPF`` through ``run_bpf_filter``: its return value indexes
  ``reuse->socks[]``; an index ``>= num_socks`` returns NULL and the kernel falls back to
  its hash selection (``reuseport_select_sock_by_hash``), so a packet without a recorded
  queue still finds a listener. For TCP it runs on the SYN (the listener lookup).
- ``reuse->socks[]`` is filled in the order the sockets joined the group; for TCP that is
  ``listen()`` (``inet_hash`` -> ``reuseport_add_sock`` appends). :func:`listeners` makes
  and listens all of them in one process, in order, so index i is listener i. Closing a
  listener moves the last one into its slot (``reuseport_detach_sock``): the listeners
  must stay open for as long as the group serves.
- A program attached to any socket of the group is the group's program
  (``reuseport_attach_prog`` sets ``reuse->prog``).
- ``SKF_AD_OFF + SKF_AD_QUEUE`` loads ``skb->queue_mapping`` (filter.c,
  ``convert_bpf_extensions``), and a driver's ``skb_record_rx_queue(skb, q)`` stores
  ``q + 1`` there (0: no queue recorded). The program therefore returns ``N`` (out of
  range: the hash fallback) for 0 and ``(queue_mapping - 1) % N`` otherwise.
- veth records no rx queue: ``veth_xmit`` picks the peer's rx queue by the sender's
  ``queue_mapping`` (its tx queue, stored without the + 1) and leaves it in the skb (the
  ``skb_record_rx_queue`` call there was removed upstream). On veth ``queue_mapping`` is
  the queue itself, 0 included: ``raw_queue=True`` (``--raw-queue``) returns
  ``queue_mapping % N``. Seen on Linux 6.18 with a 4-queue testbed: the +1 program sent
  queues 1-3 to listeners 0-2 and queue 0 to the hash; the raw one, queue i to listener i.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence

from .._argcheck import int_arg, str_arg
from ..errors import KernelError, NetdevkitError, RequestError
from . import exit_with

__all__ = ["SO_ATTACH_REUSEPORT_CBPF", "attach_queue_steering", "listeners", "queue_program"]

SO_ATTACH_REUSEPORT_CBPF = 51  # include/uapi/asm-generic/socket.h
SKF_AD_OFF = -0x1000  # include/uapi/linux/filter.h
SKF_AD_QUEUE = 24

# Classic BPF opcodes (include/uapi/linux/bpf_common.h)
_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
_SUB_K = 0x04 | 0x10 | 0x00  # BPF_ALU | BPF_SUB | BPF_K
_MOD_K = 0x04 | 0x90 | 0x00  # BPF_ALU | BPF_MOD | BPF_K
_RET_A = 0x06 | 0x10  # BPF_RET | BPF_A
_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K

#: The most listeners a reuseport group may hold (U16_MAX in sock_reuseport.c).
MAX_WORKERS = 65535


def queue_program(workers: int, *, raw_queue: bool = False) -> list[tuple[int, int, int, int]]:
    """The classic BPF program (code, jt, jf, k) steering by receive queue to *workers*.

    ``raw_queue=False`` (drivers that record the rx queue: ``queue_mapping`` = queue + 1):
    queue ``q`` goes to worker ``q % workers``, a packet without a recorded queue to the
    kernel's hash. ``raw_queue=True`` (veth): ``queue_mapping`` is the queue itself.
    """
    int_arg("workers", workers)
    if not 1 <= workers <= MAX_WORKERS:
        raise RequestError(f"workers={workers} is out of range: must be 1..{MAX_WORKERS}")
    load = (_LD_W_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_QUEUE) & 0xFFFFFFFF)  # A = queue_mapping
    if raw_queue:
        return [load, (_MOD_K, 0, 0, workers), (_RET_A, 0, 0, 0)]
    return [
        load,
        (_JEQ_K, 3, 0, 0),  # no queue recorded: return workers (the hash fallback)
        (_SUB_K, 0, 0, 1),  # A = rx queue
        (_MOD_K, 0, 0, workers),
        (_RET_A, 0, 0, 0),
        (_RET_K, 0, 0, workers),
    ]


def attach_queue_steering(sock: socket.socket, workers: int, *, raw_queue: bool = False) -> None:
    """Attach :func:`queue_program` to *sock*'s reuseport group (SO_ATTACH_REUSEPORT_CBPF)."""
    program = queue_program(workers, raw_queue=raw_queue)
    raw = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(raw, len(raw))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HxxxxxxQ", len(program), ctypes.addressof(buf))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as err:
        raise KernelError(
            err.errno or 0, "SO_ATTACH_REUSEPORT_CBPF (the queue-steering program)"
        ) from err


def listeners(
    host: str, port: int, workers: int, backlog: int = 2048, *, raw_queue: bool = False
) -> list[socket.socket]:
    """*workers* TCP listeners on (*host*, *port*) in one SO_REUSEPORT group, listened in
    order (listener i is the group's index i) and steered by receive queue
    (:func:`queue_program`; *raw_queue* for veth). Inheritable, so that a worker process
    can be given one."""
    str_arg("host", host)
    int_arg("port", port)
    queue_program(workers, raw_queue=raw_queue)  # checks workers
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(workers):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            # Accepted sockets inherit TCP_NODELAY from the listener. A server given the
            # fd may not set it: uvicorn --fd wraps it as AF_UNIX (socket.fromfd), so
            # asyncio skips its TCP_NODELAY, and Nagle with delayed ACKs held each
            # response ~40 ms (4 workers on the testbed: 44 ms p50 against 2 ms).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.set_inheritable(True)
        attach_queue_steering(socks[0], workers, raw_queue=raw_queue)
    except OSError as err:
        for sock in socks:
            sock.close()
        raise KernelError(err.errno or 0, f"listen on {host}:{port}") from err
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m netdevkit.integrations.reuseport",
        description="Start CMD once per worker, each with its own SO_REUSEPORT listener "
        "({fd} in CMD, $NETDEVKIT_LISTEN_FD), connections steered to worker "
        "(receive queue mod workers).",
    )
    p.add_argument("--workers", type=int, required=True, help="workers (one per rx queue)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0)")
    p.add_argument("--port", type=int, required=True, help="TCP port")
    p.add_argument("--backlog", type=int, default=2048, help="listen backlog (2048)")
    p.add_argument(
        "--raw-queue",
        action="store_true",
        help="the interface is veth: the packet's queue_mapping is the queue (no + 1)",
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS... ({fd}: the listener)")
    return p


def _spawn(cmd: Sequence[str], socks: list[socket.socket]) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i, sock in enumerate(socks):
        fd = str(sock.fileno())
        env = {**os.environ, "NETDEVKIT_LISTEN_FD": fd, "NETDEVKIT_WORKER": str(i)}
        argv = [arg.replace("{fd}", fd) for arg in cmd]
        procs.append(subprocess.Popen(argv, pass_fds=(sock.fileno(),), env=env))
    return procs


def _supervise(procs: list[subprocess.Popen[bytes]]) -> int:
    """Wait for the first worker to end (or a signal), stop the others; its status."""

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    _, status = os.wait()
    forward(signal.SIGTERM, None)
    for proc in procs:
        proc.wait()
    return os.waitstatus_to_exitcode(status)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    try:
        if not cmd:
            raise RequestError("no command: -- CMD ARGS... ({fd} is the worker's listener)")
        socks = listeners(
            args.host, args.port, args.workers, args.backlog, raw_queue=args.raw_queue
        )
        procs = _spawn(cmd, socks)
    except NetdevkitError as err:
        exit_with(err)
    except OSError as err:
        exit_with(RequestError(f"cannot start {cmd[0]}: {err.strerror}"))
    code = _supervise(procs)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
