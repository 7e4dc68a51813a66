"""``netdevkit exporter``: Prometheus metrics over HTTP."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

HELP = "serve Prometheus metrics of queues, NAPIs, page pools and busy polling"
DESCRIPTION = """\
Serve Prometheus metrics at http://LISTEN/metrics, read from the kernel at
every scrape (nothing is cached):

  netdevkit_queue_<counter>_total       qstats per queue (labels: netns, ifname,
                                        ifindex, queue, type), e.g.
                                        netdevkit_queue_packets_total{type="rx"};
                                        ethtool's per-queue counters for drivers
                                        without qstats (veth), as `top` shows
  netdevkit_link_{receive,transmit}_{packets,bytes,drop,errs}_total
                                        rtnetlink link counters, for interfaces
                                        whose driver reports no qstats (veth)
  netdevkit_napi_defer_hard_irqs, _gro_flush_timeout_seconds,
  _irq_suspend_timeout_seconds, _threaded (gauges; labels ... napi_id),
  netdevkit_napi_kthread_cpu_seconds_total (threaded NAPIs)
  netdevkit_page_pool_inflight_pages, _inflight_bytes, _detached
  netdevkit_devmem_binding_page_pools, _inflight_pages (label dmabuf_id)
  netdevkit_busy_poll_rx_packets_total  TcpExt BusyPollRxPackets per netns
  netdevkit_softnet_{processed_packets,dropped_packets,times_squeezed}_total
  netdevkit_sysctl_busy_poll_seconds, _busy_read_seconds, ...
  netdevkit_epoll_attached, _busy_poll_seconds, _busy_poll_budget_packets,
  _prefer_busy_poll                     epoll contexts `netdevkit attach` set
  netdevkit_up, netdevkit_scrape_duration_seconds,
  netdevkit_scrape_errors_total         the exporter's own health, per netns
  netdevkit_build_info                  1, labels version and kernel
  netdevkit_profile_drift_napis         with --profile: NAPIs whose setting
                                        differs from the profile (labels
                                        profile, netns, ifname, setting)
  netdevkit_profile_napis               NAPIs of the interface the profile covers

It binds to 127.0.0.1 unless told otherwise. Without --netns it reports the
namespace it runs in (label netns=""); each --netns NAME adds a namespace
(reading another namespace needs root). A namespace that disappears gives
netdevkit_up{netns=...} 0 while the others are still served. Each --profile
FILE (repeatable) adds the drift families for that tuning profile (label
profile=FILE) and the namespaces its rules name. contrib/netdevkit-alerts.yml
holds Prometheus alert rules over these metrics (drift, busy polling that
collapsed, a namespace that vanished).
contrib/netdevkit-exporter.service runs it under systemd and
contrib/grafana-dashboard.json shows it in Grafana.

example:
  netdevkit exporter
  netdevkit exporter --listen 127.0.0.1:9417 --netns ns1 --netns ns2
  netdevkit exporter --profile /etc/netdevkit/web.toml
"""


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "exporter",
        help=HELP,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:9417",
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:9417; [::1]:9417 for IPv6)",
    )
    p.add_argument(
        "--netns",
        action="append",
        default=[],
        metavar="NAME",
        help="report network namespace NAME (repeat for more); default: this one",
    )
    p.add_argument(
        "--host-too",
        action="store_true",
        help="with --netns, also report the namespace the exporter runs in",
    )
    p.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="FILE",
        help="publish how far NAPIs are from tuning profile FILE (repeat for more)",
    )
    p.set_defaults(func=run)


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9417"`` / ``"[::1]:9417"`` / ``":9417"`` -> (host, port)."""
    from ..errors import RequestError

    host, sep, port_s = text.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise RequestError(f"--listen {text!r}: expected HOST:PORT with a port 1-65535")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_s)


def run(args: argparse.Namespace) -> int:
    from .._os import SignalScope
    from ..observe.exporter import Exporter, make_server
    from ..tuning.profile import load_profile

    host, port = parse_listen(args.listen)
    namespaces: list[str | None] = list(args.netns) or [None]
    if args.netns and args.host_too:
        namespaces.insert(0, None)
    profiles = [(path, load_profile(path)) for path in args.profile]  # bad: exit 2
    for _path, profile in profiles:
        for rule in profile.rules:
            if rule.netns not in namespaces:
                namespaces.append(rule.netns)
    exporter = Exporter(namespaces, profiles=profiles)
    try:
        exporter.check()  # not root, no such namespace: one line, exit 1
        server = make_server(exporter, host, port)
        shown = f"[{host}]" if ":" in host else host
        print(f"netdevkit exporter: serving http://{shown}:{port}/metrics", file=sys.stderr)

        def stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        try:
            with SignalScope((signal.SIGTERM,), stop, keep_ignored=False):
                server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        exporter.close()
    return 0
