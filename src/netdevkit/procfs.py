"""The ``/proc`` files netdevkit reads, parsed in one place (pure parsers, thin readers).

Used by :mod:`netdevkit.observe` (live rates), :mod:`netdevkit.bench` (CPU and receive
counters of a run window) and :mod:`netdevkit.attach` (a server's worker processes).
Imports nothing of netdevkit's, so any of them can use it cheaply.
"""

from __future__ import annotations

import itertools
import os
from typing import NamedTuple

from ._argcheck import int_arg

__all__ = [
    "CLK_TCK",
    "ProcStat",
    "SoftnetCpu",
    "descendants",
    "parse_netstat",
    "parse_softnet",
    "parse_stat",
    "read_text",
]

#: clock ticks per second, the unit of ``/proc/PID/stat``'s times
CLK_TCK = os.sysconf("SC_CLK_TCK")


def read_text(path: str) -> str:
    """A whole ``/proc`` (or ``/sys``) file as text."""
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


class ProcStat(NamedTuple):
    """The fields of ``/proc/PID/stat`` netdevkit uses (times in clock ticks)."""

    ppid: int
    utime: int
    stime: int
    starttime: int

    @property
    def cpu_seconds(self) -> float:
        """User + system CPU seconds."""
        return (self.utime + self.stime) / CLK_TCK


def parse_stat(text: str) -> ProcStat:
    """Parse one ``/proc/PID/stat`` line.

    The command name (field 2) is in parentheses and may itself hold spaces and
    parentheses, so fields are counted after the *last* ``)``: ppid is field 4, utime 14,
    stime 15, starttime 22.
    """
    rest = text[text.rindex(")") + 2 :].split()
    return ProcStat(int(rest[1]), int(rest[11]), int(rest[12]), int(rest[19]))


class SoftnetCpu(NamedTuple):
    """One CPU's row of ``/proc/net/softnet_stat``."""

    cpu: int
    processed: int
    dropped: int
    time_squeeze: int


def parse_softnet(text: str) -> tuple[SoftnetCpu, ...]:
    """The rows of ``/proc/net/softnet_stat`` (hexadecimal columns; column 13 is the CPU
    number where the kernel prints it, else the row's position)."""
    out = []
    for i, line in enumerate(text.split("\n")):
        cols = line.split()
        if len(cols) < 3:
            continue
        cpu = int(cols[12], 16) if len(cols) > 12 else i
        out.append(SoftnetCpu(cpu, int(cols[0], 16), int(cols[1], 16), int(cols[2], 16)))
    return tuple(out)


def parse_netstat(text: str) -> dict[str, int]:
    """``/proc/net/netstat`` or ``/proc/net/snmp`` (per protocol, a line of names and a
    line of values) as ``{"TcpExt:BusyPollRxPackets": n, ...}``; a pair whose protocols
    differ, or a value that is not an integer, is skipped."""
    out: dict[str, int] = {}
    for head, values in itertools.pairwise(text.split("\n")):
        proto, _, names = head.partition(":")
        vproto, _, nums = values.partition(":")
        if proto != vproto or not proto:
            continue
        for name, value in zip(names.split(), nums.split(), strict=False):
            try:
                out[f"{proto}:{name}"] = int(value)
            except ValueError:
                continue  # the names line of the next protocol
    return out


def descendants(pid: int) -> list[int]:
    """Live children, grandchildren... of *pid*, sorted.

    From ``/proc/PID/task/TID/children`` (CONFIG_PROC_CHILDREN); where that file does not
    exist, from the parent pid of every process in ``/proc``.
    """
    int_arg("pid", pid)
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        return _descendants_by_ppid(pid)
    out: list[int] = []
    todo = [pid]
    seen = {pid}
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # exited while we looked
        for tid in tids:
            try:
                kids = [int(k) for k in read_text(f"/proc/{parent}/task/{tid}/children").split()]
            except OSError:
                continue
            for kid in kids:
                if kid not in seen:
                    seen.add(kid)
                    out.append(kid)
                    todo.append(kid)
    return sorted(out)


def _descendants_by_ppid(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = parse_stat(read_text(f"/proc/{entry}/stat")).ppid
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return sorted(out)
