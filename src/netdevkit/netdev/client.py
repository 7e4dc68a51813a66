"""Typed client of the ``netdev`` family: one method per operation.

>>> with Netdev.open() as nd:                     # doctest: +SKIP
...     for napi in nd.napi_dump(ifindex=2):
...         print(napi.id, napi.irq, napi.defer_hard_irqs)

Everything returned is a frozen dataclass; kernel enums and flags are
:class:`enum.Enum` / :class:`enum.IntFlag`. Attributes this library does not
know (a newer kernel) are kept in ``extra`` as ``(id, bytes)`` pairs.

Errors are translated here, at the boundary: a missing capability becomes
:class:`~netdevkit.errors.PermissionDenied`, an operation this kernel lacks
:class:`~netdevkit.errors.UnsupportedError` naming the kernel version, an
unknown id :class:`~netdevkit.errors.NotFoundError`, and every other refusal
a :class:`~netdevkit.errors.KernelError` with the kernel's extack text and
the path of the attribute it pointed at.
"""

from __future__ import annotations

import dataclasses
import errno
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from ..errors import (
    KernelError,
    NotFoundError,
    PermissionDenied,
    RequestError,
    UnsupportedError,
)
from ..netlink import codec
from ..netlink.socket import DumpInterrupted, ErrorReply, FamilyInfo, GenlSocket
from ..netlink.spec import UNKNOWN, Codec, Operation, attr_path, encode_attrs
from ..netns import entered
from .family import (
    NETDEV,
    PAGE_POOL_STATS_COUNTERS,
    QSTATS_COUNTERS,
    NapiThreaded,
    QstatsScope,
    QueueType,
    XdpAct,
    XdpRxMetadata,
    XskFlags,
)

Extra = tuple[tuple[int, bytes], ...]
T = TypeVar("T")
_DUMP_RETRIES = 3
_EMPTY: Mapping[str, int] = MappingProxyType({})
_NO_XDP, _NO_META, _NO_XSK = XdpAct(0), XdpRxMetadata(0), XskFlags(0)


@dataclass(frozen=True, slots=True)
class Dev:
    ifindex: int
    xdp_features: XdpAct = _NO_XDP
    xdp_zc_max_segs: int | None = None
    xdp_rx_metadata_features: XdpRxMetadata = _NO_META
    xsk_features: XskFlags = _NO_XSK
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class PagePool:
    id: int
    ifindex: int | None = None
    napi_id: int | None = None
    inflight: int | None = None
    inflight_mem: int | None = None
    detach_time: int | None = None
    dmabuf: int | None = None
    io_uring: bool = False
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class PagePoolStats:
    id: int
    ifindex: int | None
    #: counter name (``alloc-fast`` ...) -> value, for the counters the kernel sent
    counters: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class Queue:
    id: int
    ifindex: int
    type: QueueType
    napi_id: int | None = None
    dmabuf: int | None = None
    io_uring: bool = False
    xsk: bool = False
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class Napi:
    id: int
    ifindex: int
    irq: int | None = None
    #: pid of the NAPI kthread while threaded
    pid: int | None = None
    defer_hard_irqs: int | None = None
    #: nanoseconds
    gro_flush_timeout: int | None = None
    #: nanoseconds (Linux 6.13+)
    irq_suspend_timeout: int | None = None
    threaded: NapiThreaded | None = None
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class QStats:
    """One row of qstats: per device (queue fields None) or per queue."""

    ifindex: int
    queue_type: QueueType | None = None
    queue_id: int | None = None
    #: counter name (``rx-packets`` ...) -> value, for the counters the driver reports
    counters: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    extra: Extra = ()


@dataclass(frozen=True, slots=True)
class Notification:
    """A multicast notification: operation name and its decoded object."""

    name: str
    obj: Dev | PagePool


def _extra(d: Mapping[str, Any]) -> Extra:
    return tuple(d.get(UNKNOWN, ()))


def _dev(d: Mapping[str, Any]) -> Dev:
    return Dev(
        d["ifindex"],
        XdpAct(d.get("xdp-features", 0)),
        d.get("xdp-zc-max-segs"),
        XdpRxMetadata(d.get("xdp-rx-metadata-features", 0)),
        XskFlags(d.get("xsk-features", 0)),
        _extra(d),
    )


def _page_pool(d: Mapping[str, Any]) -> PagePool:
    return PagePool(
        d["id"],
        d.get("ifindex"),
        d.get("napi-id"),
        d.get("inflight"),
        d.get("inflight-mem"),
        d.get("detach-time"),
        d.get("dmabuf"),
        "io-uring" in d,
        _extra(d),
    )


def _page_pool_stats(d: Mapping[str, Any]) -> PagePoolStats:
    info = d.get("info", {})
    counters = {name: d[name] for _i, name in PAGE_POOL_STATS_COUNTERS if name in d}
    return PagePoolStats(info.get("id", 0), info.get("ifindex"), counters, _extra(d))


# -- the hot path: queue and NAPI dumps return thousands of objects ------------
#
# A frozen dataclass's __init__ sets each field with object.__setattr__; the
# builders below make the same object (same class, same field values, no
# __post_init__ to skip) by setting the slots through their descriptors, which
# takes half the time. Enum members come from a dict instead of an Enum call.

_new = object.__new__


def _slot_setters(cls: type) -> tuple[Callable[[object, Any], None], ...]:
    return tuple(getattr(cls, f.name).__set__ for f in dataclasses.fields(cls))


_QUEUE_TYPES: dict[int, QueueType] = {int(t): t for t in QueueType}
_THREADED: dict[int, NapiThreaded] = {int(t): t for t in NapiThreaded}
_Q_ID, _Q_IFINDEX, _Q_TYPE, _Q_NAPI, _Q_DMABUF, _Q_IO_URING, _Q_XSK, _Q_EXTRA = _slot_setters(Queue)
(
    _N_ID,
    _N_IFINDEX,
    _N_IRQ,
    _N_PID,
    _N_DEFER,
    _N_GRO,
    _N_SUSPEND,
    _N_THREADED,
    _N_EXTRA,
) = _slot_setters(Napi)


def _queue(d: Mapping[str, Any]) -> Queue:
    get = d.get
    q: Queue = _new(Queue)
    _Q_ID(q, d["id"])
    _Q_IFINDEX(q, d["ifindex"])
    t = d["type"]
    _Q_TYPE(q, _QUEUE_TYPES[t] if t in _QUEUE_TYPES else QueueType(t))
    _Q_NAPI(q, get("napi-id"))
    _Q_DMABUF(q, get("dmabuf"))
    _Q_IO_URING(q, "io-uring" in d)
    _Q_XSK(q, "xsk" in d)
    _Q_EXTRA(q, tuple(get(UNKNOWN, ())))
    return q


def _napi(d: Mapping[str, Any]) -> Napi:
    get = d.get
    threaded = get("threaded")
    if threaded is not None:
        threaded = _THREADED[threaded] if threaded in _THREADED else NapiThreaded(threaded)
    n: Napi = _new(Napi)
    _N_ID(n, d["id"])
    _N_IFINDEX(n, d["ifindex"])
    _N_IRQ(n, get("irq"))
    _N_PID(n, get("pid"))
    _N_DEFER(n, get("defer-hard-irqs"))
    _N_GRO(n, get("gro-flush-timeout"))
    _N_SUSPEND(n, get("irq-suspend-timeout"))
    _N_THREADED(n, threaded)
    _N_EXTRA(n, tuple(get(UNKNOWN, ())))
    return n


def _qstats(d: Mapping[str, Any]) -> QStats:
    qtype = d.get("queue-type")
    counters = {name: d[name] for _i, name, _d in QSTATS_COUNTERS if name in d}
    return QStats(
        d["ifindex"],
        None if qtype is None else QueueType(qtype),
        d.get("queue-id"),
        counters,
        _extra(d),
    )


_NEEDS: dict[str, str] = {
    "napi-set": "per-NAPI settings need Linux 6.13 or newer (napi-set)",
    "bind-rx": "Device Memory TCP receive needs Linux 6.12 or newer (bind-rx)",
    "bind-tx": "Device Memory TCP send needs Linux 6.16 or newer (bind-tx)",
    "qstats-get": "queue statistics need Linux 6.10 or newer (qstats-get)",
    "napi-get": "NAPI introspection needs Linux 6.9 or newer (napi-get)",
    "queue-get": "queue introspection needs Linux 6.9 or newer (queue-get)",
    "page-pool-get": "page pool introspection needs Linux 6.8 or newer",
    "page-pool-stats-get": "page pool statistics need Linux 6.8 or newer built with "
    "CONFIG_PAGE_POOL_STATS=y (this kernel does not register page-pool-stats-get)",
}

_EOPNOTSUPP_WHY: dict[str, str] = {
    "page-pool-stats-get": "this kernel was built without CONFIG_PAGE_POOL_STATS",
    "qstats-get": "the driver does not report queue statistics",
    "bind-rx": "the driver lacks the queue management API or unreadable-netmem page pools "
    "(devmem needs gve, mlx5, bnxt, fbnic or idpf)",
    "bind-tx": "the driver cannot transmit from device memory",
}


def ifindex_of(name: str, netns: str | None = None) -> int:
    """The ifindex of interface *name* (inside *netns* if given)."""
    with entered(netns):
        try:
            return socket.if_nametoindex(name)
        except OSError:
            where = f" in network namespace {netns!r}" if netns else ""
            raise NotFoundError(f"no interface named {name!r}{where}") from None


def ifnames(netns: str | None = None) -> dict[int, str]:
    """``{ifindex: name}`` of every interface (inside *netns* if given)."""
    with entered(netns):
        return dict(socket.if_nameindex())


def _as_dict(d: dict[str, Any]) -> dict[str, Any]:
    return d


class Netdev:
    """A connection to the kernel's ``netdev`` family. Use :meth:`open`.

    A dmabuf binding made with :meth:`bind_rx` or :meth:`bind_tx` lives as
    long as this connection: :meth:`close` unbinds it.
    """

    family = NETDEV

    def __init__(self, sock: GenlSocket, info: FamilyInfo) -> None:
        self._sock = sock
        self.info = info
        self._codec = Codec(NETDEV)

    @classmethod
    def open(cls, netns: str | None = None) -> Netdev:
        """Connect, in the current or in the named network namespace."""
        sock = GenlSocket.open(netns)
        try:
            try:
                info = sock.resolve_family(NETDEV.name)
            except UnsupportedError as err:
                raise UnsupportedError(
                    "this kernel has no 'netdev' generic netlink family: netdevkit needs "
                    "Linux 6.9 or newer (6.13 for per-NAPI settings)"
                ) from err
        except BaseException:
            sock.close()
            raise
        return cls(sock, info)

    @property
    def netns(self) -> str | None:
        return self._sock.netns

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Netdev:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def supports(self, op_name: str) -> bool:
        """Whether the running kernel implements operation *op_name*."""
        op = NETDEV.ops_by_name[op_name]
        return op.id in self.info.op_ids

    # -- plumbing -------------------------------------------------------------

    def _op(self, name: str) -> Operation:
        op = NETDEV.ops_by_name[name]
        if op.id not in self.info.op_ids:
            raise UnsupportedError(_NEEDS.get(name, f"this kernel lacks netdev {name}"))
        return op

    def _request(
        self,
        op: Operation,
        attrs: Mapping[str, Any],
        dump: bool,
        what: str,
        build: Callable[[dict[str, Any]], T],
    ) -> list[T]:
        """Send one request; decode each reply straight from the datagram and *build* it."""
        payload = encode_attrs(NETDEV, op.attr_set, attrs)
        flags = codec.NLM_F_REQUEST | codec.NLM_F_ACK | (codec.NLM_F_DUMP if dump else 0)
        decode = self._codec.decode
        set_name = op.attr_set
        genl_hdr = codec.GENLMSGHDR_LEN

        def row(buf: bytes, start: int, end: int) -> T:
            return build(decode(set_name, buf, start + genl_hdr, end))

        for attempt in range(_DUMP_RETRIES):
            seq = self._sock.next_seq()
            req = codec.encode_genl(self.info.id, op.id, NETDEV.version, flags, seq, payload)
            try:
                return self._sock.transact_rows(req, seq, what, row)
            except DumpInterrupted:
                if attempt == _DUMP_RETRIES - 1:
                    raise
            except ErrorReply as err:
                raise self._translate(err, op, req, what) from None
        raise AssertionError("unreachable")

    def _translate(self, err: ErrorReply, op: Operation, req: bytes, what: str) -> KernelError:
        e = err.errno or 0
        extack = err.raw_extack
        path = ""
        if extack.offset is not None:
            path = attr_path(
                NETDEV, op.attr_set, req, codec.NLMSGHDR_LEN + codec.GENLMSGHDR_LEN, extack.offset
            )
        if e in (errno.EPERM, errno.EACCES) and op.capability:
            return PermissionDenied(e, what, op.capability, extack.message)
        if e == errno.EOPNOTSUPP and op.name in _EOPNOTSUPP_WHY:
            return KernelError(e, what, extack.message, path, hint=_EOPNOTSUPP_WHY[op.name])
        return KernelError(e, what, extack.message, path)

    def _get(self, op_name: str, attrs: Mapping[str, Any], what: str) -> dict[str, Any]:
        op = self._op(op_name)
        try:
            rows = self._request(op, attrs, False, what, _as_dict)
        except KernelError as err:
            if err.errno in (errno.ENOENT, errno.ENODEV) and not isinstance(err, PermissionDenied):
                raise NotFoundError(f"{what}: no such object ({err.extack or 'ENOENT'})") from err
            raise
        if not rows:
            raise NotFoundError(f"{what}: the kernel returned nothing")
        return rows[0]

    def _dump(
        self,
        op_name: str,
        attrs: Mapping[str, Any],
        what: str,
        build: Callable[[dict[str, Any]], T],
    ) -> list[T]:
        return self._request(self._op(op_name), attrs, True, what, build)

    def _ifindex_filter(self, ifindex: int | None) -> dict[str, Any]:
        if ifindex is None:
            return {}
        if ifindex <= 0:
            raise RequestError(f"ifindex must be a positive integer, not {ifindex}")
        return {"ifindex": ifindex}

    # -- dev ------------------------------------------------------------------

    def dev_get(self, ifindex: int) -> Dev:
        return _dev(self._get("dev-get", {"ifindex": ifindex}, f"dev-get ifindex {ifindex}"))

    def dev_dump(self) -> list[Dev]:
        return self._dump("dev-get", {}, "dev-get dump", _dev)

    # -- page pools -----------------------------------------------------------

    def page_pool_get(self, pool_id: int) -> PagePool:
        return _page_pool(self._get("page-pool-get", {"id": pool_id}, f"page-pool {pool_id}"))

    def page_pool_dump(self, ifindex: int | None = None) -> list[PagePool]:
        pools = self._dump("page-pool-get", {}, "page-pool-get dump", _page_pool)
        return [p for p in pools if ifindex is None or p.ifindex == ifindex]

    def page_pool_stats_get(self, pool_id: int) -> PagePoolStats:
        d = self._get(
            "page-pool-stats-get", {"info": {"id": pool_id}}, f"page-pool-stats {pool_id}"
        )
        return _page_pool_stats(d)

    def page_pool_stats_dump(self) -> list[PagePoolStats]:
        return self._dump("page-pool-stats-get", {}, "page-pool-stats-get dump", _page_pool_stats)

    # -- queues ---------------------------------------------------------------

    def queue_get(self, ifindex: int, qtype: QueueType, queue_id: int) -> Queue:
        kind = QueueType(qtype).name.lower()
        what = f"queue-get ifindex {ifindex} {kind} {queue_id}"
        try:
            d = self._get("queue-get", {"ifindex": ifindex, "type": qtype, "id": queue_id}, what)
        except KernelError as err:
            # The kernel answers EINVAL, without extack, for an index at or
            # above the device's real number of queues of that type.
            if err.errno == errno.EINVAL:
                raise NotFoundError(
                    f"{what}: ifindex {ifindex} has no {kind} queue {queue_id} "
                    "(list them with `netdevkit queue show`)"
                ) from err
            raise
        return _queue(d)

    def queue_dump(self, ifindex: int | None = None) -> list[Queue]:
        return self._dump("queue-get", self._ifindex_filter(ifindex), "queue-get dump", _queue)

    # -- NAPI -----------------------------------------------------------------

    def napi_get(self, napi_id: int) -> Napi:
        return _napi(self._get("napi-get", {"id": napi_id}, f"napi-get id {napi_id}"))

    def napi_dump(self, ifindex: int | None = None) -> list[Napi]:
        return self._dump("napi-get", self._ifindex_filter(ifindex), "napi-get dump", _napi)

    def napi_set(
        self,
        napi_id: int,
        *,
        defer_hard_irqs: int | None = None,
        gro_flush_timeout: int | None = None,
        irq_suspend_timeout: int | None = None,
        threaded: bool | NapiThreaded | None = None,
    ) -> None:
        """Change the settings of one NAPI instance (needs CAP_NET_ADMIN, 6.13+).

        Only the arguments given are sent; the others keep their values.
        Durations are nanoseconds.
        """
        attrs: dict[str, Any] = {
            "id": napi_id,
            "defer-hard-irqs": defer_hard_irqs,
            "gro-flush-timeout": gro_flush_timeout,
            "irq-suspend-timeout": irq_suspend_timeout,
            # an int, not NapiThreaded(...): the spec's range check names the field
            "threaded": None if threaded is None else int(threaded),
        }
        what = f"napi-set id {napi_id}"
        op = self._op("napi-set")
        try:
            self._request(op, attrs, False, what, _as_dict)
        except KernelError as err:
            if err.errno == errno.ENOENT:
                raise NotFoundError(f"{what}: no NAPI instance with id {napi_id}") from err
            raise

    # -- queue statistics -------------------------------------------------------

    def qstats_dump(self, ifindex: int | None = None, per_queue: bool = False) -> list[QStats]:
        attrs = self._ifindex_filter(ifindex)
        if per_queue:
            attrs["scope"] = QstatsScope.QUEUE
        return self._dump("qstats-get", attrs, "qstats-get dump", _qstats)

    # -- Device Memory TCP bindings -------------------------------------------

    def bind_rx(self, ifindex: int, dmabuf_fd: int, queues: Iterable[int]) -> int:
        """Bind *dmabuf_fd* to RX *queues* of *ifindex*; returns the binding id.

        The binding lasts as long as this connection.
        """
        qlist = [{"id": q, "type": QueueType.RX} for q in queues]
        if not qlist:
            raise RequestError("bind-rx needs at least one RX queue")
        attrs = {"ifindex": ifindex, "fd": dmabuf_fd, "queues": qlist}
        d = self._request(self._op("bind-rx"), attrs, False, f"bind-rx ifindex {ifindex}", _as_dict)
        return int(d[0]["id"]) if d and "id" in d[0] else 0

    def bind_tx(self, ifindex: int, dmabuf_fd: int) -> int:
        """Bind *dmabuf_fd* for transmit on *ifindex*; returns the binding id."""
        attrs = {"ifindex": ifindex, "fd": dmabuf_fd}
        d = self._request(self._op("bind-tx"), attrs, False, f"bind-tx ifindex {ifindex}", _as_dict)
        return int(d[0]["id"]) if d and "id" in d[0] else 0

    # -- notifications ----------------------------------------------------------

    def subscribe(self, group: str) -> None:
        """Join multicast group ``mgmt`` (netdevs) or ``page-pool``."""
        gid = self.info.mcast_groups.get(group)
        if gid is None:
            known = ", ".join(sorted(self.info.mcast_groups))
            raise RequestError(f"no netdev multicast group {group!r} (known: {known})")
        self._sock.join_group(gid)

    def notifications(self, timeout: float | None = None) -> Iterator[Notification]:
        """Notifications of the subscribed groups, waiting up to *timeout* s for each."""
        for msg in self._sock.poll_notifications(timeout):
            if msg.type != self.info.id:
                continue
            cmd, _version = codec.split_genl(msg.payload)
            op = NETDEV.ops_by_id.get(cmd)
            if op is None or not op.notify:
                continue
            d = self._codec.decode(op.attr_set, msg.payload, codec.GENLMSGHDR_LEN)
            obj: Dev | PagePool = _dev(d) if op.attr_set == "dev" else _page_pool(d)
            yield Notification(op.name, obj)
