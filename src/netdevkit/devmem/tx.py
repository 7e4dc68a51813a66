"""Send with Device Memory TCP: :class:`DevmemSender`.

Kernel facts (Linux 6.16+, Documentation/networking/devmem.rst):

- The socket needs ``SO_ZEROCOPY`` (60); each ``sendmsg`` carries
  ``MSG_ZEROCOPY`` and a ``SOL_SOCKET`` / ``SCM_DEVMEM_DMABUF`` (79) cmsg
  holding the u32 id of a TX binding (:func:`~netdevkit.devmem.binding.bind_tx`).
- Each iovec's ``iov_base`` is an *offset into the dmabuf*, not a pointer.
- Every ``sendmsg`` that sent bytes takes the next zerocopy id (a u32 counting
  from 0 per socket). When the NIC is done with the data, the error queue
  (``MSG_ERRQUEUE``) carries a ``sock_extended_err`` with ``ee_origin``
  ``SO_EE_ORIGIN_ZEROCOPY`` (5) and the range of ids ``[ee_info, ee_data]``
  that completed. Until then the region must not be overwritten.
- ``ENODEV``: the route to the peer leaves through another device than the
  binding's; ``EINVAL``: the id is no TX binding the kernel knows.
"""

from __future__ import annotations

import errno
import select
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .._argcheck import fail, has_fileno
from ..errors import NetdevkitError, RequestError, translate_oserror
from .rx import FdLike
from .syscalls import Kernel, libc
from .uapi import (
    CMSGHDR,
    IP_RECVERR,
    IPV6_RECVERR,
    MSG_ZEROCOPY,
    SCM_DEVMEM_DMABUF,
    SO_EE_CODE_ZEROCOPY_COPIED,
    SO_EE_ORIGIN_ZEROCOPY,
    SOCK_EXTENDED_ERR,
    SOL_IP,
    SOL_IPV6,
    SOL_SOCKET,
    cmsg_len,
    cmsg_space,
)


@dataclass(frozen=True, slots=True)
class Send:
    """One zerocopy send: its id, the dmabuf regions it covered and bytes sent."""

    id: int
    regions: tuple[tuple[int, int], ...]
    sent: int


def devmem_cmsg(binding_id: int) -> bytes:
    """The ``SCM_DEVMEM_DMABUF`` control message naming TX binding *binding_id*."""
    payload = binding_id.to_bytes(4, "little")
    hdr = CMSGHDR.pack(cmsg_len(4), SOL_SOCKET, SCM_DEVMEM_DMABUF)
    return (hdr + payload).ljust(cmsg_space(4), b"\0")


def parse_completions(control: bytes) -> tuple[list[tuple[int, int]], bool]:
    """``([(first id, last id)...], copied)`` from an error-queue control buffer."""
    out: list[tuple[int, int]] = []
    copied = False
    pos = 0
    while len(control) - pos >= CMSGHDR.size:
        clen, level, ctype = CMSGHDR.unpack_from(control, pos)
        if clen < CMSGHDR.size:
            break
        if (level, ctype) in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
            ee_errno, origin, _t, code, _p, info, data = SOCK_EXTENDED_ERR.unpack_from(
                control, pos + CMSGHDR.size
            )
            if origin == SO_EE_ORIGIN_ZEROCOPY and ee_errno == 0:
                out.append((info, data))
                copied |= bool(code & SO_EE_CODE_ZEROCOPY_COPIED)
        pos += (clen + 7) & ~7
    return out, copied


class DevmemSender:
    """Send dmabuf regions over a connected TCP socket through a TX binding.

    *binding* is a TX :class:`~netdevkit.devmem.binding.Binding` (or anything
    with ``id``, ``ifname`` and ``dmabuf.size``); *kernel* the syscall layer.
    """

    def __init__(self, sock: FdLike, binding: object, *, kernel: Kernel | None = None) -> None:
        has_fileno("sock", sock)
        if isinstance(getattr(binding, "id", None), bool) or not isinstance(
            getattr(binding, "id", None), int
        ):
            raise fail("binding", "a TX binding (bind_tx()) with an int id", binding)
        self._fd = sock.fileno()
        self._kernel: Kernel = kernel if kernel is not None else libc()
        self.binding_id = int(getattr(binding, "id"))  # noqa: B009 - duck-typed binding
        self._ifname = str(getattr(binding, "ifname", "?"))
        dmabuf = getattr(binding, "dmabuf", None)
        self._size = int(getattr(dmabuf, "size", 0) or 0)
        self._control = devmem_cmsg(self.binding_id)
        self._errbuf = bytearray(4096)
        self._next_id = 0
        self._inflight: dict[int, Send] = {}
        self.copied = False
        try:
            self._kernel.enable_zerocopy(self._fd)
        except OSError as err:
            raise translate_oserror(err, "setsockopt(SO_ZEROCOPY)") from err

    def send(self, regions: Iterable[tuple[int, int]] | tuple[int, int]) -> Send:
        """Send dmabuf *regions* ``(offset, length)`` in one ``sendmsg``.

        Returns the :class:`Send` (bytes sent may be fewer than asked, as
        with any stream send). The regions stay in use until
        :meth:`poll_completions` reports the send's id done.
        """
        regs = _regions(regions)
        for off, length in regs:
            if off < 0 or length <= 0 or (self._size and off + length > self._size):
                raise RequestError(
                    f"region ({off}, {length}) does not lie inside the {self._size}-byte dmabuf"
                )
        try:
            sent = self._kernel.sendmsg(self._fd, regs, self._control, MSG_ZEROCOPY)
        except OSError as err:
            raise self._error(err) from err
        s = Send(self._next_id, tuple(regs), sent)
        if sent:
            self._inflight[s.id] = s
            self._next_id = (self._next_id + 1) & 0xFFFF_FFFF
        return s

    def _error(self, err: OSError) -> NetdevkitError:
        what = f"devmem sendmsg (binding {self.binding_id})"
        hints = {
            errno.ENODEV: f"the route to the peer leaves through another device than the "
            f"binding's ({self._ifname}): devmem TX goes out only through the bound NIC "
            "(check `ip route get PEER`)",
            errno.EINVAL: f"the kernel knows no TX binding with id {self.binding_id} "
            "(bind_tx on the device the route uses; an RX binding id does not work)",
            errno.EFAULT: "an iovec lies outside the dmabuf, or SO_ZEROCOPY is off",
        }
        return translate_oserror(err, what, hint=hints.get(err.errno or 0, ""))

    def poll_completions(self) -> list[Send]:
        """Read the error queue; returns the sends whose regions may be reused now."""
        done: list[Send] = []
        while True:
            try:
                used, _flags = self._kernel.recv_errqueue(self._fd, self._errbuf)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.EAGAIN:
                    break
                raise translate_oserror(err, "recvmsg(MSG_ERRQUEUE)") from err
            ranges, copied = parse_completions(bytes(self._errbuf[:used]))
            self.copied |= copied
            for lo, hi in ranges:
                n = (hi - lo) & 0xFFFF_FFFF
                for k in range(n + 1):
                    s = self._inflight.pop((lo + k) & 0xFFFF_FFFF, None)
                    if s is not None:
                        done.append(s)
        return done

    @property
    def inflight(self) -> list[Send]:
        """Sends the NIC may still be reading from."""
        return list(self._inflight.values())

    def wait_all(self, timeout: float | None = None) -> bool:
        """Wait until every send completed (POLLERR on the socket); False on timeout."""
        poller = select.poll()
        poller.register(self._fd, select.POLLERR)
        while self._inflight:
            self.poll_completions()
            if not self._inflight:
                break
            if not poller.poll(None if timeout is None else int(timeout * 1000)):
                return False
        return True


def _regions(
    regions: Iterable[tuple[int, int]] | tuple[int, int],
) -> Sequence[tuple[int, int]]:
    if isinstance(regions, tuple) and len(regions) == 2 and isinstance(regions[0], int):
        return [(int(regions[0]), int(regions[1]))]
    out = [(int(o), int(n)) for o, n in regions]
    if not out:
        raise RequestError("send needs at least one (offset, length) region")
    if len(out) > 1024:
        raise RequestError(f"{len(out)} regions: at most 1024 iovecs (UIO_MAXIOV) per sendmsg")
    return out
