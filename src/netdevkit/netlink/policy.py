"""What a generic netlink family accepts, in the kernel's own words.

``CTRL_CMD_GETPOLICY`` (Linux 5.10+) dumps, for each operation of a family,
the policy its do and dump requests are checked against: attribute ids, their
netlink types and ranges, and the policies of nested attributes. netdevkit
compares this with its declarations (:mod:`netdevkit.netdev.family`) so a
kernel's new attribute or a changed range is noticed, not guessed.

The decoder is sans-I/O (:func:`decode_policy`); :func:`get_policy` is the thin
socket half.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from . import codec
from .socket import CTRL_ATTR_FAMILY_NAME, GenlSocket

CTRL_CMD_GETPOLICY = 10
CTRL_ATTR_POLICY = 8
CTRL_ATTR_OP_POLICY = 9
CTRL_ATTR_OP = 10
CTRL_ATTR_POLICY_DO = 1
CTRL_ATTR_POLICY_DUMP = 2
# enum netlink_policy_type_attr (include/uapi/linux/netlink.h)
NL_POLICY_TYPE_ATTR_TYPE = 1
NL_POLICY_TYPE_ATTR_MIN_VALUE_S = 2
NL_POLICY_TYPE_ATTR_MAX_VALUE_S = 3
NL_POLICY_TYPE_ATTR_MIN_VALUE_U = 4
NL_POLICY_TYPE_ATTR_MAX_VALUE_U = 5
NL_POLICY_TYPE_ATTR_POLICY_IDX = 8


class NlaType(enum.IntEnum):
    """enum netlink_attribute_type (include/uapi/linux/netlink.h)."""

    INVALID = 0
    FLAG = 1
    U8 = 2
    U16 = 3
    U32 = 4
    U64 = 5
    S8 = 6
    S16 = 7
    S32 = 8
    S64 = 9
    BINARY = 10
    STRING = 11
    NUL_STRING = 12
    NESTED = 13
    NESTED_ARRAY = 14
    BITFIELD32 = 15
    SINT = 16
    UINT = 17


@dataclass(frozen=True, slots=True)
class AttrPolicy:
    """How the kernel checks one attribute."""

    #: a plain int for a type this library does not know
    type: NlaType | int
    min_value: int | None = None
    max_value: int | None = None
    #: index of the nested attributes' policy (NESTED, NESTED_ARRAY)
    nested: int | None = None


Policy = Mapping[int, AttrPolicy]


@dataclass(frozen=True, slots=True)
class FamilyPolicy:
    """Every policy of a family, and which one each operation uses."""

    #: policy index -> attribute id -> its policy
    policies: Mapping[int, Policy]
    #: command id -> (do policy index, dump policy index); None: no attributes accepted
    ops: Mapping[int, tuple[int | None, int | None]]

    def op_policy(self, cmd: int, dump: bool = False) -> Policy:
        """The attributes command *cmd* accepts (empty when it takes none)."""
        idx = self.ops.get(cmd, (None, None))[1 if dump else 0]
        return self.policies.get(idx, MappingProxyType({})) if idx is not None else {}


def _int(buf: bytes, a: int, b: int, signed: bool = False) -> int:
    return int.from_bytes(buf[a:b], sys.byteorder, signed=signed)


def _attr_policy(buf: bytes, a: int, b: int) -> AttrPolicy:
    kind: NlaType | int = NlaType.INVALID
    lo: int | None = None
    hi: int | None = None
    nested: int | None = None
    for raw_type, xa, xb in codec.iter_attrs(buf, a, b):
        t = raw_type & codec.NLA_TYPE_MASK
        if t == NL_POLICY_TYPE_ATTR_TYPE:
            raw = _int(buf, xa, xb)
            kind = NlaType(raw) if raw in NlaType._value2member_map_ else raw
        elif t in (NL_POLICY_TYPE_ATTR_MIN_VALUE_U, NL_POLICY_TYPE_ATTR_MIN_VALUE_S):
            lo = _int(buf, xa, xb, signed=t == NL_POLICY_TYPE_ATTR_MIN_VALUE_S)
        elif t in (NL_POLICY_TYPE_ATTR_MAX_VALUE_U, NL_POLICY_TYPE_ATTR_MAX_VALUE_S):
            hi = _int(buf, xa, xb, signed=t == NL_POLICY_TYPE_ATTR_MAX_VALUE_S)
        elif t == NL_POLICY_TYPE_ATTR_POLICY_IDX:
            nested = _int(buf, xa, xb)
    return AttrPolicy(kind, lo, hi, nested)


def decode_policy(payloads: Iterable[bytes]) -> FamilyPolicy:
    """Decode the replies of a ``CTRL_CMD_GETPOLICY`` dump (genl payloads)."""
    policies: dict[int, dict[int, AttrPolicy]] = {}
    ops: dict[int, tuple[int | None, int | None]] = {}
    for payload in payloads:
        for t, a, b in codec.iter_attrs(payload, codec.GENLMSGHDR_LEN):
            kind = t & codec.NLA_TYPE_MASK
            if kind == CTRL_ATTR_POLICY:
                for pidx, pa, pb in codec.iter_attrs(payload, a, b):
                    policy = policies.setdefault(pidx & codec.NLA_TYPE_MASK, {})
                    for aid, xa, xb in codec.iter_attrs(payload, pa, pb):
                        policy[aid & codec.NLA_TYPE_MASK] = _attr_policy(payload, xa, xb)
            elif kind == CTRL_ATTR_OP_POLICY:
                for cmd, oa, ob in codec.iter_attrs(payload, a, b):
                    do = dump = None
                    for which, xa, xb in codec.iter_attrs(payload, oa, ob):
                        if which & codec.NLA_TYPE_MASK == CTRL_ATTR_POLICY_DO:
                            do = _int(payload, xa, xb)
                        elif which & codec.NLA_TYPE_MASK == CTRL_ATTR_POLICY_DUMP:
                            dump = _int(payload, xa, xb)
                    ops[cmd & codec.NLA_TYPE_MASK] = (do, dump)
    return FamilyPolicy(
        MappingProxyType({k: MappingProxyType(v) for k, v in policies.items()}),
        MappingProxyType(ops),
    )


def get_policy(sock: GenlSocket, family: str, op: int | None = None) -> FamilyPolicy:
    """Ask nlctrl for the policies of *family*: every operation's, or only *op*'s.

    Asking per operation is the reliable way: 6.18 reports a dump-only
    operation (qstats-get) under command id 0 in both forms; asked for one
    operation, the single entry is put back under its id.
    """
    seq = sock.next_seq()
    attrs = codec.encode_attr(CTRL_ATTR_FAMILY_NAME, family.encode() + b"\0")
    if op is not None:
        attrs += codec.encode_attr(CTRL_ATTR_OP, op.to_bytes(4, sys.byteorder))
    flags = codec.NLM_F_REQUEST | codec.NLM_F_ACK | codec.NLM_F_DUMP
    req = codec.encode_genl(codec.GENL_ID_CTRL, CTRL_CMD_GETPOLICY, 1, flags, seq, attrs)
    replies = sock.transact(req, seq, f"policy of generic netlink family {family!r}")
    policy = decode_policy(m.payload for m in replies)
    if op is not None and len(policy.ops) == 1 and op not in policy.ops:
        # seen on 6.18: a dump-only operation's entry is labelled 0 even when asked for
        only = next(iter(policy.ops.values()))
        return FamilyPolicy(policy.policies, MappingProxyType({op: only}))
    return policy
