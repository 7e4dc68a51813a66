"""Typed client of the ``ethtool`` generic netlink family: rings, channels, features, RSS.

>>> with Ethtool.open() as et:                       # doctest: +SKIP
...     print(et.rings_get("eth0").tcp_data_split)

Everything returned is a frozen dataclass. Errors are translated at this
boundary as in :mod:`netdevkit.netdev.client`: a missing capability is
:class:`~netdevkit.errors.PermissionDenied`, an operation this kernel lacks
:class:`~netdevkit.errors.UnsupportedError`, an unknown device
:class:`~netdevkit.errors.NotFoundError`, every other refusal a
:class:`~netdevkit.errors.KernelError` with the kernel's extack and the path
of the attribute it pointed at.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import (
    ErrorReply,
    KernelError,
    NetdevkitError,
    NotFoundError,
    PermissionDenied,
    RequestError,
)
from ..netlink import codec
from ..netlink.client import FamilyClient
from ..netlink.spec import Operation, encode_attrs
from .family import ETHTOOL, TcpDataSplit


@dataclass(frozen=True, slots=True)
class Rings:
    """Ring parameters; None where the driver does not report the field."""

    ifname: str
    rx: int | None = None
    rx_max: int | None = None
    tx: int | None = None
    tx_max: int | None = None
    rx_buf_len: int | None = None
    #: None when the driver does not report header split at all
    tcp_data_split: TcpDataSplit | None = None
    hds_thresh: int | None = None
    hds_thresh_max: int | None = None


@dataclass(frozen=True, slots=True)
class Channels:
    ifname: str
    rx_count: int = 0
    tx_count: int = 0
    other_count: int = 0
    combined_count: int = 0
    rx_max: int = 0
    combined_max: int = 0

    @property
    def rx_queues(self) -> int:
        """RX queues the device uses: combined channels plus RX-only ones."""
        return self.combined_count + self.rx_count


@dataclass(frozen=True, slots=True)
class Features:
    """Feature names (``rx-ntuple-filter`` ...) by state."""

    ifname: str
    active: frozenset[str]
    wanted: frozenset[str]
    #: the features the driver lets the user change
    hw: frozenset[str]
    nochange: frozenset[str]


@dataclass(frozen=True, slots=True)
class Rss:
    ifname: str
    context: int
    hfunc: int | None
    #: queue of each indirection-table entry
    indir: tuple[int, ...]
    hkey: bytes


def default_indir(size: int, queues: int) -> list[int]:
    """The indirection table a driver uses until the user sets one: *size* entries spread
    round-robin over *queues* RX queues (the kernel's ethtool_rxfh_indir_default)."""
    return [i % queues for i in range(size)]


def _bit_names(bitset: Mapping[str, Any] | None) -> frozenset[str]:
    """Names of the set bits of a non-compact bitset reply."""
    if not bitset:
        return frozenset()
    bits = bitset.get("bits", {}).get("bit", [])
    nomask = bool(bitset.get("nomask"))
    return frozenset(b["name"] for b in bits if "name" in b and (nomask or b.get("value")))


_NEEDS = {
    "rss-set": "changing the RSS indirection table over netlink needs Linux 6.17 or newer",
    "rss-create-act": "creating RSS contexts over netlink needs Linux 6.17 or newer",
    "rss-delete-act": "deleting RSS contexts over netlink needs Linux 6.17 or newer",
}


class Ethtool(FamilyClient):
    """A connection to the kernel's ``ethtool`` family. Use :meth:`open`."""

    family = ETHTOOL
    needs = _NEEDS

    # -- plumbing ---------------------------------------------------------------

    def call(self, op_name: str, ifname: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """One do request for *ifname*; returns the decoded reply ({} if none)."""
        op = self._op(op_name)
        what = f"ethtool {op_name} {ifname}"
        payload = encode_attrs(ETHTOOL, op.attr_set, {"header": {"dev-name": ifname}, **attrs})
        seq = self._sock.next_seq()
        flags = codec.NLM_F_REQUEST | codec.NLM_F_ACK
        req = codec.encode_genl(self.info.id, op.id, ETHTOOL.version, flags, seq, payload)
        decode = self._codec.decode
        try:
            rows = self._sock.transact_rows(
                req,
                seq,
                what,
                lambda buf, a, b: decode(op.attr_set, buf, a, b),
                codec.GENLMSGHDR_LEN,
            )
        except ErrorReply as err:
            raise self._translate(err, op, req, what) from None
        return rows[0] if rows else {}

    def _translate(self, err: ErrorReply, op: Operation, req: bytes, what: str) -> NetdevkitError:
        e = err.errno or 0
        ext = err.raw_extack
        path = self._extack_path(err, op, req)
        if e in (errno.EPERM, errno.EACCES):
            return PermissionDenied(e, what, op.capability or "CAP_NET_ADMIN", ext.message)
        if e == errno.ENODEV:
            return NotFoundError(f"{what}: no such network device ({ext.message or 'ENODEV'})")
        if e == errno.EOPNOTSUPP:
            return KernelError(e, what, ext.message, path, hint="the driver does not support it")
        return KernelError(e, what, ext.message, path)

    # -- rings --------------------------------------------------------------------

    def rings_get(self, ifname: str) -> Rings:
        d = self.call("rings-get", ifname, {})
        split = d.get("tcp-data-split")
        return Rings(
            ifname,
            d.get("rx"),
            d.get("rx-max"),
            d.get("tx"),
            d.get("tx-max"),
            d.get("rx-buf-len"),
            None if split is None else TcpDataSplit(split),
            d.get("hds-thresh"),
            d.get("hds-thresh-max"),
        )

    def rings_set(
        self,
        ifname: str,
        *,
        tcp_data_split: TcpDataSplit | None = None,
        hds_thresh: int | None = None,
    ) -> None:
        attrs: dict[str, Any] = {}
        if tcp_data_split is not None:
            attrs["tcp-data-split"] = int(tcp_data_split)
        if hds_thresh is not None:
            attrs["hds-thresh"] = hds_thresh
        if not attrs:
            raise RequestError("rings_set: nothing to change")
        self.call("rings-set", ifname, attrs)

    # -- channels, features ---------------------------------------------------------

    def channels_get(self, ifname: str) -> Channels:
        d = self.call("channels-get", ifname, {})
        return Channels(
            ifname,
            d.get("rx-count", 0),
            d.get("tx-count", 0),
            d.get("other-count", 0),
            d.get("combined-count", 0),
            d.get("rx-max", 0),
            d.get("combined-max", 0),
        )

    def channels_set(
        self,
        ifname: str,
        *,
        rx: int | None = None,
        tx: int | None = None,
        combined: int | None = None,
    ) -> None:
        """Change the queue counts (``ethtool -L``); None leaves a count as it is."""
        given = {"rx-count": rx, "tx-count": tx, "combined-count": combined}
        attrs = {k: v for k, v in given.items() if v is not None}
        if not attrs:
            raise RequestError("channels_set: nothing to change")
        self.call("channels-set", ifname, attrs)

    def features_get(self, ifname: str) -> Features:
        d = self.call("features-get", ifname, {})
        return Features(
            ifname,
            _bit_names(d.get("active")),
            _bit_names(d.get("wanted")),
            _bit_names(d.get("hw")),
            _bit_names(d.get("nochange")),
        )

    def features_set(self, ifname: str, changes: Mapping[str, bool]) -> None:
        """Turn features on or off by name (``{"rx-ntuple-filter": True}``)."""
        if not changes:
            raise RequestError("features_set: nothing to change")
        bits = [{"name": name, "value": bool(on)} for name, on in changes.items()]
        self.call("features-set", ifname, {"wanted": {"bits": {"bit": bits}}})

    # -- RSS --------------------------------------------------------------------------

    def rss_get(self, ifname: str, context: int = 0) -> Rss:
        d = self.call("rss-get", ifname, {"context": context} if context else {})
        raw = d.get("indir", b"")
        indir = struct.unpack(f"={len(raw) // 4}I", raw[: len(raw) // 4 * 4])
        return Rss(ifname, d.get("context", context), d.get("hfunc"), indir, d.get("hkey", b""))

    def rss_set(self, ifname: str, indir: Sequence[int], context: int = 0) -> None:
        attrs: dict[str, Any] = {"indir": struct.pack(f"={len(indir)}I", *indir)}
        if context:
            attrs["context"] = context
        self.call("rss-set", ifname, attrs)

    def rss_create(self, ifname: str, indir: Sequence[int]) -> int:
        """A new RSS context spreading over *indir*; returns its id."""
        d = self.call("rss-create-act", ifname, {"indir": struct.pack(f"={len(indir)}I", *indir)})
        if "context" not in d:
            raise KernelError(errno.EIO, f"ethtool rss-create-act {ifname}", "no context id")
        return int(d["context"])

    def rss_delete(self, ifname: str, context: int) -> None:
        self.call("rss-delete-act", ifname, {"context": context})
