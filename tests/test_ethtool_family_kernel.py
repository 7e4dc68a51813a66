"""The ethtool family declaration (the operations devmem and netdevkit use) against the
running kernel's own view, as tests/test_family_kernel.py does for netdev.

On the host and every kernel of the matrix: each declared operation is registered
exactly from its ``since`` on, and every attribute the kernel's policy
(``CTRL_CMD_GETPOLICY``, nested policies included) accepts for it is declared, with a
compatible type and range. A new kernel's attribute fails here until it is declared.
"""

from __future__ import annotations

import pytest
from policycheck import check_policy

from netdevkit import kver
from netdevkit.ethtool.client import Ethtool
from netdevkit.ethtool.family import ETHTOOL
from netdevkit.netlink.policy import get_policy
from netdevkit.netlink.socket import GenlSocket

pytestmark = [pytest.mark.kernel, pytest.mark.matrix]


def test_operations_are_registered_exactly_from_their_since() -> None:
    with Ethtool.open() as et:
        registered = et.info.op_ids
    wrong = [
        f"{op.name} (since {op.since}): {kver.release()} "
        + ("registers" if op.id in registered else "lacks")
        + " it"
        for op in ETHTOOL.operations
        if (op.id in registered) != kver.at_least(op.since or "0")
    ]
    assert not wrong, wrong


def test_every_attribute_the_kernel_accepts_is_declared() -> None:
    problems: list[str] = []
    with Ethtool.open() as et, GenlSocket.open() as sock:
        for op in ETHTOOL.operations:
            if op.id not in et.info.op_ids:
                continue
            fp = get_policy(sock, "ethtool", op.id)
            pol = fp.op_policy(op.id, False)
            check_policy(ETHTOOL, op.attr_set, pol, dict(fp.policies), op.name, problems)
            set_ = ETHTOOL.attr_sets[op.attr_set]
            missing = [n for n in op.required if set_.by_name[n].id not in pol]
            if missing:
                problems.append(f"{op.name}: required {missing} not in the kernel's policy")
    assert not problems, problems
