"""Device Memory TCP against the real 6.18 kernel, on veth in test namespaces.

veth cannot carry devmem (no queue management API, no netmem TX), so these
tests check what the kernel refuses and that nothing stays bound, and check
the fake's SO_DEVMEM_DONTNEED and sendmsg answers against the real ones.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Generator, Iterator

import numpy as np
import pytest

from netdevkit.devmem import DevmemReceiver, DevmemSender, bind_rx, bind_tx
from netdevkit.devmem.cmsg import TOKEN_DTYPE
from netdevkit.devmem.fake import FakeKernel
from netdevkit.devmem.syscalls import Kernel, libc
from netdevkit.devmem.tx import devmem_cmsg
from netdevkit.errors import KernelError, RequestError, UnsupportedError
from netdevkit.netdev.client import Netdev
from netdevkit.netdev.family import NETDEV
from netdevkit.netlink import codec
from netdevkit.netlink.socket import GenlSocket
from netdevkit.netlink.spec import encode_attrs
from netdevkit.testbed import Testbed

pytestmark = pytest.mark.kernel
PORT = 5299


@pytest.fixture
def tcp(testbed4: Testbed) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server side, client side) of one TCP connection across the veth pair."""
    srv = testbed4.socket("server")
    cli = testbed4.socket("client")
    try:
        srv.bind((testbed4.server_addr, PORT))
        srv.listen()
        cli.connect((testbed4.server_addr, PORT))
        conn, _ = srv.accept()
        with conn:
            yield conn, cli
    finally:
        cli.close()
        srv.close()


@pytest.fixture
def memfd() -> Generator[int, None, None]:
    fd = os.memfd_create("not-a-dmabuf")
    yield fd
    os.close(fd)


def _nothing_bound(tb: Testbed) -> bool:
    with Netdev.open(tb.server_ns) as nd:
        return all(q.dmabuf is None for q in nd.queue_dump(tb.server_ifindex))


def test_bind_rx_with_a_memfd_is_refused_and_nothing_stays_bound(
    testbed4: Testbed, memfd: int
) -> None:
    # veth has no queue management API: the kernel refuses before it looks at the fd
    with pytest.raises(KernelError) as exc:
        bind_rx(testbed4.server_if, [0, 1], memfd, netns=testbed4.server_ns)
    assert exc.value.errno == errno.EOPNOTSUPP
    assert exc.value.attr_path == "dmabuf.ifindex"
    assert "gve, mlx5, bnxt, fbnic or idpf" in str(exc.value)
    assert _nothing_bound(testbed4)


def test_bind_rx_queue_out_of_range_meets_the_driver_check_first(
    testbed4: Testbed, memfd: int
) -> None:
    # the queue index is checked after the driver's queue API: veth answers EOPNOTSUPP
    with pytest.raises(KernelError) as exc:
        bind_rx(testbed4.server_if, [999], memfd, netns=testbed4.server_ns)
    assert exc.value.errno == errno.EOPNOTSUPP
    assert _nothing_bound(testbed4)


def test_empty_queue_list_refused_here_as_the_kernel_would(testbed4: Testbed, memfd: int) -> None:
    with pytest.raises(RequestError, match="at least one RX queue"):
        bind_rx(testbed4.server_if, [], memfd, netns=testbed4.server_ns)
    # the kernel's own answer to a bind-rx without queues (sent raw): EINVAL
    op = NETDEV.ops_by_name["bind-rx"]
    payload = encode_attrs(NETDEV, op.attr_set, {"ifindex": testbed4.server_ifindex, "fd": memfd})
    with GenlSocket.open(testbed4.server_ns) as sock:
        family = sock.resolve_family(NETDEV.name)
        seq = sock.next_seq()
        flags = codec.NLM_F_REQUEST | codec.NLM_F_ACK
        req = codec.encode_genl(family.id, op.id, NETDEV.version, flags, seq, payload)
        with pytest.raises(KernelError) as exc:
            sock.transact(req, seq, "bind-rx without queues")
    assert exc.value.errno == errno.EINVAL


def test_rx_page_size_refused_by_a_kernel_before_7_3(testbed4: Testbed, memfd: int) -> None:
    if tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (7, 3):
        pytest.skip("this kernel has rx-page-size (7.3+)")
    with pytest.raises(UnsupportedError, match=r"needs Linux 7\.3"):
        bind_rx(testbed4.server_if, [0], memfd, rx_page_size=8192, netns=testbed4.server_ns)


def test_bind_tx_refused_with_the_kernels_reason(testbed4: Testbed, memfd: int) -> None:
    with pytest.raises(KernelError, match="Driver does not support netmem TX"):
        bind_tx(testbed4.server_if, memfd, netns=testbed4.server_ns)


# -- SO_DEVMEM_DONTNEED and devmem sendmsg: the fake answers as the kernel does ----------


def _both(conn: socket.socket) -> list[tuple[str, Kernel, int]]:
    return [("kernel", libc(), conn.fileno()), ("fake", FakeKernel(16 * 4096), 0)]


def test_dontneed_of_tokens_never_handed_out_frees_nothing(
    tcp: tuple[socket.socket, socket.socket],
) -> None:
    for name, k, fd in _both(tcp[0]):
        assert k.dontneed(fd, np.array([(1, 5), (100, 3)], TOKEN_DTYPE)) == 0, name
        # a huge range is cut at 1024 inspected frags, not looped over
        assert k.dontneed(fd, np.array([(1, 0xFFFF_FFFF)], TOKEN_DTYPE)) == 0, name


@pytest.mark.parametrize("nbytes", [0, 12, 129 * 8])
def test_dontneed_bad_lengths_are_einval(
    tcp: tuple[socket.socket, socket.socket], nbytes: int
) -> None:
    for name, k, fd in _both(tcp[0]):
        with pytest.raises(OSError) as exc:
            k.dontneed(fd, bytes(nbytes))
        assert exc.value.errno == errno.EINVAL, name


def test_dontneed_on_udp_is_ebadf() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, pytest.raises(OSError) as exc:
        libc().dontneed(u.fileno(), np.array([(1, 1)], TOKEN_DTYPE))
    assert exc.value.errno == errno.EBADF


def test_devmem_send_with_an_unknown_binding_id(
    tcp: tuple[socket.socket, socket.socket],
) -> None:
    _conn, cli = tcp

    class Unknown:
        id = 4242
        ifname = "ndkc"
        dmabuf = None

    tx = DevmemSender(cli, Unknown())
    with pytest.raises(KernelError, match="knows no TX binding with id 4242") as exc:
        tx.send((0, 100))
    assert exc.value.errno == errno.EINVAL
    # and without MSG_ZEROCOPY the kernel refuses the devmem cmsg the same way
    for name, k, fd in [("kernel", libc(), cli.fileno()), ("fake", FakeKernel(4096), 0)]:
        with pytest.raises(OSError) as err:
            k.sendmsg(fd, [(0, 100)], devmem_cmsg(4242), 0)
        assert err.value.errno == errno.EINVAL, name


def test_receiver_passes_ordinary_tcp_data_through_as_bytes(
    tcp: tuple[socket.socket, socket.socket],
) -> None:
    conn, cli = tcp
    payload = os.urandom(200_000)
    cli.sendall(payload)
    cli.shutdown(socket.SHUT_WR)
    got = bytearray()
    deadline = time.monotonic() + 10
    with DevmemReceiver(conn, batch=16) as rx:
        for batch in rx:
            assert batch.readable and batch.frag_count == 0
            got += batch.data
            assert time.monotonic() < deadline
        stats = rx.stats()
    assert bytes(got) == payload
    assert stats.readable_bytes == len(payload) and stats.frags == 0
