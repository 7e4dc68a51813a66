"""Journal kinds of NIC preparation: what ``devmem setup`` changed, and how to put it back.

Five kinds, one record per device (or per rule), written *before* the change
with the value it replaces (KERNEL.md, CONTRACTS.md: the one journal):

- ``ethtool-channels``: ``{"combined-count": N, "rx-count": N}`` before;
- ``ethtool-rings``: ``{"tcp-data-split": 1|2, "hds-thresh": N}`` before;
- ``ethtool-features``: ``{"rx-ntuple-filter": false}`` before;
- ``ethtool-rss``: ``{"indir": [...]}``, the default context's table before;
- ``ethtool-ntuple``: ``{"rule": null}`` (no rule before); ``info`` holds the
  flow, the queue and, once the driver chose it, the rule's ``location``.

Restoring puts ``before`` back if the device still exists, does nothing
(saying so) when it already holds ``before`` or is gone, and deletes a rule
only at the location journaled; a rule inserted by a process killed before it
could journal the location is found by its flow and queue (the rules the
device lists through ETHTOOL_GRXCLSRLALL / GRXCLSRULE).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import NetdevkitError, NotFoundError
from ..ethtool.client import default_indir
from ..ethtool.family import TcpDataSplit
from ..ethtool.ioctl import Flow
from ..journal import Record, key_of, register_kind
from .nic import KernelNic, Nic

RINGS, FEATURES, RSS, NTUPLE = "ethtool-rings", "ethtool-features", "ethtool-rss", "ethtool-ntuple"
CHANNELS = "ethtool-channels"
#: in the order setup's steps run (undo runs newest first)
KINDS = (CHANNELS, RINGS, FEATURES, RSS, NTUPLE)
NTUPLE_FEATURE = "rx-ntuple-filter"


def device_key(netns: str | None, ifname: str, *extra: object) -> str:
    return key_of(netns, ifname, *extra)


def flow_json(flow: Flow) -> dict[str, Any]:
    return {
        "dst_port": flow.dst_port,
        "src_port": flow.src_port,
        "dst_ip": flow.dst_ip,
        "src_ip": flow.src_ip,
        "ipv6": flow.ipv6,
    }


def channels_record(netns: str | None, ifname: str, before: dict[str, int], new: str) -> Record:
    return Record(
        CHANNELS,
        device_key(netns, ifname),
        dict(before),
        {"ifname": ifname, "netns": netns, "what": f"channels {new}"},
    )


def rings_record(netns: str | None, ifname: str, split: int, thresh: int | None) -> Record:
    return Record(
        RINGS,
        device_key(netns, ifname),
        {"tcp-data-split": split, "hds-thresh": thresh},
        {"ifname": ifname, "netns": netns, "what": "header split on, hds-thresh 0"},
    )


def features_record(netns: str | None, ifname: str, was_on: bool) -> Record:
    return Record(
        FEATURES,
        device_key(netns, ifname),
        {NTUPLE_FEATURE: was_on},
        {"ifname": ifname, "netns": netns, "what": "ntuple filters on"},
    )


def rss_record(netns: str | None, ifname: str, indir: list[int], new: list[int]) -> Record:
    return Record(
        RSS,
        device_key(netns, ifname),
        {"indir": indir},
        {"ifname": ifname, "netns": netns, "what": "RSS off the devmem queues", "new": new},
    )


def ntuple_record(netns: str | None, ifname: str, flow: Flow, queue: int) -> Record:
    return Record(
        NTUPLE,
        device_key(netns, ifname, "dport", flow.dst_port),
        {"rule": None},
        {
            "ifname": ifname,
            "netns": netns,
            "what": f"ntuple rule {flow.describe()} -> queue {queue}",
            "flow": flow_json(flow),
            "queue": queue,
            "location": None,
        },
    )


def current(nic: Nic, record: Record) -> dict[str, Any] | None:
    """The device's value in ``before``'s terms; None if the device is gone."""
    ifname = record.info["ifname"]
    try:
        if record.kind == CHANNELS:
            c = nic.channels_get(ifname)
            return {"combined-count": c.combined_count, "rx-count": c.rx_count}
        if record.kind == RINGS:
            r = nic.rings_get(ifname)
            split = None if r.tcp_data_split is None else int(r.tcp_data_split)
            return {"tcp-data-split": split, "hds-thresh": r.hds_thresh}
        if record.kind == FEATURES:
            return {NTUPLE_FEATURE: NTUPLE_FEATURE in nic.features_get(ifname).active}
        if record.kind == RSS:
            return {"indir": list(nic.rss_get(ifname).indir)}
        if record.kind == NTUPLE:
            loc = record.info.get("location")
            if loc is None:  # killed between the insert and journaling where it went
                f = record.info["flow"]
                flow = Flow(f["dst_port"], f["src_port"], f["dst_ip"], f["src_ip"], f["ipv6"])
                return {"rule": nic.ntuple_find(ifname, flow, int(record.info["queue"]))}
            return {"rule": loc if nic.ntuple_exists(ifname, loc) else None}
    except NotFoundError:
        return None
    raise ValueError(f"not a devmem setup kind: {record.kind!r}")


def restore(nic: Nic, record: Record) -> str:
    """Put *record*'s ``before`` back on *nic*; says what it did."""
    ifname = record.info["ifname"]
    now = current(nic, record)
    label = f"{ifname}: {record.info.get('what', record.kind)}"
    if now is None:
        return f"{label}: the device is gone, nothing to undo"
    if now == record.before:
        return f"{label}: already as before"
    b = record.before
    if record.kind == CHANNELS:
        nic.channels_set(
            ifname,
            **{
                arg: int(b[key])
                for arg, key in (("combined", "combined-count"), ("rx", "rx-count"))
                if b[key] != now[key]
            },
        )
    elif record.kind == RINGS:
        split = b["tcp-data-split"]
        nic.rings_set(
            ifname,
            tcp_data_split=None if split is None else TcpDataSplit(split),
            hds_thresh=b["hds-thresh"],
        )
    elif record.kind == FEATURES:
        nic.features_set(ifname, {NTUPLE_FEATURE: bool(b[NTUPLE_FEATURE])})
    elif record.kind == RSS:
        nic.rss_set(ifname, _indir_to_write(nic, ifname, [int(q) for q in b["indir"]]))
    elif record.kind == NTUPLE:
        nic.ntuple_delete(ifname, int(now["rule"]))
    return f"{label}: undone"


def _indir_to_write(nic: Nic, ifname: str, indir: list[int]) -> list[int]:
    """*indir*, or ``[]`` (the kernel's "back to the default table") when *indir* is the
    default spread over the device's RX queues (``default_indir``).

    Writing the default back as a table would leave it marked as set by the user
    (``netif_is_rxfh_configured``): the driver would then keep it across a channels
    change instead of regenerating it, and the kernel would refuse to shrink the
    channels below it, as it did not before setup.
    """
    try:
        n = nic.channels_get(ifname).rx_queues
    except NetdevkitError:
        return indir
    return [] if n and indir == default_indir(len(indir), n) else indir


#: the Nic a restore uses for a record's namespace (tests point it at a fake)
nic_for: Callable[[str | None], Nic] = KernelNic


@contextlib.contextmanager
def _nic_of(record: Record) -> Iterator[Nic]:
    """The Nic for *record*'s namespace, closed after the body."""
    nic = nic_for(record.info.get("netns"))
    try:
        yield nic
    finally:
        close = getattr(nic, "close", None)
        if close is not None:
            close()


class _Restorer:
    def restore(self, record: Record) -> str:
        with _nic_of(record) as nic:
            return restore(nic, record)

    def current(self, record: Record) -> dict[str, Any] | None:
        with _nic_of(record) as nic:
            return current(nic, record)


for _kind in KINDS:
    register_kind(_kind, _Restorer())
