"""Entry point of the ``netdevkit`` command.

Each command lives in a module whose ``register*(subparsers)`` functions add
it; :data:`COMMANDS` says which functions add which command, and only those of
the command that runs are imported and called. Those modules import only the
standard library at top level and import the library (and heavy dependencies
such as pyroute2 or rich) inside the function that runs the command.
"""

from __future__ import annotations

import _thread
import argparse
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from .. import __version__
from ..errors import NetdevkitError, RequestError

_SHOW, _TUNE = "netdevkit.cli.show:register_", "netdevkit.cli.tune:register_"
_ATTACH = "netdevkit.cli.attach:register"  # attach, detach and run

#: command word -> (its one-line help, the ``module:function`` calls that add it).
#: Each function takes the subparsers; only the command that runs is registered.
#: Order here is the order in `netdevkit --help`.
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "dev": ("network devices and their XDP/AF_XDP features", (_SHOW + "dev",)),
    "queue": (
        "RX and TX queues and the NAPI instance serving each",
        (_SHOW + "queue", "netdevkit.cli.queue:register"),
    ),
    "napi": (
        "NAPI instances: queues, IRQ, kthread and per-NAPI settings",
        (_SHOW + "napi", _TUNE + "napi"),
    ),
    "qstats": (
        "per-device or per-queue packet/byte counters the driver reports",
        (_SHOW + "qstats",),
    ),
    "page-pool": (
        "page pools: pages in flight, the NAPI they serve, statistics",
        (_SHOW + "page_pool",),
    ),
    "doctor": (
        "readiness report: kernel, config, netdev family, NAPIs, busy poll, devmem",
        ("netdevkit.cli.doctor:register",),
    ),
    "apply": (
        "apply a declarative tuning profile (TOML); --dry-run shows the diff",
        (_TUNE + "apply",),
    ),
    "restore": (
        "put back everything netdevkit changed (NAPI settings, epoll parameters, ...)",
        (_TUNE + "restore",),
    ),
    "presets": (
        "list the tuning presets: NAPI settings and the epoll parameters they pair with",
        (_TUNE + "presets",),
    ),
    "attach": ("set epoll busy-poll parameters on a running program's epoll contexts", (_ATTACH,)),
    "detach": ("restore the epoll parameters a `netdevkit attach` changed", (_ATTACH,)),
    "run": ("start a program with busy polling on all its epoll contexts", (_ATTACH,)),
    "bench": (
        "measure latency and CPU of each NAPI/busy-poll mode in a veth testbed",
        ("netdevkit.cli.bench:register",),
    ),
    "testbed": (
        "build, list and remove the two-namespace veth testbed (NAPI test device)",
        ("netdevkit.cli.testbed:register",),
    ),
    "top": (
        "live per-queue and per-NAPI rates, settings and busy-poll activity",
        ("netdevkit.cli.top:register",),
    ),
    "monitor": (
        "print netdev notifications (devices, page pools) as they arrive",
        ("netdevkit.cli.monitor:register",),
    ),
    "exporter": (
        "serve Prometheus metrics of queues, NAPIs, page pools and busy polling",
        ("netdevkit.cli.exporter:register",),
    ),
    "devmem": (
        "Device Memory TCP: prepare a NIC, receive into / send from a dmabuf",
        ("netdevkit.cli.devmem:register",),
    ),
}

DESCRIPTION = """\
Per-NAPI tuning, epoll busy polling, IRQ suspension and Device Memory TCP,
made usable, observable and measurable on a real Linux kernel.

Read commands work for any user; changes need root (CAP_NET_ADMIN).
--netns NAME acts inside a named network namespace; it is taken by the commands
that name an interface: dev, queue, napi, qstats, page-pool, doctor, restore,
top, monitor, exporter, devmem, run (for --napi) and bench (for --ifname). apply
reads the namespace from its profile; presets, attach, detach and testbed take no
--netns.
-j/--json gives machine-readable output (not for run and exporter).
"""

#: the commands whose subcommands all take --netns, as DESCRIPTION lists them
NETNS_COMMANDS = (
    *("dev", "queue", "napi", "qstats", "page-pool", "doctor", "restore", "top", "monitor"),
    *("exporter", "devmem", "run", "bench"),
)


class UsageError(Exception):
    """A command line argparse refused; main() prints it as one line and returns 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (usage is in --help).

    Subcommand parsers are made with the same class (argparse's ``parser_class`` default).
    """

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse's own asks shutil for the width (for each add_argument), which
        # imports shutil, bz2, lzma and zlib at every start-up; the same width here
        formatter: Callable[..., argparse.HelpFormatter] = self.formatter_class
        return formatter(prog=self.prog, width=_terminal_width() - 2)

    def error(self, message: str) -> NoReturn:
        # main() says "netdevkit: error: "; the command is named in the --help hint
        raise UsageError(_usage_line(message, self.prog))

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        # the innermost (sub)command returns first: its name is the one to point at
        if extras and not hasattr(ns, "_extras_of"):
            ns._extras_of = self.prog
        return ns, extras

    def parse_command_line(self, argv: Sequence[str]) -> argparse.Namespace:
        """parse_args, but arguments no command takes are blamed on the command given."""
        ns, extras = self.parse_known_args(argv)
        if extras:
            message = f"unrecognized arguments: {' '.join(extras)}"
            raise UsageError(_usage_line(message, getattr(ns, "_extras_of", self.prog)))
        return ns


def _usage_line(message: str, prog: str) -> str:
    # argparse quotes the bad value whole: keep a line readable for any input
    message = re.sub(r"'([^']{40})[^']{20,}'", r"'\1...'", message)
    return f"{message} (see `{prog} --help`)"


def _terminal_width() -> int:
    """The terminal's width as :func:`shutil.get_terminal_size` finds it: ``$COLUMNS``,
    else the width of stdout's terminal, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def build_parser(argv: Sequence[str] | None = None) -> Parser:
    """The parser for command line *argv*, registering only what it needs.

    When *argv* starts with a command word, the functions that add that
    command are imported and called (one may add sibling commands too).
    Otherwise (``--help``, a mistyped or missing command) every command is a
    placeholder with its one-line help from :data:`COMMANDS`, which is all
    ``netdevkit --help`` and argparse's "invalid choice" message show. With
    *argv* None every command is registered: the whole parser.
    """
    parser = Parser(
        prog="netdevkit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"netdevkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    words = list(COMMANDS) if argv is None else [w for w in argv[:1] if w in COMMANDS]
    registered: set[str] = set()
    for word in words:
        for where in COMMANDS[word][1]:
            if where not in registered:
                registered.add(where)
                module, function = where.split(":")
                # __import__ returns the module itself when given a fromlist; importlib
                # would be one more import at every start-up
                getattr(__import__(module, fromlist=[function]), function)(sub)
    if not words:
        for word, (help_, _modules) in COMMANDS.items():
            sub.add_parser(word, help=help_)
    return parser


def flag_spelling(name: str, value: str) -> str:
    """A library parameter named in an error's hint, spelled as this CLI's flag.

    ``force=True`` -> ``--force``, ``backend='sysfs'`` -> ``--backend sysfs``,
    ``defer_hard_irqs`` -> ``--defer-hard-irqs`` (every command names its flags so).
    """
    flag = "--" + name.replace("_", "-")
    value = value.strip("'\"")
    return flag if value in ("", "True") else f"{flag} {value}"


def _with_notes(err: BaseException) -> str:
    """The error (its hint in CLI flags) and its notes (what was rolled back, what to do)
    as one message."""
    text = err.describe(flag_spelling) if isinstance(err, NetdevkitError) else str(err)
    return "; ".join([text, *getattr(err, "__notes__", ())])


def _say(message: str) -> None:
    """One line on stderr, whatever the message holds (a value with a newline, a NUL...)."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    print(f"netdevkit: {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0, 1 refused, 2 bad input, 128+N signal N).

    Called as the program (*argv* None), a signal that arrives once the command has
    finished is ignored: its work is done and reported, and the status says how it went.
    """
    as_program = argv is None and threading.current_thread() is threading.main_thread()
    _Run.as_program = as_program
    if as_program:
        sys.unraisablehook = _interrupt_not_lost
    try:
        return _run(argv)
    finally:
        if as_program:
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            # CPython 3.11/3.12 remember a KeyboardInterrupt that escaped code run from a
            # string (exec/eval: dataclasses and namedtuples build methods that way) even
            # when we caught it later, and then exit by SIGINT instead of our status. A
            # string executed without one clears that memory (pythonrun.c,
            # run_eval_code_obj).
            exec("pass")


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Run:
    #: whether :func:`main` runs as the program (not called in-process by a test or a caller)
    as_program = False


def command_finished() -> None:
    """The command's changes are made and reported: run as the program, a stop signal from
    here on is ignored, as :func:`main` promises once the command has finished.

    Without it a signal landing in the few instructions left before ``main`` returns, or
    re-raised late by :func:`_interrupt_not_lost` after one was lost in a finalizer,
    reported a finished command as a bare "interrupted" (seen once in the 256-NAPI Ctrl-C
    test). Python drops a signal whose handler is SIG_IGN by the time it acts on it, and
    ``_thread.interrupt_main`` does nothing then.
    """
    if _Run.as_program and threading.current_thread() is threading.main_thread():
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


_default_unraisablehook = sys.unraisablehook


def _interrupt_main_soon() -> None:
    time.sleep(0.001)
    _thread.interrupt_main(signal.SIGINT)


def _interrupt_not_lost(unraisable: sys.UnraisableHookArgs) -> None:
    """Deliver again a Ctrl-C that CPython would print as "Exception ignored" and drop.

    A KeyboardInterrupt raised inside a finalizer or a weakref callback cannot propagate
    (seen: importlib's module-lock callback during a lazy import); CPython prints a
    traceback and goes on as if nothing happened. Tripping SIGINT again (from a thread)
    makes the handler in force (the default one, or a tuning deferral) act on it at the
    next safe place; if the command is over by then, its finished status stands.
    """
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        # Not from here: a signal tripped now is handled before this hook returns, inside
        # the callback again. A thread trips it once the main thread is back in plain code.
        _thread.start_new_thread(_interrupt_main_soon, ())  # does not wait for the thread
        return
    _default_unraisablehook(unraisable)


def _run(argv: Sequence[str] | None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    try:
        parser = build_parser(argv)
        args = parser.parse_command_line(argv)
    except UsageError as err:
        _say(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        _say("interrupted before the command started: nothing changed")
        return 128 + signal.SIGINT
    try:
        rc: int | None = args.func(args)
    except RequestError as err:
        _say(f"error: {_with_notes(err)}")
        return 2
    except NetdevkitError as err:
        _say(f"error: {_with_notes(err)}")
        return 1
    except KeyboardInterrupt as err:
        # Interrupted (a signal stopped a change at a safe point) says what was undone.
        signum = getattr(err, "signum", signal.SIGINT)
        _say(f"interrupted{f': {err}' if str(err) else ''}")
        return 128 + int(signum)
    except BrokenPipeError:
        return 0
    except OSError as err:  # the system refused something the library did not translate
        _say(f"error: {err}")
        return 1
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
