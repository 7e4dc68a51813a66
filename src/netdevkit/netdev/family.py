"""The ``netdev`` generic netlink family, declared as data.

Source of truth: Documentation/netlink/specs/netdev.yaml and
include/uapi/linux/netdev.h of the kernel, with the 6.13-6.18 additions
(napi irq-suspend-timeout and threaded, queue io-uring/xsk, page-pool
io-uring, dev xsk-features, bind-tx) checked against a 6.18 kernel, and the
6.19-7.3 additions (threaded busy-poll, queue leasing and queue-create,
io-uring rx-buf-len, dmabuf rx-page-size) against Debian's 7.3 kernel.

Each operation's ``since`` is checked by the kernel matrix
(tests/test_family_kernel.py): on every kernel it boots, an operation is
registered exactly when the kernel is at least ``since``, and every attribute
of the kernel's policy for it is declared here.
"""

from __future__ import annotations

import enum

from ..netlink.spec import AttrSet, AttrSpec, AttrType, Family, Operation

S32_MAX = 2**31 - 1


class XdpAct(enum.IntFlag):
    BASIC = 1
    REDIRECT = 2
    NDO_XMIT = 4
    XSK_ZEROCOPY = 8
    HW_OFFLOAD = 16
    RX_SG = 32
    NDO_XMIT_SG = 64


class XdpRxMetadata(enum.IntFlag):
    TIMESTAMP = 1
    HASH = 2
    VLAN_TAG = 4


class XskFlags(enum.IntFlag):
    TX_TIMESTAMP = 1
    TX_CHECKSUM = 2
    TX_LAUNCH_TIME_FIFO = 4


class QueueType(enum.IntEnum):
    RX = 0
    TX = 1


class QstatsScope(enum.IntFlag):
    QUEUE = 1


class NapiThreaded(enum.IntEnum):
    DISABLED = 0
    ENABLED = 1
    #: a per-NAPI kthread that busy polls without pause (Linux 6.19+)
    BUSY_POLL = 2


#: the first kernel that accepts threaded = busy-poll (6.18 answers ERANGE)
THREADED_BUSY_POLL_SINCE = "6.19"


def _a(
    id: int,
    name: str,
    type: AttrType,
    doc: str = "",
    **kw: object,
) -> AttrSpec:
    return AttrSpec(id, name, type, doc, **kw)  # type: ignore[arg-type]


U32, U64, UINT, NEST, PAD = AttrType.U32, AttrType.U64, AttrType.UINT, AttrType.NEST, AttrType.PAD
S32 = AttrType.S32

QSTATS_COUNTERS: tuple[tuple[int, str, str], ...] = (
    (8, "rx-packets", "packets received"),
    (9, "rx-bytes", "bytes received"),
    (10, "tx-packets", "packets sent"),
    (11, "tx-bytes", "bytes sent"),
    (12, "rx-alloc-fail", "buffer allocation failures on receive"),
    (13, "rx-hw-drops", "packets dropped by the device"),
    (14, "rx-hw-drop-overruns", "drops because the host could not keep up"),
    (15, "rx-csum-complete", "packets with CHECKSUM_COMPLETE"),
    (16, "rx-csum-unnecessary", "packets with CHECKSUM_UNNECESSARY"),
    (17, "rx-csum-none", "packets the device did not checksum"),
    (18, "rx-csum-bad", "packets with a bad checksum"),
    (19, "rx-hw-gro-packets", "packets coalesced by HW-GRO/LRO"),
    (20, "rx-hw-gro-bytes", "bytes coalesced by HW-GRO/LRO"),
    (21, "rx-hw-gro-wire-packets", "wire packets coalesced by HW-GRO/LRO"),
    (22, "rx-hw-gro-wire-bytes", "wire bytes coalesced by HW-GRO/LRO"),
    (23, "rx-hw-drop-ratelimits", "receive drops due to rate limits"),
    (24, "tx-hw-drops", "packets dropped by the device on send"),
    (25, "tx-hw-drop-errors", "send drops due to errors"),
    (26, "tx-csum-none", "packets sent without checksum offload"),
    (27, "tx-needs-csum", "packets sent with checksum offload"),
    (28, "tx-hw-gso-packets", "packets segmented by the device"),
    (29, "tx-hw-gso-bytes", "bytes segmented by the device"),
    (30, "tx-hw-gso-wire-packets", "wire packets from device segmentation"),
    (31, "tx-hw-gso-wire-bytes", "wire bytes from device segmentation"),
    (32, "tx-hw-drop-ratelimits", "send drops due to rate limits"),
    (33, "tx-stop", "times the queue was stopped"),
    (34, "tx-wake", "times the queue was woken"),
)

PAGE_POOL_STATS_COUNTERS: tuple[tuple[int, str], ...] = (
    (8, "alloc-fast"),
    (9, "alloc-slow"),
    (10, "alloc-slow-high-order"),
    (11, "alloc-empty"),
    (12, "alloc-refill"),
    (13, "alloc-waive"),
    (14, "recycle-cached"),
    (15, "recycle-cache-full"),
    (16, "recycle-ring"),
    (17, "recycle-ring-full"),
    (18, "recycle-released-refcnt"),
)

_SETS = (
    AttrSet(
        "dev",
        (
            _a(1, "ifindex", U32, "netdev ifindex"),
            _a(2, "pad", PAD),
            _a(3, "xdp-features", U64, "XDP actions supported", enum=XdpAct),
            _a(4, "xdp-zc-max-segs", U32, "max fragments in an AF_XDP zero-copy frame"),
            _a(5, "xdp-rx-metadata-features", U64, "XDP RX metadata kfuncs", enum=XdpRxMetadata),
            _a(6, "xsk-features", U64, "AF_XDP features", enum=XskFlags),
        ),
    ),
    AttrSet(
        "io-uring-provider-info",
        (_a(1, "rx-buf-len", UINT, "size of the RX buffers io_uring provides (7.2)"),),
    ),
    AttrSet("xsk-info", ()),
    AttrSet(
        "page-pool",
        (
            _a(1, "id", UINT, "page pool id"),
            _a(2, "ifindex", U32, "netdev the pool belongs to (absent once detached)"),
            _a(3, "napi-id", UINT, "NAPI the pool serves"),
            _a(4, "inflight", UINT, "pages handed out and not yet returned"),
            _a(5, "inflight-mem", UINT, "memory of those pages, bytes"),
            _a(6, "detach-time", UINT, "seconds since boot when the netdev went away"),
            _a(7, "dmabuf", U32, "id of the dmabuf binding providing memory"),
            _a(8, "io-uring", NEST, "memory provided by io_uring", nested="io-uring-provider-info"),
        ),
    ),
    AttrSet(
        "page-pool-info",
        (
            _a(1, "id", UINT, "page pool id"),
            _a(2, "ifindex", U32, "netdev ifindex"),
        ),
    ),
    AttrSet(
        "page-pool-stats",
        (
            _a(1, "info", NEST, "the pool", nested="page-pool-info"),
            *(_a(i, n, UINT) for i, n in PAGE_POOL_STATS_COUNTERS),
        ),
    ),
    AttrSet(
        "napi",
        (
            _a(1, "ifindex", U32, "netdev ifindex"),
            _a(2, "id", U32, "NAPI instance id"),
            _a(3, "irq", U32, "IRQ of the NAPI instance"),
            _a(4, "pid", U32, "pid of the NAPI kthread when threaded"),
            _a(5, "defer-hard-irqs", U32, "empty polls before IRQs come back", max=S32_MAX),
            _a(6, "gro-flush-timeout", UINT, "timer, ns, that defers IRQs and flushes GRO"),
            _a(7, "irq-suspend-timeout", UINT, "ns IRQs stay suspended while busy polling"),
            _a(
                8,
                "threaded",
                U32,
                "NAPI processed by a kthread (busy-poll: 6.19+)",
                enum=NapiThreaded,
                max=2,
            ),
        ),
    ),
    AttrSet(
        "queue",
        (
            _a(1, "id", U32, "queue index, per type"),
            _a(2, "ifindex", U32, "netdev ifindex"),
            _a(3, "type", U32, "rx or tx", enum=QueueType),
            _a(4, "napi-id", U32, "NAPI instance serving the queue"),
            _a(5, "dmabuf", U32, "id of the dmabuf binding on the queue"),
            _a(6, "io-uring", NEST, "io_uring memory provider", nested="io-uring-provider-info"),
            _a(7, "xsk", NEST, "an AF_XDP socket is bound", nested="xsk-info"),
            _a(8, "lease", NEST, "the queue this one is leased to or from (7.1)", nested="lease"),
        ),
    ),
    AttrSet(
        "lease",
        (
            _a(1, "ifindex", U32, "netdev of the other end of the lease"),
            _a(2, "queue", NEST, "the other end's queue", nested="queue-id"),
            _a(3, "netns-id", S32, "network namespace id of that netdev, if another"),
        ),
    ),
    AttrSet(
        "queue-id",
        (
            _a(1, "id", U32, "queue index"),
            _a(3, "type", U32, "rx or tx", enum=QueueType),
        ),
    ),
    AttrSet(
        "qstats",
        (
            _a(1, "ifindex", U32, "netdev ifindex"),
            _a(2, "queue-type", U32, "rx or tx", enum=QueueType),
            _a(3, "queue-id", U32, "queue index"),
            _a(
                4,
                "scope",
                UINT,
                "what rows to return: 0 per device, queue per queue",
                enum=QstatsScope,
            ),
            *(_a(i, n, UINT, d) for i, n, d in QSTATS_COUNTERS),
        ),
    ),
    AttrSet(
        "dmabuf",
        (
            _a(1, "ifindex", U32, "netdev to bind to"),
            _a(2, "queues", NEST, "queues to bind", nested="queue-id", multi=True),
            _a(3, "fd", U32, "dmabuf file descriptor"),
            _a(4, "id", U32, "binding id"),
            _a(5, "rx-page-size", U32, "size of the RX buffers carved from the dmabuf (7.3)"),
        ),
    ),
)

NAPI_SETTABLE = ("defer-hard-irqs", "gro-flush-timeout", "irq-suspend-timeout", "threaded")

NETDEV = Family(
    name="netdev",
    version=1,
    attr_sets={s.name: s for s in _SETS},
    mcast_groups=("mgmt", "page-pool"),
    operations=(
        Operation(
            1,
            "dev-get",
            "dev",
            "netdev features",
            do=True,
            dump=True,
            request=("ifindex",),
            required=("ifindex",),
            since="6.3",
        ),
        Operation(2, "dev-add-ntf", "dev", "a netdev appeared", notify=True),
        Operation(3, "dev-del-ntf", "dev", "a netdev went away", notify=True),
        Operation(4, "dev-change-ntf", "dev", "netdev features changed", notify=True),
        Operation(
            5,
            "page-pool-get",
            "page-pool",
            "page pools",
            do=True,
            dump=True,
            request=("id",),
            required=("id",),
            since="6.8",
        ),
        Operation(6, "page-pool-add-ntf", "page-pool", "a page pool was created", notify=True),
        Operation(7, "page-pool-del-ntf", "page-pool", "a page pool was destroyed", notify=True),
        Operation(8, "page-pool-change-ntf", "page-pool", "a page pool changed", notify=True),
        Operation(
            9,
            "page-pool-stats-get",
            "page-pool-stats",
            "page pool statistics",
            do=True,
            dump=True,
            request=("info",),
            required=("info",),
            since="6.8",
        ),
        Operation(
            10,
            "queue-get",
            "queue",
            "queues",
            do=True,
            dump=True,
            request=("ifindex", "type", "id"),
            required=("ifindex", "type", "id"),
            since="6.8",
        ),
        Operation(
            11,
            "napi-get",
            "napi",
            "NAPI instances",
            do=True,
            dump=True,
            request=("id", "ifindex"),
            required=("id",),
            since="6.8",
        ),
        Operation(
            12,
            "qstats-get",
            "qstats",
            "queue statistics",
            dump=True,
            request=("ifindex", "scope"),
            since="6.9",
        ),
        Operation(
            13,
            "bind-rx",
            "dmabuf",
            "bind a dmabuf to RX queues (devmem TCP)",
            do=True,
            request=("ifindex", "fd", "queues"),
            required=("ifindex", "fd", "queues"),
            capability="CAP_NET_ADMIN",
            since="6.12",
        ),
        Operation(
            14,
            "napi-set",
            "napi",
            "configure a NAPI instance",
            do=True,
            request=("id", *NAPI_SETTABLE),
            required=("id",),
            capability="CAP_NET_ADMIN",
            since="6.13",
        ),
        Operation(
            15,
            "bind-tx",
            "dmabuf",
            "bind a dmabuf for TX (devmem TCP)",
            do=True,
            request=("ifindex", "fd"),
            required=("ifindex", "fd"),
            # no admin flag in the spec: any user may bind for TX
            since="6.16",
        ),
        Operation(
            16,
            "queue-create",
            "queue",
            "create a queue on a virtual netdev, leased from a physical one's queue",
            do=True,
            request=("ifindex", "type", "lease"),
            required=("ifindex", "type", "lease"),
            capability="CAP_NET_ADMIN",
            since="7.1",
        ),
    ),
)
