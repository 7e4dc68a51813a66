"""Per-socket busy-poll options (SOL_SOCKET) and the NAPI id a socket's traffic came from.

Kernel facts (net/core/sock.c ``sk_setsockopt``/``sk_getsockopt``), checked on Linux 6.18:

- ``SO_BUSY_POLL`` (46): usecs a blocking read/poll on this socket busy polls its NAPI.
  Negative -> EINVAL. Settable without privileges on 6.18 [seen as uid 65534]; older kernels
  wanted CAP_NET_ADMIN to raise it above the current value, which is still mapped to
  :class:`PermissionDenied` here. Default: the ``net.core.busy_read`` sysctl.
- ``SO_INCOMING_NAPI_ID`` (56): read only (setsockopt -> ENOPROTOOPT). The NAPI id of the
  last packet the socket received; 0 when the traffic came through no NAPI (loopback, veth
  without GRO/XDP, packets that took the backlog path).
- ``SO_PREFER_BUSY_POLL`` (69): 0/1; any non-zero value is stored as 1. Turning it on needs
  CAP_NET_ADMIN (EPERM); turning it off never does.
- ``SO_BUSY_POLL_BUDGET`` (70): 0..65535 (else EINVAL), 0 means the default 8. Raising it
  above the socket's current value needs CAP_NET_ADMIN (EPERM) -- and a new socket's value is
  0, so an unprivileged process cannot set any budget but 0. The kernel checks the
  capability *before* the range. There is no getsockopt for it: Linux 6.18 answers
  ENOPROTOOPT [seen], so it cannot be read back and this module offers no getter.

All functions take a socket object or a raw fd, translate errors at the boundary and never
leave the socket half-configured: each call sets exactly one option.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import socket
from collections.abc import Iterator

from .._argcheck import fail
from ..errors import MismatchError, NetdevkitError, RequestError, translate_oserror

__all__ = [
    "SO_BUSY_POLL",
    "SO_BUSY_POLL_BUDGET",
    "SO_INCOMING_NAPI_ID",
    "SO_PREFER_BUSY_POLL",
    "SocketBusyPoll",
    "get_busy_poll",
    "get_incoming_napi_id",
    "get_prefer_busy_poll",
    "set_busy_poll",
    "set_busy_poll_budget",
    "set_prefer_busy_poll",
    "socket_busy_poll",
]

# asm-generic values (x86_64, arm64); sparc/parisc/mips/powerpc differ.
SO_BUSY_POLL = 46
SO_INCOMING_NAPI_ID = 56
SO_PREFER_BUSY_POLL = 69
SO_BUSY_POLL_BUDGET = 70

_NAMES = {
    SO_BUSY_POLL: "SO_BUSY_POLL",
    SO_INCOMING_NAPI_ID: "SO_INCOMING_NAPI_ID",
    SO_PREFER_BUSY_POLL: "SO_PREFER_BUSY_POLL",
    SO_BUSY_POLL_BUDGET: "SO_BUSY_POLL_BUDGET",
}
_S32_MAX = 2**31 - 1
_U16_MAX = 2**16 - 1

SocketLike = socket.socket | int


@dataclasses.dataclass(frozen=True, slots=True)
class SocketBusyPoll:
    """What a socket reports about busy polling (the budget cannot be read back)."""

    busy_poll_usecs: int
    prefer_busy_poll: bool
    napi_id: int


@contextlib.contextmanager
def _as_socket(sock: SocketLike) -> Iterator[socket.socket]:
    if isinstance(sock, socket.socket):
        if sock.fileno() < 0:
            raise RequestError("socket is closed")
        yield sock
        return
    if not isinstance(sock, int) or isinstance(sock, bool):
        raise fail("sock", "a socket or its fd (an int)", sock)
    if sock < 0:
        raise RequestError(f"sock must be a socket or a non-negative fd, got {sock!r}")
    try:
        wrapper = socket.socket(fileno=sock)
    except OSError as err:
        raise RequestError(f"fd {sock} is not a socket: {err.strerror}") from err
    try:
        yield wrapper
    finally:
        wrapper.detach()  # the caller still owns the fd


def _fd(sock: socket.socket) -> int:
    return sock.fileno()


def _translate(err: OSError, sock: socket.socket, operation: str) -> NetdevkitError:
    return translate_oserror(
        err,
        operation,
        capability="CAP_NET_ADMIN",
        unsupported={
            errno.ENOPROTOOPT: f"{operation}: ENOPROTOOPT: this kernel does not know the option "
            "here (busy polling needs CONFIG_NET_RX_BUSY_POLL; SO_PREFER_BUSY_POLL and "
            "SO_BUSY_POLL_BUDGET need Linux >= 5.11)"
        },
        invalid={
            errno.ENOTSOCK: f"fd {_fd(sock)} is not a socket ({operation})",
            errno.EBADF: f"fd {_fd(sock)} is not open ({operation})",
        },
    )


def _get(sock: SocketLike, opt: int) -> int:
    with _as_socket(sock) as s:
        try:
            return s.getsockopt(socket.SOL_SOCKET, opt)
        except OSError as err:
            raise _translate(err, s, f"getsockopt({_NAMES[opt]}) on fd {_fd(s)}") from err


def _set(sock: SocketLike, opt: int, value: int) -> None:
    with _as_socket(sock) as s:
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, value)
        except OSError as err:
            raise _translate(err, s, f"setsockopt({_NAMES[opt]}={value}) on fd {_fd(s)}") from err


def _check_range(name: str, value: object, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not 0 <= value <= high:
        raise RequestError(f"{name}={value} is out of range: must be 0..{high}")
    return value


def get_busy_poll(sock: SocketLike) -> int:
    """``SO_BUSY_POLL``: usecs a blocking read on *sock* busy polls."""
    return _get(sock, SO_BUSY_POLL)


def set_busy_poll(sock: SocketLike, usecs: int) -> int:
    """Set ``SO_BUSY_POLL`` to *usecs* (0..S32_MAX) and return the value read back."""
    value = _check_range("busy_poll_usecs", usecs, _S32_MAX)
    _set(sock, SO_BUSY_POLL, value)
    actual = get_busy_poll(sock)
    if actual != value:
        raise MismatchError(f"set SO_BUSY_POLL={value} but the socket reads back {actual}")
    return actual


def get_incoming_napi_id(sock: SocketLike) -> int:
    """``SO_INCOMING_NAPI_ID``: NAPI id of the last packet received; 0 if none or no NAPI."""
    # The kernel copies an unsigned int; Python reads it as a signed int.
    return _get(sock, SO_INCOMING_NAPI_ID) & 0xFFFFFFFF


def get_prefer_busy_poll(sock: SocketLike) -> bool:
    """``SO_PREFER_BUSY_POLL``."""
    return bool(_get(sock, SO_PREFER_BUSY_POLL))


def set_prefer_busy_poll(sock: SocketLike, prefer: bool) -> bool:
    """Set ``SO_PREFER_BUSY_POLL``; turning it on needs CAP_NET_ADMIN (else PermissionDenied)."""
    if prefer not in (0, 1) or not isinstance(prefer, int):
        raise RequestError(f"prefer_busy_poll={prefer!r} is out of range: must be 0/1 or a bool")
    _set(sock, SO_PREFER_BUSY_POLL, int(prefer))
    actual = get_prefer_busy_poll(sock)
    if actual != bool(prefer):
        raise MismatchError(
            f"set SO_PREFER_BUSY_POLL={int(prefer)} but the socket reads back {int(actual)}"
        )
    return actual


def set_busy_poll_budget(sock: SocketLike, budget: int) -> None:
    """Set ``SO_BUSY_POLL_BUDGET`` (0..65535, 0 = kernel default 8).

    Raising it above the socket's current budget needs CAP_NET_ADMIN (PermissionDenied).
    Not read back: the kernel has no getsockopt for this option (ENOPROTOOPT on 6.18).
    """
    value = _check_range("busy_poll_budget", budget, _U16_MAX)
    _set(sock, SO_BUSY_POLL_BUDGET, value)


def socket_busy_poll(sock: SocketLike) -> SocketBusyPoll:
    """Snapshot of the readable busy-poll state of *sock*."""
    return SocketBusyPoll(
        busy_poll_usecs=get_busy_poll(sock),
        prefer_busy_poll=get_prefer_busy_poll(sock),
        napi_id=get_incoming_napi_id(sock),
    )
