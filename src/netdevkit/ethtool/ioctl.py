"""ntuple flow-steering rules through the ethtool ioctl (netlink has no command for them).

Kernel facts (include/uapi/linux/ethtool.h): ``SIOCETHTOOL`` (0x8946) with an
``ifreq`` whose ``ifr_data`` points at a ``struct ethtool_rxnfc``:

- ``ethtool_rxnfc`` {u32 cmd; u32 flow_type; u64 data; struct
  ethtool_rx_flow_spec fs; u32 rule_cnt / rss_context; u32 rule_locs[]}:
  192 bytes without rule_locs;
- ``ethtool_rx_flow_spec`` {u32 flow_type; union ethtool_flow_union h_u (52
  bytes); struct ethtool_flow_ext h_ext (20); union m_u (52); struct
  ethtool_flow_ext m_ext (20); u64 ring_cookie; u32 location}: 168 bytes;
- ``ethtool_tcpip4_spec`` {be32 ip4src, ip4dst; be16 psrc, pdst; u8 tos},
  ``ethtool_tcpip6_spec`` {be32 ip6src[4], ip6dst[4]; be16 psrc, pdst; u8
  tclass}; mask bits set in ``m_u`` are the bits compared;
- ``ETHTOOL_SRXCLSRLINS`` 0x32 inserts (``location`` ``RX_CLS_LOC_ANY`` lets the
  driver choose and writes the chosen one back), ``ETHTOOL_SRXCLSRLDEL`` 0x31
  deletes by location, ``ETHTOOL_GRXCLSRULE`` 0x2f reads one rule;
  ``TCP_V4_FLOW`` 1, ``TCP_V6_FLOW`` 5, ``FLOW_RSS`` 0x20000000 (steer into RSS
  context ``rss_context``, ``ring_cookie`` then an offset in it);
- ``ETHTOOL_GDRVINFO`` 0x03 names the driver;
- ``ETHTOOL_GRXFHINDIR`` 0x38 / ``ETHTOOL_SRXFHINDIR`` 0x39 read and write the
  RSS indirection table (``struct ethtool_rxfh_indir`` {u32 cmd; u32 size; u32
  ring_index[]}): the way to set it before netlink ``rss-set`` (6.17).

Like every SIOCETHTOOL call these act in the network namespace of the socket
they are issued on.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import KernelError, RequestError, translate_oserror
from ..netns import entered

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x03
ETHTOOL_GTSO = 0x1E
ETHTOOL_GGRO = 0x2B
ETHTOOL_GRXFHINDIR = 0x38
ETHTOOL_SRXFHINDIR = 0x39
ETHTOOL_GRXCLSRLCNT = 0x2E
ETHTOOL_GRXCLSRULE = 0x2F
ETHTOOL_GRXCLSRLALL = 0x30
ETHTOOL_SRXCLSRLDEL = 0x31
ETHTOOL_SRXCLSRLINS = 0x32
TCP_V4_FLOW = 0x01
TCP_V6_FLOW = 0x05
FLOW_RSS = 0x20000000
RX_CLS_LOC_ANY = 0xFFFFFFFF
#: FLOW_EXT | FLOW_MAC_EXT: flags a driver may set on a rule it reports back
_FLOW_EXT_BITS = 0x80000000 | 0x40000000
_IFREQ_SIZE = 40
#: struct ethtool_rxnfc up to rule_cnt (rule_locs[] empty)
RXNFC = struct.Struct("=IIQ" + "I52s20s52s20s4xQI4x" + "I4x")
assert RXNFC.size == 192
#: struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32],
#: erom_version[32], reserved2[12], n_priv_flags, n_stats, testinfo_len, eedump_len, regdump_len
_DRVINFO = struct.Struct("=I32s32s32s32s32s12sIIIII")
#: struct ethtool_value {cmd, data}
_VALUE = struct.Struct("=II")


@dataclass(frozen=True, slots=True)
class Flow:
    """A TCP flow to steer: destination port, optional source port and addresses."""

    dst_port: int
    src_port: int | None = None
    dst_ip: str | None = None
    src_ip: str | None = None
    ipv6: bool = False

    def describe(self) -> str:
        parts = [f"tcp{'6' if self.ipv6 else ''} dst-port {self.dst_port}"]
        for key, val in (("src-port", self.src_port), ("dst-ip", self.dst_ip),
                         ("src-ip", self.src_ip)):  # fmt: skip
            if val is not None:
                parts.append(f"{key} {val}")
        return " ".join(parts)


def parse_flow(text: str) -> Flow:
    """``tcp dst-port 5201 [src-port N] [dst-ip A] [src-ip A]`` (``tcp6`` for IPv6)."""
    words = text.split()
    if not words or words[0] not in ("tcp", "tcp4", "tcp6"):
        raise RequestError(f"flow {text!r}: must start with 'tcp' (devmem carries TCP)")
    ipv6 = words[0] == "tcp6"
    if len(words) % 2 == 0:
        raise RequestError(f"flow {text!r}: every key needs a value")
    kv: dict[str, str] = {}
    for key, val in zip(words[1::2], words[2::2], strict=True):
        if key not in ("dst-port", "src-port", "dst-ip", "src-ip"):
            raise RequestError(
                f"flow {text!r}: unknown key {key!r} (dst-port, src-port, dst-ip, src-ip)"
            )
        if key in kv:
            raise RequestError(f"flow {text!r}: {key} given twice")
        kv[key] = val
    if "dst-port" not in kv:
        raise RequestError(f"flow {text!r}: needs dst-port")
    ports: dict[str, int] = {}
    for key in ("dst-port", "src-port"):
        if key in kv:
            if not kv[key].isdigit() or not 0 < int(kv[key]) < 65536:
                raise RequestError(f"flow {text!r}: {key} must be 1..65535, not {kv[key]!r}")
            ports[key] = int(kv[key])
    addrs: dict[str, str] = {}
    for key in ("dst-ip", "src-ip"):
        if key in kv:
            try:
                ip = ipaddress.ip_address(kv[key])
            except ValueError:
                raise RequestError(f"flow {text!r}: {key} {kv[key]!r} is no IP address") from None
            if ip.version == 6:
                ipv6 = True
            addrs[key] = str(ip)
    for key, val in addrs.items():
        if (ipaddress.ip_address(val).version == 6) != ipv6:
            raise RequestError(f"flow {text!r}: {key} {val} does not match the flow's IP version")
    return Flow(
        ports["dst-port"], ports.get("src-port"), addrs.get("dst-ip"), addrs.get("src-ip"), ipv6
    )


def _ip_bytes(addr: str | None, size: int) -> bytes:
    return b"\0" * size if addr is None else ipaddress.ip_address(addr).packed


def encode_flow_spec(flow: Flow) -> tuple[int, bytes, bytes]:
    """(flow_type, h_u, m_u) of *flow*: values and masks, 52 bytes each."""
    size = 16 if flow.ipv6 else 4
    full = b"\xff" * size
    h = (
        _ip_bytes(flow.src_ip, size)
        + _ip_bytes(flow.dst_ip, size)
        + struct.pack("!HH", flow.src_port or 0, flow.dst_port)
    )
    m = (
        (full if flow.src_ip else b"\0" * size)
        + (full if flow.dst_ip else b"\0" * size)
        + struct.pack("!HH", 0xFFFF if flow.src_port else 0, 0xFFFF)
    )
    return (TCP_V6_FLOW if flow.ipv6 else TCP_V4_FLOW), h.ljust(52, b"\0"), m.ljust(52, b"\0")


def encode_insert(flow: Flow, queue: int, rss_context: int = 0) -> bytes:
    """The ``ethtool_rxnfc`` of ETHTOOL_SRXCLSRLINS steering *flow* to *queue*.

    With *rss_context*, the flow goes into that RSS context (FLOW_RSS) and
    *queue* is the offset within it.
    """
    ftype, h, m = encode_flow_spec(flow)
    if rss_context:
        ftype |= FLOW_RSS
    return RXNFC.pack(
        ETHTOOL_SRXCLSRLINS, 0, 0, ftype, h, b"", m, b"", queue, RX_CLS_LOC_ANY, rss_context
    )


def _ethtool(
    ifname: str,
    request: bytes,
    netns: str | None,
    what: str,
    unsupported: str = "the driver has no ntuple flow steering",
) -> bytes:
    buf = ctypes.create_string_buffer(request, len(request))
    ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(buf)).ljust(_IFREQ_SIZE, b"\0")
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
    except OSError as err:
        raise translate_oserror(
            err,
            what,
            capability="CAP_NET_ADMIN",
            gone={errno.ENODEV: f"{what}: no interface named {ifname!r}"},
            hint=unsupported if err.errno == errno.EOPNOTSUPP else "",
        ) from err
    finally:
        sock.close()
    return buf.raw


def ntuple_insert(
    ifname: str, flow: Flow, queue: int, rss_context: int = 0, netns: str | None = None
) -> int:
    """Insert a rule steering *flow* to *queue*; returns the rule's location."""
    what = f"ethtool ntuple insert on {ifname} ({flow.describe()} -> queue {queue})"
    raw = _ethtool(ifname, encode_insert(flow, queue, rss_context), netns, what)
    return int(RXNFC.unpack(raw)[9])


def ntuple_delete(ifname: str, location: int, netns: str | None = None) -> None:
    req = RXNFC.pack(ETHTOOL_SRXCLSRLDEL, 0, 0, 0, b"", b"", b"", b"", 0, location, 0)
    _ethtool(ifname, req, netns, f"ethtool ntuple delete rule {location} on {ifname}")


def ntuple_find(ifname: str, flow: Flow, queue: int, netns: str | None = None) -> int | None:
    """The location of a rule steering exactly *flow* to *queue*, if the device has one.

    ETHTOOL_GRXCLSRLCNT counts the rules, ETHTOOL_GRXCLSRLALL lists their
    locations (``rule_locs[]`` after the struct), ETHTOOL_GRXCLSRULE reads each.
    """
    what = f"ethtool ntuple rules of {ifname}"
    empty = (0, 0, 0, b"", b"", b"", b"", 0, 0)
    raw = _ethtool(ifname, RXNFC.pack(ETHTOOL_GRXCLSRLCNT, *empty, 0), netns, what)
    count = RXNFC.unpack(raw)[-1]
    if not count:
        return None
    req = RXNFC.pack(ETHTOOL_GRXCLSRLALL, *empty, count) + bytes(4 * count)
    raw = _ethtool(ifname, req, netns, what)
    locs = struct.unpack_from(f"={count}I", raw, RXNFC.size)
    ftype, h, m = encode_flow_spec(flow)
    n = 36 if flow.ipv6 else 12
    for loc in locs:
        req = RXNFC.pack(ETHTOOL_GRXCLSRULE, 0, 0, 0, b"", b"", b"", b"", 0, loc, 0)
        got = RXNFC.unpack(_ethtool(ifname, req, netns, what))
        g_type, g_h, g_m, g_queue = got[3] & ~(FLOW_RSS | _FLOW_EXT_BITS), got[4], got[6], got[8]
        if (g_type, g_h[:n], g_m[:n], g_queue) == (ftype, h[:n], m[:n], queue):
            return int(loc)
    return None


def ntuple_exists(ifname: str, location: int, netns: str | None = None) -> bool:
    req = RXNFC.pack(ETHTOOL_GRXCLSRULE, 0, 0, 0, b"", b"", b"", b"", 0, location, 0)
    try:
        _ethtool(ifname, req, netns, f"ethtool ntuple get rule {location} on {ifname}")
    except KernelError as err:
        if err.errno in (errno.ENOENT, errno.EINVAL):
            return False
        raise
    return True


_NO_RSS = "the driver has no RSS indirection table"
#: struct ethtool_rxfh_indir {u32 cmd; u32 size; u32 ring_index[]}
_RXFH_INDIR = struct.Struct("=II")


def rxfh_indir_get(ifname: str, netns: str | None = None) -> tuple[int, ...]:
    """The RSS indirection table (ETHTOOL_GRXFHINDIR: size first, then the entries)."""
    what = f"ethtool get RSS indirection table of {ifname}"
    raw = _ethtool(ifname, _RXFH_INDIR.pack(ETHTOOL_GRXFHINDIR, 0), netns, what, _NO_RSS)
    size = _RXFH_INDIR.unpack_from(raw)[1]
    req = _RXFH_INDIR.pack(ETHTOOL_GRXFHINDIR, size) + bytes(4 * size)
    raw = _ethtool(ifname, req, netns, what, _NO_RSS)
    return struct.unpack_from(f"={size}I", raw, _RXFH_INDIR.size)


def rxfh_indir_set(ifname: str, indir: Sequence[int], netns: str | None = None) -> None:
    """Set the RSS indirection table (ETHTOOL_SRXFHINDIR), for kernels before 6.17."""
    req = _RXFH_INDIR.pack(ETHTOOL_SRXFHINDIR, len(indir)) + struct.pack(f"={len(indir)}I", *indir)
    _ethtool(ifname, req, netns, f"ethtool set RSS indirection table of {ifname}", _NO_RSS)


def driver_info(ifname: str, netns: str | None = None) -> str:
    """The driver name ETHTOOL_GDRVINFO reports for *ifname* (``""`` if it names none).

    Raises :class:`KernelError` (its errno says why), :class:`NotFoundError`.
    """
    req = _DRVINFO.pack(ETHTOOL_GDRVINFO, *[b""] * 6, *[0] * 5)
    raw = _ethtool(ifname, req, netns, f"ethtool driver info of {ifname}", "")
    name: bytes = _DRVINFO.unpack(raw)[1]
    return name.split(b"\0", 1)[0].decode("ascii", "replace")


def driver_name(ifname: str, netns: str | None = None) -> str | None:
    """The driver behind *ifname* (ETHTOOL_GDRVINFO), None if it names none."""
    try:
        return driver_info(ifname, netns) or None
    except KernelError:
        return None


def get_flag(ifname: str, cmd: int, netns: str | None = None) -> bool:
    """A feature flag read with an ``ETHTOOL_G*`` command that answers a
    ``struct ethtool_value`` (:data:`ETHTOOL_GGRO`, :data:`ETHTOOL_GTSO`)."""
    raw = _ethtool(ifname, _VALUE.pack(cmd, 0), netns, f"ethtool command {cmd:#x} of {ifname}", "")
    return bool(_VALUE.unpack(raw)[1])
