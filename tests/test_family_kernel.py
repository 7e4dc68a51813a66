"""The netdev family declaration against the running kernel's own view.

nlctrl says which operations the kernel registers and, through
CTRL_CMD_GETPOLICY, which attributes each accepts with which types and ranges.
On every kernel of the matrix (and on the host) this checks that a declared
operation is there exactly from its ``since`` on, that every attribute the
kernel accepts is declared with a matching type, and that the kernel knows no
operation we do not: a new kernel's additions fail here until declared.
"""

from __future__ import annotations

import errno

import pytest
from policycheck import check_policy

from netdevkit import kver
from netdevkit.errors import UnsupportedError
from netdevkit.netdev.client import Netdev
from netdevkit.netdev.family import NETDEV
from netdevkit.netlink.policy import AttrPolicy, NlaType, get_policy
from netdevkit.netlink.socket import GenlSocket

pytestmark = [pytest.mark.kernel, pytest.mark.matrix]


def _page_pool_stats_built() -> bool | None:
    cfg = kver.config()
    return None if cfg is None else cfg.get("CONFIG_PAGE_POOL_STATS") == "y"


def _open_or_refusal() -> Netdev | None:
    """The netdev family, or None on a kernel older than 6.3 (asserting the refusal)."""
    try:
        return Netdev.open()
    except UnsupportedError as err:
        assert not kver.at_least("6.3"), f"no netdev family on {kver.release()}: {err}"
        assert "it appeared in Linux 6.3" in str(err)
        return None


def test_operations_are_registered_exactly_from_their_since() -> None:
    nd = _open_or_refusal()
    if nd is None:
        assert min(kver.parse(op.since) for op in NETDEV.operations if op.since) > (6, 1, 999)
        return
    with nd:
        registered = nd.info.op_ids
    wrong = []
    for op in NETDEV.operations:
        if op.notify:
            continue
        expected = kver.at_least(op.since)
        if op.name == "page-pool-stats-get":
            built = _page_pool_stats_built()
            if built is None:
                continue  # the kernel's configuration is not readable here
            expected = expected and built
        if (op.id in registered) != expected:
            have = "registers" if op.id in registered else "lacks"
            wrong.append(f"{op.name} (since {op.since}): {kver.release()} {have} it")
    assert not wrong, wrong
    declared = {op.id for op in NETDEV.operations}
    unknown = sorted(registered - declared)
    assert not unknown, f"{kver.release()} has netdev operations nobody declared: {unknown}"


def test_every_attribute_the_kernel_accepts_is_declared() -> None:
    if not kver.at_least("6.3"):
        pytest.skip(f"{kver.release()} has no netdev family (6.3+): nothing to compare")
    problems: list[str] = []
    with Netdev.open() as nd, GenlSocket.open() as sock:
        for op in NETDEV.operations:
            if op.notify or op.id not in nd.info.op_ids:
                continue
            fp = get_policy(sock, "netdev", op.id)
            policies = dict(fp.policies)
            for dump in (False, True):
                if (op.dump if dump else op.do) is False:
                    continue
                pol = fp.op_policy(op.id, dump)
                where = f"{op.name} {'dump' if dump else 'do'}"
                check_policy(NETDEV, op.attr_set, pol, policies, where, problems)
                if not dump and op.do:
                    missing = [
                        name
                        for name in op.required
                        if NETDEV.attr_sets[op.attr_set].by_name[name].id not in pol
                    ]
                    if missing:
                        problems.append(f"{where}: required {missing} not in the kernel's policy")
    assert not problems, problems


def test_threaded_range_names_the_busy_poll_kernel() -> None:
    """napi-set's policy caps threaded at 2 from 6.19 (busy-poll), at 1 before."""
    if not kver.at_least("6.17"):
        pytest.skip(f"napi threaded is settable from 6.17; this is {kver.release()}")
    napi_set = NETDEV.ops_by_name["napi-set"]
    with GenlSocket.open() as sock:
        pol = get_policy(sock, "netdev", napi_set.id).op_policy(napi_set.id)
    threaded = NETDEV.attr_sets["napi"].by_name["threaded"]
    assert pol[threaded.id] == AttrPolicy(NlaType.U32, 0, 2 if kver.at_least("6.19") else 1, None)


def test_kernel_without_the_operation_says_which_kernel() -> None:
    """An operation newer than the kernel: UnsupportedError naming its kernel, nothing sent."""
    nd = _open_or_refusal()
    if nd is None:
        return
    with nd:
        if nd.supports("queue-create"):
            with pytest.raises(OSError) as exc:
                nd.queue_create(1, 1, 0)
            # lo is no virtual device with leasing (7.1 answers EOPNOTSUPP or EINVAL)
            assert exc.value.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENODEV)
        else:
            with pytest.raises(UnsupportedError, match=r"needs Linux 7\.1 or newer"):
                nd.queue_create(1, 1, 0)
