"""A family declaration against the kernel's own policy (``CTRL_CMD_GETPOLICY``): the one
comparison ``test_family_kernel`` (netdev) and ``test_ethtool_family_kernel`` (ethtool) use."""

from __future__ import annotations

from netdevkit.netlink.policy import NlaType, Policy
from netdevkit.netlink.spec import AttrSet, AttrType, Family

#: declared type -> the netlink policy types the kernel may check it as
COMPATIBLE: dict[AttrType, set[NlaType]] = {
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


def check_policy(
    family: Family,
    set_name: str,
    policy: Policy,
    policies: dict[int, Policy],
    where: str,
    out: list[str],
) -> None:
    """Append to *out* every attribute of *policy* (for *family*'s set *set_name*) that the
    declaration lacks, types differently or caps lower; nested policies included."""
    aset: AttrSet = family.attr_sets[set_name]
    for attr_id, pol in sorted(policy.items()):
        spec = aset.by_id.get(attr_id)
        if spec is None:
            out.append(f"{where}: the kernel accepts attribute {attr_id} of {set_name!r}")
            continue
        if pol.type not in COMPATIBLE[spec.type]:
            out.append(f"{where}: {set_name}.{spec.name} is {spec.type.value}, kernel {pol.type!r}")
        if spec.max is not None and pol.max_value is not None and pol.max_value > spec.max:
            out.append(f"{where}: {set_name}.{spec.name} max {spec.max}, kernel {pol.max_value}")
        if spec.nested is not None and pol.nested is not None:
            inner = policies.get(pol.nested, {})
            check_policy(family, spec.nested, inner, policies, f"{where}.{spec.name}", out)
