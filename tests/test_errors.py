"""The error boundary: translate_oserror's errno table, hints and their CLI spelling,
every exception class in netdevkit.errors, and real system calls refused through it."""

from __future__ import annotations

import ast
import errno
import importlib
import os
import pathlib
import re
import select
import socket
import subprocess
import sys

import pytest

from netdevkit import errors
from netdevkit.attach.pidfd import Pidfd
from netdevkit.busypoll.epoll import EpollParams, get_params, set_params
from netdevkit.busypoll.sockopt import get_busy_poll
from netdevkit.cli.main import flag_spelling
from netdevkit.errors import (
    FdGone,
    KernelError,
    NetdevkitError,
    NotFoundError,
    PermissionDenied,
    ProcessGone,
    RequestError,
    UnsupportedError,
    translate_oserror,
)

SRC = pathlib.Path(errors.__file__).parent


# -- translate_oserror: errno -> class ------------------------------------------------

GONE = {errno.ESRCH: "process 7 is gone", errno.ENODEV: "no such interface"}
UNSUPPORTED = {errno.ENOSYS: "needs Linux >= 5.6", errno.ENOTTY: "no ioctl"}
INVALID = {errno.EBADF: "fd 3 is not open", errno.ENOTSOCK: "fd 3 is not a socket"}


@pytest.mark.parametrize(
    ("code", "capability", "expected", "message"),
    [
        # the call site's own meanings
        (errno.ESRCH, None, NotFoundError, "process 7 is gone"),
        (errno.ENODEV, "CAP_NET_ADMIN", NotFoundError, "no such interface"),
        (errno.ENOSYS, None, UnsupportedError, "needs Linux >= 5.6"),
        (errno.ENOTTY, None, UnsupportedError, "no ioctl"),
        (errno.EBADF, None, RequestError, "fd 3 is not open"),
        (errno.ENOTSOCK, None, RequestError, "fd 3 is not a socket"),
        # permission: only where the call site names the capability
        (errno.EPERM, "CAP_NET_ADMIN", PermissionDenied, "needs CAP_NET_ADMIN"),
        (errno.EACCES, "CAP_SYS_PTRACE", PermissionDenied, "needs CAP_SYS_PTRACE"),
        (errno.EPERM, None, KernelError, "op: Operation not permitted (EPERM)"),
        # everything else: the kernel's refusal, errno kept
        (errno.EINVAL, "CAP_NET_ADMIN", KernelError, "op: Invalid argument (EINVAL)"),
        (errno.ENOENT, None, KernelError, "op: No such file or directory (ENOENT)"),
        (errno.EMFILE, None, KernelError, "(EMFILE)"),
    ],
)
def test_translate_oserror_table(
    code: int, capability: str | None, expected: type[NetdevkitError], message: str
) -> None:
    for err in (OSError(code, os.strerror(code)), code):  # an OSError or a bare errno
        got = translate_oserror(
            err,
            "op",
            capability=capability,
            gone=GONE,
            unsupported=UNSUPPORTED,
            invalid=INVALID,
        )
        assert type(got) is expected
        assert message in str(got)
        if isinstance(got, KernelError):
            assert got.errno == code and got.operation == "op"
        if isinstance(got, PermissionDenied):
            assert got.capability == capability


def test_translate_oserror_returns_the_call_sites_own_exception() -> None:
    gone = ProcessGone("process 7 exited")
    got = translate_oserror(OSError(errno.ESRCH, "x"), "op", gone={errno.ESRCH: gone})
    assert got is gone


def test_translate_oserror_without_errno_reads_as_eio_and_keeps_the_hint() -> None:
    got = translate_oserror(OSError("no errno"), "recv", hint="is the peer gone?")
    assert isinstance(got, KernelError) and got.errno == errno.EIO
    assert str(got) == "recv: Input/output error (EIO); is the peer gone?"
    assert got.strerror == str(got) and got.hint == "is the peer gone?"


def test_denied_because_explains_the_capability() -> None:
    got = translate_oserror(errno.EPERM, "getfd", capability="CAP_X", denied_because=" (why)")
    assert isinstance(got, PermissionDenied)
    assert str(got).startswith("getfd (why): Operation not permitted (EPERM); needs CAP_X")


# -- hints --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "library", "cli"),
    [
        ("or add `force=True`", "or add force=True", "or add --force"),
        (
            "use the sysfs backend (`backend='sysfs'`)",
            "use the sysfs backend (backend='sysfs')",
            "use the sysfs backend (--backend sysfs)",
        ),
        ("name it (`ifname=DEV`)", "name it (ifname=DEV)", "name it (--ifname DEV)"),
        (
            "give `defer_hard_irqs` or `threaded`",
            "give defer_hard_irqs or threaded",
            "give --defer-hard-irqs or --threaded",
        ),
        ("plain advice, no parameter", "plain advice, no parameter", "plain advice, no parameter"),
    ],
)
def test_hint_spelled_for_the_library_and_for_the_cli(hint: str, library: str, cli: str) -> None:
    err = RequestError("refused", hint=hint)
    assert err.hint == hint
    assert str(err) == f"refused; {library}"
    assert err.describe(flag_spelling) == f"refused; {cli}"


def test_no_hint_leaves_the_message_alone() -> None:
    err = NotFoundError("no interface named 'x'")
    assert err.hint == "" and str(err) == "no interface named 'x'"
    assert err.describe(flag_spelling) == str(err)
    assert str(NetdevkitError("a", "b")) == str(Exception("a", "b"))


def test_kernel_error_hint_is_part_of_its_message() -> None:
    err = PermissionDenied(errno.EPERM, "set x", "CAP_NET_ADMIN")
    assert err.hint == "needs CAP_NET_ADMIN (run as root or grant CAP_NET_ADMIN)"
    assert str(err) == f"set x: Operation not permitted (EPERM); {err.hint}"
    assert isinstance(err, OSError) and err.errno == errno.EPERM


# -- every class in errors.py, importable from where it was ---------------------------

MOVED = {
    "netdevkit.netlink.socket": ("DumpInterrupted", "ErrorReply", "NotificationsLost"),
    "netdevkit.tuning.model": ("TuningError",),
    "netdevkit.devmem.tool": ("ValidationError",),
    "netdevkit.devmem.rx": ("OutstandingLimit", "TokenReturnError"),
    "netdevkit.devmem": ("OutstandingLimit", "TokenReturnError"),
    "netdevkit.observe.sources": ("NamespaceGone",),
    "netdevkit.attach.core": ("NoEpollError",),
    "netdevkit.attach.pidfd": ("FdGone", "ProcessGone"),
    "netdevkit.attach": ("FdGone", "NoEpollError", "ProcessGone"),
    "netdevkit.busypoll.epoll": ("ParamsMismatchError",),
    "netdevkit.busypoll": ("ParamsMismatchError",),
}


@pytest.mark.parametrize("module", sorted(MOVED))
def test_moved_classes_still_importable_from_their_old_module(module: str) -> None:
    mod = importlib.import_module(module)
    for name in MOVED[module]:
        assert getattr(mod, name) is getattr(errors, name)


def test_every_exception_class_is_defined_in_errors_py() -> None:
    """Outside errors.py, only the CLI's argparse refusal and private control flow."""
    allowed = {("cli/main.py", "UsageError"), ("attach/records.py", "_Gone")}
    allowed.add(("_signals.py", "Interrupted"))  # a KeyboardInterrupt, not an error
    found = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                re.search(r"(Error|Exception|Interrupt|Gone)$", ast.unparse(base))
                for base in node.bases
            ):
                found.add((rel, node.name))
    assert found <= allowed, found - allowed
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, NetdevkitError), name


_FLAG = re.compile(r"(^|[\s(`'])--[a-z]")


def test_library_errors_name_no_cli_flag() -> None:
    """A message raised outside the CLI names library parameters (hints), not flags."""
    # a user's own server command line, quoted as an example, keeps its own flags
    allowed = {"bench/byo.py": "myserver.py --host"}
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("cli/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Raise):
                continue
            for sub in ast.walk(node):
                if (
                    isinstance(sub, ast.Constant)
                    and isinstance(sub.value, str)
                    and _FLAG.search(sub.value)
                    and allowed.get(rel, "\0") not in sub.value
                ):
                    offenders.append(f"{rel}:{sub.lineno}: {sub.value!r}")
    assert not offenders, offenders


# -- real system calls refused through translate_oserror ---------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_pidfd_of_an_exited_process_is_process_gone() -> None:
    pid = _dead_pid()
    with pytest.raises(ProcessGone, match=f"process {pid} does not exist") as info:
        Pidfd.open(pid)
    assert isinstance(info.value, NotFoundError)
    assert isinstance(info.value.__cause__, ProcessLookupError)


def test_pidfd_getfd_of_a_closed_fd_is_fd_gone() -> None:
    r, w = os.pipe()
    closed = 1000 + w
    os.dup2(w, closed)
    os.close(closed)  # a number no later open takes: far above the lowest free one
    with Pidfd.open(os.getpid()) as pidfd:
        with pytest.raises(FdGone, match=f"process {os.getpid()} has no fd {closed} any more"):
            pidfd.getfd(closed)
        dup = pidfd.getfd(r)  # an fd that is there is copied
    assert os.path.sameopenfile(dup, r)
    for fd in (dup, r, w):
        os.close(fd)


def test_epoll_ioctl_on_a_closed_fd_is_a_request_error() -> None:
    ep = select.epoll()
    fd = ep.fileno()
    ep.close()
    with pytest.raises(RequestError, match=f"fd {fd} is not an open file descriptor"):
        get_params(fd)
    with pytest.raises(RequestError, match=f"fd {fd} is not an open file descriptor"):
        set_params(fd, EpollParams(10, 8, False))


def test_sockopt_on_a_closed_socket_is_a_request_error() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.close()
    with pytest.raises(RequestError, match="socket is closed"):
        get_busy_poll(sock)


def test_cli_prints_the_hint_with_its_flags(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The library's "nothing to set" names NapiSettings fields; the CLI names its flags."""
    from netdevkit.cli.main import main

    monkeypatch.setenv("NETDEVKIT_STATE_DIR", str(tmp_path))
    assert main(["napi", "set", "--ifname", "lo"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "netdevkit: error: nothing to set; give a preset or at least one of --defer-hard-irqs, "
        "--gro-flush-timeout, --irq-suspend-timeout, --threaded\n"
    )


def test_timerfd_and_netlink_socket_out_of_fds_are_kernel_errors() -> None:
    """With no fd left (RLIMIT_NOFILE), timerfd_create and socket() fail with EMFILE:
    KernelError (still an OSError) naming the call, in a child so the limit stays there."""
    code = (
        "import errno, os, resource\n"
        "from netdevkit.busypoll.fastloop import TimerFd\n"
        "from netdevkit.errors import KernelError\n"
        "from netdevkit.netlink.socket import GenlSocket\n"
        "fds = [int(n) for n in os.listdir('/proc/self/fd')]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (max(fds) + 1, max(fds) + 1))\n"
        "while True:\n"
        "    try:\n"
        "        os.open('/dev/null', os.O_RDONLY)\n"
        "    except OSError:\n"
        "        break\n"
        "for make in (TimerFd, GenlSocket.open):\n"
        "    try:\n"
        "        make()\n"
        "    except KernelError as err:\n"
        "        assert isinstance(err, OSError) and err.errno == errno.EMFILE\n"
        "        print(err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.splitlines() == [
        "timerfd_create: Too many open files (EMFILE)",
        "open a generic netlink socket: Too many open files (EMFILE)",
    ], out
