"""What a user of ip/ethtool/strace expects of the command line (issue 20): a positional
pid, --version, errors without a doubled prefix, --netns where the help says it is."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

from netdevkit import __version__
from netdevkit.cli.main import DESCRIPTION, NETNS_COMMANDS, build_parser, main
from netdevkit.testbed import Testbed

NETDEVKIT = [sys.executable, "-m", "netdevkit"]


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("netdevkit: error: "), err
    return err


# --- attach PID / detach PID ----------------------------------------------------------------


def test_attach_takes_the_pid_as_a_positional_argument(
    capsys: pytest.CaptureFixture[str], epoll_target: subprocess.Popen[str]
) -> None:
    pid = str(epoll_target.pid)
    assert main(["attach", pid, "--preset", "suspend", "--json"]) == 0
    attached = json.loads(capsys.readouterr().out)
    assert attached["pid"] == epoll_target.pid and len(attached["contexts"]) == 1
    assert main(["detach", pid, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["pid"] == epoll_target.pid


def test_attach_pid_and_the_same_pid_option_agree(
    capsys: pytest.CaptureFixture[str], epoll_target: subprocess.Popen[str]
) -> None:
    pid = str(epoll_target.pid)
    assert main(["attach", pid, "--pid", pid, "--show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pid"] == epoll_target.pid


@pytest.mark.parametrize("word", ["attach", "detach"])
def test_two_different_pids_are_refused(capsys: pytest.CaptureFixture[str], word: str) -> None:
    err = _error_line(capsys, [word, "5", "--pid", "6"], 2)
    assert "PID 5" in err and "--pid 6" in err


@pytest.mark.parametrize("word", ["attach", "detach"])
def test_no_pid_at_all_is_refused(capsys: pytest.CaptureFixture[str], word: str) -> None:
    assert f"netdevkit {word} PID" in _error_line(capsys, [word], 2)


# --- usage errors: one prefix, the command named ------------------------------------------


@pytest.mark.parametrize(
    ("argv", "blamed"),
    [
        (["presets", "--netns", "x"], "netdevkit presets"),
        (["napi", "show", "--bogus"], "netdevkit napi show"),
        (["attach", "--usecs", "-1", "5"], "netdevkit attach"),
        (["bogus"], "netdevkit"),
        ([], "netdevkit"),
    ],
)
def test_a_usage_error_has_one_prefix_and_points_at_the_command_help(
    capsys: pytest.CaptureFixture[str], argv: list[str], blamed: str
) -> None:
    err = _error_line(capsys, argv, 2)
    assert err.count("netdevkit:") == 1, err
    assert err.rstrip().endswith(f"(see `{blamed} --help`)"), err


# --- --version ------------------------------------------------------------------------------


def test_version_prints_the_version_and_exits_0() -> None:
    done = subprocess.run([*NETDEVKIT, "--version"], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"netdevkit {__version__}\n", "")


# --- --netns: the top-level help says which commands take it ------------------------------


def _takes_netns(p: argparse.ArgumentParser) -> bool | None:
    """True if every leaf (sub)command under *p* takes --netns, False if none does."""
    leaves: list[bool] = []
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            leaves += [bool(_takes_netns(sp)) for sp in a.choices.values()]
    if not leaves:
        return any("--netns" in a.option_strings for a in p._actions)
    return all(leaves) if all(leaves) or not any(leaves) else None


def test_the_help_names_exactly_the_commands_that_take_netns() -> None:
    parser = build_parser(None)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    taking = {word for word, p in sub.choices.items() if _takes_netns(p)}
    assert taking == set(NETNS_COMMANDS)
    text = " ".join(DESCRIPTION.split())
    for word in sub.choices:
        assert f" {word}," in text or f" {word} " in text, word
    assert "Every command takes --netns" not in text


# --- a namespace that does not exist: the same words from every command -------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["exporter", "--netns", "ndk-no-such-ns", "--listen", "127.0.0.1:1"],
        ["top", "--netns", "ndk-no-such-ns", "--once"],
        ["napi", "show", "--netns", "ndk-no-such-ns"],
        ["monitor", "--netns", "ndk-no-such-ns"],
    ],
)
def test_a_missing_namespace_is_named_the_same_way_everywhere(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    err = _error_line(capsys, argv, 1)
    assert "network namespace 'ndk-no-such-ns' does not exist (see `ip netns list`)" in err


# --- one way to print an epoll change ---------------------------------------------------------


def test_epoll_params_and_changes_read_as_name_value() -> None:
    from netdevkit.busypoll.epoll import EpollParams, describe_change

    suspend = EpollParams(0, 64, True)
    assert str(suspend) == "busy_poll_usecs=0 busy_poll_budget=64 prefer_busy_poll=1"
    assert describe_change(EpollParams(), suspend) == (
        "busy_poll_budget 0 -> 64, prefer_busy_poll 0 -> 1"
    )
    assert describe_change(suspend, EpollParams(5, 64, True)) == "busy_poll_usecs 0 -> 5"
    assert describe_change(suspend, suspend) == f"unchanged ({suspend})"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().split("   ") if c.strip()]


def test_attach_show_has_one_headed_parameters_column(
    capsys: pytest.CaptureFixture[str], epoll_target: subprocess.Popen[str]
) -> None:
    assert main(["attach", str(epoll_target.pid), "--show"]) == 0
    header, _rule, row = capsys.readouterr().out.splitlines()
    assert _cells(header) == ["PID", "EPOLL FD", "PARAMETERS", "SOCKETS", "NAPI IDS", "NOTE"]
    assert _cells(row)[2] == "busy_poll_usecs=0 busy_poll_budget=0 prefer_busy_poll=0"
    assert len(_cells(row)) == len(_cells(header))


SUSPEND_CHANGE = "busy_poll_budget 0 -> 64, prefer_busy_poll 0 -> 1"
SUSPEND_UNDONE = "busy_poll_budget 64 -> 0, prefer_busy_poll 1 -> 0"


def test_attach_diff_and_restore_print_an_epoll_change_alike(
    capsys: pytest.CaptureFixture[str], epoll_target: subprocess.Popen[str]
) -> None:
    pid = str(epoll_target.pid)
    assert main(["attach", pid, "--preset", "suspend"]) == 0
    header, _rule, row = capsys.readouterr().out.splitlines()
    assert _cells(header)[2] == "CHANGE" and _cells(row)[2] == SUSPEND_CHANGE
    assert main(["napi", "diff"]) == 0
    assert capsys.readouterr().out.strip().endswith(f": {SUSPEND_CHANGE} (before -> now)")
    assert main(["restore"]) == 0
    out = capsys.readouterr()
    assert f"of pid {pid}: restored {SUSPEND_UNDONE}\n" in out.out
    assert "EpollParams" not in out.out + out.err


def test_run_reports_an_attachment_as_a_change() -> None:
    code = "import select, time; e = select.epoll(); time.sleep(1)"
    argv = [*NETDEVKIT, "run", "--preset", "suspend", "--", sys.executable, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert re.search(rf"netdevkit run: pid \d+ epoll fd \d+: {SUSPEND_CHANGE}\n", done.stderr), (
        done.stderr
    )


# --- doctor on a pipe: plain text that wraps, never truncates -------------------------------


def test_doctor_on_a_pipe_wraps_at_spaces_and_keeps_every_word(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, testbed: Testbed
) -> None:
    from netdevkit.doctor import run_checks

    monkeypatch.setenv("COLUMNS", "80")
    argv = ["doctor", "--netns", testbed.server_ns, "--ifname", testbed.server_if]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "\u2026" not in out and "..." not in out
    lines = out.splitlines()
    assert lines[0] == f"netdevkit doctor for {testbed.server_if} in netns {testbed.server_ns}"
    words = set(out.split())
    for c in run_checks(testbed.server_if, testbed.server_ns):
        for word in f"{c.feature} {c.name} {c.status.value} {c.detail} {c.remedy}".split():
            assert word in words, (word, c)
    # wrapped to 80 columns: only a word too long for any line could make one wider
    assert all(len(line) <= 80 or len(line.split()) == 1 for line in lines), out


def test_doctor_plain_report_keeps_table_columns_where_the_width_allows() -> None:
    from netdevkit.cli.doctor import plain_report
    from netdevkit.doctor.checks import Check, Status

    long_word = "x" * 150
    checks = [
        Check("kernel", "release", Status.OK, "Linux 6.18"),
        Check("devmem", "driver", Status.MISSING, f"a b {long_word} c", remedy="use d e"),
    ]
    lines = plain_report(checks, "netdevkit doctor", width=100)
    assert lines[2].split() == ["feature", "check", "status", "detail", "/", "what", "to", "do"]
    assert lines[4] == "kernel    release   OK        Linux 6.18"
    assert lines[6] == "devmem    driver    MISSING   a b"
    assert [ln.strip() for ln in lines[7:10]] == [long_word, "c", "-> use d e"]
    assert lines[-1] == "1 OK, 0 WARN, 1 MISSING"


# --- testbed show: what "kept" means; what testbed show and doctor load -----------------


def test_testbed_show_explains_each_status_it_shows(testbed_name: str) -> None:
    from netdevkit.cli.testbed import STATUS_MEANING

    def ndk(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*NETDEVKIT, *argv], capture_output=True, text=True, check=True)

    ndk("testbed", "up", "--name", testbed_name)
    try:
        shown = ndk("testbed", "show", testbed_name)
        assert shown.stdout.splitlines()[2].split()[:2] == [testbed_name, "kept"]
        assert shown.stderr == f"kept: {STATUS_MEANING['kept']}\n"
        assert "until `netdevkit testbed down NAME`" in shown.stderr
    finally:
        ndk("testbed", "down", testbed_name)


def _modules_loaded_by(*argv: str) -> set[str]:
    code = (
        "import sys, contextlib, io\nfrom netdevkit.cli.main import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    main({list(argv)!r})\n"
        "print(' '.join(sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {m.split(".")[0] for m in done.stdout.split()}


def test_testbed_show_does_not_load_pyroute2(testbed: Testbed) -> None:
    # pyroute2 takes about 250 ms to import, and its IPRoute(netns=...) forks per namespace
    assert "pyroute2" not in _modules_loaded_by("testbed", "show")


def test_doctor_for_an_interface_does_not_load_numpy(testbed: Testbed) -> None:
    argv = ("doctor", "--netns", testbed.server_ns, "--ifname", testbed.server_if)
    assert not {"numpy", "pyroute2"} & _modules_loaded_by(*argv)


# --- top --ifname: that interface only; epoll contexts of the watched namespace -------------


def test_top_ifname_lists_only_that_interface_and_this_namespaces_epolls(
    capsys: pytest.CaptureFixture[str], testbed: Testbed, epoll_target: subprocess.Popen[str]
) -> None:
    code = "import select, sys; e = select.epoll(); print('ready', flush=True); sys.stdin.read()"
    inside = subprocess.Popen(
        ["ip", "netns", "exec", testbed.server_ns, sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert inside.stdout is not None and inside.stdout.readline() == "ready\n"
        for pid in (inside.pid, epoll_target.pid):  # one in the namespace, one outside
            assert main(["attach", str(pid), "--preset", "suspend", "-j"]) == 0
        capsys.readouterr()
        argv = ["top", "--netns", testbed.server_ns, "--ifname", testbed.server_if]
        assert main([*argv, "--once", "--interval", "0.1", "-j"]) == 0
        sample = json.loads(capsys.readouterr().out)
        assert [x["ifname"] for x in sample["interfaces"]] == [testbed.server_if]
        assert [e["pid"] for e in sample["busy_poll"]["epoll_contexts"]] == [inside.pid]
        assert main([*argv, "--once", "--interval", "0.1"]) == 0
        view = capsys.readouterr().out
        assert "epoll contexts attached: 1 " in view
        interfaces = view.split("INTERFACES\n")[1].split("\n\n")[0].splitlines()[1:]
        assert [row.split()[0] for row in interfaces] == [testbed.server_if]
    finally:
        inside.kill()
        inside.wait()
        main(["restore"])


# --- names beside ifindex: Netdev.ifname and monitor ------------------------------------------


def test_netdev_ifname_names_an_index_in_its_own_namespace(testbed: Testbed) -> None:
    from netdevkit import Netdev, NotFoundError, RequestError
    from netdevkit.netdev.client import ifname_of

    with Netdev.open(testbed.server_ns) as nd:
        assert nd.ifname(testbed.server_ifindex) == testbed.server_if
        assert nd.ifname(1) == "lo"
        napi = nd.napi_dump(testbed.server_ifindex)[0]
        assert nd.ifname(napi.ifindex) == testbed.server_if  # a record's ifindex, named
        with pytest.raises(NotFoundError, match="no interface with ifindex 999999 in network"):
            nd.ifname(999999)
    for bad in (0, -1, True, "1"):
        with pytest.raises(RequestError, match=r"^ifindex"):  # names the parameter
            ifname_of(bad)  # type: ignore[arg-type]


def test_monitor_prints_the_name_beside_the_ifindex(testbed: Testbed) -> None:
    ns = testbed.server_ns
    argv = [*NETDEVKIT, "monitor", "--netns", ns, "--duration", "20"]
    mon = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ip = ["ip", "-n", ns, "link"]

    def line_about(index: int) -> str:
        assert mon.stdout is not None
        while (line := mon.stdout.readline()) and f" ifindex={index} " not in line:
            pass
        assert line, "monitor ended before printing the device"
        return line.split(" ", 1)[-1]

    try:
        time.sleep(1.0)  # subscribed
        subprocess.run(
            [*ip, "add", "ndkmon0", "type", "veth", "peer", "name", "ndkmon1"], check=True
        )
        shown = subprocess.run([*ip, "show", "ndkmon0"], capture_output=True, text=True, check=True)
        index = int(shown.stdout.split(":")[0])
        # printed while the device exists: named by a lookup in the namespace
        assert line_about(index).startswith(f"dev-add-ntf ifindex={index} ifname=ndkmon0 ")
        subprocess.run([*ip, "del", "ndkmon0"], check=True)
        while not (line := line_about(index)).startswith("dev-del-ntf"):
            pass
        # gone when printed: the name it was last seen with
        assert line.startswith(f"dev-del-ntf ifindex={index} ifname=ndkmon0 ")
    finally:
        mon.kill()
        mon.wait()


# --- exporter: per-queue counters on veth (ethtool), netdevkit_build_info ---------------------


def _scrape(url: str) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=30) as resp:
        return {f.name: f for f in text_string_to_metric_families(resp.read().decode())}


def _dashboard_metrics(*contains: str) -> set[str]:
    """The netdevkit_* metric names the shipped Grafana panels query (filtered by *contains*)."""
    text = (Path(__file__).parents[1] / "contrib" / "grafana-dashboard.json").read_text()
    exprs = [p["expr"] for p in _walk_targets(json.loads(text))]
    return {
        m for e in exprs for m in re.findall(r"netdevkit_\w+", e) if all(c in m for c in contains)
    }


def _walk_targets(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "expr" in node:
            yield node
        for v in node.values():
            yield from _walk_targets(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_targets(v)


def test_exporter_serves_per_queue_counters_of_veth_and_build_info(testbed4: Testbed) -> None:
    tb = testbed4
    port = free_port()
    argv = [*NETDEVKIT, "exporter", "--listen", f"127.0.0.1:{port}", "--netns", tb.server_ns]
    exp = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert exp.stderr is not None and "serving" in exp.stderr.readline()
        url = f"http://127.0.0.1:{port}/metrics"
        before = _scrape(url)
        srv = tb.socket("server", type=socket.SOCK_DGRAM)
        cli = tb.socket("client", type=socket.SOCK_DGRAM)
        with srv, cli:
            srv.bind((tb.server_addr, 5007))
            cli.connect((tb.server_addr, 5007))
            for _ in range(400):
                cli.send(b"x" * 100)
            time.sleep(0.2)
        after = _scrape(url)
    finally:
        exp.terminate()
        exp.wait(10)

    def rx_packets(fams: dict[str, Any]) -> dict[str, float]:
        samples = (
            fams["netdevkit_queue_packets"].samples if "netdevkit_queue_packets" in fams else []
        )
        return {
            s.labels["queue"]: s.value
            for s in samples
            if s.labels["ifname"] == tb.server_if and s.labels["type"] == "rx"
        }

    assert sorted(rx_packets(after)) == ["0", "1", "2", "3"]  # veth: no qstats, ethtool's
    assert sum(rx_packets(after).values()) - sum(rx_packets(before).values()) >= 400
    assert {"netdevkit_queue_packets_total"} <= _dashboard_metrics("queue_packets")
    (info,) = after["netdevkit_build_info"].samples
    assert info.labels == {"version": __version__, "kernel": os.uname().release}
    assert info.value == 1


# --- docs/doctor.md shows what doctor prints now ----------------------------------------------


def _doctor_rows(lines: list[str]) -> list[tuple[str, str, str]]:
    """(feature, check, status) of each row of doctor's plain report."""
    head = next(ln for ln in lines if ln.startswith("feature "))
    at = [head.index(word) for word in ("check", "status", "detail")]
    rows, feature = [], ""
    for ln in lines[lines.index(head) + 2 :]:
        status = ln[at[1] : at[2]].strip()
        if status in ("OK", "WARN", "MISSING"):
            feature = ln[: at[0]].strip() or feature
            rows.append((feature, ln[at[0] : at[1]].strip(), status))
    return rows


def test_the_doctor_sample_in_the_docs_is_todays_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, testbed: Testbed
) -> None:
    doc = (Path(__file__).parents[1] / "docs" / "doctor.md").read_text().splitlines()
    start = doc.index("$ netdevkit doctor --netns lab-srv --ifname ndk-s | cat") + 1
    sample = doc[start : doc.index("```", start)]
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["doctor", "--netns", testbed.server_ns, "--ifname", testbed.server_if]) == 0
    real = capsys.readouterr().out.splitlines()
    # the same features and checks (kernel versions are in the check names), in order
    assert [r[:2] for r in _doctor_rows(sample)] == [r[:2] for r in _doctor_rows(real)]
    counts = {s: sum(r[2] == s for r in _doctor_rows(sample)) for s in ("OK", "WARN", "MISSING")}
    assert sample[-1] == f"{counts['OK']} OK, {counts['WARN']} WARN, {counts['MISSING']} MISSING"
    assert sample[0] == "netdevkit doctor for ndk-s in netns lab-srv"


@pytest.mark.parametrize("package", ["netdevkit.testbed", "netdevkit.devmem"])
def test_lazy_packages_still_export_every_name(package: str) -> None:
    import importlib

    mod = importlib.import_module(package)
    lazy: dict[str, str] = mod._LAZY
    for name in [*mod.__all__, *lazy]:
        assert getattr(mod, name) is getattr(
            importlib.import_module(
                lazy[name] if lazy[name].startswith("netdevkit.") else f"{package}.{lazy[name]}"
            ),
            name,
        )
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mod.nope  # noqa: B018


FINISHED = """
import os, signal, sys
from netdevkit.cli import main as m
m._Run.as_program = {as_program}
m.command_finished()
os.kill(os.getpid(), signal.SIGINT)
os.kill(os.getpid(), signal.SIGTERM)
print("still here", flush=True)
"""


@pytest.mark.parametrize("as_program", [True, False])
def test_a_stop_signal_after_the_command_finished_is_ignored_only_as_the_program(
    as_program: bool,
) -> None:
    """command_finished(): run as the program, the changes made and reported, SIGINT and
    SIGTERM no longer turn the outcome into "interrupted"; called in-process (a test, a
    library caller) it leaves the caller's handlers alone."""
    p = subprocess.run(
        [sys.executable, "-c", FINISHED.format(as_program=as_program)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if as_program:
        assert (p.returncode, p.stdout, p.stderr) == (0, "still here\n", "")
    else:
        assert p.returncode != 0 and "still here" not in p.stdout  # KeyboardInterrupt
        assert "KeyboardInterrupt" in p.stderr
