"""Entry point of the ``netdevkit`` command.

Each subcommand lives in its own module that exposes ``register(subparsers)``.
Those modules import only the standard library at top level and import the
library (and heavy dependencies such as pyroute2 or rich) inside the function
that runs the command, so ``netdevkit napi show -j`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import NetdevkitError, RequestError

# Order here is the order in `netdevkit --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "netdevkit.cli.show",
    "netdevkit.cli.queue",
    "netdevkit.cli.doctor",
    "netdevkit.cli.tune",
    "netdevkit.cli.attach",
    "netdevkit.cli.bench",
)

DESCRIPTION = """\
Per-NAPI tuning, epoll busy polling, IRQ suspension and Device Memory TCP,
made usable, observable and measurable on a real Linux kernel.

Read commands work for any user; changes need root (CAP_NET_ADMIN).
Every command takes --netns NAME to act inside a named network namespace
and -j/--json for machine-readable output where it prints anything.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netdevkit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int | None = args.func(args)
    except RequestError as err:
        print(f"netdevkit: error: {err}", file=sys.stderr)
        return 2
    except NetdevkitError as err:
        print(f"netdevkit: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("netdevkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
