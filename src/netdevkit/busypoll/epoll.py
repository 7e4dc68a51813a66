"""Per-epoll busy-poll parameters: ``struct epoll_params`` via ``EPIOCSPARAMS``/``EPIOCGPARAMS``.

Linux 6.9 added two ioctls on an epoll fd (fs/eventpoll.c, ``ep_eventpoll_bp_ioctl``)::

    struct epoll_params {
        __u32 busy_poll_usecs;   /* how long epoll_wait busy polls the NAPI before sleeping */
        __u16 busy_poll_budget;  /* packets per NAPI poll; 0 means the default, 8 */
        __u8  prefer_busy_poll;  /* 0 or 1: keep the NAPI's IRQs masked while we poll */
        __u8  __pad;             /* must be 0 */
    };                           /* "=IHBB", 8 bytes */

The kernel checks, in this order: ``__pad != 0`` -> EINVAL, ``busy_poll_usecs > S32_MAX``
-> EINVAL, ``prefer_busy_poll > 1`` -> EINVAL, ``busy_poll_budget > NAPI_POLL_WEIGHT (64)``
without ``capable(CAP_NET_ADMIN)`` -> EPERM. :func:`set_params` mirrors those rules before
the call, so a bad value never reaches the kernel, then reads the parameters back.

Seen on Linux 6.18 (x86_64): a fresh epoll fd reads back ``(0, 0, 0)``; budget 0 is stored
and read back as 0 (the kernel substitutes ``BUSY_POLL_BUDGET`` = 8 only when it polls, in
``ep_busy_loop``); any fd that is not an epoll gives ENOTTY for both ioctls. On a kernel
before 6.9 the epoll file has no ioctl handler, so an epoll fd gives ENOTTY too: the two are
told apart by ``/proc/self/fd/N`` naming ``anon_inode:[eventpoll]``. A kernel built without
``CONFIG_NET_RX_BUSY_POLL`` has the ioctls but answers EOPNOTSUPP.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import struct

from .._argcheck import fail
from .._os import CAP_NET_ADMIN, has_capability
from ..errors import (
    DecodeError,
    NetdevkitError,
    ParamsMismatchError,  # defined in errors.py, importable from here too
    PermissionDenied,
    RequestError,
    translate_oserror,
)

__all__ = [
    "EPIOCGPARAMS",
    "EPIOCSPARAMS",
    "NAPI_POLL_WEIGHT",
    "S32_MAX",
    "EpollParams",
    "ParamsMismatchError",
    "describe_change",
    "get_params",
    "has_cap_net_admin",
    "is_epoll_fd",
    "set_params",
    "validate_params",
]

# _IOW(0x8A, 0x01, struct epoll_params) and _IOR(0x8A, 0x02, struct epoll_params) on the
# asm-generic ioctl layout (x86_64, arm64). Many samples on the web carry other numbers.
EPIOCSPARAMS = 0x40088A01
EPIOCGPARAMS = 0x80088A02

_EPOLL_PARAMS = struct.Struct("=IHBB")  # u32 usecs, u16 budget, u8 prefer, u8 pad
S32_MAX = 2**31 - 1
U16_MAX = 2**16 - 1
# Budgets above NAPI_POLL_WEIGHT need CAP_NET_ADMIN; 0 makes the kernel use BUSY_POLL_BUDGET.
NAPI_POLL_WEIGHT = 64
BUSY_POLL_BUDGET_DEFAULT = 8

_EVENTPOLL_LINK = "anon_inode:[eventpoll]"


@dataclasses.dataclass(frozen=True, slots=True)
class EpollParams:
    """The busy-poll parameters of one epoll context.

    ``busy_poll_usecs``: how long an ``epoll_wait`` that finds nothing busy polls the
    context's NAPI before it sleeps (0: poll once when ``prefer_busy_poll`` is set, else
    not at all unless the ``net.core.busy_poll`` sysctl is set).
    ``busy_poll_budget``: packets per NAPI poll, 0..65535; 0 means the kernel default (8);
    above 64 needs CAP_NET_ADMIN.
    ``prefer_busy_poll``: the application promises to keep polling, so the NAPI's IRQs stay
    masked; the prerequisite for IRQ suspension.
    """

    busy_poll_usecs: int = 0
    busy_poll_budget: int = 0
    prefer_busy_poll: bool = False

    def __str__(self) -> str:
        """``busy_poll_usecs=50 busy_poll_budget=64 prefer_busy_poll=1``: how every
        message and table shows a context's parameters (see :func:`describe_change`)."""
        return " ".join(f"{name}={value}" for name, value in _fields(self))

    def pack(self) -> bytes:
        """The 8 bytes of ``struct epoll_params``; raises :class:`RequestError` out of range."""
        validate_params(self, has_cap_net_admin=True)
        return _EPOLL_PARAMS.pack(
            self.busy_poll_usecs, self.busy_poll_budget, int(self.prefer_busy_poll), 0
        )

    @classmethod
    def unpack(cls, data: bytes) -> EpollParams:
        """Decode ``struct epoll_params`` as the kernel returns it (pad ignored)."""
        if len(data) != _EPOLL_PARAMS.size:
            raise DecodeError(f"struct epoll_params is {_EPOLL_PARAMS.size} bytes, got {len(data)}")
        usecs, budget, prefer, _pad = _EPOLL_PARAMS.unpack(data)
        # prefer_busy_poll is a u8 the kernel only ever stores as 0 or 1.
        return cls(busy_poll_usecs=usecs, busy_poll_budget=budget, prefer_busy_poll=bool(prefer))


def _fields(p: EpollParams) -> tuple[tuple[str, int], ...]:
    # the struct's field names; prefer_busy_poll as the kernel stores it (0 or 1)
    return (
        ("busy_poll_usecs", p.busy_poll_usecs),
        ("busy_poll_budget", p.busy_poll_budget),
        ("prefer_busy_poll", int(p.prefer_busy_poll)),
    )


def describe_change(old: EpollParams, new: EpollParams) -> str:
    """``busy_poll_budget 0 -> 64, prefer_busy_poll 0 -> 1``: the fields that differ, the way
    ``napi diff`` shows a change; ``unchanged (busy_poll_usecs=0 ...)`` when none does.

    The one way netdevkit prints an epoll change (attach, run, detach, restore, diff).
    """
    pairs = zip(_fields(old), _fields(new), strict=True)
    changes = [f"{name} {a} -> {b}" for (name, a), (_same, b) in pairs if a != b]
    return ", ".join(changes) if changes else f"unchanged ({new})"


def has_cap_net_admin() -> bool:
    """Whether this process holds CAP_NET_ADMIN in its effective set.

    Read from ``/proc/self/status`` (CapEff). The kernel checks ``capable()``, i.e. the
    initial user namespace; inside a user namespace CapEff can claim more than the kernel
    will grant, and then the ioctl still answers EPERM (mapped to
    :class:`~netdevkit.errors.PermissionDenied` too).
    """
    return has_capability(CAP_NET_ADMIN)


_process_has_cap = has_cap_net_admin  # validate_params' keyword argument shadows the name


def _check_int(name: str, value: object, high: int) -> None:
    # bool is an int subclass; True as a usecs count is almost surely a bug.
    if not isinstance(value, int) or isinstance(value, bool):
        raise fail(name, "an int", value)
    if not 0 <= value <= high:
        raise RequestError(f"{name}={value} is out of range: must be 0..{high}")


def check_int_at_least(name: str, value: object, low: int = 0) -> None:
    """Raise :class:`RequestError` unless *value* is an int (not a bool) >= *low*."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        want = "a non-negative int" if low == 0 else f"an int >= {low}"
        raise RequestError(f"{name}={value!r} must be {want}")


def validate_params(params: EpollParams, *, has_cap_net_admin: bool | None = None) -> None:
    """Apply the kernel's ``EPIOCSPARAMS`` rules without calling it.

    Raises :class:`RequestError` naming the field for values the kernel would reject with
    EINVAL (or that do not fit the struct), and :class:`PermissionDenied` naming
    CAP_NET_ADMIN for a budget above 64 without it. ``has_cap_net_admin`` defaults to
    asking :func:`has_cap_net_admin`, which is only consulted for such a budget.
    """
    if not isinstance(params, EpollParams):
        raise fail("params", "an EpollParams", params)
    _check_int("busy_poll_usecs", params.busy_poll_usecs, S32_MAX)
    _check_int("busy_poll_budget", params.busy_poll_budget, U16_MAX)
    prefer: object = params.prefer_busy_poll
    if prefer not in (0, 1) or not isinstance(prefer, int):
        raise RequestError(f"prefer_busy_poll={prefer!r} is out of range: must be 0/1 or a bool")
    if params.busy_poll_budget > NAPI_POLL_WEIGHT:
        capable = _process_has_cap() if has_cap_net_admin is None else has_cap_net_admin
        if not capable:
            raise PermissionDenied(
                errno.EPERM,
                f"set epoll busy_poll_budget={params.busy_poll_budget} (above {NAPI_POLL_WEIGHT})",
                "CAP_NET_ADMIN",
            )


def is_epoll_fd(fd: int) -> bool:
    """Whether *fd* (of this process) is an epoll instance, from ``/proc/self/fd``."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == _EVENTPOLL_LINK
    except OSError:
        return False


def _check_fd(fd: object) -> int:
    if not isinstance(fd, int) or isinstance(fd, bool):
        raise fail("epfd", "an epoll fd (an int)", fd)
    if fd < 0:
        raise RequestError(f"epfd must be a non-negative int, got {fd!r}")
    return fd


def _translate(err: OSError, fd: int, operation: str) -> NetdevkitError:
    needs = f"needs Linux >= 6.9 with CONFIG_NET_RX_BUSY_POLL, running {os.uname().release}"
    unsupported = {
        errno.EOPNOTSUPP: f"{operation}: EOPNOTSUPP: the kernel was built without busy "
        f"polling; {needs}"
    }
    if err.errno == errno.ENOTTY and is_epoll_fd(fd):
        # The epoll file had no ioctl handler before 6.9.
        unsupported[errno.ENOTTY] = (
            f"{operation}: the kernel has no epoll busy-poll ioctls (ENOTTY on an epoll fd): "
            + needs
        )
    return translate_oserror(
        err,
        operation,
        capability="CAP_NET_ADMIN",
        unsupported=unsupported,
        invalid={
            errno.ENOTTY: f"fd {fd} is not an epoll fd ({operation} answered ENOTTY)",
            errno.EBADF: f"fd {fd} is not an open file descriptor ({operation})",
        },
    )


def get_params(epfd: int) -> EpollParams:
    """Read the busy-poll parameters of epoll instance *epfd* (``EPIOCGPARAMS``)."""
    fd = _check_fd(epfd)
    try:
        data = fcntl.ioctl(fd, EPIOCGPARAMS, bytes(_EPOLL_PARAMS.size))
    except OSError as err:
        raise _translate(err, fd, f"EPIOCGPARAMS on fd {fd}") from err
    return EpollParams.unpack(data)


def set_params(
    epfd: int, params: EpollParams, *, has_cap_net_admin: bool | None = None
) -> EpollParams:
    """Set the busy-poll parameters of epoll instance *epfd* and return what reads back.

    Validates first (see :func:`validate_params`; nothing reaches the kernel on a bad
    value), then ``EPIOCSPARAMS``, then ``EPIOCGPARAMS``; raises
    :class:`ParamsMismatchError` if the two differ.
    """
    fd = _check_fd(epfd)
    validate_params(params, has_cap_net_admin=has_cap_net_admin)
    operation = f"EPIOCSPARAMS {params} on fd {fd}"
    try:
        fcntl.ioctl(fd, EPIOCSPARAMS, params.pack())
    except OSError as err:
        raise _translate(err, fd, operation) from err
    actual = get_params(fd)
    requested = dataclasses.replace(params, prefer_busy_poll=bool(params.prefer_busy_poll))
    if actual != requested:
        raise ParamsMismatchError(fd, requested, actual)
    return actual
