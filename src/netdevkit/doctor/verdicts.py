"""The verdict half of ``netdevkit doctor``: :func:`evaluate` turns
:class:`~netdevkit.doctor.facts.Facts` into :class:`~netdevkit.doctor.checks.Check`
lines, feature by feature, without touching the system, so every verdict can
be tested with hand-made facts.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable

from .._drivers import DEVMEM_DRIVERS, NO_DEVMEM_DRIVERS
from .._os import CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE, format_cpu_list
from ..netdev.client import Napi
from ..netdev.family import NETDEV, NapiThreaded, QueueType
from ..tuning.presets import PRESETS, Preset
from ..units import format_duration_ns
from .checks import (
    ATTACH,
    BUSY_POLL,
    DEVMEM,
    FAMILY,
    IRQ_SUSPEND,
    KERNEL,
    NAPI,
    PER_NAPI,
    PP_STATS,
    PRIVILEGES,
    QSTATS,
    QUEUE_API,
    Check,
    _Report,
)
from .facts import Facts, IfaceFacts


def _fmt_settings(n: Napi) -> str:
    parts = [
        f"defer-hard-irqs {n.defer_hard_irqs}",
        f"gro-flush-timeout {format_duration_ns(n.gro_flush_timeout)}",
        f"irq-suspend-timeout {format_duration_ns(n.irq_suspend_timeout)}",
    ]
    if n.threaded is not None:
        mode = {NapiThreaded.ENABLED: "on", NapiThreaded.BUSY_POLL: "busy-poll"}
        parts.append(f"threaded {mode.get(NapiThreaded(n.threaded), 'off')}")
    return ", ".join(parts)


def _settings_key(n: Napi) -> tuple[int | None, int | None, int | None, int | None]:
    return (
        n.defer_hard_irqs,
        n.gro_flush_timeout,
        n.irq_suspend_timeout,
        None if n.threaded is None else int(n.threaded),
    )


def matching_presets(n: Napi) -> list[Preset]:
    """The presets whose NAPI half equals *n*'s settings (threaded only if reported)."""
    out = []
    for p in PRESETS.values():
        s = p.napi
        if (s.defer_hard_irqs, s.gro_flush_timeout, s.irq_suspend_timeout) != (
            n.defer_hard_irqs,
            n.gro_flush_timeout,
            n.irq_suspend_timeout,
        ):
            continue
        if n.threaded is not None and s.threaded is not None and int(s.threaded) != n.threaded:
            continue
        out.append(p)
    return out


def _epoll_half(p: Preset) -> str:
    e = p.epoll
    if not e.enabled:
        return "no epoll busy polling"
    prefer = ", prefer_busy_poll" if e.prefer_busy_poll else ""
    return f"epoll busy_poll_usecs {e.busy_poll_usecs}, budget {e.busy_poll_budget}{prefer}"


def _count(napis: tuple[Napi, ...] | list[Napi]) -> str:
    return "its NAPI" if len(napis) == 1 else f"all {len(napis)} NAPIs"


def _ids(napis: Iterable[Napi]) -> str:
    ids = [str(n.id) for n in napis]
    return ", ".join(ids[:8]) + (f" ... ({len(ids)} in all)" if len(ids) > 8 else "")


def _check_kernel(r: _Report) -> None:
    f = r.f
    if r.version is None:
        r.warn("release", f"cannot parse {f.release!r}")
    else:
        r.ok("release", f"Linux {f.release}")
    if f.config is not None:
        r.ok("config", f"read from {f.config_source}")
    elif f.config_error:
        r.warn("config", f.config_error + "; options inferred by probing")
    else:
        r.warn(
            "config",
            f"no /proc/config.gz or /boot/config-{f.release}; options inferred by probing",
            "modprobe configs (CONFIG_IKCONFIG_PROC) to expose /proc/config.gz",
        )


def _check_family(r: _Report) -> None:
    f = r.f
    r.kernel()
    if f.family_version is None:
        r.missing(
            "family",
            f.family_error or "no 'netdev' generic netlink family",
            "upgrade to Linux 6.9 or newer",
        )
        return
    r.ok("family", f"'netdev' version {f.family_version} is registered")
    have: list[str] = []
    lacks: list[str] = []
    for op in NETDEV.operations:
        if op.notify:
            group = "page-pool" if op.name.startswith("page-pool") else "mgmt"
            ok = group in f.mcast_groups
        else:
            ok = op.id in f.op_ids
        (have if ok else lacks).append(f"{op.id} {op.name}")
    detail = "supports " + ", ".join(have)
    if lacks:
        detail += "; lacks " + ", ".join(lacks)
    r.ok(
        "commands", detail + " (notifications count as supported when their multicast group exists)"
    )


def _check_busy_poll(r: _Report) -> None:
    f = r.f
    r.kernel()
    cfg = r.config("CONFIG_NET_RX_BUSY_POLL")
    from_cfg = "" if cfg is None else f" (config: {cfg or 'not set'})"
    e = f.epoll_errno
    if e == 0:
        r.ok("CONFIG_NET_RX_BUSY_POLL", "EPIOCGPARAMS works on a fresh epoll fd" + from_cfg)
    elif e == errno.EOPNOTSUPP:
        r.missing(
            "CONFIG_NET_RX_BUSY_POLL",
            "EPIOCGPARAMS answers EOPNOTSUPP: the kernel was built without busy polling" + from_cfg,
            "use a kernel built with CONFIG_NET_RX_BUSY_POLL=y",
        )
    elif e == errno.ENOTTY:
        r.missing(
            "CONFIG_NET_RX_BUSY_POLL",
            "EPIOCGPARAMS answers ENOTTY: epoll has no busy-poll ioctls before Linux 6.9"
            + from_cfg,
            "upgrade to Linux 6.9 or newer",
        )
    else:
        name = errno.errorcode.get(e or 0, str(e))
        r.warn("CONFIG_NET_RX_BUSY_POLL", f"EPIOCGPARAMS: {name}{from_cfg}")
    for knob, value in (("busy_poll", f.busy_poll), ("busy_read", f.busy_read)):
        name = f"net.core.{knob}"
        if value is None:
            r.warn(name, f"/proc/sys/net/core/{knob} is not readable")
        elif value == 0:
            who = "poll()/select()" if knob == "busy_poll" else "blocking socket reads"
            r.ok(
                name,
                f"0 (global, all namespaces): {who} do not busy poll by default; per-epoll "
                "parameters and SO_BUSY_POLL decide",
            )
        else:
            what = "poll()/select()" if knob == "busy_poll" else "blocking reads"
            r.warn(
                name,
                f"{value} us (global, all namespaces): every socket busy polls on {what}, "
                "burning CPU outside the applications you tune",
                f"sysctl -w net.core.{knob}=0 and set busy polling per epoll context instead",
            )


def _veth_remedy(iface: IfaceFacts) -> str:
    return (
        f"veth has NAPI only while up with GRO on: ethtool -K {iface.name} gro on; and on "
        "the sending peer ethtool -K PEER tso off gso off so its packets take the NAPI path"
    )


def _napi_set(iface: IfaceFacts, args: str) -> str:
    """The ``netdevkit napi set`` command line for every NAPI of *iface*."""
    netns = f" --netns {iface.netns}" if iface.netns else ""
    return f"netdevkit napi set{netns} --ifname {iface.name} {args}"


def _no_napi(iface: IfaceFacts) -> tuple[str, str]:
    """(detail, remedy) for an interface without NAPI instances."""
    if iface.driver == "veth":
        gro = "unknown" if iface.gro is None else ("on" if iface.gro else "off")
        return f"none (veth, GRO {gro})", _veth_remedy(iface)
    if iface.loopback:
        return (
            "none: loopback has no NAPI; its traffic never carries NAPI ids",
            "use a NIC or a NAPI-enabled veth pair (netdevkit testbed)",
        )
    return (
        f"none (driver {iface.driver or 'unknown'})",
        "bring the interface up; a driver without NAPI cannot be tuned per NAPI",
    )


def _check_napi(r: _Report) -> None:
    r.kernel(ops=("napi-get", "queue-get"))
    iface = r.f.iface
    if iface is None:
        return
    instances, ids = f"{iface.name}: NAPI instances", f"{iface.name}: NAPI ids on sockets"
    if iface.error or iface.napis is None:
        r.warn(instances, iface.error or iface.napi_error)
        r.warn(ids, iface.error or iface.napi_error)
        return
    if not iface.napis:
        detail, remedy = _no_napi(iface)
        r.missing(instances, detail, remedy)
        r.missing(
            ids, "no NAPI: SO_INCOMING_NAPI_ID reads 0, busy polling has nothing to poll", remedy
        )
        return
    r.ok(instances, f"{len(iface.napis)} (ids {_ids(iface.napis)})")
    _check_irqs(r, iface)
    rxq = [q for q in iface.queues or () if q.type == QueueType.RX]
    linked = [q for q in rxq if q.napi_id]
    if linked:
        r.ok(ids, f"{len(linked)} of {len(rxq)} RX queues linked to NAPI ids")
    elif iface.driver == "veth":
        tso = (
            ""
            if iface.tso is False
            else (
                f"for replies to carry ids too: ethtool -K {iface.name} tso off gso off "
                f"(TSO is {'on' if iface.tso else 'unknown'})"
            )
        )
        r.ok(
            ids,
            "veth links no queue to a NAPI, but its NAPIs exist: TCP/UDP from a peer with "
            "TSO/GSO off arrives with a NAPI id",
            tso,
        )
    else:
        r.warn(ids, "NAPIs exist but no RX queue reports a NAPI id; SO_INCOMING_NAPI_ID may read 0")
    _check_threaded(r, iface)


def _check_irqs(r: _Report, iface: IfaceFacts) -> None:
    """Which CPUs the queue interrupts go to (only for NAPIs that have an irq: veth has
    none): the CPUs where a server shares its core with the interrupts, or does not."""
    if not iface.irqs:
        return
    parts = [
        f"irq {irq} -> {format_cpu_list(cpus) if cpus is not None else 'unknown'}"
        for irq, cpus in iface.irqs
    ]
    every = sorted({c for _, cpus in iface.irqs for c in cpus or ()})
    r.ok(
        f"{iface.name}: queue interrupt CPUs",
        f"{format_cpu_list(every) or 'unknown'} ({', '.join(parts)})",
        "place a server on or off them: netdevkit bench --cpus server=irq or server=not-irq",
    )


def _check_threaded(r: _Report, iface: IfaceFacts) -> None:
    name = f"{iface.name}: threaded NAPI"
    napis = iface.napis or ()
    if not napis:
        return
    reported = [n for n in napis if n.threaded is not None]
    busy = [n for n in reported if n.threaded == NapiThreaded.BUSY_POLL]
    if reported:
        on = [n for n in reported if n.threaded != NapiThreaded.DISABLED]
    elif iface.sysfs_threaded is not None:
        # Before 6.17 napi-get has no threaded attribute, and a kthread's pid
        # stays reported after threading is switched off (seen on 6.12):
        # the device-wide sysfs knob is the truth there.
        on = list(napis) if iface.sysfs_threaded else []
    else:
        on = [n for n in napis if n.pid]
    have_busy = r.version is not None and r.version >= (6, 19)
    busy_note = (
        "; threaded busy-poll (6.19+) available: --threaded busy-poll"
        if have_busy
        else "; threaded busy-poll needs Linux 6.19"
    )
    if on:
        pids = ", ".join(str(n.pid) for n in on if n.pid)
        mode = f", {len(busy)} of them busy polling" if busy else ""
        r.ok(
            name,
            f"on for {len(on)} of {len(napis)} NAPIs{mode} (kthreads {pids or 'unknown'}); "
            "busy polling and threaded NAPI compete for the same NAPI" + busy_note,
        )
    else:
        r.ok(
            name,
            f"off for {_count(napis)} (polled in softirq)" + busy_note,
            _napi_set(iface, "--threaded on") + " for a kthread per NAPI",
        )


def _check_qstats(r: _Report) -> None:
    r.kernel(ops=("qstats-get",))
    iface = r.f.iface
    if iface is None:
        return
    name = f"{iface.name}: driver statistics"
    if iface.error or iface.qstats is None:
        r.warn(name, iface.error or iface.qstats_error)
    elif iface.qstats:
        counters = sorted({c for row in iface.qstats for c in row.counters})
        more = ", ..." if len(counters) > 6 else ""
        r.ok(name, f"{len(counters)} counters: {', '.join(counters[:6])}{more}")
    else:
        r.warn(
            name,
            f"driver {iface.driver or '?'} reports no queue statistics (qstats-get: EOPNOTSUPP)",
            "use ethtool -S for driver-private counters",
        )


def _driver_line(r: _Report, iface: IfaceFacts, what: str, remedy_missing: str) -> None:
    name = f"{iface.name}: driver"
    if iface.error:
        r.warn(name, iface.error)
    elif iface.driver is None:
        r.warn(name, f"driver unknown: {iface.driver_error}")
    elif iface.driver in DEVMEM_DRIVERS:
        r.ok(name, f"{iface.driver} {what}")
    elif iface.driver in NO_DEVMEM_DRIVERS or iface.loopback:
        r.missing(name, f"{iface.driver} has no {what}", remedy_missing)
    else:
        r.warn(
            name,
            f"{iface.driver} is not known to have {what} (known: "
            f"{', '.join(sorted(DEVMEM_DRIVERS))})",
            "try it: bind-rx answers EOPNOTSUPP when the driver cannot",
        )


def _check_queue_api(r: _Report) -> None:
    r.kernel()
    if r.f.iface is not None:
        _driver_line(
            r,
            r.f.iface,
            "queue management API (netdev_queue_mgmt_ops)",
            "devmem and io_uring zero-copy receive need a NIC such as gve, mlx5, bnxt, "
            "fbnic or idpf",
        )


def _check_per_napi(r: _Report) -> None:
    r.kernel(ops=("napi-set",))
    iface = r.f.iface
    if iface is None:
        return
    name = f"{iface.name}: settings in effect"
    napis = iface.napis
    if iface.error or napis is None:
        r.warn(name, iface.error or iface.napi_error)
        return
    if not napis:
        r.missing(name, "no NAPI to configure")
        return
    if napis[0].defer_hard_irqs is None:
        r.warn(
            name,
            "the kernel does not report per-NAPI settings (Linux 6.13+)",
            "use the device-wide /sys/class/net/IF/{napi_defer_hard_irqs,gro_flush_timeout}",
        )
        return
    groups: dict[tuple[int | None, ...], list[Napi]] = {}
    for n in napis:
        groups.setdefault(_settings_key(n), []).append(n)
    if len(groups) > 1:
        parts = []
        for members in groups.values():
            names = "/".join(p.name for p in matching_presets(members[0])) or "custom"
            parts.append(f"ids {_ids(members)}: {_fmt_settings(members[0])} ({names})")
        r.warn(
            name,
            f"NAPIs of {iface.name} differ: " + "; ".join(parts),
            f"a half-applied change? {_napi_set(iface, '--preset NAME')} makes them uniform",
        )
        return
    n = napis[0]
    every = "on " + _count(napis)
    presets = matching_presets(n)
    defer, gro, suspend = n.defer_hard_irqs or 0, n.gro_flush_timeout or 0, n.irq_suspend_timeout
    if suspend and not (defer and gro):
        r.warn(
            name,
            f"{_fmt_settings(n)} {every}: irq-suspend-timeout needs defer-hard-irqs and "
            "gro-flush-timeout as the fallback when the application stops polling",
            _napi_set(iface, "--preset suspend"),
        )
    elif defer and not gro:
        r.warn(
            name,
            f"{_fmt_settings(n)} {every}: defer-hard-irqs has no effect without gro-flush-timeout",
            _napi_set(iface, "--gro-flush-timeout 200us") + " (or --preset defer/napibusy)",
        )
    elif presets:
        p = presets[0]
        r.ok(name, f"{_fmt_settings(n)} {every} = preset '{p.name}' (expects {_epoll_half(p)})")
    else:
        r.ok(name, f"{_fmt_settings(n)} {every} (custom, no preset)")


def _check_irq_suspend(r: _Report) -> None:
    r.kernel(ops=("napi-set",))
    sample = r.f.sample_napi
    name = "irq-suspend-timeout"
    if sample is None:
        r.warn(
            name,
            "no NAPI in this namespace to see whether the kernel reports irq-suspend-timeout",
            "check again with --ifname of an interface that has NAPIs",
        )
    elif sample.irq_suspend_timeout is not None:
        r.ok(name, "napi-get reports the irq-suspend-timeout attribute")
    else:
        r.missing(
            name, "napi-get does not report irq-suspend-timeout", "upgrade to Linux 6.13 or newer"
        )
    iface = r.f.iface
    if iface is None or not iface.napis:
        return
    active = [n for n in iface.napis if n.irq_suspend_timeout]
    label = f"{iface.name}: suspension"
    if active:
        r.ok(
            label,
            f"armed on {len(active)} of {len(iface.napis)} NAPIs "
            f"({format_duration_ns(active[0].irq_suspend_timeout)}); takes effect only while "
            "an epoll context with prefer_busy_poll keeps finding events",
        )
    else:
        r.ok(
            label,
            "not armed (irq-suspend-timeout 0)",
            _napi_set(iface, "--preset suspend") + ", and epoll "
            "prefer_busy_poll, budget 64 in the application",
        )


def _check_devmem(r: _Report) -> None:
    f = r.f
    r.kernel(ops=("bind-rx",), label=" (RX)")
    r.kernel("devmem-tx", ops=("bind-tx",), label=" (TX)")
    cfg = r.config("CONFIG_NET_DEVMEM")
    name = "CONFIG_NET_DEVMEM"
    if cfg:
        r.ok(name, f"{cfg} in {f.config_source}")
    elif cfg == "":
        r.missing(
            name,
            f"not set in {f.config_source}: bind-rx answers EOPNOTSUPP",
            "use a kernel built with CONFIG_NET_DEVMEM=y (needs DMA_SHARED_BUFFER, "
            "GENERIC_ALLOCATOR, PAGE_POOL)",
        )
    elif r.has_op("bind-rx"):
        r.ok(
            name,
            "inferred: bind-rx is registered (the option itself shows only in the kernel "
            "config; without it bind-rx answers EOPNOTSUPP)",
        )
    else:
        r.missing(name, "bind-rx is not registered", "Linux 6.12 or newer")
    udma = r.config("CONFIG_UDMABUF")
    if f.udmabuf:
        r.ok("udmabuf", "/dev/udmabuf exists (host-memory dmabufs for tests)")
    elif udma == "m":
        r.missing("udmabuf", "no /dev/udmabuf; CONFIG_UDMABUF=m", "modprobe udmabuf")
    else:
        state = "" if udma is None else "; CONFIG_UDMABUF is not set"
        r.missing(
            "udmabuf",
            f"no /dev/udmabuf{state}",
            "a GPU dmabuf (CUDA/ROCm) works as well; for host memory use a kernel with "
            "CONFIG_UDMABUF",
        )
    if f.iface is not None:
        _driver_line(
            r,
            f.iface,
            "devmem support (queue API and unreadable-netmem page pools)",
            "devmem needs gve, mlx5, bnxt, fbnic or idpf with header split and flow steering",
        )
        for name, met, detail in f.iface.devmem or ():
            label = f"{f.iface.name}: {name}"
            if met:
                r.ok(label, detail)
            elif met is None:
                r.warn(label, detail)
            else:
                r.missing(label, detail, _DEVMEM_REMEDY.get(name, ""))


_DEVMEM_REMEDY = {
    "queue API": "devmem needs gve, mlx5, bnxt, fbnic or idpf",
    "header split": "a NIC whose driver supports tcp-data-split (ethtool -G IF tcp-data-split on)",
    "ntuple": "a NIC with n-tuple flow steering (ethtool -K IF ntuple on)",
    "RSS": "a NIC with an RSS indirection table (and Linux 6.17+ to set it over netlink)",
}


def _check_pp_stats(r: _Report) -> None:
    cfg = r.config("CONFIG_PAGE_POOL_STATS")
    from_cfg = "" if cfg is None else f"; config: {cfg or 'not set'}"
    name = "CONFIG_PAGE_POOL_STATS"
    if r.has_op("page-pool-stats-get"):
        r.ok(name, "page-pool-stats-get is registered" + from_cfg)
    else:
        r.missing(
            name,
            "page-pool-stats-get is not registered: the kernel was built without "
            "CONFIG_PAGE_POOL_STATS" + from_cfg,
            "use a kernel built with CONFIG_PAGE_POOL_STATS=y; page-pool-get still works",
        )


_CAPS = (
    (CAP_NET_ADMIN, "CAP_NET_ADMIN", "napi set, bind-rx/bind-tx, SO_PREFER_BUSY_POLL, budget > 64"),
    (CAP_SYS_ADMIN, "CAP_SYS_ADMIN", "entering network namespaces (--netns), the testbed"),
    (CAP_SYS_PTRACE, "CAP_SYS_PTRACE", "attach: pidfd_getfd on another user's process"),
)


def _check_privileges(r: _Report) -> None:
    eff = r.f.cap_eff
    for bit, cap, needed_for in _CAPS:
        if eff is None:
            r.warn(cap, "cannot read CapEff from /proc/self/status")
        elif eff >> bit & 1:
            r.ok(cap, f"held (needed for {needed_for})")
        else:
            r.warn(
                cap,
                f"not held: read-only here; needed for {needed_for}",
                f"run as root or grant {cap}",
            )


def _check_attach(r: _Report) -> None:
    f = r.f
    e = f.pidfd_getfd_errno
    if e in (errno.EBADF, 0):
        r.ok("pidfd_getfd", "syscall 438 is available")
    elif e == errno.ENOSYS:
        r.missing(
            "pidfd_getfd",
            "syscall 438 answers ENOSYS",
            "Linux 5.6 or newer (x86_64 / asm-generic syscall numbering)",
        )
    else:
        r.warn(
            "pidfd_getfd", f"syscall 438 answers {errno.errorcode.get(e or 0, e)} (seccomp filter?)"
        )
    scope = f.ptrace_scope
    ptrace = f.cap_eff is not None and bool(f.cap_eff >> CAP_SYS_PTRACE & 1)
    if scope is None:
        r.ok("ptrace_scope", "no Yama LSM: ordinary ptrace rules")
    elif scope >= 3:
        r.missing(
            "ptrace_scope",
            "kernel.yama.ptrace_scope=3: no process may attach to another",
            "only a reboot resets ptrace_scope 3",
        )
    elif scope >= 1 and not ptrace:
        r.warn(
            "ptrace_scope",
            f"kernel.yama.ptrace_scope={scope}: attaching needs CAP_SYS_PTRACE (or a parent)",
            "run attach as root",
        )
    else:
        r.ok("ptrace_scope", f"kernel.yama.ptrace_scope={scope}")


_PARTS: tuple[tuple[str, Callable[[_Report], None]], ...] = (
    (KERNEL, _check_kernel),
    (FAMILY, _check_family),
    (NAPI, _check_napi),
    (BUSY_POLL, _check_busy_poll),
    (QSTATS, _check_qstats),
    (QUEUE_API, _check_queue_api),
    (PER_NAPI, _check_per_napi),
    (IRQ_SUSPEND, _check_irq_suspend),
    (DEVMEM, _check_devmem),
    (PP_STATS, _check_pp_stats),
    (PRIVILEGES, _check_privileges),
    (ATTACH, _check_attach),
)


def evaluate(facts: Facts) -> list[Check]:
    """Turn *facts* into the report's lines, feature by feature. No I/O."""
    r = _Report(facts)
    for feature, part in _PARTS:
        r.feature = feature
        part(r)
    return r.checks
