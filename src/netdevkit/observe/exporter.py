"""Prometheus metrics of NAPIs, queues, page pools and busy polling.

Every scrape reads the kernel afresh (:class:`~.sources.NamespaceReader`);
nothing is cached between scrapes except open sockets. Names follow the
Prometheus conventions: ``netdevkit_`` prefix, units in the name
(``_seconds``, ``_bytes``, ``_packets``), ``_total`` on counters, and the
identity of a queue or NAPI in labels (``netns``, ``ifname``, ``ifindex``,
``queue``, ``type``, ``napi_id``), never in names. ``netns`` is ``""`` for
the exporter's own namespace.

Two ways out, producing the same families:

- :class:`NetdevkitCollector`: a prometheus-client collector, for a
  program that has its own registry (``REGISTRY.register(...)``);
- :meth:`Exporter.render`, the exposition text the ``netdevkit exporter``
  HTTP server answers with. It writes the text format itself, without
  prometheus-client's ``generate_latest`` (why, with figures: docs/observe.md,
  "Speed"); the tests check that both paths give the same families.
"""

from __future__ import annotations

import functools
import http.server
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import NetdevkitError, translate_oserror
from ..tuning.drift import drift
from .sources import EpollContext, NamespaceReader, Snapshot, gc_paused, read_attached_epolls

if TYPE_CHECKING:
    from ..tuning.profile import Profile

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_LISTEN = ("127.0.0.1", 9417)

NAPI_LABELS = ("netns", "ifname", "ifindex", "napi_id")
QUEUE_LABELS = ("netns", "ifname", "ifindex", "queue", "type")
LINK_LABELS = ("netns", "ifname", "ifindex")
POOL_LABELS = ("netns", "ifname", "ifindex", "pool_id", "napi_id")
EPOLL_LABELS = ("pid", "tid", "fd")
DRIFT_LABELS = ("profile", "netns", "ifname", "setting")

#: rtnetlink counter -> (metric name, help)
LINK_METRICS = {
    "rx_packets": ("netdevkit_link_receive_packets", "Packets received (rtnetlink link counter)"),
    "tx_packets": ("netdevkit_link_transmit_packets", "Packets sent (rtnetlink link counter)"),
    "rx_bytes": ("netdevkit_link_receive_bytes", "Bytes received (rtnetlink link counter)"),
    "tx_bytes": ("netdevkit_link_transmit_bytes", "Bytes sent (rtnetlink link counter)"),
    "rx_dropped": ("netdevkit_link_receive_drop", "Received packets dropped (rtnetlink)"),
    "tx_dropped": ("netdevkit_link_transmit_drop", "Packets dropped on send (rtnetlink)"),
    "rx_errors": ("netdevkit_link_receive_errs", "Receive errors (rtnetlink link counter)"),
    "tx_errors": ("netdevkit_link_transmit_errs", "Send errors (rtnetlink link counter)"),
}


#: label values and value of one sample
Sample = tuple[tuple[str, ...], float]


@dataclass(slots=True)
class Family:
    """One metric family: name (without ``_total``), type, help, label names, samples."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...]
    samples: list[Sample] = field(default_factory=list)
    #: exposition lines written directly by a fast builder (the NAPI families) ...
    lines: list[str] = field(default_factory=list)
    #: ... whose samples, for the prometheus-client collector, these make on demand
    deferred: list[Callable[[], list[Sample]]] = field(default_factory=list)

    def all_samples(self) -> list[Sample]:
        out = list(self.samples)
        for make in self.deferred:
            out += make()
        return out


class Families:
    """Families by name, in the order first added; same-named ones merge."""

    def __init__(self) -> None:
        self.by_name: dict[str, Family] = {}
        #: id(label values tuple) -> its ``{k="v",...}`` text; every tuple in a
        #: sample is kept alive by that sample, so the ids stay unique
        self.texts: dict[int, str] = {}

    def label(
        self, keys: tuple[str, ...], values: tuple[str, ...], text: str | None = None
    ) -> None:
        """Remember the text of *values* (computed unless given)."""
        if text is None:
            pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(keys, values, strict=True))
            text = "{" + pairs + "}" if pairs else ""
        self.texts[id(values)] = text

    def get(self, name: str, type_: str, help_: str, labels: tuple[str, ...]) -> Family:
        fam = self.by_name.get(name)
        if fam is None:
            fam = self.by_name[name] = Family(name, type_, help_, labels)
        return fam

    def add(
        self,
        name: str,
        type_: str,
        help_: str,
        labels: tuple[str, ...],
        values: tuple[str, ...],
        value: float,
    ) -> None:
        self.get(name, type_, help_, labels).samples.append((values, value))
        if id(values) not in self.texts:
            self.label(labels, values)

    def __iter__(self) -> Iterator[Family]:
        return iter(self.by_name.values())


# -- families of one snapshot --------------------------------------------------


_NAPI_GAUGES = (
    (
        "netdevkit_napi_defer_hard_irqs",
        "Empty polls before the NAPI re-enables its IRQ (napi_defer_hard_irqs)",
        "defer_hard_irqs",
    ),
    (
        "netdevkit_napi_gro_flush_timeout_seconds",
        "Timer that holds the IRQ back after a poll (gro_flush_timeout)",
        "gro_flush_timeout",
    ),
    (
        "netdevkit_napi_irq_suspend_timeout_seconds",
        "Longest IRQ suspension while busy polling finds events (irq_suspend_timeout)",
        "irq_suspend_timeout",
    ),
    (
        "netdevkit_napi_threaded",
        "Threaded mode of the NAPI: 0 softirq, 1 kthread, 2 busy-polling kthread",
        "threaded",
    ),
)


def _napi_samples(snap: Snapshot, ns: str, attr: str) -> list[Sample]:
    """The samples of one NAPI gauge (the collector's slow path)."""
    names = {i: link.ifname for i, link in snap.links.items()}
    out: list[Sample] = []
    for n in snap.napis:
        v = getattr(n, attr)
        if v is not None:
            value = v / 1e9 if attr.endswith("timeout") else int(v)
            out.append(((ns, names.get(n.ifindex, ""), str(n.ifindex), str(n.id)), value))
    return out


def _napi_families(fs: Families, snap: Snapshot, ns: str) -> None:
    """Per-NAPI settings: four lines per NAPI, the bulk of a large namespace's
    scrape, hence written straight into exposition lines (one f-string each)."""
    fams = [fs.get(name, "gauge", help_, NAPI_LABELS) for name, help_, _attr in _NAPI_GAUGES]
    for f, (_name, _help, attr) in zip(fams, _NAPI_GAUGES, strict=True):
        f.deferred.append(functools.partial(_napi_samples, snap, ns, attr))
    defer, gro, suspend, threaded = (f.lines for f in fams)
    names = {i: link.ifname for i, link in snap.links.items()}
    heads: dict[int, str] = {}  # ifindex -> the label text before napi_id
    seconds: dict[int, str] = {0: "0"}  # nanoseconds -> seconds, as text
    ns_text = _escape(ns)
    for n in snap.napis:
        head = heads.get(n.ifindex)
        if head is None:
            ifname = _escape(names.get(n.ifindex, ""))
            head = heads[n.ifindex] = (
                f'{{netns="{ns_text}",ifname="{ifname}",ifindex="{n.ifindex}",napi_id="'
            )
        labels = f'{head}{n.id}"}} '
        if n.defer_hard_irqs is not None:
            defer.append(f"netdevkit_napi_defer_hard_irqs{labels}{n.defer_hard_irqs}\n")
        g, t = n.gro_flush_timeout, n.irq_suspend_timeout
        if g is not None:
            text = seconds.get(g) or seconds.setdefault(g, repr(g / 1e9))
            gro.append(f"netdevkit_napi_gro_flush_timeout_seconds{labels}{text}\n")
        if t is not None:
            text = seconds.get(t) or seconds.setdefault(t, repr(t / 1e9))
            suspend.append(f"netdevkit_napi_irq_suspend_timeout_seconds{labels}{text}\n")
        if n.threaded is not None:
            threaded.append(f"netdevkit_napi_threaded{labels}{int(n.threaded)}\n")
        if n.pid and n.pid in snap.kthread_cpu:
            fs.add(
                "netdevkit_napi_kthread_cpu_seconds",
                "counter",
                "CPU time of the NAPI's kthread (threaded NAPIs only)",
                NAPI_LABELS,
                (ns, names.get(n.ifindex, ""), str(n.ifindex), str(n.id)),
                snap.kthread_cpu[n.pid],
            )


def _queue_families(fs: Families, snap: Snapshot, ns: str) -> None:
    names = {i: link.ifname for i, link in snap.links.items()}
    # qstats where the driver has them, else its ethtool per-queue counters (veth: the
    # packets each rx queue's NAPI polled), the same numbers `top` and `qstats balance` show
    for q in snap.queues:
        lv = (ns, names.get(q.ifindex, ""), str(q.ifindex), str(q.queue_id), q.queue_type)
        for counter, value in q.counters.items():
            fs.add(
                f"netdevkit_queue_{counter}",
                "counter",
                f"Queue statistic {counter} (netdev qstats, or the driver's ethtool per-queue "
                "counters where it has no qstats; type: rx or tx)",
                QUEUE_LABELS,
                lv,
                value,
            )


def _link_families(fs: Families, snap: Snapshot, ns: str) -> None:
    with_qstats = {q.ifindex for q in snap.queues if q.source == "qstats"} | set(snap.dev_qstats)
    for link in snap.links.values():
        if link.ifindex in with_qstats:
            continue
        lv = (ns, link.ifname, str(link.ifindex))
        for counter, (name, help_) in LINK_METRICS.items():
            if counter in link.counters:
                fs.add(
                    name,
                    "counter",
                    help_ + ", where the driver has no qstats",
                    LINK_LABELS,
                    lv,
                    link.counters[counter],
                )


def _pool_families(fs: Families, snap: Snapshot, ns: str) -> None:
    names = {i: link.ifname for i, link in snap.links.items()}
    bindings: dict[tuple[str, str, str, str], list[int]] = {}
    for p in snap.pools:
        ifindex = "" if p.ifindex is None else str(p.ifindex)
        ifname = names.get(p.ifindex or 0, "")
        lv = (ns, ifname, ifindex, str(p.id), "" if p.napi_id is None else str(p.napi_id))
        if p.inflight is not None:
            fs.add(
                "netdevkit_page_pool_inflight_pages",
                "gauge",
                "Pages of the pool handed out and not yet returned",
                POOL_LABELS,
                lv,
                p.inflight,
            )
        if p.inflight_mem is not None:
            fs.add(
                "netdevkit_page_pool_inflight_bytes",
                "gauge",
                "Memory of the pages in flight",
                POOL_LABELS,
                lv,
                p.inflight_mem,
            )
        fs.add(
            "netdevkit_page_pool_detached",
            "gauge",
            "1 when the pool's device went away (pages still in flight keep it)",
            POOL_LABELS,
            lv,
            1 if p.detach_time else 0,
        )
        if p.dmabuf is not None:
            bindings.setdefault((ns, ifname, ifindex, str(p.dmabuf)), []).append(p.inflight or 0)
    for lv4, inflight in bindings.items():
        labels = ("netns", "ifname", "ifindex", "dmabuf_id")
        fs.add(
            "netdevkit_devmem_binding_page_pools",
            "gauge",
            "Page pools fed by a Device Memory TCP dmabuf binding",
            labels,
            lv4,
            len(inflight),
        )
        fs.add(
            "netdevkit_devmem_binding_inflight_pages",
            "gauge",
            "Pages in flight from a Device Memory TCP binding",
            labels,
            lv4,
            sum(inflight),
        )


def build_info(fs: Families) -> None:
    """``netdevkit_build_info{version, kernel} 1``: which netdevkit reads which kernel."""
    from .. import __version__

    fs.add(
        "netdevkit_build_info",
        "gauge",
        "Always 1; labels: the netdevkit version and the running kernel's release",
        ("version", "kernel"),
        (__version__, os.uname().release),
        1,
    )


def snapshot_families(fs: Families, snap: Snapshot) -> None:
    """Add the families of one namespace's snapshot to *fs*."""
    ns = snap.netns or ""
    _queue_families(fs, snap, ns)
    _link_families(fs, snap, ns)
    _napi_families(fs, snap, ns)
    _pool_families(fs, snap, ns)
    if snap.busy_poll_rx_packets is not None:
        fs.add(
            "netdevkit_busy_poll_rx_packets",
            "counter",
            "Packets busy polling delivered to sockets (TcpExt BusyPollRxPackets)",
            ("netns",),
            (ns,),
            snap.busy_poll_rx_packets,
        )


#: softnet_stat column -> (metric name, help); counters per CPU
SOFTNET_METRICS: dict[str, tuple[str, str]] = {
    "processed": (
        "netdevkit_softnet_processed_packets",
        "Packets processed by the CPU's softirq (softnet_stat)",
    ),
    "dropped": (
        "netdevkit_softnet_dropped_packets",
        "Packets dropped: backlog full (softnet_stat)",
    ),
    "time_squeeze": (
        "netdevkit_softnet_times_squeezed",
        "Softirq rounds cut short by budget or time (softnet_stat time_squeeze)",
    ),
}
#: sysctl -> (metric name, scale to the unit in the name); gauges
SYSCTL_METRICS: dict[str, tuple[str, float]] = {
    "net.core.busy_poll": ("netdevkit_sysctl_busy_poll_seconds", 1e-6),
    "net.core.busy_read": ("netdevkit_sysctl_busy_read_seconds", 1e-6),
    "net.core.netdev_budget": ("netdevkit_sysctl_netdev_budget_packets", 1.0),
    "net.core.netdev_budget_usecs": ("netdevkit_sysctl_netdev_budget_seconds", 1e-6),
}
#: (metric name, help, value) of an attached epoll context; gauges
EPOLL_METRICS: tuple[tuple[str, str, Callable[[EpollContext], float]], ...] = (
    (
        "netdevkit_epoll_attached",
        "1 while a process netdevkit attached to runs (0: it exited)",
        lambda e: 1 if e.alive else 0,
    ),
    (
        "netdevkit_epoll_busy_poll_seconds",
        "busy_poll_usecs netdevkit set on the epoll context",
        lambda e: e.busy_poll_usecs / 1e6,
    ),
    (
        "netdevkit_epoll_busy_poll_budget_packets",
        "busy_poll_budget netdevkit set on the epoll context",
        lambda e: e.busy_poll_budget,
    ),
    (
        "netdevkit_epoll_prefer_busy_poll",
        "prefer_busy_poll netdevkit set on the epoll context",
        lambda e: 1 if e.prefer_busy_poll else 0,
    ),
)


def machine_families(fs: Families, snap: Snapshot, epolls: Sequence[EpollContext]) -> None:
    """Machine-wide families: softnet, busy-poll sysctls, attached epoll contexts."""
    for s in snap.softnet:
        for column, (name, help_) in SOFTNET_METRICS.items():
            fs.add(name, "counter", help_, ("cpu",), (str(s.cpu),), getattr(s, column))
    for key, (name, scale) in SYSCTL_METRICS.items():
        if key in snap.sysctls:
            fs.add(name, "gauge", f"sysctl {key}", (), (), snap.sysctls[key] * scale)
    for e in epolls:
        lv = (str(e.pid), str(e.tid), str(e.fd))
        for name, help_, value in EPOLL_METRICS:
            fs.add(name, "gauge", help_, EPOLL_LABELS, lv, value(e))


def drift_families(fs: Families, snap: Snapshot, profiles: Sequence[tuple[str, Profile]]) -> None:
    """Per profile, interface and setting: how many NAPIs differ from the profile."""
    names = {i: link.ifname for i, link in snap.links.items()}
    ns = snap.netns or ""
    for label, profile in profiles:
        for row in drift(profile, snap.netns, names, snap.napis):
            lv = (label, ns, row.ifname)
            fs.add(
                "netdevkit_profile_napis",
                "gauge",
                "NAPIs of an interface that a profile (--profile) covers",
                DRIFT_LABELS[:3],
                lv,
                row.napis,
            )
            for setting, count in row.differ.items():
                fs.add(
                    "netdevkit_profile_drift_napis",
                    "gauge",
                    "NAPIs whose setting differs from the profile (0: as the profile wants)",
                    DRIFT_LABELS,
                    (*lv, setting),
                    count,
                )


# -- exposition text ---------------------------------------------------------------


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def render(families: Families) -> bytes:
    """The Prometheus text exposition format (0.0.4) of *families*.

    Values are the kernel's integers or finite floats made from them (no NaN
    or infinities), written as Python writes them, which Prometheus parses.
    """
    out: list[str] = []
    texts = families.texts
    for f in families:
        if not f.samples and not f.lines:
            continue
        sample = f.name + "_total" if f.type == "counter" else f.name
        out.append(f"# HELP {sample} {f.help}\n# TYPE {sample} {f.type}\n")
        out += [f"{sample}{texts[id(v)]} {x}\n" for v, x in f.samples]
        out += f.lines
    return "".join(out).encode()


# -- the exporter ------------------------------------------------------------------


class Exporter:
    """Scrapes namespaces (``None``: the exporter's own) on demand; thread-safe."""

    def __init__(
        self,
        namespaces: Sequence[str | None],
        state_dir: str | None = None,
        profiles: Sequence[tuple[str, Profile]] = (),
    ) -> None:
        self.namespaces = list(namespaces) or [None]
        self.state_dir = state_dir
        #: (label, profile) pairs whose drift each scrape publishes
        self.profiles = list(profiles)
        self._readers = {ns: NamespaceReader(ns, ethtool_queues=True) for ns in self.namespaces}
        self._errors = dict.fromkeys(self.namespaces, 0)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for r in self._readers.values():
                r.close()

    def check(self) -> None:
        """Open every namespace now: raises the first error (not root, no such netns)."""
        with self._lock:
            for r in self._readers.values():
                r.open()

    def scrape(self) -> Families:
        """Read every namespace now; a failing one is reported, the others served."""
        from ..journal import state_dir

        fs = Families()
        build_info(fs)
        last: Snapshot | None = None
        with self._lock:
            for ns, reader in self._readers.items():
                label = (ns or "",)
                t0 = time.perf_counter()
                try:
                    snap = reader.read()
                except (NetdevkitError, OSError):
                    reader.close()  # reopened by the next scrape
                    self._errors[ns] += 1
                    up = 0
                else:
                    self._errors[ns] += len(snap.errors)
                    snapshot_families(fs, snap)
                    drift_families(fs, snap, self.profiles)
                    last = snap
                    up = 1
                fs.add(
                    "netdevkit_up",
                    "gauge",
                    "1 when the namespace could be read",
                    ("netns",),
                    label,
                    up,
                )
                fs.add(
                    "netdevkit_scrape_duration_seconds",
                    "gauge",
                    "Time this scrape spent reading the namespace",
                    ("netns",),
                    label,
                    time.perf_counter() - t0,
                )
                fs.add(
                    "netdevkit_scrape_errors",
                    "counter",
                    "Sources that failed to read, since the exporter started",
                    ("netns",),
                    label,
                    self._errors[ns],
                )
            if last is not None:
                epolls = read_attached_epolls(self.state_dir or state_dir())
                machine_families(fs, last, epolls)
        return fs

    def render(self) -> bytes:
        with gc_paused():
            return render(self.scrape())


class NetdevkitCollector:
    """A prometheus-client collector over an :class:`Exporter`.

    >>> from prometheus_client import REGISTRY        # doctest: +SKIP
    >>> REGISTRY.register(NetdevkitCollector(Exporter(["ns1"])))
    """

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for f in self.exporter.scrape():
            samples = f.all_samples()
            if not samples:
                continue
            kind = CounterMetricFamily if f.type == "counter" else GaugeMetricFamily
            mf = kind(f.name, f.help, labels=list(f.labels))
            for values, value in samples:
                mf.add_metric(list(values), value)
            yield mf


# -- the HTTP server -----------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    exporter: Exporter
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus reuses its connections

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        plain = "text/plain; charset=utf-8"
        if path == "/metrics":
            try:
                body, ctype, code = self.exporter.render(), CONTENT_TYPE, 200
            except Exception as err:  # a bug must not kill the server: say it, keep serving
                body, ctype, code = f"scrape failed: {err!r}\n".encode(), plain, 500
        elif path == "/":
            body, ctype, code = b"netdevkit exporter: metrics at /metrics\n", plain, 200
        else:
            body, ctype, code = b"not found: try /metrics\n", plain, 404
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # library code never prints; scrape problems are metrics


class _Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(exporter: Exporter, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """An HTTP server answering ``/metrics`` from *exporter* (call serve_forever)."""
    handler = type("Handler", (_Handler,), {"exporter": exporter})
    server_cls = _Server6 if ":" in host else http.server.ThreadingHTTPServer
    try:
        server = server_cls((host, port), handler)
    except OSError as err:
        raise translate_oserror(err, f"cannot listen on {host}:{port}") from err
    server.daemon_threads = True
    return server
