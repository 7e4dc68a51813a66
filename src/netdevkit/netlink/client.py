"""What every generic netlink family client shares: open (resolving the family), the
namespace, close, the operations this kernel has, and where an extack points."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Self

from ..errors import ErrorReply, UnsupportedError
from . import codec
from .socket import FamilyInfo, GenlSocket
from .spec import Codec, Family, Operation, attr_path

__all__ = ["FamilyClient"]


class FamilyClient:
    """A connection to one generic netlink family. Use :meth:`open`.

    A subclass sets :attr:`family` (its spec) and may set :attr:`needs` (per operation, the
    message when this kernel lacks it: which Linux added it) and :attr:`missing` (the
    message when this kernel lacks the whole family).
    """

    family: ClassVar[Family]
    needs: ClassVar[Mapping[str, str]] = {}
    missing: ClassVar[str | None] = None

    def __init__(self, sock: GenlSocket, info: FamilyInfo) -> None:
        self._sock = sock
        self.info = info
        self._codec = Codec(self.family)

    @classmethod
    def open(cls, netns: str | None = None) -> Self:
        """Connect, in the current or in the named network namespace."""
        sock = GenlSocket.open(netns)
        try:
            try:
                info = sock.resolve_family(cls.family.name)
            except UnsupportedError as err:
                if cls.missing is None:
                    raise
                raise UnsupportedError(cls.missing) from err
        except BaseException:
            sock.close()
            raise
        return cls(sock, info)

    @property
    def netns(self) -> str | None:
        """The network namespace this connection was opened in (None: the caller's)."""
        return self._sock.netns

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        """The netlink socket's descriptor (for select, or SO_RCVBUF)."""
        return self._sock.fileno()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def supports(self, op_name: str) -> bool:
        """Whether the running kernel implements operation *op_name*."""
        return self.family.ops_by_name[op_name].id in self.info.op_ids

    def _op(self, name: str) -> Operation:
        """Operation *name*, or :class:`UnsupportedError` if this kernel lacks it."""
        op = self.family.ops_by_name[name]
        if op.id not in self.info.op_ids:
            fallback = f"this kernel lacks {self.family.name} {name}"
            raise UnsupportedError(self.needs.get(name, fallback))
        return op

    def _extack_path(self, err: ErrorReply, op: Operation, req: bytes) -> str:
        """The attribute path the kernel's extack offset points at in *req* ("" if none)."""
        offset = err.raw_extack.offset
        if offset is None:
            return ""
        start = codec.NLMSGHDR_LEN + codec.GENLMSGHDR_LEN
        return attr_path(self.family, op.attr_set, req, start, offset)
