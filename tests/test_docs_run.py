"""Executable docs (issue 20): every ```sh and ```python block and every transcript of
README.md and docs/*.md is run here (the parser: tests/docblocks.py).

One test case per block, named ``FILE:LINE`` (its opening fence); a command that fails
names its own ``FILE:LINE``. Each case gets a fresh testbed as `netdevkit testbed up`
makes it (one queue) and runs the block *inside the testbed's server namespace* (`ip
netns exec`), the doc's commands unchanged but for the names of :data:`NAMES` and
:data:`FILES`: ``eth0``/``eth1`` become the server interface, ``ns1`` and ``lab`` its
namespace, ``$(pidof memcached)`` a memcached started there, a testbed the block brings up
a unique name, ... Inside the namespace a name left unsubstituted cannot reach this
machine's own interfaces. Commands that build namespaces (`testbed`, `bench`, `make`,
``Testbed(``) run in this machine's namespaces, as a user runs them. The commands
journal into a private ``NETDEVKIT_STATE_DIR``, apart from the one the fixture's testbed
is recorded in, so the doc's `testbed down --all` only meets the doc's testbeds.

What each case asserts:

- a sh command exits 0; one that runs until stopped (:data:`STOPS`: make demo, bench,
  top, monitor, exporter, run) shows that it works, is sent Ctrl-C or SIGTERM, exits as
  documented and leaves nothing behind;
- a python block, run in a subprocess with the same substitutions, exits 0; names the
  snippet uses without defining (``serve()``, ``main()``, ``pid``...) get the stand-ins of
  :data:`STAND_INS`; tracebacks name the doc's own file and line;
- a transcript's ``$ command`` prints the words the doc shows (numbers of 3+ digits aside)
  and fails exactly where the doc shows an error;
- a block marked ``<!-- doc: needs hardware (WHAT) -->`` must be refused: exit 1, one line
  naming one of WHAT's items (``devmem teardown`` there has nothing to undo: exit 0);
- a block marked ``<!-- doc: dry run: make X, ... (WHY) -->`` runs those targets with
  ``make -n`` (WHY says why they cannot run inside this suite);
- afterwards the commands' journal holds no record of a netdevkit kind, and no testbed
  of the block is left (the fixture removes what a failing block left).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from conftest import unique_testbed_name
from docblocks import (
    DOCS,
    DRY_RUN,
    FENCE,
    MARKER,
    REPO,
    Block,
    Command,
    all_blocks,
    free_names,
    parse_blocks,
)

from netdevkit import netns
from netdevkit.procfs import descendants
from netdevkit.testbed import Testbed, TestbedConfig
from netdevkit.testbed.journal import ns_pids

# --- the parser's own tests --------------------------------------------------------

_SAMPLE = """\
# Title

```sh
netdevkit napi show        # a comment
# a comment line
netdevkit napi set --ifname eth0 \\
    --preset suspend
```

<!-- doc: needs hardware (/dev/udmabuf or a devmem NIC: driver, header split) -->
```python
print(undefined_name, len([]))
```

```
netdevkit napi set ...   (a synopsis: not run)
```

```
$ netdevkit doctor --ifname nope
netdevkit: error: no interface named 'nope'
$ true
```

<!-- doc: dry run: make test, make x (it runs this suite) -->
```sh
make test
make test-kernels
```
"""


NO_SUCH = "netdevkit: error: no interface named 'nope'"


def test_parser_finds_sh_and_python_blocks_with_their_lines() -> None:
    blocks = parse_blocks(_SAMPLE, "x.md")
    assert [(b.id, b.lang) for b in blocks] == [
        ("x.md:3", "sh"),
        ("x.md:11", "python"),
        ("x.md:19", "console"),
        ("x.md:26", "sh"),
    ]
    assert blocks[0].commands() == [
        Command(4, "netdevkit napi show        # a comment"),
        Command(6, "netdevkit napi set --ifname eth0 --preset suspend"),
    ]
    assert blocks[0].marker == "" and blocks[0].needs_hardware() == ()
    assert blocks[1].source == "print(undefined_name, len([]))\n"
    assert blocks[1].needs_hardware() == ("/dev/udmabuf", "driver", "header split")
    assert free_names(blocks[1].source) == {"undefined_name"}
    assert blocks[2].transcript() == [
        (Command(20, "netdevkit doctor --ifname nope"), [NO_SUCH]),
        (Command(22, "true"), []),
    ]


def test_parser_dry_run_marker_matches_whole_commands() -> None:
    block = parse_blocks(_SAMPLE, "x.md")[3]
    assert block.dry_run("make test") and not block.dry_run("make test-kernels")
    assert not parse_blocks(_SAMPLE, "x.md")[0].dry_run("make test")


def test_parser_handles_an_unclosed_fence_and_a_trailing_continuation() -> None:
    (block,) = parse_blocks("```sh\nls \\\n  -l \\\n", "y.md")
    assert block.commands() == [Command(2, "ls -l")]


def test_free_names_sees_binding_forms() -> None:
    src = "import os.path\nwith f() as a, g(a) as b:\n    [c for c in b]\ndef h(x): return x, y\n"
    assert free_names(src) == {"f", "g", "y"}


def test_every_doc_has_been_parsed() -> None:
    blocks = all_blocks()
    assert {b.path for b in blocks} >= {"README.md", "docs/attach.md", "docs/tuning.md"}
    assert all(b.lang != "python" or b.source.strip() for b in blocks)


#: fence languages that are not run: data (toml, json) and plain text (synopses, sample output)
_NOT_RUN = ("", "toml", "json", "yaml", "text")


def test_no_runnable_block_escapes_under_another_fence_name() -> None:
    """A ```bash, ```console or ```py block would silently not be run: use sh or python."""
    for path in DOCS:
        for n, line in enumerate((REPO / path).read_text(encoding="utf-8").splitlines(), 1):
            m = FENCE.match(line)
            if m and m.group(1) not in ("sh", "python", *_NOT_RUN):
                raise AssertionError(f"{path}:{n}: ```{m.group(1)} is not run: use sh or python")


def test_every_doc_marker_belongs_to_a_block_and_says_something() -> None:
    """A `<!-- doc: -->` comment that is not right before a sh/python fence, or that says
    neither what hardware is needed nor what only runs dry, would be ignored silently."""
    marked = {b.id: b for b in all_blocks() if b.marker}
    for path in DOCS:
        lines = (REPO / path).read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if MARKER.match(line.strip()):
                block = marked.get(f"{path}:{n + 1}")
                assert block is not None, f"{path}:{n}: a doc marker not before a sh/python block"
                what = block.needs_hardware() or DRY_RUN.search(block.marker)
                assert what, f"{path}:{n}: the marker says neither needs hardware nor dry run"


# --- the testbed a block runs against ----------------------------------------------

#: a program for `bench --server 'python3 my_server.py --port {port}'`: the bench's own
#: sockperf-framing server, listening where the bench's client can reach it
MY_SERVER = """\
import runpy, sys
sys.argv = ["my_server.py", "--host", "0.0.0.0", *sys.argv[1:]]
runpy.run_module("netdevkit.bench.servers.rr", run_name="__main__")
"""

#: `bench compare before/results.json after/results.json`: two recorded result files
COMPARED = ("tests/data/bench_results_fixture.json", "tests/data/bench_results_quick_recorded.json")


class Bed:
    """A testbed plus everything a doc block's names are mapped to."""

    def __init__(self, tb: Testbed, tmp: Path) -> None:
        self.tb = tb
        self.ns = tb.server_ns
        self.ifname = tb.if_of("server")
        self.addr = tb.config.server_addr
        self.exp = unique_testbed_name()  # the doc's own testbed "exp"
        #: testbeds the block brings up itself (`testbed up [--name N]`, N default `ndk`)
        #: -> unique names; a block that brings none up finds `ndk` (examples/profile.toml
        #: is written for it) in this testbed
        self.renames: dict[str, str] = {}
        self.tmp = tmp
        self.state = tmp / "doc-state"  # the commands' NETDEVKIT_STATE_DIR
        self.cwd = _scratch_checkout(tmp / "checkout")
        self.env = dict(os.environ, NETDEVKIT_STATE_DIR=str(self.state))
        self.env["PATH"] = f"{Path(sys.executable).parent}:{self.env.get('PATH', '')}"
        self._memcached: int | None = None

    def napi_id(self) -> int:
        from netdevkit import Netdev

        with Netdev.open(netns=self.ns) as nd:
            ids = [n.id for n in nd.napi_dump() if n.ifindex == self.tb.server_ifindex]
        return min(ids)

    def memcached(self) -> int:
        """The pid of a memcached in the server namespace (started on first use; its port
        is not the default one, so the doc's own `memcached` can start beside it)."""
        if self._memcached is None:
            argv = ["memcached", "-u", "memcache", "-l", self.addr, "-p", "11311", "-t", "2"]
            proc = self.tb.popen("server", argv)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not _listening(self, 11311):
                assert proc.poll() is None, f"memcached exited with {proc.returncode}"
                time.sleep(0.05)
            self._memcached = proc.pid
        return self._memcached

    def file(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    def copy(self, rel: str) -> str:
        """A copy of a checkout file with the substitutions applied (never the file itself)."""
        text = (REPO / rel).read_text(encoding="utf-8")
        return self.file(Path(rel).name, substitute(text, self, files=False))


def _listening(bed: Bed, port: int) -> bool:
    res = subprocess.run(
        ["ip", "netns", "exec", bed.ns, "ss", "-Hltn", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return bool(res.stdout.strip())


def _scratch_checkout(where: Path) -> Path:
    """A directory whose entries link to the checkout's: commands see .venv, tests/ ...
    where the doc says, and what they write relative to their working directory (a
    bench's bench-out/) lands here, removed with the test's temporary directory."""
    where.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in ("bench-out", ".git"):
            (where / entry.name).symlink_to(entry)
    return where


_Sub = tuple[str, Callable[[Bed], str]]

#: the doc's names -> the testbed's; file names last (their copies are substituted too)
NAMES: tuple[_Sub, ...] = (
    (r"\$\(pidof memcached\)", lambda b: str(b.memcached())),
    (r"\beth[01]\b", lambda b: b.ifname),
    (r"\b(?:ns1|lab-srv|lab)\b", lambda b: b.ns),
    (r"\bexp\b", lambda b: b.exp),
    (r"\b10\.0\.0\.1\b", lambda b: b.addr),
    (r"(?<=netdevkit testbed up)(?!.*--name)", lambda b: f" --name {b.renames.get('ndk', 'ndk')}"),
    (r"\bndk(?=-srv\b|-cli\b)|(?<=testbed down )ndk\b", lambda b: b.tb.config.name),
    (r"(?<=--id )513\b", lambda b: str(b.napi_id())),
    (r"/run/netdevkit\b", lambda b: str(b.state)),
)
FILES: tuple[_Sub, ...] = (
    (r"\bmy_server\.py\b", lambda b: b.file("my_server.py", MY_SERVER)),
    (r"\bbefore/results\.json\b", lambda b: str(REPO / COMPARED[0])),
    (r"\bafter/results\.json\b", lambda b: str(REPO / COMPARED[1])),
    (r"\bexamples/profile\.toml\b", lambda b: b.copy("examples/profile.toml")),
)


def substitute(text: str, bed: Bed, files: bool = True) -> str:
    for old, new in bed.renames.items():  # a testbed name, not the ndk-s/ndk-c in it
        text = re.sub(rf"(?<![\w-]){re.escape(old)}(?=-srv\b|-cli\b|[^\w-]|$)", new, text)
    for pattern, value in NAMES + (FILES if files else ()):
        text = re.sub(pattern, lambda _m, v=value: v(bed), text)  # type: ignore[misc]
    return text


def _names_only_bed(renames: dict[str, str]) -> Bed:
    """A Bed with the names of a testbed and no testbed (for the substitution table)."""
    bed = Bed.__new__(Bed)
    bed.ns, bed.ifname, bed.addr, bed.exp = "NS", "IF", "ADDR", "EXP"
    bed.tb = cast(Testbed, SimpleNamespace(config=SimpleNamespace(name="FIX")))
    bed.renames = renames
    return bed


def test_substitutions_map_the_docs_names_and_leave_the_testbeds_own() -> None:
    doc = "napi set --ifname eth0 --netns lab-srv; ip netns exec ns1 x; ndk-s ndk-srv 10.0.0.1"
    want = "napi set --ifname IF --netns NS; ip netns exec NS x; ndk-s FIX-srv ADDR"
    assert substitute(doc, _names_only_bed({}), files=False) == want
    assert substitute("testbed up; testbed down ndk", _names_only_bed({}), files=False) == (
        "testbed up; testbed down FIX"
    )
    brought_up = _names_only_bed({"lab": "U1", "ndk": "U2"})
    doc = "netdevkit testbed up --name lab; doctor --netns lab-srv -i ndk-s; testbed down ndk"
    want = "netdevkit testbed up --name U1; doctor --netns U1-srv -i ndk-s; testbed down U2"
    assert substitute(doc, brought_up, files=False) == want
    assert substitute("netdevkit testbed up", brought_up, files=False) == (
        "netdevkit testbed up --name U2"
    )


@pytest.fixture
def bed(tmp_path: Path) -> Generator[Bed, None, None]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and veth pairs")
    tb = Testbed(TestbedConfig(name=unique_testbed_name()))  # as `netdevkit testbed up`
    tb.up()
    try:
        b = Bed(tb, tmp_path)
        yield b
        for undo in ("restore", "testbed down --all"):  # whatever a failed block left
            run_sh(b, f"netdevkit {undo}", timeout=60)
    finally:
        tb.down()


# --- running a block ----------------------------------------------------------------


#: commands that build network namespaces run in this machine's namespaces, as a user
#: runs them: `ip netns exec` gives its command a private mount namespace, and a netns
#: bind-mounted under /run/netns there is invisible outside it (and gone with it)
_BUILDS_NAMESPACES = re.compile(
    r"^(make |netdevkit testbed\b|netdevkit bench\b(?!.*--ifname))|\bTestbed\("
)  # a bench on a NIC (--ifname) builds no testbed: it runs where the NIC is


def _cwd(bed: Bed, text: str) -> Path:
    """make runs in the checkout itself, as a user runs it (were .venv older than
    pyproject.toml, make reinstalls it editable: from a scratch directory that would
    point the shared .venv at a directory about to be removed); the rest in the scratch
    checkout, so what they write relative to it goes away with the test."""
    return REPO if text.startswith("make ") else bed.cwd


def _where(bed: Bed, text: str) -> list[str]:
    return [] if _BUILDS_NAMESPACES.search(text) else ["ip", "netns", "exec", bed.ns]


def run_sh(
    bed: Bed, text: str, timeout: float = 120, host: bool = False
) -> subprocess.CompletedProcess[str]:
    """*text* through sh inside the testbed's server namespace (unless it builds namespaces
    of its own, or *host*), from the scratch checkout."""
    return subprocess.run(
        [*([] if host else _where(bed, text)), "sh", "-c", text],
        cwd=_cwd(bed, text),
        env=bed.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _explain(where: str, text: str, rc: int | None, out: str, err: str = "") -> str:
    return (
        f"{where}\n  ran (substituted): {text}\n  exit status: {rc}\n"
        f"  stdout: {out[-3000:]}\n  stderr: {err[-3000:]}"
    )


#: commands that undo: in a block that needs hardware they have nothing to undo (exit 0)
_UNDO = re.compile(r"^netdevkit (devmem teardown|restore)\b")


def run_command(block: Block, cmd: Command, bed: Bed) -> None:
    where = f"{block.path}:{cmd.line}: {cmd.text}"
    text = substitute(cmd.text, bed)
    if block.dry_run(cmd.text):
        assert text.startswith("make "), f"{where}: only make targets have a dry run"
        text = "make -n " + text[len("make ") :]
        res = run_sh(bed, text)
        assert res.returncode == 0 and res.stdout.strip(), _explain(
            where, text, res.returncode, res.stdout, res.stderr
        )
        return
    bare = " ".join(shlex.split(text, comments=True))  # what STOPS match: no comment
    stop = next((s for s in STOPS if re.search(s.pattern, bare)), None)
    if stop is not None and not block.needs_hardware():
        run_until_stopped(where, text, stop, bed)
        return
    res = run_sh(bed, text)
    why = _explain(where, text, res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, why
    wanted = block.needs_hardware()
    if not wanted or _UNDO.match(text):
        assert res.returncode == 0, why
        return
    assert res.returncode == 1, f"expected the documented refusal (exit 1): {why}"
    assert res.stderr.count("\n") == 1, f"a refusal is one line: {why}"
    named = [w for w in wanted if w.lower() in res.stderr.lower()]
    assert named, f"the refusal does not name what is missing ({' or '.join(wanted)}): {why}"


# --- commands that run until stopped --------------------------------------------------


@dataclass
class Running:
    """A command started by :func:`run_until_stopped`, as its ready check sees it."""

    bed: Bed
    proc: subprocess.Popen[bytes]
    out: Path
    pids: set[int]

    def output(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")


@dataclass(frozen=True)
class Stop:
    """How to run a command that runs until stopped: start it, wait until ``ready`` says
    it works (or it ends by itself), send ``signum`` to its process group (what Ctrl-C on a
    terminal does), and expect one of ``exits``."""

    pattern: str
    ready: Callable[[Running], bool]
    signum: signal.Signals
    exits: tuple[int, ...]
    within: float = 30.0


def _printed(regex: str) -> Callable[[Running], bool]:
    def printed(r: Running) -> bool:
        return re.search(regex, r.output()) is not None

    printed.__doc__ = f"its output shows /{regex}/"
    return printed


def _finished(regex: str) -> Callable[[Running], bool]:
    def finished(r: Running) -> bool:
        return r.proc.poll() is not None and re.search(regex, r.output()) is not None

    finished.__doc__ = f"it ended by itself, its output showing /{regex}/"
    return finished


def _bench_measuring(r: Running) -> bool:
    """The bench built its testbed (named for its pid) and started a server in it."""
    return any(netns.exists(ns) and ns_pids(ns) for ns in (f"ndkbench-{pid}-srv" for pid in r.pids))


def _scraped(r: Running) -> bool:
    """`exporter --listen 127.0.0.1:9417` answers inside the namespace, and reads it."""
    code = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9417/metrics').read().decode())"
    res = run_sh(r.bed, f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}", timeout=20)
    return f'netdevkit_up{{netns="{r.bed.ns}"}} 1' in res.stdout


def _device_added(r: Running) -> bool:
    """`monitor` prints the veth pair this creates (and deletes) in the namespace."""
    time.sleep(0.5)  # subscribed by now
    run_sh(r.bed, "ip link add ndkdoc0 type veth peer name ndkdoc1 && ip link del ndkdoc0")
    time.sleep(0.5)
    return "dev-add" in r.output()


STOPS: tuple[Stop, ...] = (
    # `make demo` runs to its end (the bench --quick takes well under a minute here)
    Stop(r"^make demo$", _finished(r"report:"), signal.SIGINT, (0,), within=240),
    # a bench is stopped with Ctrl-C once measuring: it must stop, say so, leave nothing
    Stop(r"^netdevkit bench (?!compare)", _bench_measuring, signal.SIGINT, (130,), within=60),
    Stop(r"^netdevkit top (?!.*--once)", _printed(r"NAPIS"), signal.SIGINT, (0, 130)),
    Stop(r"^netdevkit monitor\b", _device_added, signal.SIGINT, (0, 130)),
    Stop(r"^netdevkit exporter\b", _scraped, signal.SIGTERM, (0,)),
    Stop(r"^netdevkit run\b", _printed(r"epoll fd"), signal.SIGTERM, (0,)),
)


def run_until_stopped(where: str, text: str, stop: Stop, bed: Bed) -> None:
    out = bed.tmp / "stopped.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [*_where(bed, text), "sh", "-c", f"exec {text}"],
            cwd=_cwd(bed, text),
            env=bed.env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = Running(bed, proc, out, {proc.pid})
    try:
        ready = _wait_ready(run, stop)
        rc = proc.poll()
        if rc is None:
            os.killpg(proc.pid, stop.signum)
            rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    why = _explain(where, text, rc, run.output())
    assert ready, f"it never showed that it works ({stop.ready.__doc__ or ''}): {why}"
    assert rc in stop.exits, f"after {stop.signum.name}: {why}"
    assert "Traceback" not in run.output(), why
    left = [
        n for p in run.pids for n in (f"ndkbench-{p}-srv", f"ndkbench-{p}-cli") if netns.exists(n)
    ]
    assert not left, f"left namespaces {left} behind: {why}"
    _check_bench_out(where, bed)
    _remove_reported_results(run.output())


def _wait_ready(run: Running, stop: Stop) -> bool:
    deadline = time.monotonic() + stop.within
    while time.monotonic() < deadline:
        run.pids.update(descendants(run.proc.pid))
        if stop.ready(run):
            return True
        if run.proc.poll() is not None:
            return stop.ready(run)
        time.sleep(0.2)
    return False


def _remove_reported_results(output: str) -> None:
    """`make demo` wrote its results into the checkout's bench-out/: remove exactly the
    folder it reported."""
    for m in re.finditer(r"report: (bench-out/[\w.-]+)", output):
        folder = REPO / m.group(1)
        if folder.is_dir():
            shutil.rmtree(folder)
    with contextlib.suppress(OSError):
        (REPO / "bench-out").rmdir()  # only if that left it empty


def _check_bench_out(where: str, bed: Bed) -> None:
    """A bench that was stopped leaves no output folder without its results."""
    for d in (bed.cwd / "bench-out").glob("*"):
        assert (d / "results.json").exists(), f"{where}: left {d.name} without results.json"


# --- python blocks ----------------------------------------------------------------------

#: stand-ins for the names a snippet uses without defining them; the devmem ones need
#: the hardware and raise the refusal the block's marker expects
STAND_INS: dict[str, str] = {
    "serve_forever": "def serve_forever():\n    time.sleep(0.2)\n",
    "serve": "def serve():\n    time.sleep(0.2)\n",
    "main": "async def main():\n    await asyncio.sleep(0.05)\n",
    "pid": "pid = {memcached}\n",
    "set_rings": "def set_rings(ifname, **rings):\n    pass\n",
    "fd": "fd = os.memfd_create('doc')\n",
    "buf": "from netdevkit.devmem import udmabuf\nbuf = udmabuf(64 << 20)\n",
    "binding": "from netdevkit.devmem import bind_rx, udmabuf\n"
    "binding = bind_rx({ifname!r}, [0], udmabuf(64 << 20))\n",
    "listener": "listener = socket.create_server(({addr!r}, 5201))\n",
    "conn": "conn, _peer = socket.socketpair()\n",
    "sock": "sock = socket.socket()\n",
}


def python_program(block: Block, bed: Bed) -> str:
    """The snippet (substituted) after its stand-ins, compiled under the doc's file name
    with its lines where they are in the doc, so a traceback names FILE, line N."""
    source = substitute(block.source, bed)
    needed = sorted(free_names(source) & STAND_INS.keys())
    fill = {"addr": bed.addr, "ifname": bed.ifname}
    if "pid" in needed:
        fill["memcached"] = str(bed.memcached())
    prelude = "import asyncio, os, socket, time\n" + "".join(
        STAND_INS[n].format(**fill) for n in needed
    )
    padded = "\n" * block.line + source
    return f"{prelude}exec(compile({padded!r}, {block.path!r}, 'exec'))\n"


def run_python_block(block: Block, bed: Bed) -> None:
    program = python_program(block, bed)
    host = _BUILDS_NAMESPACES.search(block.source) is not None
    res = run_sh(bed, f"{shlex.quote(sys.executable)} -c {shlex.quote(program)}", host=host)
    why = _explain(block.id, "python " + block.id, res.returncode, res.stdout, res.stderr)
    wanted = block.needs_hardware()
    if not wanted:
        assert res.returncode == 0, why
        return
    last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
    assert res.returncode == 1 and last.startswith("netdevkit."), f"expected a refusal: {why}"
    assert any(w.lower() in last.lower() for w in wanted), f"not naming {wanted}: {why}"


# --- transcripts ------------------------------------------------------------------------

#: numbers of 3 digits or more (NAPI ids, pids, ifindexes) differ from run to run
_VOLATILE = re.compile(r"\d{3,}")


def _comparable(lines: list[str]) -> list[str]:
    """The words of some output lines, volatile numbers replaced: the comparison holds
    across re-wrapping (a substituted name of another length wraps a report differently)."""
    return _VOLATILE.sub("N", " ".join(lines)).split()


def run_transcript(block: Block, bed: Bed) -> None:
    """Each ``$ command`` of a transcript prints what the doc shows below it (stdout, then
    stderr; the same words, numbers of 3+ digits aside), and fails exactly when the doc shows
    an error; a command shown without output (its output left out) is only run. A command
    naming `--netns` runs from this machine's namespace, as a transcript shows it."""
    for cmd, shown in block.transcript():
        where = f"{block.path}:{cmd.line}: $ {cmd.text}"
        text = substitute(cmd.text, bed)
        res = run_sh(bed, text, host="--netns" in text)
        why = _explain(where, text, res.returncode, res.stdout, res.stderr)
        lines = (res.stdout + res.stderr).splitlines()
        want = [substitute(line, bed) for line in shown]
        if shown and _comparable(lines) != _comparable(want):
            diff = difflib.unified_diff(want, lines, "the doc", "the command", lineterm="")
            raise AssertionError(f"{where}: output differs:\n" + "\n".join(diff) + f"\n{why}")
        error = any(line.startswith("netdevkit: error:") for line in shown)
        assert (res.returncode != 0) == error, why


# --- the cases ---------------------------------------------------------------------------


def _own_records(bed: Bed) -> list[str]:
    from netdevkit import journal

    journal.load_kind_modules()
    own = journal.registered_kinds().keys()
    path = bed.state / "journal.json"
    entries = json.loads(path.read_text())["entries"] if path.exists() else []
    return [f"{e['kind']} {e.get('key')}" for e in entries if e.get("kind") in own]


@pytest.mark.kernel
@pytest.mark.parametrize("block", all_blocks(), ids=lambda b: b.id)
def test_doc_block(block: Block, bed: Bed) -> None:
    for m in re.finditer(r"netdevkit testbed up(?:.*--name (\S+))?", block.source):
        bed.renames.setdefault(m.group(1) or "ndk", unique_testbed_name())
    if block.lang == "python":
        run_python_block(block, bed)
    elif block.lang == "console":
        run_transcript(block, bed)
    else:
        for cmd in block.commands():
            run_command(block, cmd, bed)
    left = _own_records(bed)
    assert not left, f"{block.id}: the block left journal records behind: {left}"
    if block.lang == "console":
        return  # a transcript may show a testbed brought up for what follows (removed after)
    names = (bed.exp, *bed.renames.values())
    left_up = [f"{n}-{s}" for n in names for s in ("srv", "cli") if netns.exists(f"{n}-{s}")]
    assert not left_up, f"{block.id}: the block left {left_up} behind"
