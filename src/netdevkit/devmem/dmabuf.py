"""dmabuf sources for Device Memory TCP: udmabuf, CUDA device memory, any dmabuf fd.

Each source owns a dmabuf file descriptor (``fd``), knows its ``size`` and,
where the memory is CPU-addressable, gives ``view(offset, size)``
memoryviews that a receiver uses to read fragments. Close it (or use
``with``) when the bindings made from it are gone.

- :func:`udmabuf` (kernel facts, include/uapi/linux/udmabuf.h): a memfd
  sealed against shrinking (``F_SEAL_SHRINK``) becomes a dmabuf through
  ``ioctl(/dev/udmabuf, UDMABUF_CREATE, struct udmabuf_create {u32 memfd;
  u32 flags; u64 offset; u64 size})``; offset and size must be page-aligned.
  CPU access is bracketed with ``DMA_BUF_IOCTL_SYNC`` (include/uapi/linux/
  dma-buf.h: ``struct dma_buf_sync {u64 flags}``, READ 1, WRITE 2, START 0,
  END 4), which :meth:`Udmabuf.cpu_access` does.
- :func:`cuda` (optional extra ``netdevkit[cuda]``): GPU memory exported with
  ``cuMemGetHandleForAddressRange(..., CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD,
  flags)`` after checking ``CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED`` (124);
  the PCIe mapping flag is asked for where the driver knows it.
- :class:`DmabufFd`: a dmabuf fd the caller already has (from a GPU runtime,
  a DRM driver, a heap under /dev/dma_heap).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import struct
from collections.abc import Iterator
from typing import Any, Protocol, Self

from .._argcheck import int_arg, str_arg
from ..errors import DecodeError, RequestError, UnsupportedError, translate_oserror

UDMABUF_DEV = "/dev/udmabuf"
UDMABUF_FLAGS_CLOEXEC = 0x01
#: struct udmabuf_create
UDMABUF_CREATE_STRUCT = struct.Struct("=IIQQ")
_IOC_WRITE = 1


def _iow(kind: str, nr: int, size: int) -> int:
    return (_IOC_WRITE << 30) | (size << 16) | (ord(kind) << 8) | nr


#: _IOW('u', 0x42, struct udmabuf_create)
UDMABUF_CREATE = _iow("u", 0x42, UDMABUF_CREATE_STRUCT.size)
#: struct dma_buf_sync
DMA_BUF_SYNC_STRUCT = struct.Struct("=Q")
DMA_BUF_SYNC_READ = 1
DMA_BUF_SYNC_WRITE = 2
DMA_BUF_SYNC_START = 0
DMA_BUF_SYNC_END = 4
#: _IOW('b', 0, struct dma_buf_sync)
DMA_BUF_IOCTL_SYNC = _iow("b", 0, DMA_BUF_SYNC_STRUCT.size)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

#: CUDA driver API values (cuda.h)
CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 124
CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD = 1
CU_MEM_RANGE_FLAG_DMA_BUF_MAPPING_TYPE_PCIE = 1


class Dmabuf(Protocol):
    """What bindings, receivers and senders need from a dmabuf source."""

    @property
    def fd(self) -> int: ...

    @property
    def size(self) -> int: ...

    def view(self, offset: int, size: int) -> memoryview: ...

    def close(self) -> None: ...


def _check_range(what: str, size: int, offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > size:
        raise RequestError(f"{what}: bytes {offset}..{offset + length} lie outside 0..{size}")


class _Source:
    """What every source shares: the dmabuf fd, its size, ``with`` closing it."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def size(self) -> int:
        return self._size

    def view(self, offset: int, size: int) -> memoryview:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Udmabuf(_Source):
    """A udmabuf: sealed memfd pages exported as a dmabuf, mapped for the CPU."""

    def __init__(self, memfd: int, fd: int, size: int) -> None:
        super().__init__(fd, size)
        self._memfd = memfd
        self._map: mmap.mmap | None = mmap.mmap(fd, size, mmap.MAP_SHARED)

    def view(self, offset: int, size: int) -> memoryview:
        """The bytes ``offset .. offset+size`` of the mapping (no copy)."""
        if self._map is None:
            raise RequestError("this udmabuf is closed")
        _check_range("udmabuf view", self._size, offset, size)
        return memoryview(self._map)[offset : offset + size]

    def sync(self, flags: int) -> None:
        """``DMA_BUF_IOCTL_SYNC`` with *flags* (START/END | READ/WRITE)."""
        try:
            fcntl.ioctl(self._fd, DMA_BUF_IOCTL_SYNC, DMA_BUF_SYNC_STRUCT.pack(flags))
        except OSError as err:
            raise translate_oserror(err, f"DMA_BUF_IOCTL_SYNC flags {flags:#x}") from err

    @contextlib.contextmanager
    def cpu_access(self, read: bool = True, write: bool = False) -> Iterator[memoryview]:
        """Bracket CPU access with SYNC_START / SYNC_END; yields the whole mapping."""
        mode = (DMA_BUF_SYNC_READ if read else 0) | (DMA_BUF_SYNC_WRITE if write else 0)
        if not mode:
            raise RequestError("cpu_access needs read or write")
        self.sync(DMA_BUF_SYNC_START | mode)
        try:
            yield self.view(0, self._size)
        finally:
            self.sync(DMA_BUF_SYNC_END | mode)

    def close(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None
        for fd in (self._fd, self._memfd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._memfd = -1


def udmabuf(size: int, name: str = "netdevkit-devmem") -> Udmabuf:
    """A new udmabuf of *size* bytes (a multiple of the page size)."""
    int_arg("size", size)
    str_arg("name", name)
    if size <= 0 or size % PAGE_SIZE:
        raise RequestError(f"udmabuf size must be a positive multiple of {PAGE_SIZE}, not {size}")
    if not os.path.exists(UDMABUF_DEV):
        raise UnsupportedError(
            f"this kernel has no {UDMABUF_DEV}: udmabuf needs CONFIG_UDMABUF "
            "(built in on Debian's 6.12 and 7.x kernels; `modprobe udmabuf` where it is a module)"
        )
    memfd = os.memfd_create(name, os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    try:
        os.ftruncate(memfd, size)
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        dev = os.open(UDMABUF_DEV, os.O_RDWR | os.O_CLOEXEC)
        try:
            # a mutable buffer: fcntl.ioctl then returns the call's result (the new
            # fd); with bytes it would return the buffer and the fd would be lost
            arg = bytearray(UDMABUF_CREATE_STRUCT.pack(memfd, UDMABUF_FLAGS_CLOEXEC, 0, size))
            fd = fcntl.ioctl(dev, UDMABUF_CREATE, arg, True)
        except OSError as err:
            raise translate_oserror(
                err,
                f"UDMABUF_CREATE of {size} bytes",
                hint="size above /sys/module/udmabuf/parameters/size_limit_mb?"
                if err.errno == errno.EINVAL
                else "",
            ) from err
        finally:
            os.close(dev)
        if not isinstance(fd, int) or fd < 0:
            raise DecodeError(f"UDMABUF_CREATE returned {fd!r}, not a file descriptor")
        return Udmabuf(memfd, fd, size)
    except BaseException:
        os.close(memfd)
        raise


class DmabufFd(_Source):
    """A dmabuf fd the caller already has. Not closed here unless *owned*."""

    def __init__(self, fd: int, size: int | None = None, owned: bool = False) -> None:
        int_arg("fd", fd)
        int_arg("size", size, none_ok=True)
        if size is None:
            try:
                size = os.lseek(fd, 0, os.SEEK_END)  # dma-buf files report their size
                os.lseek(fd, 0, os.SEEK_SET)
            except OSError as err:
                raise RequestError(f"fd {fd}: cannot learn the dmabuf's size ({err})") from err
        super().__init__(fd, size)
        self._owned = owned
        self._map: mmap.mmap | None = None

    def view(self, offset: int, size: int) -> memoryview:
        _check_range("dmabuf view", self._size, offset, size)
        if self._map is None:
            try:
                self._map = mmap.mmap(self._fd, self._size, mmap.MAP_SHARED)
            except OSError as err:
                raise UnsupportedError(
                    f"dmabuf fd {self._fd} cannot be mapped for the CPU ({err.strerror}): "
                    "its exporter keeps the memory to the device"
                ) from err
        return memoryview(self._map)[offset : offset + size]

    def close(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None
        if self._owned and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1


# -- CUDA ------------------------------------------------------------------------


def _cuda_driver() -> Any:
    try:
        from cuda.bindings import driver  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cuda as driver  # older cuda-python
        except ImportError:
            raise UnsupportedError(
                "CUDA device memory needs cuda-python: pip install 'netdevkit[cuda]'"
            ) from None
    return driver


def _ck(driver: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(CUresult, value...)`` tuple or raise."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = driver.cuGetErrorName(err)[1]
        text = name.decode() if isinstance(name, bytes) else str(name)
        raise UnsupportedError(f"{what} failed: {text}")
    return rest[0] if len(rest) == 1 else tuple(rest)


class CudaDmabuf(_Source):
    """GPU memory exported as a dmabuf. ``device_pointer(offset)`` for kernels."""

    def __init__(self, driver: Any, ptr: int, size: int, fd: int, device: int) -> None:
        super().__init__(fd, size)
        self._driver = driver
        self._ptr = ptr
        self.device = device

    def device_pointer(self, offset: int = 0) -> int:
        """The CUDA device address of byte *offset* (for a kernel or cuMemcpy)."""
        _check_range("cuda device pointer", self._size, offset, 0)
        return self._ptr + offset

    def view(self, offset: int, size: int) -> memoryview:
        """A host copy of the bytes (device memory has no CPU mapping)."""
        _check_range("cuda copy", self._size, offset, size)
        host = bytearray(size)
        d = self._driver
        _ck(d, d.cuMemcpyDtoH(host, self._ptr + offset, size), "cuMemcpyDtoH")
        return memoryview(host)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._ptr:
            _ck(self._driver, self._driver.cuMemFree(self._ptr), "cuMemFree")
            self._ptr = 0


def cuda(size: int, device: int = 0) -> CudaDmabuf:
    """*size* bytes of GPU memory on *device*, exported as a dmabuf."""
    int_arg("size", size)
    int_arg("device", device)
    if size <= 0:
        raise RequestError(f"size must be positive, not {size}")
    d = _cuda_driver()
    _ck(d, d.cuInit(0), "cuInit")
    count = _ck(d, d.cuDeviceGetCount(), "cuDeviceGetCount")
    if not 0 <= device < int(count):
        raise UnsupportedError(f"no CUDA device {device} (this machine has {int(count)})")
    dev = _ck(d, d.cuDeviceGet(device), "cuDeviceGet")
    attr = d.CUdevice_attribute(CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED)
    if not _ck(d, d.cuDeviceGetAttribute(attr, dev), "cuDeviceGetAttribute"):
        raise UnsupportedError(
            f"CUDA device {device} cannot export dmabufs (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED "
            "is 0): it needs NVIDIA's open kernel modules and a Turing or newer GPU"
        )
    ctx = _ck(d, d.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    _ck(d, d.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    size = -(-size // PAGE_SIZE) * PAGE_SIZE
    ptr = int(_ck(d, d.cuMemAlloc(size), "cuMemAlloc"))
    try:
        fd = _export(d, ptr, size)
    except BaseException:
        d.cuMemFree(ptr)
        raise
    return CudaDmabuf(d, ptr, size, fd, device)


def _export(d: Any, ptr: int, size: int) -> int:
    htype = d.CUmemRangeHandleType(CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD)
    # The PCIe mapping flag (CUDA 12.8+) makes the NIC reach the memory over
    # PCIe on systems where the default would be a C2C mapping; older drivers
    # reject the flag, then the default is PCIe anyway.
    for flags in (CU_MEM_RANGE_FLAG_DMA_BUF_MAPPING_TYPE_PCIE, 0):
        err, fd = d.cuMemGetHandleForAddressRange(ptr, size, htype, flags)
        if int(err) == 0:
            return int(fd)
        last = err
    _ck(d, (last, None), "cuMemGetHandleForAddressRange(DMA_BUF_FD)")
    raise AssertionError("unreachable")
