"""Deterministic fault injection: interrupt netdevkit at a chosen step that changes the system.

Every step that changes the system (a journal write, a napi-set, an EPIOCSPARAMS, a
namespace or veth created, a server started) calls :func:`point` with its name first. With
``NETDEVKIT_FAULT`` unset that is one ``is None`` test. Set, it reads ``POINT:N:SIGNAL``
(``POINT`` a name or ``*`` for any, ``N`` 1-based, ``SIGNAL`` a name such as ``SIGINT`` or
``KILL``): at the N-th matching step the process sends itself that signal just before the
step runs. ``NETDEVKIT_FAULT_TRACE=FILE`` appends the name of every step reached to FILE,
which is how the fault-injection tests enumerate the steps of a command.

Why injection points rather than kill timers: a sweep of kill times hits the short windows
(between the journal write and the kernel call) only by luck and differs from run to run;
a named point hits each step exactly once, every run, so a residue found is reproducible
with one environment variable.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "NETDEVKIT_FAULT"
TRACE_ENV = "NETDEVKIT_FAULT_TRACE"


class _Spec:
    def __init__(self, text: str) -> None:
        name, _, rest = text.partition(":")
        count, _, sig = rest.partition(":")
        self.name = name or "*"
        self.count = int(count or "1")
        sig = sig.upper() or "SIGKILL"
        self.signum = int(getattr(signal, sig if sig.startswith("SIG") else "SIG" + sig))
        self.seen = 0


class _State:
    spec: _Spec | None = None
    trace: str | None = None


def reset() -> None:
    """Read the environment again (tests; a forked child that changed it)."""
    text = os.environ.get(FAULT_ENV)
    try:
        _State.spec = _Spec(text) if text else None
    except (ValueError, AttributeError):
        _State.spec = None  # a malformed spec injects nothing (the tests check their spec)
    _State.trace = os.environ.get(TRACE_ENV) or None


def point(name: str) -> None:
    """A step that changes the system is about to run (see the module docstring)."""
    spec, trace = _State.spec, _State.trace
    if spec is None and trace is None:
        return
    if trace is not None:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(name + "\n")
    if spec is None or spec.name not in ("*", name):
        return
    spec.seen += 1
    if spec.seen == spec.count:
        os.kill(os.getpid(), spec.signum)


reset()
