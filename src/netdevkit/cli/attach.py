"""``netdevkit attach``, ``netdevkit detach`` and ``netdevkit run``: busy polling for
unmodified programs.

Design (one way to undo each way to apply):

- ``netdevkit attach --pid PID --preset suspend`` sets the parameters on every epoll context
  of PID, prints one row per context and exits. The parameters stay with the program (they
  die with its epoll instances); the old values are journaled *before* the first change in
  the one journal (``$NETDEVKIT_STATE_DIR/journal.json``, default ``/run/netdevkit``, kind
  ``epoll``), so that ``netdevkit detach --pid PID`` or ``netdevkit restore`` can put them
  back later. A second attach to the same process keeps the oldest values.
- ``--hold`` stays in the foreground instead and restores on Ctrl-C, SIGTERM or SIGHUP; it
  journals too, so a ``--hold`` killed with SIGKILL is undone by ``detach --pid PID``.
  ``--watch`` (only with ``--hold``) also rescans every ``--interval`` seconds and attaches
  to contexts created later, printing a row for each.
- ``--show`` prints the contexts and their current parameters and changes nothing.
- ``netdevkit run [--preset P] [--napi --ifname X [--netns NS]] -- CMD ARGS`` starts CMD,
  attaches to its epoll contexts (and its descendants') as they appear, for its whole life;
  ``--napi`` applies the preset's per-NAPI half to the interface's NAPIs for as long as CMD
  runs and restores them afterwards (the journal covers a ``run`` that is killed: NAPI
  settings and epoll parameters alike).
  Signals are forwarded to CMD; ``run`` exits with CMD's exit status (128+N if it died of
  signal N).

Only the standard library is imported at top level (start-up time); the library is imported
by the command that runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from .argtypes import int_at_least

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..attach import AttachWatcher, ContextReport, DetachResult
    from ..busypoll.config import BusyPollConfig
    from ..busypoll.epoll import EpollParams
    from ..journal import Record

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

_FMT = argparse.RawDescriptionHelpFormatter
_FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)


# --- options ------------------------------------------------------------------------------


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.001 <= value <= 60:
        raise argparse.ArgumentTypeError("interval must be 0.001..60 seconds")
    return value


def _add_params_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("epoll busy-poll parameters (a preset, or explicit values)")
    g.add_argument("--preset", help="a preset's epoll half (see `netdevkit presets`)")
    g.add_argument("--usecs", type=int_at_least(0), help="busy_poll_usecs (0..2147483647)")
    g.add_argument("--budget", type=int_at_least(0), help="busy_poll_budget (0: kernel default 8)")
    prefer = g.add_mutually_exclusive_group()
    prefer.add_argument(
        "--prefer",
        action="store_true",
        default=None,
        help="prefer_busy_poll on: keep the NAPI's IRQs masked while polling",
    )
    prefer.add_argument(
        "--no-prefer", dest="prefer", action="store_false", help="prefer_busy_poll off"
    )


def _add_pid_arguments(p: argparse.ArgumentParser) -> None:
    """The target process, as ``attach PID`` or ``attach --pid PID`` (strace -p, perf -p)."""
    p.add_argument(
        "pid_arg", nargs="?", type=int_at_least(1), metavar="PID", help="the target process"
    )
    p.add_argument("--pid", type=int_at_least(1), help="the same, as an option")


def _target_pid(args: argparse.Namespace) -> int:
    """The pid given as PID or --pid (one of them, or both the same); RequestError if not."""
    from ..errors import RequestError

    positional, option = getattr(args, "pid_arg", None), args.pid
    if positional is not None and option is not None and positional != option:
        raise RequestError(f"two target processes given: PID {positional} and --pid {option}")
    pid: int | None = positional if positional is not None else option
    if pid is None:
        raise RequestError(f"which process? give its pid: netdevkit {args.command} PID")
    return pid


def _config(args: argparse.Namespace, default_preset: str | None) -> BusyPollConfig:
    """The config from --preset and/or --usecs/--budget/--prefer (explicit values win)."""
    import dataclasses

    from ..busypoll.config import BusyPollConfig
    from ..errors import RequestError
    from ..tuning.presets import get_preset

    explicit = (args.usecs, args.budget, args.prefer)
    name = args.preset
    if name is None and all(v is None for v in explicit):
        if default_preset is None:
            raise RequestError("say what to set: --preset NAME, or --usecs/--budget/--prefer")
        name = default_preset
    base = BusyPollConfig() if name is None else get_preset(name).epoll
    return dataclasses.replace(
        base,
        busy_poll_usecs=base.busy_poll_usecs if args.usecs is None else args.usecs,
        busy_poll_budget=base.busy_poll_budget if args.budget is None else args.budget,
        prefer_busy_poll=base.prefer_busy_poll if args.prefer is None else args.prefer,
    )


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "attach",
        help="set epoll busy-poll parameters on a running program's epoll contexts",
        description="Set busy-poll parameters on every epoll context of a running process\n"
        "(pidfd_getfd; needs root or CAP_SYS_PTRACE) and report the NAPI ids of\n"
        "each context's sockets. The old values are journaled before anything\n"
        "changes ($NETDEVKIT_STATE_DIR, default /run/netdevkit/journal.json): undo with\n"
        "`netdevkit detach --pid PID` or `netdevkit restore`, also after this\n"
        "process (or an `attach --hold`) was killed.",
        formatter_class=_FMT,
    )
    _add_pid_arguments(p)
    _add_params_options(p)
    p.add_argument("-j", "--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--show", action="store_true", help="only list the contexts; change nothing")
    p.add_argument("--hold", action="store_true", help="stay running; restore on Ctrl-C/SIGTERM")
    p.add_argument(
        "--watch", action="store_true", help="only with --hold: also attach to new contexts"
    )
    p.add_argument("--interval", type=_interval, default=0.05, help="watch interval (s)")
    p.set_defaults(func=run_attach)

    d = sub.add_parser(
        "detach",
        help="restore the epoll parameters a `netdevkit attach` changed",
        description="Restore the old busy-poll parameters that `netdevkit attach` journaled\n"
        "for PID (also when the attaching process was killed, e.g. an `attach --hold`).\n"
        "Contexts the program changed since are left alone and reported.",
        formatter_class=_FMT,
    )
    _add_pid_arguments(d)
    d.add_argument("-j", "--json", action="store_true")
    d.set_defaults(func=run_detach)

    r = sub.add_parser(
        "run",
        help="start a program with busy polling on all its epoll contexts",
        description="Start CMD and keep attaching busy-poll parameters to its epoll contexts\n"
        "(and its children's) as they appear. Default preset: suspend.\n\n"
        "  netdevkit run --preset suspend -- memcached -u root -N 2 -t 2\n"
        "  netdevkit run --napi --ifname eth1 -- redis-server --save ''",
        formatter_class=_FMT,
    )
    _add_params_options(r)
    r.add_argument("--napi", action="store_true", help="also apply the preset's NAPI half")
    r.add_argument("--ifname", help="with --napi: the interface CMD serves")
    r.add_argument("--netns", help="with --napi: the interface's network namespace")
    r.add_argument("--interval", type=_interval, default=0.05, help="scan interval (s)")
    r.add_argument(
        "--no-children", action="store_true", help="do not attach to CMD's child processes"
    )
    r.add_argument("-q", "--quiet", action="store_true", help="do not report attachments")
    r.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    r.set_defaults(func=run_run)


# --- output -------------------------------------------------------------------------------


def _sockets(c: ContextReport) -> str:
    n = sum(1 for w in c.watched if w.kind == "socket")
    other = len(c.watched) - n
    return f"{n}" + (f" (+{other} other)" if other else "")


def _rows(contexts: list[ContextReport], changed: bool) -> list[list[str]]:
    from ..busypoll.epoll import describe_change

    return [
        [
            str(c.epoll.pid),
            str(c.epoll.fd) + ("" if c.epoll.shared_table else f" (tid {c.epoll.tid})"),
            describe_change(c.old, c.new) if changed else str(c.new),
            _sockets(c),
            ",".join(map(str, c.napi_ids)) or "-",
            "mixed NAPIs" if c.mixed else "-",
        ]
        for c in contexts
    ]


def _print_contexts(contexts: list[ContextReport], empty: str, *, changed: bool = True) -> None:
    """One row per context: what attach changed (*changed*), or what it carries now."""
    from .show import print_table

    columns = ("PID>", "EPOLL FD", "CHANGE" if changed else "PARAMETERS", "SOCKETS", "NAPI IDS")
    print_table((*columns, "NOTE"), _rows(contexts, changed), empty)


def _warn(lines: Iterator[str] | list[str] | tuple[str, ...]) -> None:
    for line in lines:
        print(f"netdevkit: warning: {line}", file=sys.stderr)


# --- the journal ----------------------------------------------------------------------------


def _of_pid(pid: int) -> Callable[[Record], bool]:
    def match(r: Record) -> bool:
        return r.info.get("pid") == pid

    return match


# --- commands -----------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
    """SIGINT/SIGTERM/SIGHUP set a flag instead of killing us, so the finally-blocks restore."""
    from .._os import SignalScope

    got: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        got.append(signum)

    with SignalScope((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), handler, keep_ignored=False):
        yield got


def _report_detach(results: list[DetachResult], as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "pid": r.pid,
                        "restored": [e.fd for e in r.restored],
                        "skipped": [{"fd": e.fd, "reason": why} for e, why in r.skipped],
                    }
                    for r in results
                ]
            )
        )
        return
    for r in results:
        fds = ", ".join(str(e.fd) for e in r.restored) or "none"
        print(f"pid {r.pid}: restored epoll fd(s) {fds}")
        for e, why in r.skipped:
            print(f"pid {r.pid}: epoll {e}: {why}")


def _hold(args: argparse.Namespace, config: BusyPollConfig) -> int:
    """Attach (and with --watch keep attaching) until SIGINT/SIGTERM, then restore."""
    from ..attach import AttachWatcher
    from ..journal import Journal

    with (
        AttachWatcher(args.pid, config, follow_children=False, journal=Journal()) as watcher,
        _stop_on_signals() as got,
    ):
        try:
            first = watcher.scan()
            if not first and not args.watch:
                from ..attach import NoEpollError

                raise NoEpollError(
                    f"process {args.pid} has no epoll fd: nothing to attach to "
                    "(--watch waits for one)"
                )
            _show(args, first)
            print(f"holding; Ctrl-C or SIGTERM restores (pid {os.getpid()})", file=sys.stderr)
            while not got:
                time.sleep(args.interval)
                if not os.path.exists(f"/proc/{args.pid}"):
                    print(f"pid {args.pid} exited", file=sys.stderr)
                    return 0
                if args.watch:
                    new = watcher.scan()
                    if new:
                        _show(args, new)
        finally:
            results = watcher.detach()
            if results or sys.exc_info()[0] is None:  # a failed start reports only its error
                _report_detach(results, args.json)
    return 0


def _show(args: argparse.Namespace, contexts: list[ContextReport]) -> None:
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "pid": c.epoll.pid,
                        "tid": c.epoll.tid,
                        "fd": c.epoll.fd,
                        "old": _pdict(c.old),
                        "new": _pdict(c.new),
                        "napi_ids": list(c.napi_ids),
                        "sockets": sum(1 for w in c.watched if w.kind == "socket"),
                        "warning": c.warning,
                    }
                    for c in contexts
                ]
            ),
            flush=True,
        )
    else:
        _print_contexts(contexts, "no epoll contexts")
        sys.stdout.flush()
    _warn([c.warning for c in contexts if c.warning])


def _pdict(p: EpollParams) -> dict[str, Any]:
    return {
        "busy_poll_usecs": p.busy_poll_usecs,
        "busy_poll_budget": p.busy_poll_budget,
        "prefer_busy_poll": bool(p.prefer_busy_poll),
    }


def run_attach(args: argparse.Namespace) -> int:
    from .._os import raise_open_files_limit
    from ..attach import attach, inspect

    raise_open_files_limit()  # attach and --show hold a copy of every epoll fd at once

    args.pid = _target_pid(args)
    if args.show:
        result = inspect(args.pid)
        if args.json:
            print(json.dumps(result.to_dict()))
        else:
            _print_contexts(list(result.contexts), f"pid {args.pid} has no epoll fd", changed=False)
            _warn(result.warnings)
        return 0
    from ..errors import RequestError
    from ..journal import Journal

    if args.watch and not args.hold:
        raise RequestError("--watch keeps attaching while holding: use it with --hold")
    config = _config(args, None)
    if args.hold:
        return _hold(args, config)
    journal = Journal()
    result = attach(args.pid, config, journal=journal)  # main() prints the notes too
    path = journal.path
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        _print_contexts(list(result.contexts), "no epoll contexts")
        print(f"undo with: netdevkit detach --pid {args.pid}  (journal: {path})", file=sys.stderr)
    _warn(result.warnings)
    return 0


def run_detach(args: argparse.Namespace) -> int:
    from ..attach.core import detach_journaled
    from ..errors import NotFoundError
    from ..journal import Journal

    args.pid = _target_pid(args)
    journal = Journal()
    if not [r for r in journal.records("epoll") if _of_pid(args.pid)(r)]:
        raise NotFoundError(
            f"no attach record for pid {args.pid} in the journal ({journal.path}): "
            "nothing to restore"
        )
    results = detach_journaled(journal, _of_pid(args.pid))
    _report_detach(results, args.json)
    stuck = [r for r in journal.records("epoll") if _of_pid(args.pid)(r)]
    if stuck:
        print(
            f"netdevkit: {len(stuck)} context(s) could not be restored and stay journaled",
            file=sys.stderr,
        )
    return 1 if stuck else 0


# --- run ----------------------------------------------------------------------------------


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _terminal_delivers_sigint() -> bool:
    """Ctrl-C reaches the whole foreground process group, child included: forwarding
    SIGINT then would deliver it twice."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except OSError:
        return False


@contextlib.contextmanager
def _napi_tuned(args: argparse.Namespace, preset: str) -> Iterator[None]:
    if not args.napi:
        yield
        return
    from ..errors import RequestError

    if not args.ifname:
        raise RequestError("--napi needs --ifname: the interface whose NAPIs to tune")
    try:
        from ..tuning.context import tuned
    except ImportError as err:
        from ..errors import UnsupportedError

        raise UnsupportedError(f"--napi needs netdevkit.tuning (not available: {err})") from err
    # Signals are ours (forwarded to CMD); tuned() restores in its __exit__.
    with tuned(args.ifname, preset=preset, netns=args.netns, signals=False) as t:
        if not args.quiet:
            for change in t.changes:
                print(f"netdevkit run: {change.target.label}: {change.describe()}", file=sys.stderr)
        yield


def _watch_until_exit(
    child: subprocess.Popen[bytes], watcher: AttachWatcher, interval: float, quiet: bool
) -> None:
    """Attach to *child*'s new epoll contexts every *interval* seconds until it exits."""
    from ..busypoll.epoll import describe_change
    from ..errors import NetdevkitError

    reported = 0
    while True:
        try:
            child.wait(timeout=interval)
            return
        except subprocess.TimeoutExpired:
            pass
        try:
            added = watcher.scan()
        except NetdevkitError as err:
            print(f"netdevkit run: warning: {err}", file=sys.stderr)
            continue
        if not quiet:
            for c in added:
                print(
                    f"netdevkit run: pid {c.epoll.pid} epoll {c.epoll}: "
                    + describe_change(c.old, c.new),
                    file=sys.stderr,
                )
        _warn(watcher.warnings[reported:])
        reported = len(watcher.warnings)


def run_run(args: argparse.Namespace) -> int:
    from ..attach import AttachWatcher
    from ..errors import RequestError
    from ..journal import Journal

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise RequestError("nothing to run: netdevkit run [OPTIONS] -- CMD ARGS...")
    config = _config(args, "suspend")
    preset = args.preset or "suspend"
    with _napi_tuned(args, preset):
        try:
            child = subprocess.Popen(cmd)
        except OSError as err:
            raise RequestError(f"cannot start {cmd[0]!r}: {err.strerror}") from err
        skip_int = _terminal_delivers_sigint()

        def forward(signum: int, frame: FrameType | None) -> None:
            if signum == signal.SIGINT and skip_int:
                return
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

        from .._os import SignalScope

        scope = SignalScope(_FORWARDED, forward, keep_ignored=False)
        scope.install()
        watcher: AttachWatcher | None = None
        try:
            watcher = AttachWatcher(
                child.pid, config, follow_children=not args.no_children, journal=Journal()
            )
            with watcher as w:
                _watch_until_exit(child, w, args.interval, args.quiet)
        finally:
            scope.restore()
            if child.poll() is None:  # we are dying of an exception: take CMD along
                child.terminate()
                child.wait()
            if watcher is not None:
                _drop_contexts(watcher)
    return _exit_status(child.returncode)


def _drop_contexts(watcher: AttachWatcher) -> None:
    """CMD has exited: its epoll contexts went with it. Drop their journal records (and
    put back any context still alive), so that `napi diff` and `restore` find nothing of
    this run; a record that could not be handled stays, and is named."""
    from ..errors import NetdevkitError

    try:
        results = watcher.detach()
    except NetdevkitError as err:
        print(f"netdevkit run: warning: {err} (run `netdevkit restore`)", file=sys.stderr)
        return
    left = watcher.journal.records("epoll") if watcher.journal is not None else []
    mine = {str(r.pid) for r in results}
    stuck = [r for r in left if str(r.info.get("pid")) in mine]
    if stuck:
        print(
            f"netdevkit run: warning: {len(stuck)} epoll context(s) stay journaled "
            "(run `netdevkit restore`)",
            file=sys.stderr,
        )
