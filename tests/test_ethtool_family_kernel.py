"""The ethtool family declaration (the operations devmem and netdevkit use) against the
running kernel's own view, as tests/test_family_kernel.py does for netdev.

On the host and every kernel of the matrix: each declared operation is registered
exactly from its ``since`` on, and every attribute the kernel's policy
(``CTRL_CMD_GETPOLICY``, nested policies included) accepts for it is declared, with a
compatible type and range. A new kernel's attribute fails here until it is declared.
"""

from __future__ import annotations

import pytest

from netdevkit import kver
from netdevkit.ethtool.client import Ethtool
from netdevkit.ethtool.family import ETHTOOL
from netdevkit.netlink.policy import NlaType, Policy, get_policy
from netdevkit.netlink.socket import GenlSocket
from netdevkit.netlink.spec import AttrSet, AttrType

pytestmark = [pytest.mark.kernel, pytest.mark.matrix]

#: declared type -> the netlink policy types the kernel may check it as
_COMPATIBLE: dict[AttrType, set[NlaType]] = {
    AttrType.U8: {NlaType.U8},
    AttrType.U16: {NlaType.U16},
    AttrType.U32: {NlaType.U32},
    AttrType.U64: {NlaType.U64},
    AttrType.S32: {NlaType.S32},
    AttrType.UINT: {NlaType.UINT},
    AttrType.STRING: {NlaType.STRING, NlaType.NUL_STRING},
    AttrType.BINARY: {NlaType.BINARY},
    AttrType.FLAG: {NlaType.FLAG},
    AttrType.NEST: {NlaType.NESTED, NlaType.NESTED_ARRAY},
}


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


def _check(
    set_name: str, policy: Policy, policies: dict[int, Policy], where: str, out: list[str]
) -> None:
    aset: AttrSet = ETHTOOL.attr_sets[set_name]
    for attr_id, pol in sorted(policy.items()):
        spec = aset.by_id.get(attr_id)
        if spec is None:
            out.append(f"{where}: the kernel accepts attribute {attr_id} of {set_name!r}")
            continue
        if pol.type not in _COMPATIBLE[spec.type]:
            out.append(f"{where}: {set_name}.{spec.name} is {spec.type.value}, kernel {pol.type!r}")
        if spec.max is not None and pol.max_value is not None and pol.max_value > spec.max:
            out.append(f"{where}: {set_name}.{spec.name} max {spec.max}, kernel {pol.max_value}")
        if spec.nested is not None and pol.nested is not None:
            _check(spec.nested, policies.get(pol.nested, {}), policies, f"{where}.{spec.name}", out)


def test_every_attribute_the_kernel_accepts_is_declared() -> None:
    problems: list[str] = []
    with Ethtool.open() as et, GenlSocket.open() as sock:
        for op in ETHTOOL.operations:
            if op.id not in et.info.op_ids:
                continue
            fp = get_policy(sock, "ethtool", op.id)
            pol = fp.op_policy(op.id, False)
            _check(op.attr_set, pol, dict(fp.policies), op.name, problems)
            set_ = ETHTOOL.attr_sets[op.attr_set]
            missing = [n for n in op.required if set_.by_name[n].id not in pol]
            if missing:
                problems.append(f"{op.name}: required {missing} not in the kernel's policy")
    assert not problems, problems
