"""The exceptions netdevkit raises.

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
"""

from __future__ import annotations

import errno as _errno
import os


class NetdevkitError(Exception):
    """Base class of every error netdevkit raises on purpose."""


class RequestError(NetdevkitError, ValueError):
    """The request was invalid before it reached the kernel; nothing changed."""


class NotFoundError(NetdevkitError, LookupError):
    """An interface, NAPI, queue, namespace or process that does not exist."""


class DecodeError(NetdevkitError):
    """Malformed or truncated netlink data."""


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
        self.hint = hint
        parts = [f"{operation}: {os.strerror(err)} ({_errno.errorcode.get(err, err)})"]
        if extack:
            parts.append(f"kernel says: {extack}")
        if attr_path:
            parts.append(f"at attribute {attr_path}")
        if hint:
            parts.append(hint)
        super().__init__(err, "; ".join(parts))

    def __str__(self) -> str:
        return str(self.strerror)


class PermissionDenied(KernelError):
    """The kernel refused for lack of a capability (EPERM/EACCES)."""

    def __init__(self, err: int, operation: str, capability: str, extack: str = "") -> None:
        self.capability = capability
        super().__init__(
            err, operation, extack, hint=f"needs {capability} (run as root or grant {capability})"
        )
