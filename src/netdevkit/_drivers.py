"""What netdevkit knows of NIC drivers, in one place (see /work/shared/KERNEL.md).

Imported by :mod:`netdevkit.devmem.setup` and :mod:`netdevkit.doctor.verdicts`; it imports
nothing, so the doctor's pure half does not pull in the devmem package (and numpy).
"""

from __future__ import annotations

#: drivers (ethtool driver names) with the queue management API
#: (``netdev_queue_mgmt_ops``) and unreadable-netmem page pools as of Linux 6.18: the
#: ones Device Memory TCP can bind to
DEVMEM_DRIVERS = frozenset({"gve", "mlx5_core", "bnxt_en", "fbnic", "idpf"})
#: drivers known to lack both: they cannot carry devmem
NO_DEVMEM_DRIVERS = frozenset({"veth", "virtio_net", "loopback", "dummy", "bridge", "tun"})
