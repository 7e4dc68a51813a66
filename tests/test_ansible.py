"""The Ansible collection in contrib/ansible (netdevkit.tuning.netdevkit_profile), run by
ansible-core's ``ansible-playbook`` with ``connection: local`` against a testbed namespace.

The collection is found through a collections path (``ANSIBLE_COLLECTIONS_PATH``) in the
playbook tests, and ``ansible-galaxy collection build`` + ``install`` is checked too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netdevkit.netdev.client import Netdev, ifindex_of
from netdevkit.testbed import Testbed

pytest.importorskip("ansible", reason="ansible-core is not installed (pip install ansible-core)")

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = ROOT / "contrib" / "ansible"
COLLECTION = COLLECTIONS / "ansible_collections" / "netdevkit" / "tuning"
BIN = Path(sys.executable).parent
SUSPEND = (100, 20_000, 20_000_000)

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: tune
      netdevkit.tuning.netdevkit_profile:
        content: "{{ profile }}"
        state: "{{ state }}"
        executable: "{{ netdevkit }}"
      register: result
      ignore_errors: true
    - name: keep the result
      ansible.builtin.copy:
        content: "{{ result | to_json }}"
        dest: "{{ out }}"
      check_mode: false
"""


def values(ns: str, ifname: str) -> list[tuple[Any, ...]]:
    with Netdev.open(ns) as nd:
        napis = sorted(nd.napi_dump(ifindex_of(ifname, ns)), key=lambda n: n.id)
    return [(n.defer_hard_irqs, n.gro_flush_timeout, n.irq_suspend_timeout) for n in napis]


class Play:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.book = tmp / "play.yml"
        self.book.write_text(PLAYBOOK)
        home = tmp / "ansible-home"
        self.env = {
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
        }

    def run(self, profile: str, *flags: str, state: str = "present") -> tuple[dict[str, Any], str]:
        out = self.tmp / "result.json"
        extra = {
            "profile": profile,
            "state": state,
            "netdevkit": str(BIN / "netdevkit"),
            "out": str(out),
        }
        r = subprocess.run(
            [str(BIN / "ansible-playbook"), str(self.book), "-e", json.dumps(extra), *flags],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(out.read_text()), r.stdout


@pytest.mark.kernel
def test_playbook_changed_then_unchanged_check_mode_diff_and_absent(
    testbed4: Testbed, tmp_path: Path
) -> None:
    ns, dev = testbed4.server_ns, testbed4.server_if
    profile = f'netns = "{ns}"\n[[interface]]\nmatch = "{dev}"\npreset = "suspend"\n'
    play = Play(tmp_path)

    checked, out = play.run(profile, "--check", "--diff")
    assert checked["changed"] is True, checked
    assert values(ns, dev) == [(0, 0, 0)] * 4  # check mode changed nothing
    assert "defer-hard-irqs 0 -> 100" in out, out  # netdevkit's own before -> after

    first, _ = play.run(profile)
    assert first["changed"] is True and not first.get("failed"), first
    assert values(ns, dev) == [SUSPEND] * 4
    second, _ = play.run(profile)
    assert second["changed"] is False and not second.get("failed"), second

    checked, _ = play.run(profile, "--check", state="absent")
    assert checked["changed"] is True
    assert values(ns, dev) == [SUSPEND] * 4
    gone, _ = play.run(profile, state="absent")
    assert gone["changed"] is True and not gone.get("failed"), gone
    assert values(ns, dev) == [(0, 0, 0)] * 4
    again, _ = play.run(profile, state="absent")
    assert again["changed"] is False, again


def test_bad_profile_fails_with_netdevkit_one_line(tmp_path: Path) -> None:
    bad = '[[interface]]\nmatch = "lo"\npresett = "suspend"\n'
    result, _ = Play(tmp_path).run(bad)
    (tmp_path / "bad.toml").write_text(bad)
    direct = subprocess.run(
        [str(BIN / "netdevkit"), "apply", str(tmp_path / "bad.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert direct.returncode == 2 and direct.stderr.count("\n") == 1, direct.stderr
    assert result["failed"] is True and result["rc"] == 2
    assert result["msg"] == direct.stderr.strip().removeprefix("netdevkit: error: "), result
    assert "unknown key 'presett'" in result["msg"]


def test_collection_builds_and_installs_with_ansible_galaxy(tmp_path: Path) -> None:
    galaxy = shutil.which("ansible-galaxy", path=str(BIN))
    assert galaxy is not None
    env = {**os.environ, "ANSIBLE_HOME": str(tmp_path / "home")}
    build = subprocess.run(
        [galaxy, "collection", "build", str(COLLECTION), "--output-path", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = tmp_path.glob("netdevkit-tuning-*.tar.gz")
    dest = tmp_path / "installed"
    install = subprocess.run(
        [galaxy, "collection", "install", str(tarball), "-p", str(dest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    module = dest / "ansible_collections/netdevkit/tuning/plugins/modules/netdevkit_profile.py"
    assert module.read_text() == (COLLECTION / "plugins/modules/netdevkit_profile.py").read_text()
