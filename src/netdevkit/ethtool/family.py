"""The ``ethtool`` generic netlink family, declared as data (the parts devmem needs).

Source of truth: Documentation/netlink/specs/ethtool.yaml and
include/uapi/linux/ethtool_netlink_generated.h. Message ids count from
``ETHTOOL_MSG_STRSET_GET = 1`` in the order of the uapi enum (rings-get 15,
channels-get 17, channels-set 18, features-get 11, rss-get 38; rss-set 48, rss-create-act 49,
rss-delete-act 50 appeared in 6.17). Every request carries a ``header`` nest
naming the device. The ntuple (n-tuple flow steering) rules have no netlink
command: :mod:`netdevkit.ethtool.ioctl` inserts them with ``SIOCETHTOOL``.
"""

from __future__ import annotations

import enum

from ..netlink.spec import AttrSet, AttrSpec, AttrType, Family, Operation

U8, U32, UINT, STRING, BINARY, FLAG, NEST = (
    AttrType.U8,
    AttrType.U32,
    AttrType.UINT,
    AttrType.STRING,
    AttrType.BINARY,
    AttrType.FLAG,
    AttrType.NEST,
)


class TcpDataSplit(enum.IntEnum):
    """enum ethtool_tcp_data_split: header split of TCP payloads."""

    UNKNOWN = 0
    DISABLED = 1
    ENABLED = 2


class HeaderFlags(enum.IntFlag):
    COMPACT_BITSETS = 1
    OMIT_REPLY = 2
    STATS = 4


def _a(id: int, name: str, type: AttrType, doc: str = "", **kw: object) -> AttrSpec:
    return AttrSpec(id, name, type, doc, **kw)  # type: ignore[arg-type]


def _header() -> AttrSpec:
    return _a(1, "header", NEST, "request/reply header", nested="header")


ETHTOOL = Family(
    "ethtool",
    1,
    {
        "header": AttrSet(
            "header",
            (
                _a(1, "dev-index", U32, "ifindex"),
                _a(2, "dev-name", STRING, "interface name"),
                _a(3, "flags", U32, "ETHTOOL_FLAG_*", enum=HeaderFlags),
                _a(4, "phy-index", U32, "PHY index"),
            ),
        ),
        "bitset-bit": AttrSet(
            "bitset-bit",
            (
                _a(1, "index", U32, "bit index"),
                _a(2, "name", STRING, "bit name"),
                _a(3, "value", FLAG, "bit is set"),
            ),
        ),
        "bitset-bits": AttrSet(
            "bitset-bits",
            (_a(1, "bit", NEST, "one bit", nested="bitset-bit", multi=True),),
        ),
        "bitset": AttrSet(
            "bitset",
            (
                _a(1, "nomask", FLAG, "a list of set bits, no mask"),
                _a(2, "size", U32, "number of bits"),
                _a(3, "bits", NEST, "bits by name", nested="bitset-bits"),
                _a(4, "value", BINARY, "compact value"),
                _a(5, "mask", BINARY, "compact mask"),
            ),
        ),
        "rings": AttrSet(
            "rings",
            (
                _header(),
                _a(2, "rx-max", U32),
                _a(3, "rx-mini-max", U32),
                _a(4, "rx-jumbo-max", U32),
                _a(5, "tx-max", U32),
                _a(6, "rx", U32, "RX ring size"),
                _a(7, "rx-mini", U32),
                _a(8, "rx-jumbo", U32),
                _a(9, "tx", U32, "TX ring size"),
                _a(10, "rx-buf-len", U32),
                _a(11, "tcp-data-split", U8, "header split", enum=TcpDataSplit),
                _a(12, "cqe-size", U32),
                _a(13, "tx-push", U8),
                _a(14, "rx-push", U8),
                _a(15, "tx-push-buf-len", U32),
                _a(16, "tx-push-buf-len-max", U32),
                _a(17, "hds-thresh", U32, "header-data split threshold (bytes)"),
                _a(18, "hds-thresh-max", U32),
            ),
        ),
        "channels": AttrSet(
            "channels",
            (
                _header(),
                _a(2, "rx-max", U32),
                _a(3, "tx-max", U32),
                _a(4, "other-max", U32),
                _a(5, "combined-max", U32),
                _a(6, "rx-count", U32),
                _a(7, "tx-count", U32),
                _a(8, "other-count", U32),
                _a(9, "combined-count", U32),
            ),
        ),
        "features": AttrSet(
            "features",
            (
                _header(),
                _a(2, "hw", NEST, "features the driver can change", nested="bitset"),
                _a(3, "wanted", NEST, "features requested", nested="bitset"),
                _a(4, "active", NEST, "features on", nested="bitset"),
                _a(5, "nochange", NEST, "features that cannot change", nested="bitset"),
            ),
        ),
        "rss": AttrSet(
            "rss",
            (
                _header(),
                _a(2, "context", U32, "RSS context (0: the default)"),
                _a(3, "hfunc", U32, "hash function"),
                _a(4, "indir", BINARY, "indirection table (u32 queue per entry)"),
                _a(5, "hkey", BINARY, "hash key"),
                _a(6, "input-xfrm", U32),
                _a(7, "start-context", U32),
                _a(8, "flow-hash", NEST, "flow hash fields per flow type", nested="flow"),
            ),
        ),
        # ETHTOOL_A_FLOW_*: RXH_* bits hashed for each flow type (6.17+, rss-set checks
        # it as a nest: seen in the 6.18 and 7.3 policies)
        "flow": AttrSet(
            "flow",
            (
                _a(1, "ether", UINT),
                _a(2, "ip4", UINT),
                _a(3, "ip6", UINT),
                _a(4, "tcp4", UINT),
                _a(5, "tcp6", UINT),
                _a(6, "udp4", UINT),
                _a(7, "udp6", UINT),
                _a(8, "sctp4", UINT),
                _a(9, "sctp6", UINT),
                _a(10, "ah4", UINT),
                _a(11, "ah6", UINT),
                _a(12, "esp4", UINT),
                _a(13, "esp6", UINT),
                _a(14, "ah-esp4", UINT),
                _a(15, "ah-esp6", UINT),
                _a(16, "gtpu4", UINT),
                _a(17, "gtpu6", UINT),
                _a(18, "gtpc4", UINT),
                _a(19, "gtpc6", UINT),
                _a(20, "gtpc-teid4", UINT),
                _a(21, "gtpc-teid6", UINT),
                _a(22, "gtpu-eh4", UINT),
                _a(23, "gtpu-eh6", UINT),
                _a(24, "gtpu-ul4", UINT),
                _a(25, "gtpu-ul6", UINT),
                _a(26, "gtpu-dl4", UINT),
                _a(27, "gtpu-dl6", UINT),
            ),
        ),
    },
    (
        Operation(11, "features-get", "features", do=True, request=("header",), since="5.6"),
        Operation(
            12,
            "features-set",
            "features",
            do=True,
            request=("header", "wanted"),
            capability="CAP_NET_ADMIN",
            since="5.6",
        ),
        Operation(15, "rings-get", "rings", do=True, request=("header",), since="5.6"),
        Operation(16, "rings-set", "rings", do=True, capability="CAP_NET_ADMIN", since="5.6"),
        Operation(17, "channels-get", "channels", do=True, request=("header",), since="5.6"),
        Operation(18, "channels-set", "channels", do=True, capability="CAP_NET_ADMIN", since="5.6"),
        Operation(38, "rss-get", "rss", do=True, request=("header", "context"), since="6.4"),
        Operation(48, "rss-set", "rss", do=True, capability="CAP_NET_ADMIN", since="6.17"),
        Operation(49, "rss-create-act", "rss", do=True, capability="CAP_NET_ADMIN", since="6.17"),
        Operation(50, "rss-delete-act", "rss", do=True, capability="CAP_NET_ADMIN", since="6.17"),
    ),
)
