"""The one write-ahead journal (netdevkit.journal) without a kernel: a fake kind stands in
for NAPI settings, epoll parameters and the devmem setup."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from netdevkit import journal as jmod
from netdevkit.errors import NetdevkitError
from netdevkit.journal import Journal, Record, diff_all, register_kind, restore_all


class Box:
    """A fake system object: a dict of values that a restorer puts back."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}
        self.fail: set[str] = set()

    def restore(self, record: Record) -> str:
        if record.key in self.fail:
            raise NetdevkitError(f"cannot put {record.key} back")
        now = self.values.get(record.key)
        if now is None:
            return f"{record.key}: gone"
        if now == record.before:
            return f"{record.key}: already at its old value"
        self.values[record.key] = dict(record.before)
        return f"{record.key}: restored"

    def current(self, record: Record) -> dict[str, Any] | None:
        return self.values.get(record.key)


@pytest.fixture
def box() -> Box:
    b = Box()
    register_kind("test-box", b)
    return b


def rec(key: str, v: int) -> Record:
    return Record("test-box", key, {"v": v}, {"label": f"box {key}"})


def test_intent_is_durable_before_the_body_and_keeps_the_oldest_value(tmp_path: Path) -> None:
    j = Journal(str(tmp_path))
    with j.intent([rec("a", 1)]) as added:
        on_disk = json.loads((tmp_path / "journal.json").read_text())
        assert [e["key"] for e in on_disk["entries"]] == ["a"]
        assert on_disk["entries"][0]["pid"] == os.getpid()
        assert [r.key for r in added] == ["a"]
    with j.intent([rec("a", 99), rec("b", 2)]) as added:
        assert [r.key for r in added] == ["b"]
    assert [(r.key, r.before) for r in j.records()] == [("a", {"v": 1}), ("b", {"v": 2})]
    j.add([rec("c", 3)])
    j.forget([rec("a", 0), ("test-box", "b"), "c"])  # a record, (kind, key), a bare key
    assert j.records() == []
    assert not (tmp_path / "journal.json").exists()


def test_restore_all_restores_newest_first_keeps_failures(tmp_path: Path, box: Box) -> None:
    j = Journal(str(tmp_path))
    box.values = {"a": {"v": 5}, "b": {"v": 2}}
    box.fail = {"c"}
    j.add([rec("a", 1), rec("b", 2), rec("c", 3), rec("gone", 4)])
    out = restore_all(j, kinds=["test-box"])
    assert [o.record.key for o in out] == ["gone", "c", "b", "a"]
    assert [o.status for o in out] == ["restored", "failed", "restored", "restored"]
    # a change that never happened (b is at its old value) restores as a no-op
    assert out[2].message == "b: already at its old value"
    assert box.values["a"] == {"v": 1}
    assert [r.key for r in j.records()] == ["c"]  # failed ones stay for a retry


def test_unknown_kind_stays_and_is_named(tmp_path: Path) -> None:
    j = Journal(str(tmp_path))
    j.add([Record("from-the-future", "x", {}, {})])
    (o,) = restore_all(j)
    assert o.status == "failed" and "no restorer for kind 'from-the-future'" in o.message
    assert len(j.records()) == 1


def test_diff_covers_a_registered_kind(tmp_path: Path, box: Box) -> None:
    j = Journal(str(tmp_path))
    box.values = {"a": {"v": 7}, "b": {"v": 2}}
    j.add([rec("a", 1), rec("b", 2), rec("c", 3)])
    rows = diff_all(j, kinds=["test-box"])
    assert [(r.record.key, r.status) for r in rows] == [
        ("a", "differs"),
        ("b", "same"),
        ("c", "gone"),
    ]
    assert rows[0].differs == {"v": (1, 7)}


def test_a_killed_writers_temporary_file_is_removed_by_the_next(tmp_path: Path) -> None:
    (tmp_path / "journal.json.tmp").write_text('{"half a jour')
    j = Journal(str(tmp_path))
    assert j.records() == []  # reading does not need the lock...
    j.add([rec("a", 1)])  # ...writing takes it and clears the leftover
    assert sorted(os.listdir(tmp_path)) == ["journal.json", "journal.lock"]


@pytest.mark.parametrize("other_thread", [False, True], ids=["one-thread", "threaded"])
def test_signal_during_the_write_is_handled_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other_thread: bool
) -> None:
    # With another thread alive the kernel hands a process-directed signal to that
    # thread (it does not block it), and Python would run the handler mid-write.
    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)
    if other_thread:
        helper.start()
    j = Journal(str(tmp_path))
    real_fsync = os.fsync
    sent: list[int] = []

    def fsync_then_interrupt(fd: int) -> None:
        if not sent:
            sent.append(fd)
            os.kill(os.getpid(), signal.SIGINT)  # lands in the middle of the write
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_then_interrupt)
    # Another thread that does not block signals: the kernel may hand it the signal.
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            j.add([rec("a", 1)])
    finally:
        stop.set()
        other.join()
    assert sent
    # the interrupt came after the journal was whole and in place
    stop.set()
    assert [r.key for r in j.records()] == ["a"]
    assert not (tmp_path / "journal.json.tmp").exists()


def test_version_1_journal_is_read_as_napi_records(tmp_path: Path) -> None:
    v1 = {
        "version": 1,
        "entries": [
            {
                "backend": "netlink",
                "netns": "lab",
                "ifname": "ndk-s",
                "ifindex": 2,
                "napi_id": 8193,
                "position": 0,
                "baseline": {"defer_hard_irqs": 0, "gro_flush_timeout": 0},
                "recorded_at": 1.0,
                "pid": 42,
            }
        ],
    }
    (tmp_path / "journal.json").write_text(json.dumps(v1))
    (r,) = Journal(str(tmp_path)).records()
    assert (r.kind, r.key, r.pid) == ("napi", "netlink/lab/2/8193", 42)
    assert r.info["ifname"] == "ndk-s" and r.before["defer_hard_irqs"] == 0


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff\xfe binary",
        b"[1, 2]",
        b'{"version": 2, "entries": [{"kind": "napi"}]}',
        b'{"version": 2, "entries": [{"kind": "", "key": "k", "before": {}}]}',
        b'{"version": 7, "entries": []}',
        b'{"version": 2, "entries": {"a": 1}}',
    ],
)
def test_a_damaged_journal_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "journal.json").write_bytes(content)
    with pytest.raises(NetdevkitError, match="not a netdevkit journal"):
        Journal(str(tmp_path)).records()


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"kind": "napi", "before": {}, "info": {}}, "key"),
        ({"key": "k", "before": {}}, "kind"),
        ({"kind": "napi", "key": "k"}, "before"),
    ],
)
def test_an_entry_without_a_field_names_it(
    tmp_path: Path, entry: dict[str, Any], field: str
) -> None:
    path = tmp_path / "journal.json"
    path.write_text(json.dumps({"version": 2, "entries": [entry]}))
    with pytest.raises(NetdevkitError) as exc:
        Journal(str(tmp_path)).records()
    assert str(exc.value) == (
        f"the journal {path} is not a netdevkit journal (format 2): an entry has no "
        f"{field!r} field ({json.dumps(entry, sort_keys=True)}); fix or remove it"
    )


def test_a_version_1_entry_without_its_baseline_names_it(tmp_path: Path) -> None:
    (tmp_path / "journal.json").write_text('{"version": 1, "entries": [{"backend": "sysfs"}]}')
    with pytest.raises(NetdevkitError, match="an entry has no 'baseline' field"):
        Journal(str(tmp_path)).records()


def test_the_lock_file_is_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with Journal(str(tmp_path)).locked():
            pass
        assert (tmp_path / "journal.lock").stat().st_mode & 0o7777 == 0o600
        # one an older netdevkit made 0755 is corrected on the next use
        (tmp_path / "journal.lock").chmod(0o755)
        with Journal(str(tmp_path)).locked():
            pass
        assert (tmp_path / "journal.lock").stat().st_mode & 0o7777 == 0o600
    finally:
        os.umask(old)


def test_kind_modules_register_napi_and_epoll() -> None:
    assert jmod.load_kind_modules() == []
    assert {"napi", "epoll"} <= set(jmod.registered_kinds())


def test_restore_all_writes_the_journal_once_and_also_when_interrupted(
    tmp_path: Path, box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = Journal(str(tmp_path))
    keys = [f"k{i}" for i in range(200)]
    box.values = {k: {"v": 9} for k in keys}
    j.add([rec(k, 1) for k in keys])
    saves: list[int] = []
    real_save = Journal._save

    def counting_save(self: Journal, records: Any) -> None:
        saves.append(len(records))
        real_save(self, records)

    monkeypatch.setattr(Journal, "_save", counting_save)
    box.fail = {"k0"}
    assert [o.status for o in restore_all(j)].count("restored") == 199
    assert saves == [1]  # one rewrite for 200 records (it was one per record: quadratic)
    assert [r.key for r in j.records()] == ["k0"]

    # Ctrl-C in the middle: what was put back leaves the journal, the rest stays.
    box.fail = set()
    j.add([rec(k, 1) for k in keys[1:]])
    box.values = {k: {"v": 9} for k in keys}
    real_restore = box.restore

    def interrupted(record: Record) -> str:
        if record.key == "k100":
            raise KeyboardInterrupt
        return real_restore(record)

    monkeypatch.setattr(box, "restore", interrupted)
    with pytest.raises(KeyboardInterrupt):
        restore_all(j)
    assert sorted(r.key for r in j.records()) == sorted(keys[:101])
    assert all(box.values[k] == {"v": 1} for k in keys[101:])
