"""The exceptions netdevkit raises, and the one place an ``OSError`` becomes one of them.

One base class, and subclasses that separate *who* is at fault, the way psutil
and h11 do:

- :class:`RequestError` - the caller asked for something invalid; nothing was
  sent to the kernel and nothing changed.
- :class:`NotFoundError` - a named thing (interface, NAPI id, queue, namespace,
  process) does not exist.
- :class:`KernelError` - the kernel refused a well-formed request; carries the
  errno, the kernel's extended-ack message and the attribute it pointed at.
- :class:`PermissionDenied` - a :class:`KernelError` that needs a capability
  the caller does not have.
- :class:`UnsupportedError` - this kernel, its configuration or the driver
  cannot do it; the message says what is needed.
- :class:`DecodeError` - bytes from the kernel that do not parse.

Every more specific class below derives from one of those, so ``except`` clauses
written against the six keep working. :func:`translate_oserror` turns an ``OSError``
from a system call into the right one.

Every error may carry a ``hint``: what the caller can do about it, naming the
library's own parameters in backquotes (```force=True```, ```backend='sysfs'```).
``str(err)`` spells them as Python keywords; :meth:`NetdevkitError.describe` lets
the command line spell them as its flags (``--force``, ``--backend sysfs``), so a
library message never names a flag.
"""

from __future__ import annotations

import errno as _errno
import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: errors.py imports nothing of netdevkit at run time
    from .busypoll.epoll import EpollParams
    from .netlink.codec import ExtAck
    from .tuning.model import Change

__all__ = [
    "ArgumentTypeError",
    "CleanupError",
    "ConflictError",
    "DecodeError",
    "DumpInterrupted",
    "ErrorReply",
    "FdGone",
    "FramingError",
    "JournalError",
    "KernelError",
    "MismatchError",
    "NamespaceGone",
    "NetdevkitError",
    "NoEpollError",
    "NotFoundError",
    "NotificationsLost",
    "OutstandingLimit",
    "ParamsMismatchError",
    "PermissionDenied",
    "PrivilegeError",
    "ProcessGone",
    "RequestError",
    "StateError",
    "TokenReturnError",
    "ToolError",
    "TuningError",
    "UnsupportedError",
    "ValidationError",
    "spell_keyword",
    "translate_oserror",
]

#: How a hint's parameter reference is spelled: ``(name, value)`` -> text; value ""
#: when the reference names the parameter alone (```threaded```).
Spelling = Callable[[str, str], str]

_PARAM_REF = re.compile(r"`(\w+)(?:=([^`]*))?`")


def spell_keyword(name: str, value: str) -> str:
    """The library's spelling of a parameter reference: ``force=True``, ``threaded``."""
    return f"{name}={value}" if value else name


def _spell_hint(hint: str, spell: Spelling) -> str:
    return _PARAM_REF.sub(lambda m: spell(m[1], m[2] or ""), hint)


# -- the six kinds ----------------------------------------------------------------


class NetdevkitError(Exception):
    """Base class of every error netdevkit raises on purpose.

    ``hint`` (may be empty) says what would get past the error; ``str(err)`` is the
    message followed by the hint.
    """

    hint: str

    def __init__(self, *args: object, hint: str = "") -> None:
        super().__init__(*args)
        self.hint = hint

    def describe(self, spell: Spelling = spell_keyword) -> str:
        """The message and its hint, parameter references spelled by *spell*."""
        text = self._message()
        return f"{text}; {_spell_hint(self.hint, spell)}" if self.hint else text

    def _message(self) -> str:
        return super().__str__()

    def __str__(self) -> str:
        return self.describe()


class RequestError(NetdevkitError, ValueError):
    """The request was invalid before it reached the kernel; nothing changed."""


class ArgumentTypeError(RequestError, TypeError):
    """A public function got an argument of the wrong type; the message names the
    parameter. Both a :class:`RequestError` and a ``TypeError``."""


class NotFoundError(NetdevkitError, LookupError):
    """An interface, NAPI, queue, namespace or process that does not exist."""


class DecodeError(NetdevkitError):
    """Malformed or truncated data from the kernel."""


class UnsupportedError(NetdevkitError):
    """The kernel, its configuration or the driver lacks the feature."""


class KernelError(NetdevkitError, OSError):
    """The kernel answered a request with an error.

    ``errno`` and ``strerror`` are those of :class:`OSError`; ``extack`` is
    the kernel's own explanation (may be empty), ``attr_path`` names the
    attribute of the request the kernel pointed at (may be empty) and
    ``operation`` says what was asked.
    """

    def __init__(
        self,
        err: int,
        operation: str,
        extack: str = "",
        attr_path: str = "",
        hint: str = "",
    ) -> None:
        self.operation = operation
        self.extack = extack
        self.attr_path = attr_path
        parts = [f"{operation}: {os.strerror(err)} ({_errno.errorcode.get(err, err)})"]
        if extack:
            parts.append(f"kernel says: {extack}")
        if attr_path:
            parts.append(f"at attribute {attr_path}")
        self._what = "; ".join(parts)
        super().__init__(err, self._what, hint=hint)
        self.strerror = self.describe()

    def _message(self) -> str:
        return self._what

    def __str__(self) -> str:
        return self.describe()


class PermissionDenied(KernelError):
    """The kernel refused for lack of a capability (EPERM/EACCES)."""

    def __init__(self, err: int, operation: str, capability: str, extack: str = "") -> None:
        self.capability = capability
        super().__init__(
            err, operation, extack, hint=f"needs {capability} (run as root or grant {capability})"
        )


# -- specific classes, by the part of netdevkit that raises them ---------------------
# Each is also importable from the module that raises it.


class StateError(NetdevkitError):
    """The object or the system is not in the state the call needs (not started, not up,
    not ready in time)."""


class PrivilegeError(NetdevkitError):
    """The process lacks a privilege netdevkit needs (root, CAP_SYS_ADMIN for a namespace),
    found before or instead of a kernel refusal with an errno (that is
    :class:`PermissionDenied`)."""


class ConflictError(NetdevkitError):
    """Something netdevkit would create or remove is taken: a namespace that already
    exists, a testbed that belongs to a running process."""


class CleanupError(NetdevkitError):
    """Removing or undoing something failed part-way; the message lists what is left."""


class JournalError(NetdevkitError):
    """The journal cannot be opened, read or written, or holds something that is not a
    netdevkit journal record."""


class ToolError(NetdevkitError):
    """A program netdevkit runs (sockperf, wrk, redis-benchmark, a server) is missing,
    failed, or printed nothing netdevkit can use."""


class MismatchError(NetdevkitError):
    """The kernel accepted a value but reads back something else."""


class ParamsMismatchError(MismatchError):
    """``EPIOCSPARAMS`` succeeded but ``EPIOCGPARAMS`` reads back other parameters."""

    def __init__(self, fd: int, requested: EpollParams, actual: EpollParams) -> None:
        self.fd = fd
        self.requested = requested
        self.actual = actual
        super().__init__(
            f"epoll fd {fd}: set {requested} but the kernel reads back {actual}; "
            "is another thread or process changing this epoll context?"
        )


class FramingError(NetdevkitError):
    """The peer sent something that is not sockperf framing (the connection is dropped)."""


class DumpInterrupted(NetdevkitError):
    """The kernel flagged the dump as inconsistent (NLM_F_DUMP_INTR): retry it."""


class NotificationsLost(NetdevkitError):
    """The socket's receive queue overflowed (ENOBUFS): multicast messages were
    dropped. The socket stays usable; dump again to learn the current state."""


class ErrorReply(KernelError):
    """The kernel's netlink error reply, still carrying the raw extended ack.

    Family clients catch it to name the offending attribute (from
    ``extack.offset``) and the missing capability, then raise the
    user-facing :class:`KernelError` subclass.
    """

    def __init__(self, err: int, operation: str, extack: ExtAck) -> None:
        super().__init__(err, operation, extack.message)
        self.raw_extack = extack


class ProcessGone(NotFoundError):
    """The target process exited (or never existed)."""


class FdGone(NotFoundError):
    """The target process no longer has that fd (closed since it was listed)."""


class NoEpollError(NotFoundError):
    """The target process has no epoll fd (yet)."""


class NamespaceGone(NotFoundError):
    """The named namespace was deleted (or replaced) since the reader opened it."""


class ValidationError(NetdevkitError):
    """Received bytes differ from the expected pattern."""


class OutstandingLimit(NetdevkitError):
    """The caller holds ``max_outstanding`` fragments: release some before receiving."""


class TokenReturnError(KernelError):
    """SO_DEVMEM_DONTNEED freed nothing: the kernel does not hold those tokens."""


class TuningError(NetdevkitError):
    """A plan failed part-way through; what was applied before it was rolled back.

    ``index`` is the 1-based number of the change the kernel refused,
    ``change`` that change, ``cause`` the kernel's error (with its extack
    text), ``rolled_back`` the changes undone and ``rollback_failures`` a
    message for every change that could not be undone (then still in the
    journal: ``netdevkit restore`` retries them).
    """

    def __init__(
        self,
        index: int,
        total: int,
        change: Change,
        cause: NetdevkitError,
        rolled_back: tuple[Change, ...],
        rollback_failures: tuple[str, ...] = (),
    ) -> None:
        self.index = index
        self.total = total
        self.change = change
        self.cause = cause
        self.rolled_back = rolled_back
        self.rollback_failures = rollback_failures
        kernel = _kernel_error_in(cause)
        self.kernel_error = kernel
        self.errno: int | None = None if kernel is None else kernel.errno
        self.extack: str = "" if kernel is None else kernel.extack
        msg = (
            f"change {index} of {total} ({change.target.label}: {change.describe()}) "
            f"was refused: {cause}"
        )
        if kernel is not None and kernel is not cause:
            msg += f" [kernel: {kernel}]"
        if rolled_back:
            msg += f"; rolled back the {len(rolled_back)} change(s) applied before it"
        else:
            msg += "; nothing had been applied before it, nothing changed"
        if rollback_failures:
            msg += (
                "; ROLLBACK INCOMPLETE: "
                + "; ".join(rollback_failures)
                + " (they stay in the journal: run `netdevkit restore`)"
            )
        super().__init__(msg)


def _kernel_error_in(err: BaseException) -> KernelError | None:
    """The kernel's own error in *err*'s ``raise ... from`` chain (errno, extack, attribute)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, KernelError):
            return seen
        seen = seen.__cause__
    return None


# -- the OSError boundary -------------------------------------------------------------

_DENIED = (_errno.EPERM, _errno.EACCES)


def translate_oserror(
    err: OSError | int,
    operation: str,
    *,
    capability: str | None = None,
    denied_because: str = "",
    gone: Mapping[int, str | NotFoundError] | None = None,
    unsupported: Mapping[int, str | UnsupportedError] | None = None,
    invalid: Mapping[int, str | RequestError] | None = None,
    hint: str = "",
) -> NetdevkitError:
    """The netdevkit error for a failed system call (return it; the caller raises it).

    *err* is the ``OSError`` (or a bare errno, as ``ctypes.get_errno()`` gives it);
    *operation* says what was asked (``"pidfd_getfd(pid 7, fd 3)"``). What an errno
    means depends on the call, so the call site says it, errno by errno, with a message
    or a ready exception:

    - *gone*: the object is not there (any more): ESRCH for a process, EBADF for a
      target's fd, ENODEV for an interface -> :class:`NotFoundError` (or the subclass
      given);
    - *unsupported*: this kernel or its configuration cannot do it (ENOSYS, ENOTTY,
      EOPNOTSUPP, an EINVAL for a flag an old kernel lacks) -> :class:`UnsupportedError`;
    - *invalid*: the caller passed something wrong (EBADF for a caller's own fd,
      ENOTSOCK) -> :class:`RequestError`.

    Then EPERM/EACCES become :class:`PermissionDenied` naming *capability* (when
    given; *denied_because* is added to the operation to say why it is needed), and
    everything else a :class:`KernelError` carrying *hint*. A missing errno reads as EIO.
    """
    code = err if isinstance(err, int) else err.errno
    if code is None:
        code = _errno.EIO
    for table, kind in ((gone, NotFoundError), (unsupported, UnsupportedError)):
        if table and code in table:
            found = table[code]
            return kind(found) if isinstance(found, str) else found
    if invalid and code in invalid:
        found_invalid = invalid[code]
        return RequestError(found_invalid) if isinstance(found_invalid, str) else found_invalid
    if capability is not None and code in _DENIED:
        return PermissionDenied(code, operation + denied_because, capability)
    return KernelError(code, operation, hint=hint)
