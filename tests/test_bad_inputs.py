"""Every bad input of issue 11's list: one line on stderr, exit 2 (bad input) or 1 (refused),
no traceback, nothing changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netdevkit.cli.main import main
from netdevkit.netns import list_names

BIG = "9" * 5000


def namespaces_named_by(argv: list[str]) -> set[str]:
    """The namespaces a command line could have made or removed (other test runs on this
    machine create and remove their own meanwhile: only these are compared)."""
    names = {a for a in argv if a} | {f"{a}{s}" for a in argv if a for s in ("-srv", "-cli")}
    return names & set(list_names())


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    before = namespaces_named_by(argv)
    assert main(argv) == code
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and out.err.startswith("netdevkit: error: "), out.err
    assert "Traceback" not in out.err
    assert namespaces_named_by(argv) == before
    return out.err


@pytest.fixture
def binary(tmp_path: Path) -> str:
    p = tmp_path / "garbage.bin"
    p.write_bytes(bytes(range(256)) * 4)
    return str(p)


def test_binary_profile(capsys: pytest.CaptureFixture[str], binary: str) -> None:
    assert "binary" in one_line(capsys, ["apply", binary], 2)


def test_binary_missing_and_directory_results(
    capsys: pytest.CaptureFixture[str], binary: str, tmp_path: Path
) -> None:
    assert "binary" in one_line(capsys, ["bench", "--report", binary], 2)
    assert "No such file" in one_line(capsys, ["bench", "--report", str(tmp_path / "no")], 2)
    assert "Is a directory" in one_line(capsys, ["bench", "--report", str(tmp_path)], 2)


@pytest.mark.parametrize(
    "argv",
    [
        ["napi", "show", "--netns", "n" * 300],
        ["napi", "set", "--netns", "n" * 300, "--ifname", "x", "--defer-hard-irqs", "1"],
        ["napi", "diff", "--netns", "n" * 300],
    ],
)
def test_overlong_netns(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    err = one_line(capsys, argv, 2)
    assert "at most 255" in err or "not a valid" in err or "no changes" in err


@pytest.mark.kernel
def test_a_file_in_run_netns_that_is_not_a_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    name = f"ndk-notns-{os.getpid()}"
    path = Path("/run/netns") / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("not a namespace")
    try:
        assert "is not a network namespace" in one_line(
            capsys, ["napi", "show", "--netns", name], 1
        )
        argv = ["napi", "set", "--netns", name, "--ifname", "x", "--defer-hard-irqs", "1"]
        assert "is not a network namespace" in one_line(capsys, argv, 1)
    finally:
        path.unlink()


@pytest.mark.parametrize(
    "argv",
    [
        ["napi", "set", "--ifname", "lo", "--gro-flush-timeout", BIG],
        ["napi", "set", "--ifname", "lo", "--irq-suspend-timeout", BIG + "us"],
        ["napi", "set", "--ifname", "lo", "--defer-hard-irqs", BIG],
        ["bench", "--duration", BIG],
        ["bench", "--repeat", BIG],
        ["attach", "--pid", BIG, "--preset", "suspend"],
        ["attach", "--pid", "1", "--usecs", BIG],
    ],
)
def test_thousands_of_digits(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert len(one_line(capsys, argv, 2)) < 400


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["attach", "--pid", "0", "--preset", "suspend"], "--pid: must be a positive integer"),
        (["attach", "--pid", "1", "--usecs", "-1"], "--usecs: must be 0 or more, not -1"),
        (["attach", "--pid", "1", "--budget", "x"], "--budget: not an integer: 'x'"),
        (["napi", "show", "--ifindex", "0"], "--ifindex: must be a positive integer, not 0"),
        (
            ["queue", "create", "--ifname", "a", "--lease-ifname", "b", "--lease-queue", "-2"],
            "--lease-queue: must be 0 or more, not -2",
        ),
    ],
)
def test_integers_out_of_range(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    assert says in one_line(capsys, argv, 2)


def test_duplicate_profile_positions_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = tmp_path / "dup.toml"
    p.write_text(
        '[[interface]]\nmatch = "ndk-s"\n'
        "[[interface.napi]]\nposition = 0\ndefer-hard-irqs = 1\n"
        "[[interface.napi]]\npositions = [1, 0]\ndefer-hard-irqs = 2\n"
    )
    assert "position 0 is already set" in one_line(capsys, ["apply", str(p)], 2)
    p.write_text('[[interface]]\nmatch = "x"\n[[interface.napi]]\npositions = [3, 3]\nthreaded=1\n')
    assert "position 3 is already set" in one_line(capsys, ["apply", str(p)], 2)


def test_absurd_timeouts_are_refused_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    err = one_line(capsys, ["napi", "set", "--ifname", "lo", "--gro-flush-timeout", "4980s"], 2)
    assert "TCP_RTO_MAX" in err
    # the bound is 120 s inclusive; `napi set` then fails later for another reason
    assert "120s" in err


def test_bench_out_naming_a_file_fails_before_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    f = tmp_path / "results"
    f.write_text("mine")
    code = 2 if os.geteuid() == 0 else 1  # without root, validation refuses first
    err = one_line(capsys, ["bench", "--quick", "--out", str(f)], code)
    if code == 2:
        assert "exists and is not a directory" in err
    assert f.read_text() == "mine"


def test_help_points_at_commands_that_exist(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["attach", "--help"], ["bench", "--help"], ["napi", "set", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "napi presets" not in text and "tune presets" not in text
    with pytest.raises(SystemExit):
        main(["presets", "--help"])


@pytest.mark.parametrize(
    ("path", "value"),
    [(("config", "duration"), {}), (("config", "modes"), ["base", {}]), (("samples", 0), 3)],
)
def test_results_with_values_of_the_wrong_type(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, path: tuple[object, ...], value: object
) -> None:
    """Found by the fuzzer: a results.json from elsewhere with a dict where a number goes."""
    import json

    data = json.loads((Path(__file__).parent / "data" / "bench_results_fixture.json").read_text())
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    f = tmp_path / "results.json"
    f.write_text(json.dumps(data))
    err = one_line(capsys, ["bench", "--report", str(f), "--out", str(tmp_path / "o")], 2)
    assert "malformed results file" in err
