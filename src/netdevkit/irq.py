"""Which CPUs an interrupt may be delivered to: ``/proc/irq/N/smp_affinity_list``.

Kernel facts: netdev's napi-get reports each NAPI's ``irq`` (absent for a NAPI without
one: veth and other software devices have no interrupts); ``/proc/irq/N/smp_affinity_list``
is a cpulist, the same in every network namespace, and absent for an irq that went away.
"""

from __future__ import annotations

from ._os import parse_cpu_list
from .errors import NetdevkitError

__all__ = ["irq_cpus"]


def irq_cpus(irq: int) -> frozenset[int] | None:
    """The CPUs *irq* is affine to; None when the kernel shows no such irq."""
    try:
        with open(f"/proc/irq/{int(irq)}/smp_affinity_list", encoding="ascii") as f:
            return parse_cpu_list(f.read().strip())
    except (OSError, NetdevkitError):
        return None
