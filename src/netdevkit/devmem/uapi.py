"""Kernel constants and struct layouts of Device Memory TCP, in one place.

Every number here is checked against the kernel's uapi headers
(asm-generic values: x86_64 and arm64; sparc, parisc, mips and alpha
number their socket options differently):

- include/uapi/asm-generic/socket.h: SO_ZEROCOPY 60, SO_DEVMEM_LINEAR 78,
  SO_DEVMEM_DMABUF 79, SO_DEVMEM_DONTNEED 80 (SCM_DEVMEM_* are the same ids);
- include/uapi/linux/uio.h: ``struct dmabuf_cmsg`` {u64 frag_offset; u32
  frag_size; u32 frag_token; u32 dmabuf_id; u32 flags} and ``struct
  dmabuf_token`` {u32 token_start; u32 token_count};
- include/uapi/linux/errqueue.h: ``struct sock_extended_err`` and
  SO_EE_ORIGIN_ZEROCOPY 5;
- net/core/sock.c: at most 128 ``dmabuf_token`` entries and 1024 frags per
  SO_DEVMEM_DONTNEED call (MAX_DONTNEED_TOKENS, MAX_DONTNEED_FRAGS);
- MSG_SOCK_DEVMEM 0x2000000 is kernel-internal (include/linux/socket.h):
  user space defines it itself, as the selftest ncdevmem does.
"""

from __future__ import annotations

import socket
import struct

SOL_SOCKET = socket.SOL_SOCKET
SO_ZEROCOPY = 60
SO_DEVMEM_LINEAR = 78
SO_DEVMEM_DMABUF = 79
SO_DEVMEM_DONTNEED = 80
SCM_DEVMEM_LINEAR = SO_DEVMEM_LINEAR
SCM_DEVMEM_DMABUF = SO_DEVMEM_DMABUF

MSG_SOCK_DEVMEM = 0x2000000
MSG_ZEROCOPY = 0x4000000
MSG_ERRQUEUE = 0x2000
MSG_DONTWAIT = 0x40
MSG_CTRUNC = 0x8

#: struct dmabuf_cmsg (24 bytes)
DMABUF_CMSG = struct.Struct("=QIIII")
#: struct dmabuf_token (8 bytes)
DMABUF_TOKEN = struct.Struct("=II")
#: struct cmsghdr on 64-bit Linux: size_t cmsg_len; int cmsg_level; int cmsg_type
CMSGHDR = struct.Struct("=Qii")
CMSG_ALIGN = 8


def cmsg_len(n: int) -> int:
    """CMSG_LEN(n): header plus *n* payload bytes."""
    return CMSGHDR.size + n


def cmsg_space(n: int) -> int:
    """CMSG_SPACE(n): header plus *n* payload bytes, padded to the alignment."""
    return CMSGHDR.size + ((n + CMSG_ALIGN - 1) & ~(CMSG_ALIGN - 1))


#: each devmem cmsg takes exactly this many bytes of control buffer (40)
DEVMEM_CMSG_SPACE = cmsg_space(DMABUF_CMSG.size)
#: net/core/sock.c MAX_DONTNEED_TOKENS
MAX_DONTNEED_TOKENS = 128
#: net/core/sock.c MAX_DONTNEED_FRAGS
MAX_DONTNEED_FRAGS = 1024

#: struct sock_extended_err: ee_errno u32, origin u8, type u8, code u8, pad u8, info u32, data u32
SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1
#: the cmsg that carries sock_extended_err for IPv4 (SOL_IP, IP_RECVERR) and IPv6
IP_RECVERR = 11
IPV6_RECVERR = 25
SOL_IP = 0
SOL_IPV6 = 41
