"""What the CLI imports and registers: only the command that runs, the same parser as all.

``netdevkit`` registers (and imports the modules of) only the command it runs; ``--help``
and a mistyped command get placeholders with the one-line help of ``main.COMMANDS``. These
tests check that this lazy parser is the parser every module would build, and that the
library's netdev client loads neither pyroute2 nor rich.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest

from netdevkit.cli.main import COMMANDS, build_parser, main


def _help(argv: list[str], parser_argv: list[str] | None) -> str:
    """What ``--help`` prints for *argv* with the parser ``build_parser(parser_argv)``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        build_parser(parser_argv).parse_args(argv)
    assert done.value.code == 0
    return out.getvalue()


def test_top_level_help_lists_every_command_as_the_modules_register_them() -> None:
    lazy = _help(["--help"], ["--help"])
    assert lazy == _help(["--help"], None)
    for word in COMMANDS:
        assert f"\n    {word}" in lazy


@pytest.mark.parametrize("word", list(COMMANDS))
def test_each_command_is_registered_as_the_whole_parser_has_it(word: str) -> None:
    assert _help([word, "--help"], [word, "--help"]) == _help([word, "--help"], None)


def test_a_mistyped_command_lists_every_command_in_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["napy", "show"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert ", ".join(repr(w) for w in COMMANDS) in err


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(out.split())


@pytest.mark.parametrize(
    "code",
    [
        "import netdevkit.netdev",
        "import netdevkit.netdev.client",
        "from netdevkit import Netdev",
        "from netdevkit.cli.main import build_parser; build_parser(['napi', 'show', '-j'])",
    ],
)
def test_the_netdev_client_imports_neither_pyroute2_nor_rich(code: str) -> None:
    loaded = _modules_after(code)
    assert "netdevkit.netdev" in loaded or "netdevkit.cli.main" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("pyroute2", "rich")}


def test_napi_show_loads_only_its_own_command_modules() -> None:
    code = "from netdevkit.cli.main import build_parser; build_parser(['napi', 'show', '-j'])"
    loaded = _modules_after(code)
    cli = {m for m in loaded if m.startswith("netdevkit.cli.")}
    # show's table printer and option types come with it; tune adds ``napi set`` and
    # ``napi diff``
    want = ("main", "show", "table", "argtypes", "tune")
    assert cli == {f"netdevkit.cli.{m}" for m in want}
