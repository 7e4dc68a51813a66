"""Generic netlink families declared as typed data, and the codec they drive.

One :class:`AttrSpec` per attribute (id, name, type, nested set, enum) drives
encoding, decoding, extack attribute paths, the CLI's help and the docs, as the
kernel's YNL specs do. Unlike YNL the declarations are typed, read-only
records (NamedTuples and slotted classes) checked by mypy, not strings resolved late.

Decoding keeps attributes the declaration does not know (a newer kernel) under
the key :data:`UNKNOWN` as ``(id, raw bytes)`` pairs instead of failing.
"""

# No `from __future__ import annotations`: NamedTuple fields annotated with strings
# cost a compile() each at import, and every CLI start-up imports this module.
import builtins
import enum
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, NamedTuple, TypeVar

from ..errors import DecodeError, RequestError
from .codec import (
    NLA_F_NESTED,
    NLA_HDRLEN,
    NLA_TYPE_MASK,
    NLATTR,
    attr_overrun,
    encode_attr,
    iter_attrs,
)

#: key under which decoded attribute dicts keep attributes nobody declared
UNKNOWN = "__unknown__"


class AttrType(enum.Enum):
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    S32 = "s32"
    #: netlink "variable width" unsigned: 4 bytes when it fits in u32, else 8
    UINT = "uint"
    STRING = "string"
    BINARY = "binary"
    FLAG = "flag"
    NEST = "nest"
    PAD = "pad"


_FIXED: dict[AttrType, struct.Struct] = {
    AttrType.U8: struct.Struct("=B"),
    AttrType.U16: struct.Struct("=H"),
    AttrType.U32: struct.Struct("=I"),
    AttrType.U64: struct.Struct("=Q"),
    AttrType.S32: struct.Struct("=i"),
}
_RANGES: dict[AttrType, tuple[int, int]] = {
    AttrType.U8: (0, 0xFF),
    AttrType.U16: (0, 0xFFFF),
    AttrType.U32: (0, 0xFFFF_FFFF),
    AttrType.U64: (0, 0xFFFF_FFFF_FFFF_FFFF),
    AttrType.S32: (-(2**31), 2**31 - 1),
    AttrType.UINT: (0, 0xFFFF_FFFF_FFFF_FFFF),
}
_U32 = _FIXED[AttrType.U32]
_U64 = _FIXED[AttrType.U64]
#: an attribute header and a u32 value, unpacked in one call on the hot path
_U32_ATTR = struct.Struct("=HHI")


class AttrSpec(NamedTuple):
    """One attribute of an attribute set."""

    id: int
    name: str
    type: AttrType
    doc: str = ""
    #: for NEST: the attribute set of the nested attributes
    nested: str | None = None
    #: may appear several times; decoded as a list
    multi: bool = False
    #: Enum or IntFlag class the integer value is drawn from
    enum: builtins.type[Enum] | None = None
    #: inclusive upper bound the kernel's policy enforces (None: the type's range)
    max: int | None = None


class _ReadOnly:
    """Slots set once by ``__init__``; assigning or deleting them later raises."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only (cannot delete {name!r})")


class AttrSet(_ReadOnly):
    """A named set of attributes, indexed both ways."""

    __slots__ = ("attrs", "by_id", "by_name", "name")
    name: str
    attrs: tuple[AttrSpec, ...]
    by_id: Mapping[int, AttrSpec]
    by_name: Mapping[str, AttrSpec]

    def __init__(self, name: str, attrs: tuple[AttrSpec, ...]) -> None:
        init = object.__setattr__
        init(self, "name", name)
        init(self, "attrs", attrs)
        init(self, "by_id", {a.id: a for a in attrs})
        init(self, "by_name", {a.name: a for a in attrs})

    def __repr__(self) -> str:
        return f"AttrSet(name={self.name!r}, attrs={self.attrs!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AttrSet):
            return NotImplemented
        return (self.name, self.attrs) == (other.name, other.attrs)

    def __hash__(self) -> int:
        return hash((self.name, self.attrs))


class Operation(NamedTuple):
    """One command of a family."""

    id: int
    name: str
    attr_set: str
    doc: str = ""
    do: bool = False
    dump: bool = False
    #: attributes the request may carry (do and dump)
    request: tuple[str, ...] = ()
    #: attributes a do request must carry
    required: tuple[str, ...] = ()
    #: a notification, never a request
    notify: bool = False
    #: capability the kernel checks (GENL_ADMIN_PERM), if any
    capability: str | None = None
    #: the first kernel that has it
    since: str = ""


class Family(_ReadOnly):
    """A generic netlink family as declared data."""

    __slots__ = (
        "attr_sets",
        "mcast_groups",
        "name",
        "operations",
        "ops_by_id",
        "ops_by_name",
        "version",
    )
    name: str
    version: int
    attr_sets: Mapping[str, AttrSet]
    operations: tuple[Operation, ...]
    mcast_groups: tuple[str, ...]
    ops_by_name: Mapping[str, Operation]
    ops_by_id: Mapping[int, Operation]

    def __init__(
        self,
        name: str,
        version: int,
        attr_sets: Mapping[str, AttrSet],
        operations: tuple[Operation, ...],
        mcast_groups: tuple[str, ...] = (),
    ) -> None:
        for s in attr_sets.values():
            for a in s.attrs:
                if a.type is AttrType.NEST and a.nested not in attr_sets:
                    raise ValueError(f"{s.name}.{a.name}: unknown nested set {a.nested!r}")
        init = object.__setattr__
        init(self, "name", name)
        init(self, "version", version)
        init(self, "attr_sets", attr_sets)
        init(self, "operations", operations)
        init(self, "mcast_groups", mcast_groups)
        init(self, "ops_by_name", {op.name: op for op in operations})
        init(self, "ops_by_id", {op.id: op for op in operations})

    def __repr__(self) -> str:
        return f"Family(name={self.name!r}, version={self.version!r})"


# -- encoding ---------------------------------------------------------------


def _encode_scalar(spec: AttrSpec, value: object, where: str) -> bytes:
    t = spec.type
    if t is AttrType.STRING:
        if not isinstance(value, str):
            raise RequestError(f"{where}: expected a string, got {value!r}")
        return value.encode() + b"\0"
    if t is AttrType.BINARY:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise RequestError(f"{where}: expected bytes, got {value!r}")
        return bytes(value)
    if t is AttrType.FLAG:
        return b""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{where}: expected an integer, got {value!r}")
    lo, hi = _RANGES[t]
    if spec.max is not None:
        hi = min(hi, spec.max)
    if not lo <= value <= hi:
        raise RequestError(f"{where}: {value} is out of range {lo}..{hi}")
    if t is AttrType.UINT:
        return _U32.pack(value) if value <= 0xFFFF_FFFF else _U64.pack(value)
    return _FIXED[t].pack(value)


def encode_attrs(family: Family, set_name: str, values: Mapping[str, Any]) -> bytes:
    """Encode ``{attr name: value}`` with the declarations of *set_name*.

    Nested attributes take a mapping (a list of mappings when ``multi``);
    FLAG attributes are emitted when their value is true. Raises
    :class:`RequestError` for unknown names, wrong types and out-of-range
    values, before anything is sent.
    """
    aset = family.attr_sets[set_name]
    out: list[bytes] = []
    for name, value in values.items():
        spec = aset.by_name.get(name)
        where = f"{set_name}.{name}"
        if spec is None:
            known = ", ".join(a.name for a in aset.attrs)
            raise RequestError(f"{where}: no such attribute (known: {known})")
        if value is None or (spec.type is AttrType.FLAG and not value):
            continue
        items: Iterable[Any] = value if spec.multi else (value,)
        if spec.multi and isinstance(value, Mapping | str | bytes):
            raise RequestError(f"{where}: expected a list of values")
        for item in items:
            if spec.type is AttrType.NEST:
                if not isinstance(item, Mapping):
                    raise RequestError(f"{where}: expected a mapping of nested attributes")
                assert spec.nested is not None
                out.append(
                    encode_attr(spec.id | NLA_F_NESTED, encode_attrs(family, spec.nested, item))
                )
            else:
                scalar = item.value if isinstance(item, enum.Enum) else item
                out.append(encode_attr(spec.id, _encode_scalar(spec, scalar, where)))
    return b"".join(out)


# -- decoding ---------------------------------------------------------------

Decoder = Callable[[bytes, int, int], Any]
R = TypeVar("R")


def _fixed_decoder(s: struct.Struct, name: str) -> Decoder:
    size = s.size
    unpack = s.unpack_from

    def dec(buf: bytes, a: int, b: int) -> Any:
        if b - a < size:
            raise DecodeError(f"attribute {name}: {b - a} bytes, expected {size}")
        return unpack(buf, a)[0]

    return dec


def _uint_decoder(name: str) -> Decoder:
    u32 = _U32.unpack_from
    u64 = _U64.unpack_from

    def dec(buf: bytes, a: int, b: int) -> Any:
        n = b - a
        if n == 4:
            return u32(buf, a)[0]
        if n == 8:
            return u64(buf, a)[0]
        raise DecodeError(f"attribute {name}: variable-width uint of {n} bytes (expected 4 or 8)")

    return dec


def _string_decoder(buf: bytes, a: int, b: int) -> Any:
    return buf[a:b].split(b"\0", 1)[0].decode("utf-8", "replace")


def _binary_decoder(buf: bytes, a: int, b: int) -> Any:
    return bytes(buf[a:b])


def _flag_decoder(buf: bytes, a: int, b: int) -> Any:
    return True


Unpack = Callable[[bytes, int], tuple[Any, ...]]


class _Entry(NamedTuple):
    """How to decode one attribute id of a set.

    The decoding loops hold ``tuple(entry)``: CPython specialises unpacking
    an exact tuple, not a NamedTuple's.
    """

    #: the attribute's name (:meth:`Codec.decode`), or its index in the row
    #: (:meth:`Codec.row_decoder`; -1: dropped)
    key: Any
    #: unpacks the value inline when the attribute's length (header included) is in lo..hi
    fast: Unpack
    lo: int
    hi: int
    #: the checked decoder for every other length (and every other type)
    decode: Decoder
    #: a multi-attr: values collect in a list
    multi: bool


def _plain(table: dict[int, _Entry]) -> dict[int, tuple[Any, ...]]:
    return {aid: tuple(entry) for aid, entry in table.items()}


class Codec:
    """Decoding tables for one family, built once from its declarations.

    Speed matters here (a dump of 4096 queues decodes 4096 messages): integer
    attributes of the expected length are unpacked inline, without a call to
    their decoder; every other case (a short attribute, an 8-byte ``uint``,
    strings, nests) goes through the decoder, which also raises the errors.
    """

    def __init__(self, family: Family) -> None:
        self.family = family
        self._tables: dict[str, dict[int, _Entry]] = {}
        for set_name in family.attr_sets:
            self._tables[set_name] = {}
        for set_name, aset in family.attr_sets.items():
            table = self._tables[set_name]
            for a in aset.attrs:
                table[a.id] = _Entry(a.name, *self._fast_path(a), self._decoder_for(a), a.multi)
        self._plain = {name: _plain(table) for name, table in self._tables.items()}

    @staticmethod
    def _fast_path(a: AttrSpec) -> tuple[Unpack, int, int]:
        """(unpack, lo, hi): attribute lengths (header included) unpacked inline.

        An empty range (lo > hi) sends every attribute to the decoder.
        """
        if a.type in _FIXED:
            s = _FIXED[a.type]
            return s.unpack_from, NLA_HDRLEN + s.size, 0xFFFF
        if a.type is AttrType.UINT:
            return _U32.unpack_from, NLA_HDRLEN + 4, NLA_HDRLEN + 4
        return _U32.unpack_from, 1, 0

    def _decoder_for(self, a: AttrSpec) -> Decoder:
        t = a.type
        if t in _FIXED:
            return _fixed_decoder(_FIXED[t], a.name)
        if t is AttrType.UINT:
            return _uint_decoder(a.name)
        if t is AttrType.STRING:
            return _string_decoder
        if t is AttrType.FLAG:
            return _flag_decoder
        if t is AttrType.NEST:
            assert a.nested is not None
            nested = a.nested

            def dec(buf: bytes, s: int, e: int) -> Any:
                return self.decode(nested, buf, s, e)

            return dec
        return _binary_decoder

    def row_decoder(
        self, set_name: str, fields: Sequence[str], finish: Callable[[list[Any]], R]
    ) -> Callable[[bytes, int, int], R]:
        """A decoder of *set_name* that returns ``finish(row)``.

        ``row`` lists the values in the order of *fields* (None when absent),
        then the unknown ``(id, bytes)`` attributes (or None). *fields* must
        name every attribute of the set except padding. This is :meth:`decode`
        without the dict, for the dumps that return thousands of objects: an
        8-byte attribute declared u32 is unpacked together with its header in
        one call; everything else takes the checked path of :meth:`decode`.
        """
        aset = self.family.attr_sets[set_name]
        missing = {a.name for a in aset.attrs if a.type is not AttrType.PAD} - set(fields)
        if missing:
            raise ValueError(f"row_decoder({set_name!r}) lacks fields {sorted(missing)}")
        table: dict[int, _Entry] = {}
        for i, name in enumerate(fields):
            aid = aset.by_name[name].id
            table[aid] = self._tables[set_name][aid]._replace(key=i)
        for a in aset.attrs:
            if a.type is AttrType.PAD:
                table[a.id] = _Entry(-1, _U32.unpack_from, 1, 0, _binary_decoder, False)
        u32_index = {
            a.id: table[a.id].key
            for a in aset.attrs
            if a.type is AttrType.U32 and not a.multi and a.name in fields
        }
        return _row_loop(set_name, _plain(table), u32_index, len(fields), finish)

    def decode(
        self, set_name: str, buf: bytes, start: int = 0, end: int | None = None
    ) -> dict[str, Any]:
        """Decode the attributes in ``buf[start:end]`` into ``{name: value}``."""
        get = self._plain[set_name].get
        out: dict[str, Any] = {}
        if end is None:
            end = len(buf)
        pos = start
        unpack = NLATTR.unpack_from
        # NLA_HDRLEN (4), NLA_TYPE_MASK and align4 are inlined: this loop is hot.
        while end - pos >= 4:
            length, attr_type = unpack(buf, pos)
            if length < 4 or pos + length > end:
                raise attr_overrun(pos, length, end - pos, set_name)
            entry = get(attr_type & NLA_TYPE_MASK)
            if entry is None:
                out.setdefault(UNKNOWN, []).append(
                    (attr_type & NLA_TYPE_MASK, bytes(buf[pos + 4 : pos + length]))
                )
            else:
                name, fast, lo, hi, dec, multi = entry
                if lo <= length <= hi:
                    value = fast(buf, pos + 4)[0]
                else:
                    value = dec(buf, pos + 4, pos + length)
                if multi:
                    out.setdefault(name, []).append(value)
                else:
                    out[name] = value
            pos += (length + 3) & ~3
        return out


def _row_loop(
    set_name: str,
    table: dict[int, tuple[Any, ...]],
    u32_index: dict[int, int],
    width: int,
    finish: Callable[[list[Any]], R],
) -> Callable[[bytes, int, int], R]:
    """The loop of :meth:`Codec.row_decoder`: *table* by attribute id, with row indexes as keys.

    A u32 attribute in *u32_index* is unpacked together with its header in one
    call; every other attribute takes the checked path of :meth:`Codec.decode`.
    """
    get = table.get
    index_of_u32 = u32_index.get
    unpack = NLATTR.unpack_from
    unpack_u32_attr = _U32_ATTR.unpack_from

    def decode_row(buf: bytes, start: int, end: int) -> R:
        # NLA_HDRLEN (4) and align4 are inlined, as in Codec.decode
        row: list[Any] = [None] * (width + 1)
        pos = start
        while end - pos >= 4:
            if end - pos >= 8:
                length, attr_type, value = unpack_u32_attr(buf, pos)
                if length == 8:
                    i = index_of_u32(attr_type)
                    if i is not None:
                        row[i] = value
                        pos += 8
                        continue
            else:
                length, attr_type = unpack(buf, pos)
            if length < 4 or pos + length > end:
                raise attr_overrun(pos, length, end - pos, set_name)
            entry = get(attr_type & NLA_TYPE_MASK)
            if entry is None:
                if row[width] is None:
                    row[width] = []
                row[width].append((attr_type & NLA_TYPE_MASK, bytes(buf[pos + 4 : pos + length])))
            else:
                i, fast, lo, hi, dec, multi = entry
                value = (
                    fast(buf, pos + 4)[0] if lo <= length <= hi else dec(buf, pos + 4, pos + length)
                )
                if multi:
                    if row[i] is None:
                        row[i] = []
                    row[i].append(value)
                elif i >= 0:
                    row[i] = value
            pos += (length + 3) & ~3
        return finish(row)

    return decode_row


def attr_path(family: Family, set_name: str, buf: bytes, start: int, offset: int) -> str:
    """Name the attribute that starts at byte *offset* of a request.

    *start* is where the top-level attributes begin. Returns a dotted path
    such as ``"napi.threaded"`` or ``"dmabuf.queues.id"``, or ``""`` when the
    offset is not at an attribute of this set.
    """
    aset = family.attr_sets.get(set_name)
    try:
        attrs = list(iter_attrs(buf, start))
    except DecodeError:
        return ""
    for attr_type, a, b in attrs:
        hdr = a - NLA_HDRLEN
        if not hdr <= offset < b:
            continue
        aid = attr_type & NLA_TYPE_MASK
        spec = aset.by_id.get(aid) if aset is not None else None
        name = spec.name if spec is not None else str(aid)
        if offset == hdr or spec is None or spec.type is not AttrType.NEST:
            return f"{set_name}.{name}"
        assert spec.nested is not None
        inner = attr_path(family, spec.nested, buf, a, offset)
        return f"{set_name}.{name}" + (inner[inner.index(".") :] if inner else "")
    return ""
