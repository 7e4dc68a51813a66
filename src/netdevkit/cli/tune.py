"""``netdevkit napi set|diff``, ``apply``, ``restore``, ``presets``: change NAPI settings safely.

Every change is planned and validated first, journaled (the values before,
fsync'd) and then applied in order; a refusal rolls back what was applied.
``restore`` puts back everything the journal lists, also after a crash.

``napi set`` and ``napi diff`` hang below the ``napi`` parser that
:mod:`netdevkit.cli.show` owns (through its :func:`napi_subparsers` hook);
``apply``, ``restore`` and ``presets`` are top-level commands.

Like the other CLI modules this imports the standard library only at top
level; the tuning library is imported by the command that runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .show import napi_subparsers

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..journal import DiffOutcome, Record
    from ..tuning.model import Plan
    from ..tuning.napi import Tuner
    from ..tuning.presets import NapiSettings
    from ..tuning.watch import ProfileWatcher
    from .show import SubParsers

_FMT = argparse.RawDescriptionHelpFormatter

KNOBS_HELP = """\
the knobs (per NAPI instance, Linux 6.13+; see `netdevkit presets`):
  defer-hard-irqs N       after a poll, keep the device IRQ masked for up to N
                          empty polls (0..2147483647); needs gro-flush-timeout
  gro-flush-timeout D     the timer that re-polls while IRQs stay masked
  irq-suspend-timeout D   while an epoll loop with prefer_busy_poll keeps finding
                          events, keep IRQs suspended up to D (a safety net)
  threaded on|off|busy-poll  poll in a per-NAPI kthread instead of softirq
                          (busy-poll: the kthread busy polls without pause, 6.19+)
durations take ns, us, ms or s (200us, 20ms); a bare number is nanoseconds.
"""

SAFETY_HELP = """\
safety: every value is checked and every target looked up before anything
changes; the previous values are written to the journal ($NETDEVKIT_STATE_DIR,
default /run/netdevkit/journal.json) before the first change; if the kernel
refuses one change, those before it are rolled back; Ctrl-C, SIGTERM or SIGHUP
roll back every change made (nothing changed). `netdevkit restore` puts
everything back (also after a SIGKILL), `netdevkit napi diff` shows what
differs from before. Timeouts above 120s are refused (see docs/tuning.md).

backends: per-NAPI netlink (napi-set) where the kernel has it, else the
device-wide sysfs knobs /sys/class/net/DEV/{napi_defer_hard_irqs,
gro_flush_timeout,threaded} (all NAPIs of the device, no irq-suspend-timeout).
--backend or $NETDEVKIT_TUNING_BACKEND picks one explicitly.
"""

SET_EPILOG = f"""\
examples:
  netdevkit napi set --ifname eth0 --preset suspend
  netdevkit napi set --id 8193,8194 --gro-flush-timeout 200us --defer-hard-irqs 100
  netdevkit napi set --ifname ndk-s --netns lab --threaded on --dry-run

{KNOBS_HELP}
--preset sets the NAPI half of a preset; explicit knobs override it. The epoll
half (busy_poll_usecs, budget, prefer_busy_poll) is the application's part: see
`netdevkit presets`.

{SAFETY_HELP}"""

APPLY_EPILOG = """\
The profile is TOML (format: docs/tuning.md, example: examples/profile.toml):

  netns = "lab"                      # optional
  [[interface]]
  match = "eth*"                     # exact name or glob
  preset = "suspend"                 # and/or explicit knobs:
  gro-flush-timeout = "50us"
  [[interface.napi]]                 # per-NAPI override by position 0..n-1
  position = 0                       # (NAPIs ordered by id on the device)
  defer-hard-irqs = 200

Interfaces and positions are resolved when the profile is applied (NAPI ids
change when a device is reset). Unknown keys are refused with their name.
Applying a profile that is already in effect prints "no changes".
"""


def register(sub: SubParsers) -> None:
    """Add ``napi set``, ``napi diff``, ``apply``, ``restore`` and ``presets``."""
    for add in (register_napi, register_apply, register_restore, register_presets):
        add(sub)


def register_napi(sub: SubParsers) -> None:
    """Add ``napi set`` and ``napi diff``."""
    napi = napi_subparsers(sub)
    p = napi.add_parser(
        "set",
        help="change per-NAPI settings (IRQ deferral, GRO timer, IRQ suspension, threaded)",
        description="Change the settings of NAPI instances: one or more ids, or every NAPI\n"
        "of an interface. Prints each change as before -> after.",
        epilog=SET_EPILOG,
        formatter_class=_FMT,
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", metavar="N[,N..]", help="NAPI ids (see `netdevkit napi show`)")
    which.add_argument("--ifname", metavar="NAME", help="every NAPI of interface NAME")
    p.add_argument("--preset", metavar="NAME", help="start from a preset's NAPI values")
    p.add_argument("--defer-hard-irqs", metavar="N", help="empty polls before IRQs return")
    p.add_argument("--gro-flush-timeout", metavar="DURATION", help="deferral timer, e.g. 200us")
    p.add_argument(
        "--irq-suspend-timeout", metavar="DURATION", help="IRQ suspension cap, e.g. 20ms"
    )
    p.add_argument(
        "--threaded",
        metavar="on|off|busy-poll",
        help="poll in a per-NAPI kthread; busy-poll: the kthread busy polls (Linux 6.19+)",
    )
    _common(p, dry_run=True)
    p.set_defaults(func=run_set)

    p = napi.add_parser(
        "diff",
        help="what differs now from the values before netdevkit changed them",
        description="Compare every journaled object with its value before netdevkit first\n"
        "changed it: NAPIs (or devices), and every other kind in the journal (epoll\n"
        "parameters set by `attach`, ...). A NAPI whose id vanished is compared\n"
        "through the NAPI now at its position on the same device.",
        formatter_class=_FMT,
    )
    _journal_filter(p)
    p.set_defaults(func=run_diff)


def register_apply(sub: SubParsers) -> None:
    p = sub.add_parser(
        "apply",
        help="apply a declarative tuning profile (TOML); --dry-run shows the diff",
        description="Apply a tuning profile: interfaces by name or glob, presets or values,\n"
        "per-NAPI overrides by position. Journaled and rolled back like `napi set`.",
        epilog=APPLY_EPILOG,
        formatter_class=_FMT,
    )
    p.add_argument("profile", metavar="PROFILE.toml")
    p.add_argument("--backend", metavar="auto|netlink|sysfs", help="override the profile's")
    p.add_argument("--dry-run", action="store_true", help="print the changes, change nothing")
    p.add_argument("-j", "--json", action="store_true", help="print JSON")
    w = p.add_argument_group("keeping it applied (--watch; see docs/fleet.md)")
    w.add_argument(
        "--watch",
        action="store_true",
        help="stay running: re-apply (journaled) when a matching interface appears, comes "
        "back or gets new NAPIs; one log line per re-application; SIGTERM ends it",
    )
    w.add_argument(
        "--restore-on-exit",
        action="store_true",
        help="with --watch: on SIGTERM/SIGINT undo what the watcher applied",
    )
    w.add_argument(
        "--debounce",
        metavar="DURATION",
        default="200ms",
        help="with --watch: re-read this long after the first event of a burst (default 200ms)",
    )
    w.add_argument(
        "--recheck",
        metavar="DURATION",
        help="with --watch: also re-read this often (the kernel announces no change of a "
        "NAPI setting; default: only on link/device notifications)",
    )
    p.set_defaults(func=run_apply)


def register_restore(sub: SubParsers) -> None:
    p = sub.add_parser(
        "restore",
        help="put back everything netdevkit changed (NAPI settings, epoll parameters, ...)",
        description="Put every journaled change back -- NAPI settings, the epoll parameters\n"
        "`attach` set, and every other kind in the journal -- and empty it. Works from\n"
        "any process, also after the one that made the changes was killed (SIGKILL).\n"
        "Objects that vanished (a NAPI after a device reset, a process that exited)\n"
        "are reported, not failed; entries that could not be restored stay in the\n"
        "journal (exit status 1). Testbeds still up are named, with the command that\n"
        "removes them (`netdevkit testbed down --all`).",
        formatter_class=_FMT,
    )
    _journal_filter(p)
    p.set_defaults(func=run_restore)


def register_presets(sub: SubParsers) -> None:
    p = sub.add_parser(
        "presets",
        help="list the tuning presets: NAPI settings and the epoll parameters they pair with",
        description="Named presets of the IRQ-suspension evaluation. The NAPI half is what\n"
        "`napi set --preset` and profiles apply; the epoll half is what the\n"
        "application's epoll context should use (EPIOCSPARAMS, `netdevkit attach`).",
        formatter_class=_FMT,
    )
    p.add_argument("-j", "--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_presets)


def _journal_filter(p: argparse.ArgumentParser) -> None:
    """The options of the commands that read the journal (`napi diff`, `restore`)."""
    p.add_argument("--netns", metavar="NAME", help="only entries of network namespace NAME")
    p.add_argument("--ifname", metavar="NAME", help="only entries of interface NAME")
    p.add_argument("--kind", metavar="KIND", help="only entries of one kind (napi, epoll, ...)")
    p.add_argument("-j", "--json", action="store_true", help="print JSON")


def _common(p: argparse.ArgumentParser, *, dry_run: bool) -> None:
    p.add_argument("--netns", metavar="NAME", help="act inside network namespace NAME")
    p.add_argument(
        "--backend",
        metavar="auto|netlink|sysfs",
        help="netlink (per NAPI), sysfs (device-wide) or auto (default)",
    )
    if dry_run:
        p.add_argument("--dry-run", action="store_true", help="print the changes, change nothing")
    p.add_argument("-j", "--json", action="store_true", help="print JSON")


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")


def _ids(text: str) -> list[int]:
    from ..errors import RequestError

    out = []
    for part in text.split(","):
        try:
            value = int(part.strip(), 10)
        except ValueError:
            raise RequestError(f"--id {text!r}: {part!r} is not a NAPI id (an integer)") from None
        if value <= 0:
            raise RequestError(f"--id {text!r}: NAPI ids are positive, not {value}")
        out.append(value)
    return out


def _settings(args: argparse.Namespace) -> NapiSettings:
    from ..tuning.model import overlay, settings_from_mapping
    from ..tuning.presets import NapiSettings, get_preset

    base = get_preset(args.preset).napi if args.preset else NapiSettings()
    given = {
        name: getattr(args, name.replace("-", "_"))
        for name in ("defer-hard-irqs", "gro-flush-timeout", "irq-suspend-timeout", "threaded")
        if getattr(args, name.replace("-", "_")) is not None
    }
    return overlay(base, settings_from_mapping(given))


@contextlib.contextmanager
def _honest_interrupt(tuners: list[Tuner]) -> Iterator[None]:
    """A Ctrl-C outside apply's own safe points says whether the changes stand.

    apply() rolls back and says so itself (``Interrupted``); a plain KeyboardInterrupt
    came before it started (nothing changed) or after it completed (the changes stay,
    journaled).
    """
    from .._signals import Interrupted
    from .main import command_finished

    try:
        yield
        command_finished()  # inside the try: a signal before it is still told apart here
    except KeyboardInterrupt as err:
        if isinstance(err, Interrupted):
            raise
        done = tuners[0].completed if tuners else None
        if done is not None and done.changes:
            raise Interrupted(
                signal.SIGINT,
                f"after all {len(done.changes)} change(s) were made: they stay, journaled "
                "(undo with `netdevkit restore`)",
            ) from None
        raise Interrupted(signal.SIGINT, "before any change: nothing changed") from None


def run_set(args: argparse.Namespace) -> int:
    tuners: list[Tuner] = []
    with _honest_interrupt(tuners):
        from ..tuning.napi import Tuner

        settings = _settings(args)  # bad values fail here, before any lookup
        ids = _ids(args.id) if args.id is not None else None
        tuners.append(Tuner(args.backend))
        with tuners[0] as tuner:
            plan = tuner.plan_for(settings, netns=args.netns, ifname=args.ifname, napi_ids=ids)
            if not args.dry_run:
                tuner.apply(plan)
        _report(args, plan, tuner)
    return 0


def run_apply(args: argparse.Namespace) -> int:
    if args.watch or args.restore_on_exit or args.recheck is not None:
        return _run_watch(args)
    tuners: list[Tuner] = []
    with _honest_interrupt(tuners):
        from ..tuning.napi import Tuner
        from ..tuning.profile import load_profile, plan_profile

        profile = load_profile(args.profile)
        tuners.append(Tuner(args.backend or profile.backend))
        with tuners[0] as tuner:
            plan = plan_profile(tuner, profile)
            if not args.dry_run:
                tuner.apply(plan)
        _report(args, plan, tuner)
    return 0


def _watch_args(args: argparse.Namespace) -> tuple[float, float | None]:
    """--watch's options checked before anything is read: (debounce s, recheck s or None)."""
    from ..errors import RequestError
    from ..units import parse_duration_ns

    if not args.watch:
        given = "--restore-on-exit" if args.restore_on_exit else "--recheck"
        raise RequestError(f"{given} needs --watch")
    for flag, on in (("--dry-run", args.dry_run), ("--json", args.json)):
        if on:
            raise RequestError(f"--watch and {flag} cannot be combined (a watcher logs lines)")
    limits = (("--debounce", args.debounce, 0, 60), ("--recheck", args.recheck, 0.1, 86400))
    out: list[float | None] = []
    for flag, text, low, high in limits:
        value = None if text is None else parse_duration_ns(text, "ms") / 1e9
        if value is not None and not low <= value <= high:
            raise RequestError(f"{flag} {text}: give {low}s..{high}s")
        out.append(value)
    return out[0] or 0.0, out[1]


def _run_watch(args: argparse.Namespace) -> int:
    """`apply --watch`: apply, say READY=1 to systemd, re-apply until a stop signal."""
    from .._os import SignalScope
    from ..tuning.napi import Tuner
    from ..tuning.profile import load_profile
    from ..tuning.watch import ProfileWatcher, sd_notify

    debounce, recheck = _watch_args(args)
    profile = load_profile(args.profile)
    stop: list[int] = []
    r, w = socket.socketpair()
    r.setblocking(False)
    w.setblocking(False)
    old_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)

    def log(line: str) -> None:
        print(line, flush=True)

    try:
        with (
            SignalScope(_STOP, lambda signum, _frame: stop.append(signum)),
            Tuner(args.backend or profile.backend) as tuner,
            ProfileWatcher(profile, tuner, log, debounce_s=debounce, recheck_s=recheck) as pw,
        ):
            _watch_until_stopped(args, pw, stop, r.fileno(), sd_notify, log)
    finally:
        signal.set_wakeup_fd(old_fd)
        r.close()
        w.close()
    return 0


_STOP = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _watch_until_stopped(
    args: argparse.Namespace,
    pw: ProfileWatcher,
    stop: list[int],
    wake_fd: int,
    notify: Callable[[str], bool],
    log: Callable[[str], None],
) -> None:
    from .._signals import Interrupted

    plan = pw.start()
    for line in plan.lines():
        log(line)
    journal = pw.tuner.journal.path if pw.tuner.journal is not None else None
    log(f"watching {args.profile} (journal {journal}); stop with SIGTERM or Ctrl-C")
    notify("READY=1\nSTATUS=watching " + args.profile)
    try:
        pw.run(lambda: bool(stop), wake_fd)
        why = signal.Signals(stop[0]).name if stop else "stopped"
    except Interrupted as err:  # a signal landed while a re-application was written
        why = f"{signal.Signals(err.signum).name} ({err.message})"
    notify("STOPPING=1")
    if not pw.applied:
        log(f"{why}: the watcher applied nothing")
    elif args.restore_on_exit:
        outcomes = pw.undo_all()
        for o in outcomes:
            log(o.message)
        log(f"{why}: put back what the watcher applied ({len(outcomes)} target(s))")
    else:
        log(f"{why}: the settings stay, journaled (undo with `netdevkit restore`)")


def _report(args: argparse.Namespace, plan: Plan, tuner: Tuner) -> None:
    """What `napi set` and `apply` print once the plan is applied (or dry-run)."""
    journal = None if tuner.journal is None else tuner.journal.path
    if args.json:
        _print_json({"dry_run": args.dry_run, "journal": journal, "changes": plan.to_json()})
        return
    for line in plan.lines():
        print(line)
    if plan.empty:
        return
    if args.dry_run:
        print("dry run: nothing changed")
    else:
        print(f"previous values journaled in {journal}; undo with `netdevkit restore`")


def _match(args: argparse.Namespace) -> Callable[[Record], bool] | None:
    """The record filter of `restore`/`napi diff`: --netns, --ifname, --kind."""
    netns, ifname, kind = args.netns, args.ifname, getattr(args, "kind", None)
    if netns is not None:
        from ..netns import path_of

        path_of(netns)  # a name no namespace can have is a usage error, not "no entries"
    if kind is not None:
        _check_kind(kind)
    if netns is None and ifname is None and kind is None:
        return None

    def match(r: Record) -> bool:
        return (
            (netns is None or r.info.get("netns") == netns)
            and (ifname is None or r.info.get("ifname") == ifname)
            and (kind is None or r.kind == kind)
        )

    return match


def _check_kind(kind: str) -> None:
    """--kind names a kind some module writes, or one the journal holds: else exit 2."""
    from ..errors import RequestError
    from ..journal import Journal, load_kind_modules, registered_kinds
    from ..suggest import did_you_mean

    load_kind_modules()
    known = sorted(set(registered_kinds()) | {r.kind for r in Journal().records()})
    if kind not in known:
        raise RequestError(
            f"--kind {kind!r}: no such kind of journal entry{did_you_mean(kind, known)} "
            f"(known: {', '.join(known)})"
        )


def _nothing_matches(args: argparse.Namespace, path: str) -> str:
    """Why a filtered `restore`/`napi diff` found nothing: an empty journal, or no match."""
    from ..journal import Journal

    total = len(Journal().records())
    if not total:
        return f"the journal ({path}) lists no changes"
    given = [
        f"--{name} {value}"
        for name in ("netns", "ifname", "kind")
        if (value := getattr(args, name, None)) is not None
    ]
    return f"the journal ({path}) lists {total} change(s), none of them matching {' '.join(given)}"


def run_restore(args: argparse.Namespace) -> int:
    from ..journal import Journal, restore_all

    journal = Journal()
    outcomes = restore_all(journal, match=_match(args))
    leftovers = _leftover_testbeds()
    failed = sum(1 for o in outcomes if o.status == "failed")
    if args.json:
        _print_json(
            {
                "journal": journal.path,
                "results": [o.to_json() for o in outcomes],
                "leftover_testbeds": leftovers,
            }
        )
    else:
        if not outcomes:
            print(f"nothing to restore: {_nothing_matches(args, journal.path)}")
        for o in outcomes:
            print(o.message if o.status != "failed" else f"FAILED: {o.message}")
        if leftovers:
            print(
                f"testbeds still up: {', '.join(leftovers)}; remove them with "
                "`netdevkit testbed down NAME` or `netdevkit testbed down --all`"
            )
    if failed:
        print(
            f"netdevkit: error: {failed} journal entr{'y' if failed == 1 else 'ies'} could "
            f"not be restored and stay in {journal.path} (a later restore retries them)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _leftover_testbeds() -> list[str]:
    """Testbeds of this state directory whose owner is gone, as ``NAME (why)``: restore
    does not remove them (they are not settings), it says how."""
    from ..testbed.journal import testbeds

    return [
        f"{t.name} ({'kept by `testbed up`' if t.status == 'kept' else 'left over'})"
        for t in testbeds()
        if t.status != "running"
    ]


def run_diff(args: argparse.Namespace) -> int:
    from ..journal import diff_all
    from ..tuning.journal import KIND
    from ..tuning.napi import Tuner

    m = _match(args)
    with Tuner("auto") as tuner:
        rows = (
            []
            if args.kind not in (None, KIND)
            else tuner.diff(netns=args.netns, ifname=args.ifname)
        )
        path = tuner.journal.path if tuner.journal is not None else ""
    others = diff_all(match=lambda r: r.kind != KIND and (m is None or m(r)))
    if args.json:
        _print_json([r.to_json() for r in rows] + [o.to_json() for o in others])
        return 0
    if not rows and not others:
        print(f"no differences: {_nothing_matches(args, path)}")
    for r in rows:
        print(r.line())
    for o in others:
        print(_diff_line(o))
    return 0


def _diff_line(o: DiffOutcome) -> str:
    head = str(o.record.info.get("label") or f"{o.record.kind} {o.record.key}")
    if o.error:
        return f"{head}: cannot compare ({o.error})"
    if o.current is None:
        return f"{head}: gone"
    if not o.differs:
        return f"{head}: at its value before netdevkit"
    changes = _epoll_change(o) or ", ".join(f"{k} {b} -> {a}" for k, (b, a) in o.differs.items())
    return f"{head}: {changes} (before -> now)"


def _epoll_change(o: DiffOutcome) -> str | None:
    """An epoll record's difference as attach, run and restore print it; None for others."""
    from ..attach.records import KIND, params_from
    from ..busypoll.epoll import describe_change

    if o.record.kind != KIND or o.current is None:
        return None
    try:
        return describe_change(params_from(o.record.before), params_from(o.current))
    except (KeyError, TypeError, ValueError):  # a hand-edited record: the generic form
        return None


def run_presets(args: argparse.Namespace) -> int:
    from ..tuning.model import describe_settings, settings_to_json
    from ..tuning.presets import PRESETS

    if args.json:
        _print_json(
            [
                {
                    "name": p.name,
                    "summary": p.summary,
                    "napi": settings_to_json(p.napi),
                    "epoll": {
                        "busy_poll_usecs": p.epoll.busy_poll_usecs,
                        "busy_poll_budget": p.epoll.busy_poll_budget,
                        "prefer_busy_poll": p.epoll.prefer_busy_poll,
                    },
                }
                for p in PRESETS.values()
            ]
        )
        return 0
    for p in PRESETS.values():
        e = p.epoll
        epoll = (
            f"busy_poll_usecs {e.busy_poll_usecs}, budget {e.busy_poll_budget}, "
            f"prefer_busy_poll {int(e.prefer_busy_poll)}"
            if e.enabled
            else "no busy polling"
        )
        print(f"{p.name}: {p.summary}")
        print(f"    napi:  {describe_settings(p.napi)}")
        print(f"    epoll: {epoll}")
    return 0
