"""The fenced blocks of README.md and docs/*.md that tests/test_docs_run.py runs: a pure
parser (markdown text in, blocks out), no I/O but reading the docs.

- ```sh blocks: commands, one per line, ``\\`` continued, comment lines skipped;
- ```python blocks: a snippet, and the names it uses without defining (:func:`free_names`);
- plain ``` blocks whose first line is ``$ command``: transcripts (lang "console"), each
  command with the output lines shown below it;
- a ``<!-- doc: ... -->`` comment right before a fence says how the block runs:
  ``needs hardware (WHAT)`` (it must be refused, naming WHAT) or ``dry run: make X, ...
  (WHY)`` (those make targets run with ``make -n``).
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = ("README.md", *(f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md"))))

FENCE = re.compile(r"^```([\w-]*)\s*$")
MARKER = re.compile(r"^<!--\s*doc:\s*(.*?)\s*-->\s*$")
_HARDWARE = re.compile(r"needs hardware \((.+)\)")
DRY_RUN = re.compile(r"dry run: ([^(]+)")


@dataclass(frozen=True)
class Command:
    """One shell command of a block: its first line in the file, continuations joined."""

    line: int
    text: str


@dataclass(frozen=True)
class Block:
    """A block that runs (lang ``sh``, ``python`` or ``console``, a transcript) and the
    ``<!-- doc: ... -->`` marker right before its fence ("" if none)."""

    path: str
    line: int
    lang: str
    source: str
    marker: str = ""

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    def commands(self) -> list[Command]:
        return sh_commands(self.source, self.line + 1)

    def transcript(self) -> list[tuple[Command, list[str]]]:
        """A console block's ``$ command`` lines, each with the output lines shown below it."""
        steps: list[tuple[Command, list[str]]] = []
        for number, line in enumerate(self.source.splitlines(), self.line + 1):
            if line.startswith("$ "):
                steps.append((Command(number, line[2:].strip()), []))
            elif steps:
                steps[-1][1].append(line)
        return steps

    def needs_hardware(self) -> tuple[str, ...]:
        """What the refusal must name, one of: the marker's items, each the text after its
        last ":" or "with" ("a NIC with header split" -> "header split"); () if the block
        is not marked as needing hardware."""
        m = _HARDWARE.search(self.marker)
        if m is None:
            return ()
        parts = re.split(r",|\bor\b", m.group(1))
        return tuple(re.split(r":| with ", p)[-1].strip() for p in parts if p.strip())

    def dry_run(self, command: str) -> bool:
        """Whether the marker says *command* only runs as a dry run (``make -n``)."""
        m = DRY_RUN.search(self.marker)
        if m is None:
            return False
        prefixes = [p.strip() for p in m.group(1).split(",") if p.strip()]
        return any(re.match(re.escape(p) + r"(\s|$)", command) for p in prefixes)


def parse_blocks(text: str, path: str) -> list[Block]:
    """The ```sh and ```python blocks of a markdown text, in order, and the plain ```
    blocks that are transcripts (their first line a ``$ command``: lang "console")."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        lang = m.group(1)
        if not lang and i + 1 < end and lines[i + 1].startswith("$ "):
            lang = "console"
        if lang in ("sh", "python", "console"):
            body = "".join(f"{line}\n" for line in lines[i + 1 : end])
            blocks.append(Block(path, i + 1, lang, body, _marker_before(lines, i)))
        i = end + 1
    return blocks


def _marker_before(lines: list[str], fence: int) -> str:
    for j in range(fence - 1, -1, -1):
        if lines[j].strip():
            m = MARKER.match(lines[j].strip())
            return m.group(1) if m else ""
    return ""


def sh_commands(source: str, first_line: int) -> list[Command]:
    """The commands of a sh block: comment and blank lines skipped, ``\\`` continued."""
    commands: list[Command] = []
    pending, start = "", 0
    for number, raw in enumerate(source.splitlines(), first_line):
        text = raw.strip()
        if not pending and (not text or text.startswith("#")):
            continue
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        commands.append(Command(start, (pending + text).strip()))
        pending = ""
    if pending:
        commands.append(Command(start, pending.strip()))
    return commands


def free_names(source: str) -> set[str]:
    """Names a python snippet reads but never binds (builtins excluded)."""
    tree = ast.parse(source)
    loaded: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
    return loaded - bound - set(dir(builtins))


def all_blocks() -> list[Block]:
    out: list[Block] = []
    for path in DOCS:
        out.extend(parse_blocks((REPO / path).read_text(encoding="utf-8"), path))
    return out
