"""The veth data path through NAPI: offloads via the ethtool ioctl, and the
``SO_INCOMING_NAPI_ID`` probe that proves it.

Kernel facts relied on (Linux 6.9-6.18, see /work/shared/KERNEL.md):

- veth has NAPI instances only while the device is up with GRO enabled (or
  an XDP program attached); ``veth_newlink`` creates pairs with GRO off. One
  NAPI per rx queue, so ``numrxqueues`` N gives N NAPIs on that side.
- A packet takes the receiver's NAPI only when the *sending* veth has every
  TSO feature off (``veth_skb_is_eligible_for_gro`` tests ``NETIF_F_ALL_TSO``
  of the sender); otherwise it goes through the per-CPU backlog and carries
  no NAPI id. Both sides therefore get GRO on and TSO/GSO off, so that both
  directions of a request/response exchange take the NAPI path.
- The receiving socket records the NAPI id of the skb that filled it; it is
  readable as ``SO_INCOMING_NAPI_ID`` (SOL_SOCKET, 56) and is 0 for traffic
  that came through no NAPI. ``up()`` proves the data path with one UDP
  datagram in each direction and fails if either arrives with id 0.
- A socket stays in the namespace it was created in; ``setns`` moves only
  the calling thread (see :mod:`netdevkit.netns`).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

from pyroute2.ethtool.ioctl import IoctlEthtool, NotSupportedError

from .. import netns as ndk_netns
from ..errors import UnsupportedError, translate_oserror

SO_INCOMING_NAPI_ID = 56  # SOL_SOCKET, read only

# ethtool feature names (ETH_SS_FEATURES strings). "tso off" of the ethtool
# binary clears every NETIF_F_ALL_TSO bit; all of them are named
# "tx-tcp*-segmentation" (6.18 adds tx-tcp-accecn-segmentation).
GRO = "rx-gro"
GSO = "tx-generic-segmentation"
TSO = "tx-tcp-segmentation"


def _is_tso_feature(name: str) -> bool:
    return name.startswith("tx-tcp") and name.endswith("-segmentation")


def socket_in_netns(
    ns: str,
    family: int = socket.AF_INET,
    type: int = socket.SOCK_STREAM,
    proto: int = 0,
) -> socket.socket:
    """A socket created inside network namespace *ns*.

    The socket lives in *ns* for its whole life (bind, connect, routing),
    whatever namespace the thread is in later.
    """
    with ndk_netns.entered(ns):
        return socket.socket(family, type, proto)


@contextlib.contextmanager
def _ethtool(ns: str, ifname: str) -> Iterator[Any]:
    # IoctlEthtool opens its AF_INET socket in __init__, so creating it inside
    # the namespace makes every SIOCETHTOOL go to that namespace's device.
    with ndk_netns.entered(ns):
        eth = IoctlEthtool(ifname)
    try:
        yield eth
    finally:
        eth.close()


def get_offloads(ns: str, ifname: str) -> dict[str, bool]:
    """Active state of rx-gro, tx-generic-segmentation and every TSO feature."""
    with _ethtool(ns, ifname) as eth:
        try:
            feats = eth.get_features()
        except OSError as err:
            raise translate_oserror(err, f"ETHTOOL_GFEATURES {ifname}") from err
        return {
            name: bool(feats[name])
            for name in feats.keys()  # noqa: SIM118 - not a dict
            if name in (GRO, GSO) or _is_tso_feature(name)
        }


def set_offloads(ns: str, ifname: str) -> dict[str, bool]:
    """GRO on, GSO and every TSO feature off (``ethtool -K IF gro on tso off
    gso off``); returns the state read back. Raises UnsupportedError when the
    kernel did not take a change."""
    with _ethtool(ns, ifname) as eth:
        try:
            feats = eth.get_features()
            wanted = {
                name: name == GRO
                for name in feats.keys()  # noqa: SIM118 - not a dict
                if name in (GRO, GSO) or _is_tso_feature(name)
            }
            for name, value in wanted.items():
                if bool(feats[name]) != value:
                    feats[name] = value
            # ETHTOOL_SFEATURES returns a positive ETHTOOL_F_* when the result
            # differs from the request; pyroute2 turns that into
            # NotSupportedError. The read-back below is the real check.
            with contextlib.suppress(NotSupportedError):
                eth.set_features(feats)
            after = eth.get_features()
        except OSError as err:
            raise translate_oserror(err, f"ETHTOOL_SFEATURES {ifname} in netns {ns}") from err
        got = {name: bool(after[name]) for name in wanted}
    # The other TSO bits matter too, but a device that keeps one of them on
    # is caught by Testbed.probe_napi (traffic without a NAPI id).
    wrong = sorted(n for n in (GRO, GSO, TSO) if n in wanted and got[n] != wanted[n])
    if wrong:
        raise UnsupportedError(
            f"{ifname} in netns {ns}: could not set {', '.join(wrong)} "
            "(wanted rx-gro on, TSO/GSO off)"
        )
    return got


def _udp_napi_id(src_ns: str, dst_ns: str, dst_addr: str, timeout: float) -> int:
    """One datagram src -> dst; the receiving socket's SO_INCOMING_NAPI_ID.

    An unconnected UDP socket records the NAPI id of the first datagram it
    queues (sk_mark_napi_id_once); a fresh socket per attempt keeps it honest.
    """
    deadline = time.monotonic() + timeout
    last = 0
    while True:
        with (
            socket_in_netns(dst_ns, socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket_in_netns(src_ns, socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.bind((dst_addr, 0))
            rx.settimeout(0.2)
            tx.sendto(b"netdevkit-probe", rx.getsockname())
            try:
                rx.recv(64)
                last = rx.getsockopt(socket.SOL_SOCKET, SO_INCOMING_NAPI_ID)
            except TimeoutError:
                pass
        if last != 0 or time.monotonic() > deadline:
            return last
