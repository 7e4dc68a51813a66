"""Tuning without a kernel: value validation, plans, profiles, the journal file."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netdevkit.errors import RequestError
from netdevkit.netdev.family import NapiThreaded
from netdevkit.tuning.journal import Journal, JournalEntry
from netdevkit.tuning.model import (
    S32_MAX,
    Change,
    Target,
    make_plan,
    parse_knob,
    settings_from_json,
    settings_from_mapping,
    settings_to_json,
    validate_settings,
)
from netdevkit.tuning.presets import PRESETS, NapiSettings, get_preset
from netdevkit.tuning.profile import parse_profile

T1 = Target("netlink", "ns1", "veth0", 5, 513, 0)
T2 = Target("netlink", "ns1", "veth0", 5, 514, 1)
ZERO = NapiSettings(0, 0, 0, False)


# -- values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "want"),
    [
        ("gro-flush-timeout", "200us", 200_000),
        ("gro-flush-timeout", "20ms", 20_000_000),
        ("irq-suspend-timeout", "1s", 1_000_000_000),
        ("irq-suspend-timeout", "1500", 1500),
        ("gro-flush-timeout", 7, 7),
        ("defer-hard-irqs", "100", 100),
        ("defer-hard-irqs", 2, 2),
        ("threaded", "on", True),
        ("threaded", "off", False),
        ("threaded", True, True),
        ("threaded", "busy-poll", NapiThreaded.BUSY_POLL),
    ],
)
def test_parse_knob_accepts(name: str, text: object, want: object) -> None:
    assert parse_knob(name, text) == want


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("gro-flush-timeout", "20xs", "invalid duration"),
        ("gro-flush-timeout", "-5us", "invalid duration"),
        ("gro-flush-timeout", -5, "must not be negative"),
        ("defer-hard-irqs", "-1", "must not be negative"),
        ("defer-hard-irqs", "ten", "whole number"),
        ("defer-hard-irqs", True, "not a boolean"),
        ("threaded", "maybe", "on, off or busy-poll"),
        ("threaded", 2, "on/off"),
        ("defer-hard-irq", 1, "unknown setting 'defer-hard-irq'"),
    ],
)
def test_parse_knob_rejects(name: str, value: object, needle: str) -> None:
    with pytest.raises(RequestError, match=needle):
        parse_knob(name, value)


def test_defer_above_s32_max_is_refused_before_the_kernel() -> None:
    validate_settings(NapiSettings(defer_hard_irqs=S32_MAX))
    with pytest.raises(RequestError, match="S32_MAX"):
        settings_from_mapping({"defer-hard-irqs": S32_MAX + 1})


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_validate_defer_matches_the_kernel_policy(v: int) -> None:
    if 0 <= v <= S32_MAX:
        assert validate_settings(NapiSettings(defer_hard_irqs=v)).defer_hard_irqs == v
    else:
        with pytest.raises(RequestError):
            validate_settings(NapiSettings(defer_hard_irqs=v))


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_validate_durations_are_u64(v: int) -> None:
    ok = 0 <= v <= 2**64 - 1
    for s in (NapiSettings(gro_flush_timeout=v), NapiSettings(irq_suspend_timeout=v)):
        if ok:
            validate_settings(s)
        else:
            with pytest.raises(RequestError):
                validate_settings(s)


@given(
    st.builds(
        NapiSettings,
        st.none() | st.integers(0, S32_MAX),
        st.none() | st.integers(0, 2**64 - 1),
        st.none() | st.integers(0, 2**64 - 1),
        st.none() | st.booleans() | st.just(NapiThreaded.BUSY_POLL),
    )
)
def test_settings_json_round_trip(s: NapiSettings) -> None:
    back = settings_from_json(json.loads(json.dumps(settings_to_json(s))))
    assert back == s
    assert type(back.threaded) is type(s.threaded)  # busy-poll stays the named mode


def test_threaded_busy_poll_in_a_profile_and_a_plan_line() -> None:
    s = settings_from_mapping({"threaded": "busy-poll"})
    assert s.threaded is NapiThreaded.BUSY_POLL
    plan = make_plan([(T1, ZERO, s)])
    assert "threaded off -> busy-poll" in "\n".join(plan.lines())
    assert PRESETS["busy-poll-thread"].napi.threaded is NapiThreaded.BUSY_POLL
    with pytest.raises(RequestError, match="must be on, off or busy-poll"):
        validate_settings(NapiSettings(threaded=3))  # type: ignore[arg-type]


# -- changes and plans --------------------------------------------------------------------


def test_change_sends_only_what_differs_and_undoes_exactly_that() -> None:
    c = Change(T1, ZERO, NapiSettings(100, 0, 20_000_000, False))
    assert c.forward() == NapiSettings(defer_hard_irqs=100, irq_suspend_timeout=20_000_000)
    assert c.backward() == NapiSettings(defer_hard_irqs=0, irq_suspend_timeout=0)
    assert c.describe() == "defer-hard-irqs 0 -> 100, irq-suspend-timeout 0 -> 20ms"


def test_plan_reports_no_changes_when_already_in_effect() -> None:
    plan = make_plan([(T1, ZERO, NapiSettings(defer_hard_irqs=0))])
    assert plan.empty
    assert plan.lines() == ["no changes"]


def test_plan_refuses_the_same_target_twice() -> None:
    with pytest.raises(RequestError, match="named twice"):
        make_plan([(T1, ZERO, ZERO), (T1, ZERO, ZERO)])


def test_plan_lines_show_before_and_after() -> None:
    plan = make_plan(
        [
            (T1, ZERO, PRESETS["suspend"].napi),
            (T2, PRESETS["suspend"].napi, PRESETS["suspend"].napi),
        ]
    )
    assert plan.lines() == [
        "NAPI 513 (veth0 #0, netns ns1): defer-hard-irqs 0 -> 100, gro-flush-timeout 0 -> 20us, "
        "irq-suspend-timeout 0 -> 20ms",
        "(1 target(s) already as requested)",
    ]


def test_every_preset_passes_validation() -> None:
    for p in PRESETS.values():
        validate_settings(p.napi, p.name)


# -- profiles -----------------------------------------------------------------------


GOOD = """
netns = "lab"
[[interface]]
match = "ndk-*"
preset = "suspend"
gro-flush-timeout = "50us"
[[interface.napi]]
positions = [0, 2]
defer-hard-irqs = 200
[[interface]]
match = "eth1"
netns = "other"
threaded = true
"""


def test_profile_parses_presets_values_and_overrides() -> None:
    p = parse_profile(GOOD)
    first, second = p.rules
    assert first.netns == "lab" and first.is_glob
    assert first.settings == NapiSettings(100, 50_000, 20_000_000, False)
    assert first.overrides[0].positions == (0, 2)
    assert first.overrides[0].settings == NapiSettings(defer_hard_irqs=200)
    assert second.netns == "other" and not second.is_glob
    assert second.settings == NapiSettings(threaded=True)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[interface]]\nmatch = "x"\ndefer-hard-irq = 1\n', "unknown key 'defer-hard-irq'"),
        ('[[interface]]\nmatch = "x"\ndefer-hard-irq = 1\n', "did you mean 'defer-hard-irqs'"),
        ('interfaces = 1\n[[interface]]\nmatch = "x"\nthreaded = true\n', "unknown key"),
        ('[[interface]]\nmatch = "x"\n[[interface.napi]]\nposition = 0\nfoo = 1\n', "'foo'"),
        ('[[interface]]\nmatch = "x"\n', "sets nothing"),
        ('[[interface]]\npreset = "base"\n', "missing 'match'"),
        ('[[interface]]\nmatch = "x"\npreset = "turbo"\n', "unknown preset 'turbo'"),
        ('[[interface]]\nmatch = "x"\ngro-flush-timeout = "5 parsecs"\n', "invalid duration"),
        ('[[interface]]\nmatch = "x"\ndefer-hard-irqs = -3\n', "must not be negative"),
        ('[[interface]]\nmatch = "x"\ndefer-hard-irqs = 2147483648\n', "S32_MAX"),
        ('[[interface]]\nmatch = "x"\n[[interface.napi]]\ndefer-hard-irqs = 1\n', "position"),
        (
            '[[interface]]\nmatch = "x"\n[[interface.napi]]\nposition = -1\nthreaded = true\n',
            ">= 0",
        ),
        ("backend = 'ioctl'\n[[interface]]\nmatch = 'x'\nthreaded = true\n", "auto, netlink"),
        ("version = 2\n", "version 2"),
        ("", "no [[interface]]"),
        ("[[interface]\n", "not valid TOML"),
        # a count takes neither a fraction nor a duration; say so, where
        (
            '[[interface]]\nmatch = "x"\ndefer-hard-irqs = 1.5\n',
            "[[interface]] #1 (match 'x'): defer-hard-irqs=1.5: a count is a whole number "
            "0..2147483647 (no fraction, no unit)",
        ),
        ('[[interface]]\nmatch = "x"\ngro-flush-timeout = 1.5\n', "expected a duration"),
        # the wrong type where [[interface]] tables belong is named, not "no tables"
        ('interface = "a"\n', "interface = a string ('a'): interfaces are [[interface]] tables"),
        ("interface = 3\n", "interface = an integer (3)"),
        ('[interface]\nmatch = "x"\n', "interface = a single [interface] table"),
        (
            '[[interface]]\nmatch = "x"\npreset = "suspnd"\n',
            "[[interface]] #1 (match 'x'): unknown preset 'suspnd'; did you mean 'suspend'?",
        ),
    ],
)
def test_profile_errors_name_the_problem(text: str, needle: str) -> None:
    with pytest.raises(RequestError, match=re.escape(needle)):
        parse_profile(text)


@pytest.mark.parametrize(("name", "hint"), [("suspnd", "suspend"), ("fulbusy", "fullbusy")])
def test_mistyped_preset_gets_did_you_mean(name: str, hint: str) -> None:
    with pytest.raises(RequestError) as exc:
        get_preset(name)
    assert str(exc.value) == (
        f"unknown preset {name!r}; did you mean {hint!r}? (known: {', '.join(PRESETS)})"
    )


def test_example_profile_parses() -> None:
    path = Path(__file__).parent.parent / "examples" / "profile.toml"
    assert parse_profile(path.read_text(), str(path)).rules


# -- the journal ----------------------------------------------------------------------------


def test_journal_keeps_the_first_baseline(tmp_path: Path) -> None:
    j = Journal(str(tmp_path))
    with j.locked():
        assert j.add_baselines([(T1, ZERO)]) == [T1]
        assert j.add_baselines([(T1, NapiSettings(100, 1, 1, True)), (T2, ZERO)]) == [T2]
    entries = j.load()
    assert [e.target for e in entries] == [T1, T2]
    assert entries[0].baseline == ZERO
    assert entries[0].pid == os.getpid()


def test_journal_round_trips_and_empties(tmp_path: Path) -> None:
    j = Journal(str(tmp_path))
    entry = JournalEntry(Target("sysfs", None, "eth0", 2), NapiSettings(1, 2, None, True), 1.5, 7)
    j.save([entry])
    assert j.load() == [entry]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    j.save([])
    assert not os.path.exists(j.path)
    assert j.load() == []


def test_journal_uses_the_state_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETDEVKIT_STATE_DIR", str(tmp_path))
    assert Journal().path == str(tmp_path / "journal.json")


def test_corrupt_journal_is_reported_not_ignored(tmp_path: Path) -> None:
    (tmp_path / "journal.json").write_text('{"version": 1, "entries": [{"backend": "x"}]}')
    with pytest.raises(Exception, match="not a netdevkit journal"):
        Journal(str(tmp_path)).load()
