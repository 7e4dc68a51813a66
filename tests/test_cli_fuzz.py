"""A CLI fuzzer: generated argument vectors and generated files fed to every command.

Each example runs ``main(argv)`` in this process (a few fixed ones run the installed entry
point in a subprocess) and asserts: no traceback; exit status 0, 1 or 2; a 1 or 2 comes
with exactly one line on stderr; and the kernel state is unchanged -- the NAPI settings of a
testbed this test owns, the host's NAPI settings and the namespaces the command line names.

What may change the system is fuzzed only where a valid command line cannot change it:
``napi set`` and ``apply`` always carry ``--dry-run``, ``attach``/``detach`` get pids no
process has, ``testbed up`` gets an invalid queue count, ``bench`` always gets ``--report``,
and journals name namespaces that do not exist (a journal naming a real NAPI is valid input
that ``restore`` acts on). ``run`` starts programs and is left out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from netdevkit.cli.main import main
from netdevkit.netdev.client import Netdev
from netdevkit.netns import list_names
from netdevkit.testbed import Testbed

pytestmark = pytest.mark.kernel

NO_PID = str(4_194_304 + 17)  # above the largest pid_max: no process has it
NO_NS = "ndkfz-none"  # a namespace nobody creates
DATA = Path(__file__).parent / "data"

# --- generated files ------------------------------------------------------------------------

toml_scalar = st.one_of(
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["200us", "20ms", "83min", "4980s", "9" * 400, "eth*", "ndk-s", "suspend"]),
)
PROFILE_KEYS = [
    "version",
    "backend",
    "netns",
    "match",
    "preset",
    "defer-hard-irqs",
    "gro-flush-timeout",
    "irq-suspend-timeout",
    "threaded",
    "position",
    "positions",
    "bogus",
]


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)  # a TOML basic string is a JSON string


@st.composite
def profiles(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    lines = [f'netns = "{draw(st.sampled_from([NO_NS, "", "x" * 300]))}"']
    for _ in range(draw(st.integers(0, 3))):
        lines.append("[[interface]]")
        for key in draw(st.lists(st.sampled_from(PROFILE_KEYS), max_size=4, unique=True)):
            lines.append(f"{key} = {_toml_value(draw(toml_scalar))}")
        for _ in range(draw(st.integers(0, 2))):
            lines.append("[[interface.napi]]")
            pos = draw(st.lists(st.integers(-1, 3), max_size=3))
            lines.append(f"positions = {_toml_value(pos)}")
            lines.append(f"defer-hard-irqs = {_toml_value(draw(toml_scalar))}")
    return ("\n".join(lines) + "\n").encode()


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=8))
json_any = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def journals(draw: st.DrawFn) -> bytes:
    """Journal files: garbage, other JSON, or records of every kind naming nothing real."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=120))
    if choice == 1:
        return json.dumps(draw(json_any)).encode()
    records = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["napi", "epoll", "ethtool-rings", "other"]))
        info: dict[str, Any] = {
            "backend": draw(st.sampled_from(["netlink", "sysfs", "x"])),
            "netns": NO_NS,
            "ifname": draw(st.sampled_from(["ndk-s", "eth0", ""])),
            "ifindex": draw(st.integers(-1, 2**33)),
            "napi_id": draw(st.none() | st.integers(0, 2**33)),
            "position": draw(st.none() | st.integers(-1, 4)),
            "pid": int(NO_PID),
            "tid": int(NO_PID),
            "fd": draw(st.integers(-1, 10)),
            "start_time": draw(st.integers(0, 2**40)),
            "new": draw(json_any),
        }
        if draw(st.booleans()):
            info.pop(draw(st.sampled_from(sorted(info))))
        before = draw(
            st.dictionaries(
                st.sampled_from(
                    ["defer_hard_irqs", "gro_flush_timeout", "busy_poll_usecs", "threaded"]
                ),
                json_leaf,
                max_size=3,
            )
        )
        records.append(
            {
                "kind": kind,
                "key": draw(st.text(min_size=1, max_size=8)),
                "before": before,
                "info": info,
            }
        )
    return json.dumps({"version": draw(st.sampled_from([1, 2, 3])), "entries": records}).encode()


@st.composite
def results_files(draw: st.DrawFn) -> bytes:
    base = json.loads((DATA / "bench_results_fixture.json").read_text())
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(st.binary(max_size=120))
    if choice == 1:
        return json.dumps(draw(json_any)).encode()
    # a real results file with one value replaced somewhere
    path: list[Any] = []
    node: Any = base
    for _ in range(draw(st.integers(1, 4))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
        elif isinstance(node, list) and node:
            key = draw(st.integers(0, len(node) - 1))
        else:
            break
        path.append(key)
        node = node[key]
    if path:
        parent: Any = base
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = draw(json_any)
    return json.dumps(base).encode()


# --- generated command lines -------------------------------------------------------------


def tokens(tb: Testbed) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [
                "-j",
                "--json",
                "--help",
                "--netns",
                tb.server_ns,
                NO_NS,
                "n" * 300,
                "a/b",
                "--ifname",
                "ndk-s",
                "lo",
                "--ifindex",
                "--id",
                "0",
                "-1",
                "1,2,x",
                "9" * 5000,
                "--preset",
                "suspend",
                "nope",
                "--defer-hard-irqs",
                "--gro-flush-timeout",
                "--irq-suspend-timeout",
                "83min",
                "4980s",
                "200us",
                "--threaded",
                "maybe",
                "--backend",
                "ioctl",
                "--kind",
                "--pid",
                NO_PID,
                "--usecs",
                "--budget",
                "--prefer",
                "--no-prefer",
                "--watch",
                "--hold",
                "--show",
                "--interval",
                "--name",
                "--queues",
                "--all",
                "--prefix",
                "--force",
                "--per-queue",
                "",
                "\x00",
                "--",
            ]
        ),
        st.text(max_size=10),
    )


COMMANDS: list[list[str]] = [
    ["dev", "show"],
    ["queue", "show"],
    ["napi", "show"],
    ["qstats", "show"],
    ["page-pool", "show"],
    ["page-pool", "stats"],
    ["napi", "diff"],
    ["napi", "set"],
    ["apply"],
    ["restore"],
    ["presets"],
    ["attach"],
    ["detach"],
    ["bench"],
    ["testbed", "show"],
    ["testbed", "down"],
    ["testbed", "up"],
    ["doctor"],
]


def _safe(cmd: list[str], rest: list[str], files: dict[str, str]) -> list[str]:
    """Make the command line one that cannot change the system if it is valid."""
    if cmd in (["napi", "set"], ["apply"]):
        rest = [*rest, "--dry-run"]
    if cmd == ["apply"]:
        rest = [files["profile"], *rest]
    if cmd in (["attach"], ["detach"]):
        rest = [r for r in rest if r not in ("--pid",)] + ["--pid", NO_PID]
    if cmd == ["bench"]:
        rest = [*rest, "--report", files["results"], "--out", files["out"]]
    if cmd == ["testbed", "up"]:
        rest = [r for r in rest if r != "--queues"] + ["--queues", "0"]
    return [*cmd, *rest]


def napi_state(tb: Testbed) -> list[tuple[Any, ...]]:
    out = []
    for ns in (tb.server_ns, tb.client_ns, None):
        with Netdev.open(ns) as nd:
            for n in nd.napi_dump():
                out.append((ns, n.id, n.defer_hard_irqs, n.gro_flush_timeout, n.threaded))
    return sorted(out, key=repr)


def named(argv: list[str]) -> set[str]:
    names = {a for a in argv if a} | {f"{a}{s}" for a in argv if a for s in ("-srv", "-cli")}
    return names & set(list_names())


@settings(
    max_examples=int(os.environ.get("NETDEVKIT_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cmd=st.sampled_from(COMMANDS), data=st.data())
def test_cli_fuzz(
    testbed: Testbed,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cmd: list[str],
    data: st.DataObject,
) -> None:
    rest = data.draw(st.lists(tokens(testbed), max_size=6), label="args")
    state = Path(os.environ["NETDEVKIT_STATE_DIR"])
    state.mkdir(parents=True, exist_ok=True)
    (state / "journal.json").write_bytes(data.draw(journals(), label="journal"))
    (tmp_path / "profile.toml").write_bytes(data.draw(profiles(), label="profile"))
    (tmp_path / "results.json").write_bytes(data.draw(results_files(), label="results"))
    files = {
        "profile": str(tmp_path / "profile.toml"),
        "results": str(tmp_path / "results.json"),
        "out": str(tmp_path / "out"),
    }
    argv = _safe(cmd, rest, files)
    before, ns_before = napi_state(testbed), named(argv)
    try:
        rc = main(argv)
    except SystemExit as exc:  # --help
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    event(f"{' '.join(cmd)}: exit {rc}")
    assert "Traceback" not in out.err
    assert rc in (0, 1, 2), (argv, rc, out.err)
    if rc in (1, 2):
        assert out.err.count("\n") == 1, (argv, out.err)
        assert out.err.startswith("netdevkit: "), (argv, out.err)
    assert napi_state(testbed) == before, argv
    assert named(argv) == ns_before, argv


@pytest.mark.parametrize(
    "argv",
    [
        ["napi", "set", "--ifname", "lo", "--gro-flush-timeout", "9" * 5000],
        ["attach", "--pid", NO_PID, "--prefer", "--no-prefer"],
        ["bench", "--report", "/"],
        ["testbed", "down"],
        ["restore", "--netns", "x" * 300],
    ],
)
def test_cli_entry_point_says_one_line(argv: list[str]) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "netdevkit", *argv], capture_output=True, text=True, check=False
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
