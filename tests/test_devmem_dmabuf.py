"""dmabuf sources: the checks made before any kernel call, and what a missing piece says.

The udmabuf tests that need /dev/udmabuf carry the ``matrix`` marker: this
6.18 host has no CONFIG_UDMABUF; the kernel-matrix guests (6.12, 7.x) do.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import socket
import struct
import time

import pytest

from netdevkit.devmem import DevmemReceiver, DmabufFd, bind_rx, cuda, udmabuf
from netdevkit.devmem.dmabuf import (
    DMA_BUF_IOCTL_SYNC,
    UDMABUF_CREATE,
    UDMABUF_CREATE_STRUCT,
)
from netdevkit.errors import KernelError, RequestError, UnsupportedError
from netdevkit.netdev.client import Netdev
from netdevkit.testbed import Testbed

HAS_UDMABUF = os.path.exists("/dev/udmabuf")
needs_udmabuf = pytest.mark.skipif(
    not HAS_UDMABUF, reason="this kernel has no /dev/udmabuf (CONFIG_UDMABUF is off)"
)


def test_ioctl_numbers_match_the_uapi_headers() -> None:
    # _IOW('u', 0x42, struct udmabuf_create) and _IOW('b', 0, struct dma_buf_sync)
    assert UDMABUF_CREATE_STRUCT.size == 24
    assert UDMABUF_CREATE == 0x40187542
    assert DMA_BUF_IOCTL_SYNC == 0x40086200
    assert UDMABUF_CREATE_STRUCT.pack(3, 1, 0, 8192) == struct.pack("=IIQQ", 3, 1, 0, 8192)


@pytest.mark.parametrize("size", [0, -4096, 4095, 4097])
def test_udmabuf_size_must_be_whole_pages(size: int) -> None:
    with pytest.raises(RequestError, match="multiple of 4096"):
        udmabuf(size)


@pytest.mark.skipif(HAS_UDMABUF, reason="this kernel has /dev/udmabuf")
def test_missing_udmabuf_is_one_sentence_naming_the_option() -> None:
    with pytest.raises(UnsupportedError) as exc:
        udmabuf(1 << 20)
    msg = str(exc.value)
    assert "/dev/udmabuf" in msg and "CONFIG_UDMABUF" in msg and "\n" not in msg


def test_cuda_without_cuda_python_or_gpu_says_what_is_missing() -> None:
    if importlib.util.find_spec("cuda") is None:
        with pytest.raises(
            UnsupportedError, match=r"needs cuda-python: pip install 'netdevkit\[cuda\]'"
        ):
            cuda(1 << 20)
        return
    try:
        buf = cuda(1 << 20)
    except UnsupportedError as err:
        # cuda-python is here but no usable GPU: one sentence saying which call failed
        assert "\n" not in str(err)
        pytest.skip(f"no CUDA device that exports dmabufs here: {err}")
    with buf:
        assert buf.fd >= 0 and buf.size == 1 << 20
        assert buf.device_pointer(4096) == buf.device_pointer() + 4096


def test_any_dmabuf_fd_learns_its_size_and_maps(tmp_path: object) -> None:
    # a memfd stands in for an exporter's fd: same lseek(SEEK_END) and mmap path
    fd = os.memfd_create("stand-in")
    os.ftruncate(fd, 8192)
    os.pwrite(fd, b"hello", 4096)
    with DmabufFd(fd, owned=True) as buf:
        assert buf.size == 8192
        assert bytes(buf.view(4096, 5)) == b"hello"
        with pytest.raises(RequestError, match="outside"):
            buf.view(8190, 4)


# -- in the kernel-matrix guests (6.12, 7.x: CONFIG_UDMABUF=y) ------------------------


@pytest.mark.matrix
@needs_udmabuf
def test_udmabuf_create_map_and_sync() -> None:
    with udmabuf(16 * 4096) as buf:
        assert buf.fd >= 0 and buf.size == 16 * 4096
        with buf.cpu_access(read=True, write=True) as mem:
            mem[100:105] = b"devmm"
        with buf.cpu_access(read=True) as mem:
            assert bytes(mem[100:105]) == b"devmm"
        assert bytes(buf.view(100, 5)) == b"devmm"
        with pytest.raises(RequestError, match="outside"):
            buf.view(16 * 4096 - 1, 2)


@pytest.mark.matrix
@needs_udmabuf
def test_bind_rx_with_a_real_udmabuf_meets_the_drivers_refusal(testbed4: Testbed) -> None:
    # veth (and virtio_net) cannot carry devmem: the kernel refuses, a real dmabuf or not.
    # 6.18 checks the driver's queue API first (EOPNOTSUPP at dmabuf.ifindex); older
    # kernels attach the dmabuf first, which a device without a DMA parent refuses (EINVAL).
    with udmabuf(64 * 4096) as buf, pytest.raises(KernelError) as exc:
        bind_rx(testbed4.server_if, [0], buf, netns=testbed4.server_ns)
    assert exc.value.errno in (errno.EOPNOTSUPP, errno.EINVAL)
    with Netdev.open(testbed4.server_ns) as nd:
        assert all(q.dmabuf is None for q in nd.queue_dump(testbed4.server_ifindex))


@pytest.mark.matrix
def test_receiver_on_a_real_tcp_connection(testbed4: Testbed) -> None:
    srv = testbed4.socket("server")
    cli = testbed4.socket("client")
    try:
        srv.bind((testbed4.server_addr, 5298))
        srv.listen()
        cli.connect((testbed4.server_addr, 5298))
        conn, _ = srv.accept()
        payload = os.urandom(50_000)
        cli.sendall(payload)
        cli.shutdown(socket.SHUT_WR)
        got = bytearray()
        deadline = time.monotonic() + 30
        with conn, DevmemReceiver(conn, batch=8) as rx:
            for batch in rx:
                assert batch.readable
                got += batch.data
                assert time.monotonic() < deadline
        assert bytes(got) == payload
    finally:
        cli.close()
        srv.close()
