"""The netdev client against the real kernel, inside a four-queue veth testbed.

What was built (``testbed4``): one veth pair with 4 RX and 4 TX queues on each
end, GRO on, so each end has 4 NAPI instances; the dumps, gets and sets below
are checked against that. Nothing outside the testbed's namespaces is changed.
"""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import textwrap

import pytest
from pyroute2 import IPRoute

from netdevkit import kver
from netdevkit.errors import ErrorReply, KernelError, NotFoundError, RequestError, UnsupportedError
from netdevkit.netdev.client import Dev, Netdev
from netdevkit.netdev.family import NETDEV, NapiThreaded, QueueType
from netdevkit.netlink import codec
from netdevkit.netlink.socket import GenlSocket
from netdevkit.netlink.spec import attr_path, encode_attrs
from netdevkit.testbed import Side, Testbed

pytestmark = pytest.mark.kernel

UNKNOWN_NAPI_ID = 0xFFFF_FFF0  # NAPI ids start at MIN_NAPI_ID (NR_CPUS + 1) and count up


# -- dumps match what was built --------------------------------------------------


@pytest.mark.parametrize("side", ["server", "client"])
def test_dumps_match_the_testbed(testbed4: Testbed, side: Side) -> None:
    ns = testbed4.ns_of(side)
    ifindex = testbed4.server_ifindex if side == "server" else testbed4.client_ifindex
    with Netdev.open(ns) as nd:
        assert nd.netns == ns
        devs = nd.dev_dump()
        napis = nd.napi_dump()
        napis_filtered = nd.napi_dump(ifindex=ifindex)
        queues = nd.queue_dump(ifindex=ifindex)
        all_queues = nd.queue_dump()
    assert sorted(d.ifindex for d in devs) == [1, ifindex]
    assert all(isinstance(d, Dev) for d in devs)
    # 4 rx queues with GRO on -> 4 NAPIs, all on the veth (lo has none)
    assert len(napis) == 4
    assert {n.ifindex for n in napis} == {ifindex}
    assert len({n.id for n in napis}) == 4
    assert sorted(napis_filtered, key=lambda n: n.id) == sorted(napis, key=lambda n: n.id)
    for n in napis:
        assert n.threaded is NapiThreaded.DISABLED and n.pid is None
        assert (n.defer_hard_irqs, n.gro_flush_timeout, n.irq_suspend_timeout) == (0, 0, 0)
    assert sorted((q.type, q.id) for q in queues) == [
        (t, i) for t in (QueueType.RX, QueueType.TX) for i in range(4)
    ]
    assert all(q.ifindex == ifindex and isinstance(q.type, QueueType) for q in queues)
    assert {q.ifindex for q in all_queues} == {1, ifindex}
    assert len(all_queues) == 10  # lo: one rx, one tx


def test_probe_traffic_used_a_dumped_napi(testbed4: Testbed) -> None:
    with Netdev.open(testbed4.server_ns) as nd:
        server_ids = {n.id for n in nd.napi_dump()}
    with Netdev.open(testbed4.client_ns) as nd:
        client_ids = {n.id for n in nd.napi_dump()}
    to_server, to_client = testbed4.probe_napi_ids
    assert to_server in server_ids
    assert to_client in client_ids


# -- get agrees with dump --------------------------------------------------------


def test_gets_agree_with_dumps(testbed4: Testbed) -> None:
    with Netdev.open(testbed4.server_ns) as nd:
        for n in nd.napi_dump():
            assert nd.napi_get(n.id) == n
        for q in nd.queue_dump():
            assert nd.queue_get(q.ifindex, q.type, q.id) == q
        for d in nd.dev_dump():
            assert nd.dev_get(d.ifindex) == d


# -- napi-set round trip ---------------------------------------------------------


def test_napi_set_round_trip(testbed4: Testbed) -> None:
    with Netdev.open(testbed4.server_ns) as nd:
        target, *others = nd.napi_dump()
        nd.napi_set(target.id, defer_hard_irqs=100, gro_flush_timeout=200_000)
        nd.napi_set(target.id, irq_suspend_timeout=20_000_000)
        got = nd.napi_get(target.id)
        assert (got.defer_hard_irqs, got.gro_flush_timeout, got.irq_suspend_timeout) == (
            100,
            200_000,
            20_000_000,
        )
        # only the NAPI asked for changed
        assert [nd.napi_get(o.id) for o in others] == others
        # a value above u32 travels as an 8-byte uint and comes back
        nd.napi_set(target.id, gro_flush_timeout=5 * 2**32)
        assert nd.napi_get(target.id).gro_flush_timeout == 5 * 2**32

        nd.napi_set(target.id, threaded=True)
        threaded = nd.napi_get(target.id)
        assert threaded.threaded is NapiThreaded.ENABLED
        assert threaded.pid is not None
        with open(f"/proc/{threaded.pid}/comm") as f:
            assert f.read().startswith("napi/")
        assert threaded.defer_hard_irqs == 100  # the other settings were kept

        nd.napi_set(target.id, threaded=NapiThreaded.DISABLED)
        back = nd.napi_get(target.id)
        assert back.threaded is NapiThreaded.DISABLED and back.pid is None

        nd.napi_set(target.id, defer_hard_irqs=0, gro_flush_timeout=0, irq_suspend_timeout=0)
        assert nd.napi_get(target.id) == target


# -- errors ----------------------------------------------------------------------


def test_napi_get_unknown_id_is_not_found(testbed4: Testbed) -> None:
    with Netdev.open(testbed4.server_ns) as nd, pytest.raises(NotFoundError) as exc:
        nd.napi_get(UNKNOWN_NAPI_ID)
    assert str(UNKNOWN_NAPI_ID) in str(exc.value)


def test_napi_set_unknown_id_is_not_found(testbed4: Testbed) -> None:
    with Netdev.open(testbed4.server_ns) as nd, pytest.raises(NotFoundError):
        nd.napi_set(UNKNOWN_NAPI_ID, defer_hard_irqs=1)


def test_spec_rejects_threaded_3_before_sending() -> None:
    with pytest.raises(RequestError, match=r"napi\.threaded: 3 is out of range 0\.\.2"):
        encode_attrs(NETDEV, "napi", {"id": 1, "threaded": 3})


@pytest.mark.matrix
def test_napi_set_threaded_busy_poll(testbed4: Testbed) -> None:
    """6.19+ runs a busy-polling kthread; older kernels refuse, naming 6.19."""
    if not kver.at_least("6.3"):
        with pytest.raises(UnsupportedError, match=r"it appeared in Linux 6\.3"):
            Netdev.open(testbed4.server_ns)
        return
    with Netdev.open(testbed4.server_ns) as nd:
        if not nd.supports("napi-set"):
            with pytest.raises(UnsupportedError) as exc:
                nd.napi_set(1, threaded=NapiThreaded.BUSY_POLL)
            assert str(exc.value) == "per-NAPI settings need Linux 6.13 or newer (napi-set)"
            return
        napi = nd.napi_dump()[0]
        if kver.at_least("6.19"):
            nd.napi_set(napi.id, threaded=NapiThreaded.BUSY_POLL)
            after = nd.napi_get(napi.id)
            assert after.threaded is NapiThreaded.BUSY_POLL
            assert after.pid  # the kthread exists
            nd.napi_set(napi.id, threaded=NapiThreaded.DISABLED)
            assert nd.napi_get(napi.id).threaded is NapiThreaded.DISABLED
        else:
            with pytest.raises(UnsupportedError) as exc:
                nd.napi_set(napi.id, threaded=NapiThreaded.BUSY_POLL)
            assert str(exc.value) == (
                f"napi-set id {napi.id}: threaded busy-poll needs Linux 6.19 or newer "
                "(this kernel accepts threaded 0 or 1: integer out of range)"
            )
            assert nd.napi_get(napi.id) == napi  # nothing changed


def test_kernel_rejects_raw_threaded_3_with_extack(testbed4: Testbed) -> None:
    """Bypass our validation: the kernel's own policy says ERANGE and points at it
    (3 on every kernel; 2, busy-poll, is out of range before 6.19 too)."""
    with Netdev.open(testbed4.server_ns) as nd:
        napi = nd.napi_dump()[0]
    u32 = struct.Struct("=I")
    attrs = codec.encode_attr(2, u32.pack(napi.id)) + codec.encode_attr(8, u32.pack(3))
    with GenlSocket.open(testbed4.server_ns) as sock:
        info = sock.resolve_family("netdev")
        op = NETDEV.ops_by_name["napi-set"]
        seq = sock.next_seq()
        flags = codec.NLM_F_REQUEST | codec.NLM_F_ACK
        req = codec.encode_genl(info.id, op.id, NETDEV.version, flags, seq, attrs)
        with pytest.raises(ErrorReply) as exc:
            sock.transact(req, seq, "raw napi-set threaded=3")
    err = exc.value
    assert err.errno == errno.ERANGE
    assert err.raw_extack.message == "integer out of range"
    assert err.raw_extack.offset is not None
    start = codec.NLMSGHDR_LEN + codec.GENLMSGHDR_LEN
    assert attr_path(NETDEV, "napi", req, start, err.raw_extack.offset) == "napi.threaded"
    with Netdev.open(testbed4.server_ns) as nd:
        assert nd.napi_get(napi.id) == napi


@pytest.mark.parametrize(("qtype", "qid"), [(QueueType.RX, 4), (QueueType.TX, 1000)])
def test_queue_get_out_of_range(testbed4: Testbed, qtype: QueueType, qid: int) -> None:
    ifindex = testbed4.server_ifindex
    with Netdev.open(testbed4.server_ns) as nd, pytest.raises(NotFoundError) as exc:
        nd.queue_get(ifindex, qtype, qid)
    # 6.18 answers EINVAL (no extack) for an index >= real_num_{rx,tx}_queues
    assert isinstance(exc.value.__cause__, KernelError)
    assert exc.value.__cause__.errno == errno.EINVAL
    assert f"no {qtype.name.lower()} queue {qid}" in str(exc.value)


def test_queue_get_unknown_ifindex_is_not_found(testbed4: Testbed) -> None:
    with Netdev.open(testbed4.server_ns) as nd, pytest.raises(NotFoundError):
        nd.queue_get(4242, QueueType.RX, 0)


def test_page_pool_stats_needs_config_option(testbed4: Testbed) -> None:
    with Netdev.open(testbed4.server_ns) as nd:
        if nd.supports("page-pool-stats-get"):  # a kernel with CONFIG_PAGE_POOL_STATS=y
            assert isinstance(nd.page_pool_stats_dump(), list)
            return
        with pytest.raises(UnsupportedError, match="CONFIG_PAGE_POOL_STATS"):
            nd.page_pool_stats_dump()
        with pytest.raises(UnsupportedError, match="CONFIG_PAGE_POOL_STATS"):
            nd.page_pool_stats_get(1)


def test_qstats_on_veth(testbed4: Testbed) -> None:
    """veth has no qstats: a dump of all devices skips it, asking for it is EOPNOTSUPP."""
    with Netdev.open(testbed4.server_ns) as nd:
        assert nd.qstats_dump() == []
        assert nd.qstats_dump(per_queue=True) == []
        for per_queue in (False, True):
            with pytest.raises(KernelError) as exc:
                nd.qstats_dump(testbed4.server_ifindex, per_queue=per_queue)
            assert exc.value.errno == errno.EOPNOTSUPP
            assert exc.value.attr_path == "qstats.ifindex"
            assert "does not report queue statistics" in str(exc.value)


_NON_ROOT_CHILD = textwrap.dedent(
    """
    import os, sys
    from netdevkit.errors import PermissionDenied
    from netdevkit.netdev.client import Netdev
    from netdevkit.netns import entered

    ns, op, napi_id, ifindex = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # As root: move this thread into the testbed namespace (opens no socket),
    # then drop to nobody, which clears every capability. Keep the context
    # referenced: collecting it would switch the thread back.
    inside = entered(ns)
    inside.__enter__()
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    try:
        with Netdev.open() as nd:
            nd.napi_get(napi_id)  # reading needs nothing
            if op == "napi-set":
                nd.napi_set(napi_id, defer_hard_irqs=1)
            else:
                nd.bind_rx(ifindex, os.memfd_create("x"), [0])
    except PermissionDenied as err:
        print(type(err).__name__, err.capability, err.errno, err, sep="|")
        sys.exit(3)
    print(op, "succeeded without privileges")
    """
)


@pytest.mark.parametrize("op", ["napi-set", "bind-rx"])
def test_changes_without_cap_net_admin(testbed4: Testbed, op: str) -> None:
    with Netdev.open(testbed4.server_ns) as nd:
        napi = nd.napi_dump()[0]
    ifindex = str(testbed4.server_ifindex)
    r = subprocess.run(
        [sys.executable, "-c", _NON_ROOT_CHILD, testbed4.server_ns, op, str(napi.id), ifindex],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 3, (r.stdout, r.stderr)
    name, capability, err, message = r.stdout.strip().split("|")
    assert (name, capability, int(err)) == ("PermissionDenied", "CAP_NET_ADMIN", errno.EPERM)
    what = f"napi-set id {napi.id}" if op == "napi-set" else f"bind-rx ifindex {ifindex}"
    assert "CAP_NET_ADMIN" in message and what in message
    with Netdev.open(testbed4.server_ns) as nd:
        assert nd.napi_get(napi.id) == napi
        assert all(q.dmabuf is None for q in nd.queue_dump())


# -- Device Memory TCP bindings: veth cannot carry devmem ---------------------------
#
# Seen on 6.18: veth has neither the queue management API nor netmem TX, so the
# kernel refuses both bindings before it looks at the dmabuf fd (a memfd here,
# which is no dmabuf either) and nothing is bound.


def test_bind_rx_refused_by_a_driver_without_queue_api(testbed4: Testbed) -> None:
    memfd = os.memfd_create("not-a-dmabuf")
    try:
        with Netdev.open(testbed4.server_ns) as nd:
            with pytest.raises(KernelError) as exc:
                nd.bind_rx(testbed4.server_ifindex, memfd, [0, 1])
            assert exc.value.errno == errno.EOPNOTSUPP
            assert exc.value.attr_path == "dmabuf.ifindex"
            assert "queue management API" in str(exc.value)
            assert all(q.dmabuf is None for q in nd.queue_dump(testbed4.server_ifindex))
    finally:
        os.close(memfd)


def test_bind_tx_refused_with_the_kernels_reason(testbed4: Testbed) -> None:
    memfd = os.memfd_create("not-a-dmabuf")
    try:
        with Netdev.open(testbed4.server_ns) as nd, pytest.raises(KernelError) as exc:
            nd.bind_tx(testbed4.server_ifindex, memfd)
        assert exc.value.errno == errno.EOPNOTSUPP
        assert exc.value.extack == "Driver does not support netmem TX"
    finally:
        os.close(memfd)


@pytest.mark.parametrize("op", ["bind-rx", "bind-tx"])
def test_bind_to_unknown_ifindex_is_not_found(testbed4: Testbed, op: str) -> None:
    memfd = os.memfd_create("not-a-dmabuf")
    try:
        with Netdev.open(testbed4.server_ns) as nd, pytest.raises(NotFoundError) as exc:
            if op == "bind-rx":
                nd.bind_rx(9999, memfd, [0])
            else:
                nd.bind_tx(9999, memfd)
        assert "no network device with ifindex 9999 in network namespace" in str(exc.value)
    finally:
        os.close(memfd)


def test_bind_rx_needs_a_queue(testbed4: Testbed) -> None:
    with Netdev.open(testbed4.server_ns) as nd, pytest.raises(RequestError, match="one RX queue"):
        nd.bind_rx(testbed4.server_ifindex, 3, [])


# -- notifications ---------------------------------------------------------------


def test_mgmt_notification_for_a_new_device(testbed4: Testbed) -> None:
    ns = testbed4.server_ns
    with Netdev.open(ns) as nd:
        nd.subscribe("mgmt")
        with pytest.raises(RequestError, match="known: mgmt, page-pool"):
            nd.subscribe("nope")
        with IPRoute(netns=ns) as ipr:
            ipr.link("add", ifname="ndk-n0", kind="veth", peer="ndk-n1")
            try:
                (new,) = ipr.link_lookup(ifname="ndk-n0")
                (peer,) = ipr.link_lookup(ifname="ndk-n1")
                seen: dict[int | None, str] = {}
                for ntf in nd.notifications(timeout=2.0):
                    seen.setdefault(ntf.obj.ifindex, ntf.name)
                    if new in seen and peer in seen:
                        break
            finally:
                ipr.link("del", ifname="ndk-n0")
    assert seen.get(new) == "dev-add-ntf"
    assert seen.get(peer) == "dev-add-ntf"
    assert os.path.exists(f"/run/netns/{ns}")
