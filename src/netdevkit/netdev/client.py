"""Typed client of the ``netdev`` family: one method per operation.

>>> with Netdev.open() as nd:                     # doctest: +SKIP
...     for napi in nd.napi_dump(ifindex=2):
...         print(napi.id, napi.irq, napi.defer_hard_irqs)

Everything returned is an immutable :class:`~typing.NamedTuple` (read by
attribute; ``_replace`` makes a changed copy); kernel enums and flags are
:class:`enum.Enum` / :class:`enum.IntFlag`. Attributes this library does not
know (a newer kernel) are kept in ``extra`` as ``(id, bytes)`` pairs.

Errors are translated here, at the boundary: a missing capability becomes
:class:`~netdevkit.errors.PermissionDenied`, an operation this kernel lacks
:class:`~netdevkit.errors.UnsupportedError` naming the kernel version, an
unknown id :class:`~netdevkit.errors.NotFoundError`, and every other refusal
a :class:`~netdevkit.errors.KernelError` with the kernel's extack text and
the path of the attribute it pointed at.
"""

# No `from __future__ import annotations`: NamedTuple fields annotated with strings
# cost a compile() each at import, and every CLI start-up imports this module.
import errno
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from .._argcheck import int_arg, str_arg
from ..errors import (
    DecodeError,
    DumpInterrupted,
    ErrorReply,
    KernelError,
    NotFoundError,
    PermissionDenied,
    RequestError,
    UnsupportedError,
)
from ..netlink import codec
from ..netlink.client import FamilyClient
from ..netlink.socket import FamilyInfo, GenlSocket
from ..netlink.spec import UNKNOWN, Operation, encode_attrs
from ..netns import entered
from .family import (
    NETDEV,
    PAGE_POOL_STATS_COUNTERS,
    QSTATS_COUNTERS,
    THREADED_BUSY_POLL_SINCE,
    NapiThreaded,
    QstatsScope,
    QueueType,
    XdpAct,
    XdpRxMetadata,
    XskFlags,
)

Extra = tuple[tuple[int, bytes], ...]
T = TypeVar("T")
#: reads one reply's attributes, ``buf[start:end]``, into a result object
Reader = Callable[[bytes, int, int], T]
_DUMP_RETRIES = 3
_EMPTY: Mapping[str, int] = MappingProxyType({})
_NO_XDP, _NO_META, _NO_XSK = XdpAct(0), XdpRxMetadata(0), XskFlags(0)


class Dev(NamedTuple):
    ifindex: int
    xdp_features: XdpAct = _NO_XDP
    xdp_zc_max_segs: int | None = None
    xdp_rx_metadata_features: XdpRxMetadata = _NO_META
    xsk_features: XskFlags = _NO_XSK
    extra: Extra = ()


class PagePool(NamedTuple):
    id: int
    ifindex: int | None = None
    napi_id: int | None = None
    inflight: int | None = None
    inflight_mem: int | None = None
    detach_time: int | None = None
    dmabuf: int | None = None
    io_uring: bool = False
    extra: Extra = ()


class PagePoolStats(NamedTuple):
    id: int
    ifindex: int | None
    #: counter name (``alloc-fast`` ...) -> value, for the counters the kernel sent
    counters: Mapping[str, int] = _EMPTY
    extra: Extra = ()


class Lease(NamedTuple):
    """The other end of a leased queue (Linux 7.1+): its netdev and queue."""

    ifindex: int | None
    queue_id: int | None
    queue_type: QueueType | int | None
    #: the other netdev's network namespace id, when it lives in another one
    netns_id: int | None = None


class Queue(NamedTuple):
    id: int
    ifindex: int
    #: a plain int for a type this library does not know yet
    type: QueueType | int
    napi_id: int | None = None
    dmabuf: int | None = None
    io_uring: bool = False
    xsk: bool = False
    extra: Extra = ()
    #: set when this queue is leased to or from another netdev's queue (7.1+)
    lease: Lease | None = None


class Napi(NamedTuple):
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
    #: a plain int for a mode this library does not know yet
    threaded: NapiThreaded | int | None = None
    extra: Extra = ()


class QStats(NamedTuple):
    """One row of qstats: per device (queue fields None) or per queue."""

    ifindex: int
    queue_type: QueueType | int | None = None
    queue_id: int | None = None
    #: counter name (``rx-packets`` ...) -> value, for the counters the driver reports
    counters: Mapping[str, int] = _EMPTY
    extra: Extra = ()


class Notification(NamedTuple):
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
# The row decoders (netlink.spec.Codec.row_decoder) hand each reply over as a
# list of values in the order of QUEUE_FIELDS / NAPI_FIELDS, then the unknown
# attributes; enum members come from a dict lookup. The objects are made by
# tuple.__new__, as the NamedTuple's own ``_make`` does (less its call and its
# length check: all the values are written out right here).

_QUEUE_TYPES: dict[int, QueueType] = {int(t): t for t in QueueType}
_THREADED: dict[int, NapiThreaded] = {int(t): t for t in NapiThreaded}

#: attribute order of the rows that queue and NAPI replies decode into
QUEUE_FIELDS = ("id", "ifindex", "type", "napi-id", "dmabuf", "io-uring", "xsk", "lease")
NAPI_FIELDS = (
    "ifindex",
    "id",
    "irq",
    "pid",
    "defer-hard-irqs",
    "gro-flush-timeout",
    "irq-suspend-timeout",
    "threaded",
)


def _queue_row(r: list[Any]) -> Queue:
    qid, ifindex, qtype, napi_id, dmabuf, io_uring, xsk, lease, extra = r
    if qid is None or ifindex is None or qtype is None:
        raise DecodeError("queue reply without its id, ifindex or type attribute")
    return tuple.__new__(
        Queue,
        (
            qid,
            ifindex,
            # a type this library does not know yet (a newer kernel) stays a plain int
            _QUEUE_TYPES.get(qtype, qtype),
            napi_id,
            dmabuf,
            io_uring is not None,
            xsk is not None,
            tuple(extra) if extra else (),
            None if lease is None else _lease(lease),
        ),
    )


def _lease(d: Mapping[str, Any]) -> Lease:
    q = d.get("queue", {})
    qtype = q.get("type")
    return Lease(
        d.get("ifindex"),
        q.get("id"),
        None if qtype is None else _QUEUE_TYPES.get(qtype, qtype),
        d.get("netns-id"),
    )


def _napi_row(r: list[Any]) -> Napi:
    ifindex, napi_id, irq, pid, defer, gro, suspend, threaded, extra = r
    if napi_id is None or ifindex is None:
        raise DecodeError("napi reply without its id or ifindex attribute")
    return tuple.__new__(
        Napi,
        (
            napi_id,
            ifindex,
            irq,
            pid,
            defer,
            gro,
            suspend,
            None if threaded is None else _THREADED.get(threaded, threaded),
            tuple(extra) if extra else (),
        ),
    )


def _qstats(d: Mapping[str, Any]) -> QStats:
    qtype = d.get("queue-type")
    counters = {name: d[name] for _i, name, _d in QSTATS_COUNTERS if name in d}
    return QStats(
        d["ifindex"],
        None if qtype is None else _QUEUE_TYPES.get(qtype, qtype),
        d.get("queue-id"),
        counters,
        _extra(d),
    )


_NEEDS: dict[str, str] = {
    "napi-set": "per-NAPI settings need Linux 6.13 or newer (napi-set)",
    "bind-rx": "Device Memory TCP receive needs Linux 6.12 or newer (bind-rx)",
    "bind-tx": "Device Memory TCP send needs Linux 6.16 or newer (bind-tx)",
    "qstats-get": "queue statistics need Linux 6.9 or newer (qstats-get)",
    "napi-get": "NAPI introspection needs Linux 6.8 or newer (napi-get)",
    "queue-get": "queue introspection needs Linux 6.8 or newer (queue-get)",
    "queue-create": "queue leasing needs Linux 7.1 or newer (queue-create)",
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
    "queue-create": "the netdev's driver cannot lease queues (virtual devices such as netkit "
    "lease RX queues from a physical NIC whose driver has the queue management API)",
}


def ifindex_of(name: str, netns: str | None = None) -> int:
    """The ifindex of interface *name* (inside *netns* if given)."""
    str_arg("name", name)
    with entered(netns):
        try:
            return socket.if_nametoindex(name)
        except OSError:
            where = f" in network namespace {netns!r}" if netns else ""
            raise NotFoundError(f"no interface named {name!r}{where}") from None


def ifname_of(ifindex: int, netns: str | None = None) -> str:
    """The name of the interface with index *ifindex* (inside *netns* if given).

    Raises :class:`RequestError` for an index that is not a positive int and
    :class:`NotFoundError` when no interface has it (now: a deleted device's
    index names nothing).
    """
    int_arg("ifindex", ifindex)
    if ifindex < 1:
        raise RequestError(f"ifindex={ifindex!r} must be a positive int")
    with entered(netns):
        try:
            return socket.if_indextoname(ifindex)
        except OSError:
            where = f" in network namespace {netns!r}" if netns else ""
            raise NotFoundError(f"no interface with ifindex {ifindex}{where}") from None


def ifnames(netns: str | None = None) -> dict[int, str]:
    """``{ifindex: name}`` of every interface (inside *netns* if given)."""
    with entered(netns):
        return dict(socket.if_nameindex())


#: NETNSA_NSID_NOT_ASSIGNED (include/uapi/linux/net_namespace.h): no id for that namespace
_NSID_NOT_ASSIGNED = -1


def _nsid(reply: Mapping[str, Any] | None) -> int | None:
    """NETNSA_NSID of an RTM_GETNSID reply (pyroute2 decodes the s32 as a u32), or None
    when the kernel has no id for that namespace."""
    raw = None if reply is None else reply.get("nsid")
    if raw is None:
        return None
    value = int(raw) - (1 << 32) if int(raw) >= 1 << 31 else int(raw)
    return None if value == _NSID_NOT_ASSIGNED else value


def netns_id_of(name: str, netns: str | None = None) -> int | None:
    """The id that network namespace *name* has as seen from *netns* (the current one if
    None); None when *name* is that namespace itself.

    Namespace ids are per namespace: each one numbers the others it refers to. The kernel
    answers ``RTM_GETNSID`` with ``NETNSA_FD`` (``ip netns list-id``) with that number, or
    -1 when none was assigned yet; then ``RTM_NEWNSID`` with id -1 makes it pick the lowest
    free one (``ip netns set NAME auto``), as it would itself when it reports a netdev in
    another namespace. That is the id ``queue-create``'s lease ``netns-id`` takes
    (``get_net_ns_by_id`` in the requester's namespace).
    """
    str_arg("name", name)
    with entered(name):  # the usual errors for a missing or bogus namespace
        fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        there = os.fstat(fd)
        with entered(netns):
            here = os.stat("/proc/thread-self/ns/net")
            if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
                return None
            from pyroute2 import IPRoute
            from pyroute2.netlink.exceptions import NetlinkError

            what = f"network namespace id of {name!r}" + (f" in {netns!r}" if netns else "")
            try:
                with IPRoute() as ipr:  # made and used in this thread, in *netns*
                    nsid = _nsid(ipr.get_netnsid(fd=fd))
                    if nsid is None:
                        try:
                            ipr.set_netnsid(fd=fd)
                        except NetlinkError as err:
                            if err.code != errno.EEXIST:  # assigned meanwhile: fine
                                raise
                        nsid = _nsid(ipr.get_netnsid(fd=fd))
            except NetlinkError as err:
                raise KernelError(err.code, what) from None
            if nsid is None:
                raise KernelError(errno.ENOENT, what, "no id after RTM_NEWNSID")
            return nsid
    finally:
        os.close(fd)


def _as_dict(d: dict[str, Any]) -> dict[str, Any]:
    return d


class Netdev(FamilyClient):
    """A connection to the kernel's ``netdev`` family. Use :meth:`open`.

    A dmabuf binding made with :meth:`bind_rx` or :meth:`bind_tx` lives as
    long as this connection: :meth:`close` unbinds it.
    """

    family = NETDEV
    needs = _NEEDS
    missing = (
        "this kernel has no 'netdev' generic netlink family: it appeared in "
        "Linux 6.3; NAPI and queue introspection need 6.8, per-NAPI settings 6.13"
    )

    def __init__(self, sock: GenlSocket, info: FamilyInfo) -> None:
        super().__init__(sock, info)
        codec_ = self._codec
        self._read_queue = codec_.row_decoder("queue", QUEUE_FIELDS, _queue_row)
        self._read_napi = codec_.row_decoder("napi", NAPI_FIELDS, _napi_row)
        self._read_dev = self._reader("dev", _dev)
        self._read_pool = self._reader("page-pool", _page_pool)
        self._read_pool_stats = self._reader("page-pool-stats", _page_pool_stats)
        self._read_qstats = self._reader("qstats", _qstats)
        self._read_napi_dict = self._reader("napi", _as_dict)
        self._read_dmabuf = self._reader("dmabuf", _as_dict)
        self._read_queue_dict = self._reader("queue", _as_dict)

    # -- plumbing -------------------------------------------------------------

    def _request(
        self,
        op: Operation,
        attrs: Mapping[str, Any],
        dump: bool,
        what: str,
        read: Reader[T],
    ) -> list[T]:
        """Send one request; *read* each reply's attributes straight from the datagram."""
        payload = encode_attrs(NETDEV, op.attr_set, attrs)
        flags = codec.NLM_F_REQUEST | codec.NLM_F_ACK | (codec.NLM_F_DUMP if dump else 0)
        for attempt in range(_DUMP_RETRIES):
            seq = self._sock.next_seq()
            req = codec.encode_genl(self.info.id, op.id, NETDEV.version, flags, seq, payload)
            try:
                return self._sock.transact_rows(req, seq, what, read, codec.GENLMSGHDR_LEN)
            except DumpInterrupted:
                if attempt == _DUMP_RETRIES - 1:
                    raise
            except ErrorReply as err:
                if err.errno == errno.ENODEV and "ifindex" in attrs:
                    where = f" in network namespace {self.netns!r}" if self.netns else ""
                    raise NotFoundError(
                        f"{what}: no network device with ifindex {attrs['ifindex']}{where}"
                    ) from err
                raise self._translate(err, op, req, what) from None
        raise AssertionError("unreachable")

    def _translate(self, err: ErrorReply, op: Operation, req: bytes, what: str) -> KernelError:
        e = err.errno or 0
        extack = err.raw_extack
        path = self._extack_path(err, op, req)
        if e in (errno.EPERM, errno.EACCES) and op.capability:
            return PermissionDenied(e, what, op.capability, extack.message)
        if e == errno.EOPNOTSUPP and op.name in _EOPNOTSUPP_WHY:
            return KernelError(e, what, extack.message, path, hint=_EOPNOTSUPP_WHY[op.name])
        return KernelError(e, what, extack.message, path)

    def _reader(self, set_name: str, build: Callable[[dict[str, Any]], T]) -> Reader[T]:
        """A reader that decodes *set_name* into a dict and hands it to *build*."""
        decode = self._codec.decode

        def read(buf: bytes, start: int, end: int) -> T:
            try:
                return build(decode(set_name, buf, start, end))
            except KeyError as err:
                raise DecodeError(f"{set_name} reply without its {err.args[0]} attribute") from None

        return read

    def _get(self, op_name: str, attrs: Mapping[str, Any], what: str, read: Reader[T]) -> T:
        op = self._op(op_name)
        try:
            rows = self._request(op, attrs, False, what, read)
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
        read: Reader[T],
    ) -> list[T]:
        return self._request(self._op(op_name), attrs, True, what, read)

    def _ifindex_filter(self, ifindex: int | None) -> dict[str, Any]:
        int_arg("ifindex", ifindex, none_ok=True)
        if ifindex is None:
            return {}
        if ifindex <= 0:
            raise RequestError(f"ifindex must be a positive integer, not {ifindex}")
        return {"ifindex": ifindex}

    # -- dev ------------------------------------------------------------------

    def ifname(self, ifindex: int) -> str:
        """The name of interface *ifindex* in this connection's namespace (the records
        this family returns carry only the index; ``ip`` resolves it the same way).

        Raises :class:`NotFoundError` when no interface has that index now.
        """
        return ifname_of(ifindex, self.netns)

    def dev_get(self, ifindex: int) -> Dev:
        return self._get(
            "dev-get", {"ifindex": ifindex}, f"dev-get ifindex {ifindex}", self._read_dev
        )

    def dev_dump(self) -> list[Dev]:
        return self._dump("dev-get", {}, "dev-get dump", self._read_dev)

    # -- page pools -----------------------------------------------------------

    def page_pool_get(self, pool_id: int) -> PagePool:
        return self._get("page-pool-get", {"id": pool_id}, f"page-pool {pool_id}", self._read_pool)

    def page_pool_dump(self, ifindex: int | None = None) -> list[PagePool]:
        int_arg("ifindex", ifindex, none_ok=True)
        pools = self._dump("page-pool-get", {}, "page-pool-get dump", self._read_pool)
        return [p for p in pools if ifindex is None or p.ifindex == ifindex]

    def page_pool_stats_get(self, pool_id: int) -> PagePoolStats:
        attrs = {"info": {"id": pool_id}}
        what = f"page-pool-stats {pool_id}"
        return self._get("page-pool-stats-get", attrs, what, self._read_pool_stats)

    def page_pool_stats_dump(self) -> list[PagePoolStats]:
        return self._dump(
            "page-pool-stats-get", {}, "page-pool-stats-get dump", self._read_pool_stats
        )

    # -- queues ---------------------------------------------------------------

    def queue_get(self, ifindex: int, qtype: QueueType | int, queue_id: int) -> Queue:
        int_arg("qtype", qtype)
        try:
            kind = QueueType(qtype).name.lower()
        except ValueError:
            raise RequestError(f"qtype={qtype!r} is not a QueueType (RX 0, TX 1)") from None
        what = f"queue-get ifindex {ifindex} {kind} {queue_id}"
        try:
            attrs = {"ifindex": ifindex, "type": qtype, "id": queue_id}
            return self._get("queue-get", attrs, what, self._read_queue)
        except KernelError as err:
            # The kernel answers EINVAL, without extack, for an index at or
            # above the device's real number of queues of that type.
            if err.errno == errno.EINVAL:
                raise NotFoundError(
                    f"{what}: ifindex {ifindex} has no {kind} queue {queue_id} "
                    "(list them with `netdevkit queue show`)"
                ) from err
            raise

    def queue_dump(self, ifindex: int | None = None) -> list[Queue]:
        return self._dump(
            "queue-get", self._ifindex_filter(ifindex), "queue-get dump", self._read_queue
        )

    # -- NAPI -----------------------------------------------------------------

    def napi_get(self, napi_id: int) -> Napi:
        return self._get("napi-get", {"id": napi_id}, f"napi-get id {napi_id}", self._read_napi)

    def napi_dump(self, ifindex: int | None = None) -> list[Napi]:
        return self._dump(
            "napi-get", self._ifindex_filter(ifindex), "napi-get dump", self._read_napi
        )

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
        Durations are nanoseconds. ``threaded=NapiThreaded.BUSY_POLL`` needs
        Linux 6.19: older kernels refuse it with :class:`UnsupportedError`.
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
            self._request(op, attrs, False, what, self._read_napi_dict)
        except KernelError as err:
            if err.errno == errno.ENOENT:
                raise NotFoundError(f"{what}: no NAPI instance with id {napi_id}") from err
            # Before 6.19 the policy caps threaded at 1: busy-poll (2) is ERANGE there.
            if (
                err.errno == errno.ERANGE
                and err.attr_path == "napi.threaded"
                and attrs["threaded"] == NapiThreaded.BUSY_POLL
            ):
                raise UnsupportedError(
                    f"{what}: threaded busy-poll needs Linux {THREADED_BUSY_POLL_SINCE} or "
                    f"newer (this kernel accepts threaded 0 or 1: {err.extack or 'ERANGE'})"
                ) from err
            raise

    def queue_create(
        self,
        ifindex: int,
        lease_ifindex: int,
        lease_queue_id: int,
        qtype: QueueType = QueueType.RX,
        lease_netns_id: int | None = None,
    ) -> int:
        """Create a *qtype* queue on *ifindex* leased from queue *lease_queue_id*
        of *lease_ifindex*; returns the new queue's id (needs CAP_NET_ADMIN, 7.1+).

        Only a virtual netdev whose driver implements leasing (netkit) accepts
        it, and the leased queue's driver needs the queue management API.
        *lease_netns_id* says that *lease_ifindex* lives in another namespace: its
        id as seen from this connection's namespace (:func:`netns_id_of`); the
        kernel answers ENONET for an id it does not know there.
        """
        int_arg("lease_netns_id", lease_netns_id, none_ok=True)
        if lease_netns_id is not None and lease_netns_id < 0:
            raise RequestError(
                f"lease_netns_id={lease_netns_id!r} must be 0 or more (a namespace id as "
                "`netns_id_of` returns it; None for this connection's namespace)"
            )
        lease: dict[str, Any] = {
            "ifindex": lease_ifindex,
            "queue": {"id": lease_queue_id, "type": qtype},
        }
        elsewhere = ""
        if lease_netns_id is not None:
            lease["netns-id"] = lease_netns_id
            elsewhere = f" in nsid {lease_netns_id}"
        attrs = {"ifindex": ifindex, "type": qtype, "lease": lease}
        what = f"queue-create ifindex {ifindex} (lease {lease_ifindex}/{lease_queue_id}{elsewhere})"
        here = f" in network namespace {self.netns!r}" if self.netns else ""
        try:
            d = self._request(self._op("queue-create"), attrs, False, what, self._read_queue_dict)
        except NotFoundError as err:
            # ENODEV: either device; _request's message would name the first one only
            raise NotFoundError(
                f"{what}: no network device with ifindex {ifindex}{here}, or none with "
                f"ifindex {lease_ifindex}{elsewhere or here}"
            ) from err
        except KernelError as err:
            if err.errno == errno.ENONET and lease_netns_id is not None:
                raise NotFoundError(
                    f"{what}: no network namespace has id {lease_netns_id} as numbered "
                    f"{here.strip() or 'in this namespace'} (ids are per namespace: "
                    "`ip netns list-id`)"
                ) from err
            if err.errno == errno.EOPNOTSUPP and err.extack and type(err) is KernelError:
                # netkit says why (the primary of a pair; queues of two devices): the
                # generic "cannot lease queues" hint would contradict it
                raise KernelError(err.errno, what, err.extack, err.attr_path) from err
            raise
        if not d or "id" not in d[0]:
            raise DecodeError(f"{what}: the reply carries no queue id")
        return int(d[0]["id"])

    # -- queue statistics -------------------------------------------------------

    def qstats_dump(self, ifindex: int | None = None, per_queue: bool = False) -> list[QStats]:
        attrs = self._ifindex_filter(ifindex)
        if per_queue:
            attrs["scope"] = QstatsScope.QUEUE
        return self._dump("qstats-get", attrs, "qstats-get dump", self._read_qstats)

    # -- Device Memory TCP bindings -------------------------------------------

    def bind_rx(
        self,
        ifindex: int,
        dmabuf_fd: int,
        queues: Iterable[int],
        rx_page_size: int | None = None,
    ) -> int:
        """Bind *dmabuf_fd* to RX *queues* of *ifindex*; returns the binding id.

        The binding lasts as long as this connection. *rx_page_size* (bytes,
        Linux 7.3+) sizes the buffers carved from the dmabuf; a kernel
        without it refuses the attribute, which raises
        :class:`~netdevkit.errors.UnsupportedError`.
        """
        qlist = [{"id": q, "type": QueueType.RX} for q in queues]
        if not qlist:
            raise RequestError("bind-rx needs at least one RX queue")
        attrs: dict[str, Any] = {"ifindex": ifindex, "fd": dmabuf_fd, "queues": qlist}
        if rx_page_size is not None:
            attrs["rx-page-size"] = rx_page_size
        try:
            d = self._request(
                self._op("bind-rx"), attrs, False, f"bind-rx ifindex {ifindex}", self._read_dmabuf
            )
        except KernelError as err:
            if rx_page_size is not None and err.attr_path == "dmabuf.rx-page-size":
                raise UnsupportedError(
                    f"bind-rx ifindex {ifindex}: this kernel does not take rx-page-size "
                    f"(needs Linux 7.3 or newer; it answered: {err.extack or err.strerror})"
                ) from err
            raise
        return int(d[0]["id"]) if d and "id" in d[0] else 0

    def bind_tx(self, ifindex: int, dmabuf_fd: int) -> int:
        """Bind *dmabuf_fd* for transmit on *ifindex*; returns the binding id."""
        attrs = {"ifindex": ifindex, "fd": dmabuf_fd}
        d = self._request(
            self._op("bind-tx"), attrs, False, f"bind-tx ifindex {ifindex}", self._read_dmabuf
        )
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
