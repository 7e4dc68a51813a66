"""One helper for each OS chore: effective capabilities, a signal scope, CPU lists.

- Capabilities: :func:`effective_caps` reads ``CapEff`` from ``/proc/self/status``;
  :func:`has_capability` asks for one bit. The kernel checks ``capable()`` against the
  initial user namespace: inside a user namespace CapEff can claim more than the kernel
  grants, and the operation itself still answers EPERM.
- Signals: :class:`SignalScope` installs one handler for some signals while it is
  active, chains to the handlers it replaced (:meth:`SignalScope.chain`) and puts them
  back when it ends; :func:`mask_signals` blocks signals in the calling thread for a
  body. Python runs signal handlers in the main thread only, so a scope entered in
  another thread installs nothing.
- Processes: :func:`process_start_time`, which with the pid names a process uniquely.
- CPU lists: the kernel's cpulist language (``"0-3,8"``, as in ``Cpus_allowed_list``
  and ``taskset -c``): :func:`parse_cpu_list`, :func:`format_cpu_list`; and affinity:
  :func:`set_affinity` pins every thread of a process, :func:`affinity_of` reads back
  what the kernel allows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from types import FrameType, TracebackType
from typing import Any

from .errors import NotFoundError, RequestError, translate_oserror
from .procfs import parse_stat, read_text

# --- capabilities ----------------------------------------------------------------------

#: capability bits (linux/capability.h) netdevkit asks for
CAP_NET_ADMIN = 12
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21


def effective_caps() -> int | None:
    """This process's effective capability set (``CapEff``); None when unreadable."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return None


def has_capability(cap: int) -> bool:
    """Whether capability bit *cap* is in the effective set (root counts as holding
    every capability when ``/proc/self/status`` cannot be read)."""
    eff = effective_caps()
    if eff is None:
        return os.geteuid() == 0
    return bool(eff >> cap & 1)


# --- processes -------------------------------------------------------------------------


def process_start_time(pid: int) -> int:
    """Field 22 of ``/proc/PID/stat`` (clock ticks since boot): with the pid it names a
    process uniquely, so a record about a pid is not applied to a later process that
    reused the number. Raises :class:`OSError` (FileNotFoundError: no such process)."""
    return parse_stat(read_text(f"/proc/{pid}/stat")).starttime


# --- signals ---------------------------------------------------------------------------

#: a handler as :func:`signal.signal` takes it
Handler = Callable[[int, FrameType | None], Any]
#: what :func:`signal.getsignal` returns: a handler, SIG_DFL/SIG_IGN, or None (set from C)
Previous = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class SignalScope:
    """While active, *handler* runs for each of *signals*; the previous handlers come back
    when it ends (:meth:`restore`, idempotent; also ``with SignalScope(...)``).

    - Only in the main thread: entered in another thread it installs nothing.
    - *keep_ignored* (default): a signal the process ignores stays ignored.
    - A previous handler is put back only while ours is still the one installed: a
      handler installed after ours (a nested scope) may chain to ours, so it stays.
    """

    def __init__(
        self, signals: Iterable[int], handler: Handler, *, keep_ignored: bool = True
    ) -> None:
        self.signals = tuple(signals)
        self.handler = handler
        self.keep_ignored = keep_ignored
        self.previous: dict[int, Previous] = {}

    def __enter__(self) -> SignalScope:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()

    @property
    def installed(self) -> tuple[int, ...]:
        """The signals our handler was installed for (and not yet restored)."""
        return tuple(self.previous)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.signals:
            prev = signal.getsignal(sig)
            if prev is signal.SIG_IGN and self.keep_ignored:
                continue
            self.previous[sig] = prev
            signal.signal(sig, self.handler)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        previous, self.previous = self.previous, {}
        for sig, prev in previous.items():
            if signal.getsignal(sig) == self.handler:
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)

    def previous_of(self, signum: int) -> Previous:
        """The handler *signum* had before this scope (SIG_DFL if it installed none)."""
        return self.previous.get(signum, signal.SIG_DFL)

    def chain(self, signum: int, frame: FrameType | None, previous: Previous = None) -> None:
        """Act on *signum* as the process would have without this scope.

        Calls the previous Python handler; for the default action SIGINT raises
        :class:`KeyboardInterrupt` and any other signal kills the process by that
        signal (its handler reset to SIG_DFL first, so the parent sees it); an ignored
        signal does nothing. *previous* overrides the handler recorded by the scope
        (for callers that restored first).
        """
        prev = previous if previous is not None else self.previous_of(signum)
        if callable(prev):
            prev(signum, frame)
            return
        if prev is signal.SIG_IGN:
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


@contextlib.contextmanager
def mask_signals(signals: Collection[int]) -> Iterator[None]:
    """Block *signals* in the calling thread for the body (``pthread_sigmask``); the
    kernel delivers what arrived when the body ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(signals))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# --- CPU lists and affinity ------------------------------------------------------------


def parse_cpu_list(text: str) -> frozenset[int]:
    """``"0-2,5"`` -> {0, 1, 2, 5} (the kernel's cpulist format, as in
    ``Cpus_allowed_list`` and ``taskset -c``); raises :class:`RequestError`."""
    cpus: set[int] = set()
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise RequestError(f"CPU list {text!r}: {part!r} is not N or N-M") from None
        if first < 0 or last < first:
            raise RequestError(f"CPU list {text!r}: {part!r} is not a valid range")
        cpus.update(range(first, last + 1))
    if not cpus:
        raise RequestError(f"CPU list {text!r} is empty")
    return frozenset(cpus)


def format_cpu_list(cpus: Iterable[int]) -> str:
    """{0, 1, 2, 5} -> ``"0-2,5"`` (the inverse of :func:`parse_cpu_list`)."""
    runs: list[list[int]] = []
    for c in sorted(set(cpus)):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def set_affinity(pid: int, cpus: frozenset[int]) -> list[int]:
    """Pin every thread of process *pid* to *cpus* (``taskset -a -p``); return the tids.

    The main thread goes first so that threads it creates from then on inherit the mask
    (a mask survives ``execve`` too); the thread list is re-read until a pass finds no
    thread it had not pinned, which closes the race with threads created while we were
    pinning. Raises :class:`NotFoundError` if *pid* is gone.
    """
    done: set[int] = set()
    try:
        os.sched_setaffinity(pid, cpus)
        done.add(pid)
        while True:
            try:
                tids = {int(t) for t in os.listdir(f"/proc/{pid}/task")}
            except FileNotFoundError:
                raise ProcessLookupError(pid) from None
            new = tids - done
            if not new:
                return sorted(done)
            for tid in new:
                with contextlib.suppress(ProcessLookupError):  # thread exited meanwhile
                    os.sched_setaffinity(tid, cpus)
                done.add(tid)
    except ProcessLookupError:
        raise NotFoundError(f"cannot pin process {pid} to CPUs {cpus}: it exited") from None
    except OSError as err:
        raise translate_oserror(
            err,
            f"cannot pin process {pid} to CPUs {format_cpu_list(cpus)}",
            hint="a CPU offline or outside this cgroup's cpuset?",
        ) from err


def affinity_of(pid: int) -> frozenset[int]:
    """The union of ``Cpus_allowed_list`` over every thread of *pid*, from /proc
    (what the kernel will let the process run on, read back)."""
    out: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        out |= parse_cpu_list(line.split(":", 1)[1])
        except FileNotFoundError:
            continue
    return frozenset(out)


def usable_cpus() -> frozenset[int]:
    """The CPUs this process may run on (online CPUs minus cpuset/taskset limits)."""
    return frozenset(os.sched_getaffinity(0))


def raise_open_files_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit (no privilege needed)
    and return it. For commands that hold one copy per epoll context of a process that may
    have thousands (the usual soft limit is 1024); nothing it starts should inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
