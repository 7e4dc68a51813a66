"""``netdevkit queue create``: a queue on a virtual netdev, leased from a NIC's queue.

Queue leasing (Linux 7.1+) gives a virtual device (netkit, for a container)
an RX queue that is really a physical NIC's queue, so AF_XDP and memory
providers (devmem, io_uring zero-copy) work from inside the container. The
kernel's ``queue-create`` takes the virtual device, the queue type and the
lease (the physical device and its queue) and answers the new queue's id;
``netdevkit queue show`` then shows the lease on both ends.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from .argtypes import int_at_least
from .show import object_subparsers

if TYPE_CHECKING:
    from .show import SubParsers

CREATE_HELP = """\
Create an RX queue on a virtual netdev (--ifname) leased from queue
--lease-queue of a physical one (--lease-ifname). Needs Linux 7.1+,
CAP_NET_ADMIN, a virtual device whose driver leases queues (netkit: a
single device, or the peer end of a pair, with room left under its
num-rx-queues) and a physical driver with the queue management API; the
kernel refuses anything else, and netdevkit says why.

The physical device may live in another network namespace (the container
case: netkit inside the container's namespace, the NIC in the host's):
--lease-netns names it, and --lease-ifname is looked up there. The kernel
takes that namespace's id as numbered from --netns; netdevkit asks for it
and has one assigned when there is none yet (as `ip netns set NAME auto`).

`netdevkit queue show` shows the lease on the physical device's queue
(lease DEV/rxN, with @nsidN when the netkit is in another namespace).
Deleting the netkit device ends its leases: the kernel has no call that
removes one leased queue, so a lease is not journaled and `netdevkit restore`
does not end it.

examples:
  netdevkit queue create --ifname nk0 --lease-ifname eth0 --lease-queue 3
  netdevkit queue create --netns ctr1 --ifname nk0 \\
      --lease-netns host --lease-ifname eth0 --lease-queue 3
"""


def run_queue_create(args: argparse.Namespace) -> int:
    from ..netdev.client import Netdev, ifindex_of, netns_id_of
    from ..netdev.family import QueueType

    lease_netns = args.lease_netns if args.lease_netns is not None else args.netns
    ifindex = ifindex_of(args.ifname, args.netns)
    lease_ifindex = ifindex_of(args.lease_ifname, lease_netns)
    nsid = None if args.lease_netns is None else netns_id_of(args.lease_netns, args.netns)
    with Netdev.open(args.netns) as nd:
        qid = nd.queue_create(
            ifindex, lease_ifindex, args.lease_queue, QueueType.RX, lease_netns_id=nsid
        )
    if args.json:
        lease = {"ifname": args.lease_ifname, "type": "rx", "id": args.lease_queue}
        if args.lease_netns is not None:
            lease |= {"netns": args.lease_netns, "netns_id": nsid}
        print(json.dumps({"ifname": args.ifname, "type": "rx", "id": qid, "lease": lease}))
    else:
        where = "" if args.lease_netns is None else f" in {args.lease_netns}"
        print(
            f"created rx queue {qid} on {args.ifname}, leased from {args.lease_ifname}{where} "
            f"rx queue {args.lease_queue}"
        )
    return 0


def register(sub: SubParsers) -> None:
    """Add ``queue create`` (``queue show`` comes from :mod:`.show`)."""
    p = object_subparsers(sub, "queue").add_parser(
        "create",
        help="create a queue leased from another device's queue (Linux 7.1+)",
        description=CREATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ifname", required=True, metavar="NAME", help="the virtual netdev")
    p.add_argument(
        "--lease-ifname", required=True, metavar="NAME", help="the device whose queue is leased"
    )
    p.add_argument(
        "--lease-queue", required=True, type=int_at_least(0), metavar="N", help="its RX queue"
    )
    p.add_argument("--netns", metavar="NAME", help="act inside network namespace NAME")
    p.add_argument(
        "--lease-netns",
        metavar="NAME",
        help="the namespace of --lease-ifname, when not --netns's (default: the same)",
    )
    p.add_argument("-j", "--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_queue_create)
