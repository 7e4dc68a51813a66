"""netdevkit top / qstats balance / monitor / exporter against the real kernel.

Each test builds its own veth testbed (NAPI-carrying, see conftest.py) or a
network namespace named after this process, sends its own traffic, and
removes everything again.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import free_port, unique_testbed_name
from prometheus_client.parser import text_string_to_metric_families

from netdevkit.netdev.client import Dev, Netdev, ifnames
from netdevkit.observe.monitor import Monitor
from netdevkit.testbed import Testbed

pytestmark = pytest.mark.kernel

PAYLOAD = 100
#: bytes the veth counters count per datagram of PAYLOAD bytes: IPv4 20 + UDP 8
WIRE = PAYLOAD + 28


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "netdevkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Sender:
    """Paced UDP datagrams from the client to the server side of a testbed."""

    def __init__(self, socks: list[socket.socket], pps: float, weights: list[int]) -> None:
        self.socks, self.pps, self.weights = socks, pps, weights
        self.sent = 0
        self.started = self.stopped = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        data = b"x" * PAYLOAD
        order = [s for s, w in zip(self.socks, self.weights, strict=True) for _ in range(w)]
        self.started = t0 = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - t0) * self.pps)
            while self.sent < due:
                order[self.sent % len(order)].send(data)
                self.sent += 1
            time.sleep(0.002)
        self.stopped = time.monotonic()

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def rate(self) -> float:
        return self.sent / (self.stopped - self.started)


def udp_pair(tb: Testbed, port: int) -> tuple[socket.socket, socket.socket]:
    srv = tb.socket("server", type=socket.SOCK_DGRAM)
    srv.bind((tb.server_addr, port))
    cli_sock = tb.socket("client", type=socket.SOCK_DGRAM)
    cli_sock.connect((tb.server_addr, port))
    return srv, cli_sock


def steer(tb: Testbed, queue: int, queues: int) -> None:
    """XPS: every CPU sends on tx queue *queue* of the client veth (= server rx queue)."""
    cpus = f"{(1 << (os.cpu_count() or 1)) - 1:x}"
    for k in range(queues):
        path = f"/sys/class/net/{tb.client_if}/queues/tx-{k}/xps_cpus"
        tb.run("client", ["sh", "-c", f"echo {cpus if k == queue else 0} > {path}"], check=True)


def steered_socket(tb: Testbed, queue: int, queues: int, port: int) -> socket.socket:
    """A connected UDP socket whose datagrams use server rx queue *queue*.

    Kernel fact: a connected socket remembers the tx queue XPS picked for its
    first packet (sk_tx_queue), and veth hands a packet sent on tx queue N to
    the peer's rx queue N.
    """
    steer(tb, queue, queues)
    s = tb.socket("client", type=socket.SOCK_DGRAM)
    s.connect((tb.server_addr, port))
    s.send(b"p")
    return s


# -- top -----------------------------------------------------------------------------------


def test_top_once_json_rates_match_the_traffic_sent(testbed4: Testbed) -> None:
    """Tolerance: 10% of the rate the sender achieved over its whole run."""
    tb = testbed4
    srv, client = udp_pair(tb, 5001)
    with srv, client, Sender([client], 3000, [1]) as tx:
        time.sleep(0.3)
        r = cli("top", "--once", "-j", "--netns", tb.server_ns, "--interval", "2s")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (iface,) = [i for i in out["interfaces"] if i["ifname"] == tb.server_if]
    assert iface["source"] == "link"  # veth reports no qstats
    assert iface["rx_packets_per_s"] == pytest.approx(tx.rate, rel=0.10)
    assert iface["rx_bytes_per_s"] == pytest.approx(tx.rate * WIRE, rel=0.10)
    rx = [q for q in out["queues"] if q["ifname"] == tb.server_if and q["type"] == "rx"]
    assert len(rx) == 4 and {q["source"] for q in rx} == {"ethtool"}
    # one flow: one queue carries it all
    busiest = max(rx, key=lambda q: q["packets_per_s"])
    assert busiest["packets_per_s"] == pytest.approx(tx.rate, rel=0.10)
    assert sum(q["packets_per_s"] for q in rx) == pytest.approx(busiest["packets_per_s"], rel=0.02)
    with Netdev.open(tb.server_ns) as nd:
        ids = {n.id for n in nd.napi_dump()}
    assert {n["id"] for n in out["napis"]} == ids
    assert out["busy_poll"]["sysctls"]["net.core.busy_poll"] >= 0
    assert out["errors"] == []


def test_top_sampler_counts_exactly_the_packets_sent_between_two_reads(testbed4: Testbed) -> None:
    """The library under top, without timing slack: N datagrams sent between the two
    reads are N packets (rate x interval) on the link and on one ethtool queue."""
    from netdevkit.observe.sources import NamespaceReader
    from netdevkit.observe.top import Sampler, rates_json

    tb = testbed4
    srv, client = udp_pair(tb, 5004)
    with srv, client, NamespaceReader(tb.server_ns, ethtool_queues=True) as reader:
        sampler = Sampler(reader)
        sampler.first()
        for _ in range(1000):
            client.send(b"x" * PAYLOAD)
        time.sleep(0.2)  # let the NAPI deliver the last ones
        out = rates_json(sampler.next())
    dt = out["interval_s"]
    # the kernel's own packets (an ARP probe of the neighbour entry) may add one or two
    (iface,) = [i for i in out["interfaces"] if i["ifname"] == tb.server_if]
    assert 1000 <= round(iface["rx_packets_per_s"] * dt) <= 1002
    assert 1000 * WIRE <= round(iface["rx_bytes_per_s"] * dt) <= 1000 * WIRE + 2 * 100
    rx = [q for q in out["queues"] if q["ifname"] == tb.server_if and q["type"] == "rx"]
    counts = sorted(round(q["packets_per_s"] * dt) for q in rx)
    assert 1000 <= counts[-1] <= 1002 and sum(counts[:-1]) <= 2


def test_top_reports_a_vanished_namespace_in_one_line() -> None:
    r = cli("top", "--once", "--netns", f"ndk-none-{os.getpid()}")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "does not exist" in r.stderr


# -- qstats balance ------------------------------------------------------------------------


def _balance(tb: Testbed, weights: list[int]) -> dict[str, Any]:
    srv = tb.socket("server", type=socket.SOCK_DGRAM)
    srv.bind((tb.server_addr, 5002))
    socks = [steered_socket(tb, q, 4, 5002) for q in range(4)]
    try:
        with Sender(socks, 4000, weights):
            time.sleep(0.3)
            r = cli(
                "qstats",
                "balance",
                "-j",
                "--netns",
                tb.server_ns,
                "--ifname",
                tb.server_if,
                "--interval",
                "2s",
            )
    finally:
        for s in [srv, *socks]:
            s.close()
    assert r.returncode == 0, r.stderr
    (rx,) = [b for b in json.loads(r.stdout) if b["type"] == "rx"]
    return rx  # type: ignore[no-any-return]


def test_qstats_balance_even_spread(testbed4: Testbed) -> None:
    b = _balance(testbed4, [1, 1, 1, 1])
    assert b["source"] == "ethtool" and len(b["queues"]) == 4
    assert b["cv"] < 0.1
    assert b["busiest_share"] == pytest.approx(0.25, abs=0.03)


def test_qstats_balance_skewed_spread(testbed4: Testbed) -> None:
    b = _balance(testbed4, [0, 0, 1, 0])
    assert b["busiest"]["queue"] == 2
    assert b["busiest_share"] > 0.98
    assert b["cv"] == pytest.approx(3**0.5, rel=0.05)  # all on one of 4 queues


def test_qstats_balance_says_when_there_are_no_per_queue_counters(testbed_name: str) -> None:
    ns = testbed_name
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "name", "br0", "type", "bridge"], check=True)
        r = cli("qstats", "balance", "--netns", ns, "--interval", "100ms")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    assert r.returncode == 0, r.stderr
    assert "br0: no per-queue counters" in r.stdout


# -- monitor -------------------------------------------------------------------------------


@contextlib.contextmanager
def namespace(name: str) -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True)


class Lines:
    """Lines of a child's stdout, read by a thread (select on a buffered pipe misses lines)."""

    def __init__(self, p: subprocess.Popen[str]) -> None:
        self._q: queue.Queue[str] = queue.Queue()
        assert p.stdout is not None
        stdout = p.stdout

        def pump() -> None:
            for line in stdout:
                self._q.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def get(self, timeout: float) -> str | None:
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None


def test_monitor_json_sees_an_interface_added_and_deleted(testbed_name: str) -> None:
    with namespace(testbed_name) as ns:
        argv = [
            sys.executable,
            "-m",
            "netdevkit",
            "monitor",
            "-j",
            "--netns",
            ns,
            "--duration",
            "30",
        ]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = Lines(p)
        try:
            # wait until it is subscribed: poke with dummies until one is reported
            for i in range(50):
                _ip(ns, "link", "add", "name", f"probe{i}", "type", "bridge")
                if lines.get(0.2) is not None:
                    break
            else:
                pytest.fail("monitor printed nothing for 50 new interfaces")
            _ip(ns, "link", "add", "name", "mon-a", "type", "veth", "peer", "name", "mon-b")
            ifindex = {n: i for i, n in ifnames(ns).items()}
            a, b = ifindex["mon-a"], ifindex["mon-b"]
            _ip(ns, "link", "del", "mon-a")
            seen: list[dict[str, Any]] = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                line = lines.get(1.0)
                if line:
                    seen.append(json.loads(line))
                got = {(e["name"], e["object"]["ifindex"]) for e in seen if e["object"]}
                if {("dev-del-ntf", a), ("dev-del-ntf", b)} <= got:
                    break
        finally:
            p.terminate()
            p.wait(5)
    got = {(e["name"], e["object"]["ifindex"]) for e in seen if e["object"]}
    for ifi in (a, b):
        assert ("dev-add-ntf", ifi) in got
        assert ("dev-del-ntf", ifi) in got
    assert all(e["event"] == "notification" for e in seen)
    assert all(isinstance(e["object"]["xdp_features"], list) for e in seen if e["object"])


def test_monitor_reports_an_overrun_and_resynchronises(testbed_name: str) -> None:
    with namespace(testbed_name) as ns, Monitor(ns, rcvbuf=1024) as mon:
        # far more notifications than a tiny receive buffer holds, none read yet
        batch = "".join(f"link add name ovr{i} type bridge\n" for i in range(200))
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True)
        subprocess.run(
            ["ip", "-n", ns, "-batch", "-"],
            input="".join(f"link del ovr{i}\n" for i in range(0, 200, 2)),
            text=True,
            check=True,
        )
        events = []
        for e in mon.events(timeout=1.0):
            events.append(e)
            if e.kind == "resynced":
                break
        kinds = [e.kind for e in events]
        assert "overrun" in kinds
        after = kinds.index("overrun")
        assert kinds[after + 1 :].count("resynced") == 1
        resynced = {
            e.obj.ifindex for e in events[after:] if e.kind == "resync" and isinstance(e.obj, Dev)
        }
        with Netdev.open(ns) as nd:
            assert resynced == {d.ifindex for d in nd.dev_dump()}
        assert len(resynced) == 1 + 100  # lo and the odd bridges


# -- exporter ------------------------------------------------------------------------------


@contextlib.contextmanager
def exporter(*netns: str) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "netdevkit", "exporter", "--listen", f"127.0.0.1:{port}"]
    for ns in netns:
        argv += ["--netns", ns]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr is not None
        line = p.stderr.readline()
        assert "serving" in line, line + p.stderr.read()
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        p.terminate()
        assert p.wait(10) == 0


def scrape(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fams: dict[str, Any], name: str, **labels: str) -> float:
    (s,) = [s for s in fams[name].samples if all(s.labels.get(k) == v for k, v in labels.items())]
    return float(s.value)


def test_exporter_metrics_parse_count_traffic_and_carry_identity(testbed4: Testbed) -> None:
    tb = testbed4
    ns, ifname, ifindex = tb.server_ns, tb.server_if, str(tb.server_ifindex)
    with exporter(ns) as url:
        before = scrape(url)
        assert _value(before, "netdevkit_up", netns=ns) == 1
        assert before["netdevkit_link_receive_packets"].type == "counter"
        rx0 = _value(before, "netdevkit_link_receive_packets", netns=ns, ifname=ifname)
        srv, client = udp_pair(tb, 5003)
        with srv, client:
            for _ in range(500):
                client.send(b"x" * PAYLOAD)
            time.sleep(0.2)
        after = scrape(url)
    rx1 = _value(after, "netdevkit_link_receive_packets", netns=ns, ifname=ifname, ifindex=ifindex)
    assert rx1 - rx0 >= 500
    with Netdev.open(ns) as nd:
        napis = nd.napi_dump()
    defer = after["netdevkit_napi_defer_hard_irqs"].samples
    assert {s.labels["napi_id"] for s in defer} == {str(n.id) for n in napis}
    assert {(s.labels["netns"], s.labels["ifname"], s.labels["ifindex"]) for s in defer} == {
        (ns, ifname, ifindex)
    }
    assert all(s.value == 0 for s in after["netdevkit_napi_threaded"].samples)
    assert _value(after, "netdevkit_scrape_errors", netns=ns) == 0
    assert _value(after, "netdevkit_scrape_duration_seconds", netns=ns) > 0
    assert "netdevkit_softnet_times_squeezed" in after


def test_exporter_text_equals_prometheus_client_collector(testbed4: Testbed) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from netdevkit.observe.exporter import Exporter, NetdevkitCollector

    exp = Exporter([testbed4.server_ns])
    try:
        registry = CollectorRegistry()
        registry.register(NetdevkitCollector(exp))
        ours = list(text_string_to_metric_families(exp.render().decode()))
        theirs = list(text_string_to_metric_families(generate_latest(registry).decode()))
    finally:
        exp.close()

    def shape(fams: list[Any]) -> set[tuple[str, str, str, tuple[tuple[str, str], ...]]]:
        return {
            (f.name, f.type, s.name, tuple(sorted(s.labels.items())))
            for f in fams
            for s in f.samples
        }

    assert shape(ours) == shape(theirs)
    gauges = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in theirs
        if f.name.startswith("netdevkit_napi_")
        for s in f.samples
    }
    mine = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in ours
        if f.name.startswith("netdevkit_napi_")
        for s in f.samples
    }
    assert mine == gauges and mine


def test_exporter_answers_while_interfaces_come_and_go(testbed_name: str) -> None:
    with namespace(testbed_name) as ns, exporter(ns) as url:
        stop = threading.Event()

        def churn() -> None:
            i = 0
            while not stop.is_set():
                subprocess.run(
                    [
                        "ip",
                        "-n",
                        ns,
                        "link",
                        "add",
                        "name",
                        f"ch{i}",
                        "numrxqueues",
                        "8",
                        "type",
                        "veth",
                        "peer",
                        "name",
                        f"chp{i}",
                    ],
                    check=True,
                )
                subprocess.run(["ip", "-n", ns, "link", "set", f"ch{i}", "up"], check=True)
                subprocess.run(["ip", "-n", ns, "link", "del", f"ch{i}"], check=True)
                i += 1

        t = threading.Thread(target=churn)
        t.start()
        try:
            for _ in range(20):
                fams = scrape(url)
                assert _value(fams, "netdevkit_up", netns=ns) == 1
        finally:
            stop.set()
            t.join()


def test_exporter_keeps_serving_when_a_namespace_vanishes(testbed_name: str) -> None:
    a, b = f"{testbed_name}a", f"{testbed_name}b"
    with namespace(a), namespace(b), exporter(a, b) as url:
        assert _value(scrape(url), "netdevkit_up", netns=b) == 1
        subprocess.run(["ip", "netns", "del", b], check=True)
        fams = scrape(url)
        assert _value(fams, "netdevkit_up", netns=b) == 0
        assert _value(fams, "netdevkit_up", netns=a) == 1
        assert _value(fams, "netdevkit_scrape_errors", netns=b) >= 1
        assert any(s.labels["netns"] == a for s in fams["netdevkit_link_receive_packets"].samples)


def test_exporter_port_in_use_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("exporter", "--listen", f"127.0.0.1:{port}", timeout=30)
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "cannot listen on 127.0.0.1" in lines[0] and "in use" in lines[0]


def test_exporter_other_namespace_needs_root(testbed_name: str) -> None:
    with namespace(testbed_name) as ns:
        argv = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "netdevkit",
            "exporter",
            "--netns",
            ns,
            "--listen",
            "127.0.0.1:1",
        ]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "root" in lines[0], r.stderr


# -- top's live view on a terminal -----------------------------------------------------------


def test_top_live_view_sorts_pauses_and_quits_on_keys(testbed: Testbed) -> None:
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "150", "LINES": "60"}
    argv = [
        sys.executable,
        "-m",
        "netdevkit",
        "top",
        "--netns",
        testbed.server_ns,
        "--interval",
        "200ms",
    ]
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    seen = b""

    def until(text: bytes, timeout: float = 15.0) -> None:
        nonlocal seen
        import select

        end = time.monotonic() + timeout
        start = len(seen)
        while text not in seen[start:] and time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                seen += os.read(master, 65536)
        assert text in seen[start:], seen[-2000:].decode(errors="replace")

    try:
        until(b"sorted by packets")
        until(b"NAPIS")
        os.write(master, b"d")
        until(b"sorted by drops")
        os.write(master, b" ")
        until(b"PAUSED")
        os.write(master, b"q")
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    assert testbed.server_if.encode() in seen


# -- vanishing things and missing features, through the library ---------------------------


def test_reader_reports_a_deleted_namespace_and_reopens_a_recreated_one(testbed_name: str) -> None:
    from netdevkit.errors import NamespaceGone
    from netdevkit.observe.sources import NamespaceReader

    ns = testbed_name
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with NamespaceReader(ns) as reader:
            assert {link.ifname for link in reader.read().links.values()} == {"lo"}
            subprocess.run(["ip", "netns", "del", ns], check=True)
            with pytest.raises(NamespaceGone, match="is gone"):
                reader.read()
            subprocess.run(["ip", "netns", "add", ns], check=True)
            _ip(ns, "link", "add", "name", "again0", "type", "bridge")
            assert "again0" in {link.ifname for link in reader.read().links.values()}
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_top_sampler_says_when_its_interface_vanishes(testbed_name: str) -> None:
    from netdevkit.observe.sources import NamespaceReader
    from netdevkit.observe.top import Sampler, rates_json

    with namespace(testbed_name) as ns:
        _ip(ns, "link", "add", "name", "van-a", "type", "veth", "peer", "name", "van-b")
        ifindex = {n: i for i, n in ifnames(ns).items()}["van-a"]
        with NamespaceReader(ns, ethtool_queues=True, ifindex=ifindex) as reader:
            sampler = Sampler(reader)
            sampler.first()
            assert not sampler.next().target_gone
            _ip(ns, "link", "del", "van-a")
            out = rates_json(sampler.next())
    assert out["interface_gone"] is True
    assert out["errors"] == []  # gone is not an error of a source
    assert all(row["ifindex"] != ifindex for row in out["interfaces"] + out["queues"])


def test_a_kernel_without_qstats_falls_back_to_link_counters(
    testbed: Testbed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated: this 6.18 kernel has qstats-get, so the test hides it."""
    from netdevkit.observe.sources import NamespaceReader

    real = Netdev.supports
    monkeypatch.setattr(Netdev, "supports", lambda self, op: op != "qstats-get" and real(self, op))
    with NamespaceReader(testbed.server_ns) as reader:
        snap = reader.read()
    assert any("no queue statistics" in n for n in snap.notes)
    assert snap.errors == ()
    assert snap.links[testbed.server_ifindex].counters["rx_packets"] >= 1  # the probe
    assert snap.napis


def test_top_sampler_follows_renumbered_napis(testbed: Testbed) -> None:
    """veth gives its NAPIs new ids on link down/up; the next sample shows the new ones."""
    from netdevkit.observe.sources import NamespaceReader
    from netdevkit.observe.top import Sampler, rates_json

    ns, ifname = testbed.server_ns, testbed.server_if
    with NamespaceReader(ns, ethtool_queues=True) as reader:
        sampler = Sampler(reader)
        sampler.first()
        before = {n["id"] for n in rates_json(sampler.next())["napis"]}
        _ip(ns, "link", "set", "dev", ifname, "down")
        _ip(ns, "link", "set", "dev", ifname, "up")
        out = rates_json(sampler.next())
    with Netdev.open(ns) as nd:
        now = {n.id for n in nd.napi_dump()}
    after = {n["id"] for n in out["napis"]}
    assert after == now and before and after and not before & after
    assert out["errors"] == []
    (row,) = [i for i in out["interfaces"] if i["ifname"] == ifname]
    assert row["rx_packets_per_s"] is not None


def test_top_and_the_exporter_show_the_epoll_contexts_attach_set(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netdevkit.observe.exporter import Exporter

    monkeypatch.setenv("NETDEVKIT_STATE_DIR", str(tmp_path))
    child = subprocess.Popen(
        [sys.executable, "-c", "import select, time; e = select.epoll(); time.sleep(60)"]
    )
    try:
        time.sleep(0.3)
        r = cli("attach", "--pid", str(child.pid), "--usecs", "64", "--budget", "16", "--prefer")
        assert r.returncode == 0, r.stderr
        out = json.loads(cli("top", "--once", "-j", "--interval", "100ms").stdout)
        (ctx,) = [c for c in out["busy_poll"]["epoll_contexts"] if c["pid"] == child.pid]
        assert ctx["busy_poll_usecs"] == 64 and ctx["prefer_busy_poll"] and ctx["alive"]
        exp = Exporter([None], state_dir=str(tmp_path))
        try:
            fams = {f.name: f for f in text_string_to_metric_families(exp.render().decode())}
        finally:
            exp.close()
        pid = str(child.pid)
        assert _value(fams, "netdevkit_epoll_attached", pid=pid) == 1
        assert _value(fams, "netdevkit_epoll_busy_poll_budget_packets", pid=pid) == 16
        assert cli("detach", "--pid", str(child.pid)).returncode == 0
        out = json.loads(cli("top", "--once", "-j", "--interval", "100ms").stdout)
        assert [c for c in out["busy_poll"]["epoll_contexts"] if c["pid"] == child.pid] == []
    finally:
        child.kill()
        child.wait()


# -- a namespace deleted under a running monitor / top --------------------------------------

NETDEVKIT = [sys.executable, "-m", "netdevkit"]


@contextlib.contextmanager
def watched_pair() -> Iterator[tuple[str, str]]:
    """Namespace A (to watch) and B, joined by a veth pair a0 (in A) -- b0 (in B).

    b0 vanishes from B only once A is really freed: while anything (a socket) holds A after
    `ip netns del`, the pair lives on. That is how the tests see that a command let go.
    """
    a, b = unique_testbed_name(), unique_testbed_name()
    subprocess.run(["ip", "netns", "add", a], check=True)
    try:
        subprocess.run(["ip", "netns", "add", b], check=True)
        _ip(a, "link", "add", "name", "a0", "type", "veth", "peer", "name", "b0", "netns", b)
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def _b0_freed(b: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if "b0" not in ifnames(b).values():
            return True
        time.sleep(0.1)
    return False


def _wait_for(lines: Lines, want: Any, within: float) -> list[str]:
    """Lines until one for which *want* is true (the list ends with it), or fail."""
    seen: list[str] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        line = lines.get(0.2)
        if line is not None:
            seen.append(line)
            if want(line):
                return seen
    pytest.fail(f"not seen within {within} s; got {seen[-5:]}")


def test_monitor_lets_go_of_a_deleted_namespace_and_picks_it_up_again() -> None:
    with watched_pair() as (a, b):
        argv = [*NETDEVKIT, "monitor", "-j", "--netns", a, "--duration", "60"]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = Lines(p)
        try:
            for i in range(50):  # until it is subscribed
                _ip(a, "link", "add", "name", f"probe{i}", "type", "bridge")
                if lines.get(0.2) is not None:
                    break
            subprocess.run(["ip", "netns", "del", a], check=True)
            seen = _wait_for(lines, lambda s: json.loads(s)["event"] == "gone", 10)
            assert json.loads(seen[-1])["name"] == a
            assert _b0_freed(b, 10), "monitor still holds the deleted namespace"
            assert p.poll() is None  # keeps going
            subprocess.run(["ip", "netns", "add", a], check=True)
            _ip(a, "link", "add", "name", "again0", "type", "bridge")
            seen = _wait_for(lines, lambda s: json.loads(s)["event"] == "resynced", 10)
            events = [json.loads(s) for s in seen]
            assert events[0]["event"] == "back" and events[0]["name"] == a
            assert "again0" in {e["object"]["ifname"] for e in events if e["event"] == "resync"}
        finally:
            p.terminate()
            p.wait(5)
        assert p.stderr is not None and p.stderr.read() == ""


@pytest.mark.parametrize("json_out", [True, False])
def test_top_keeps_going_when_its_namespace_is_deleted_and_says_so(json_out: bool) -> None:
    with watched_pair() as (a, b):
        argv = [*NETDEVKIT, "top", "--netns", a, "--interval", "100ms", *(["-j"] * json_out)]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = Lines(p)
        try:
            _wait_for(lines, lambda s: "a0" in s, 10)  # a first view
            subprocess.run(["ip", "netns", "del", a], check=True)
            seen = _wait_for(lines, lambda s: "is gone: waiting for it to come back" in s, 10)
            if json_out:
                assert json.loads(seen[-1]) == {
                    "netns": a,
                    "netns_gone": True,
                    "message": f"network namespace {a!r} is gone: waiting for it to come back",
                }
            assert _b0_freed(b, 10), "top still holds the deleted namespace"
            assert p.poll() is None  # keeps going
            subprocess.run(["ip", "netns", "add", a], check=True)
            _ip(a, "link", "add", "name", "again0", "type", "bridge")
            seen = _wait_for(lines, lambda s: "again0" in s, 10)
            assert any("exists again" in s for s in seen)
            if json_out:
                assert json.loads(seen[-1])["netns"] == a
        finally:
            p.send_signal(signal.SIGINT)
            rc = p.wait(10)
        assert rc == 0
        assert p.stderr is not None and "Traceback" not in p.stderr.read()
