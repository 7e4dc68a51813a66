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
--lease-queue of a physical one (--lease-ifname), both in the same network
namespace. Needs Linux 7.1+, CAP_NET_ADMIN, a virtual device whose driver
leases queues (netkit) and a physical driver with the queue management API;
the kernel refuses anything else, and netdevkit says why.

example:
  netdevkit queue create --ifname nk0 --lease-ifname eth0 --lease-queue 3
"""


def run_queue_create(args: argparse.Namespace) -> int:
    from ..netdev.client import Netdev, ifindex_of
    from ..netdev.family import QueueType

    ifindex = ifindex_of(args.ifname, args.netns)
    lease_ifindex = ifindex_of(args.lease_ifname, args.netns)
    with Netdev.open(args.netns) as nd:
        qid = nd.queue_create(ifindex, lease_ifindex, args.lease_queue, QueueType.RX)
    if args.json:
        row = {
            "ifname": args.ifname,
            "type": "rx",
            "id": qid,
            "lease": {"ifname": args.lease_ifname, "type": "rx", "id": args.lease_queue},
        }
        print(json.dumps(row))
    else:
        print(
            f"created rx queue {qid} on {args.ifname}, leased from {args.lease_ifname} "
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
    p.add_argument("-j", "--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_queue_create)
