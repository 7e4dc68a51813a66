"""A peer host for the remote bench's tests: Debian's openssh-server in a namespace.

The testbed's client namespace plays the peer: ``sshd -D -f CONFIG`` runs there, listening
on the testbed's client address only, with a host key, a config and one authorized key,
all in the test's temporary directory (sshd's privilege-separation directory /run/sshd is
a tmpfs in a mount namespace of sshd's own: nothing is written outside the temp dir). No
PAM, no password: root logs in with the test's key only. The "NIC" is the testbed's
server end (``ndk-s`` in the server namespace), and the bench runs there (``--netns``),
its ssh included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from netdevkit.testbed import Testbed
from netdevkit.testbed.journal import ns_pids

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


@dataclass(frozen=True)
class SshPeer:
    tb: Testbed
    ssh_config: Path
    sshd: subprocess.Popen[bytes]

    @property
    def target(self) -> str:
        return f"root@{self.tb.client_addr}"

    def bench_args(self) -> list[str]:
        """The bench's options that put its servers on ndk-s and its clients here."""
        return [
            "--netns", self.tb.server_ns, "--ifname", "ndk-s", "--peer", self.target,
            "--ssh-config", str(self.ssh_config), "--peer-python", sys.executable,
        ]  # fmt: skip

    def processes(self) -> list[int]:
        """Processes in the peer namespace other than the listening sshd."""
        return [p for p in ns_pids(self.tb.client_ns) if p != self.sshd.pid]

    def wait_no_processes(self, timeout: float = 10.0) -> list[int]:
        """What is left after sshd's per-connection processes had time to end."""
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left


def _keys(tmp: Path) -> tuple[Path, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    host, user = tmp / "host_key", tmp / "user_key"
    for key in (host, user):
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
        )
    return host, user


def _configs(tmp: Path, addr: str, path: str | None) -> tuple[Path, Path]:
    host, user = _keys(tmp)
    (tmp / "authorized_keys").write_text((tmp / "user_key.pub").read_text())
    sshd_config = tmp / "sshd_config"
    lines = [
        f"ListenAddress {addr}:22",
        f"HostKey {host}",
        "PidFile none",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}",
        "StrictModes no",
        "LogLevel ERROR",
    ]
    if path is not None:
        lines.append(f"SetEnv PATH={path}")
    sshd_config.write_text("\n".join(lines) + "\n")
    pub = (tmp / "host_key.pub").read_text().split()
    (tmp / "known_hosts").write_text(f"{addr} {pub[0]} {pub[1]}\n")
    ssh_config = tmp / "ssh_config"
    ssh_config.write_text(
        "Host *\n"
        f"  IdentityFile {user}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {tmp / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
        "  ConnectTimeout 5\n  LogLevel ERROR\n"
    )
    return sshd_config, ssh_config


def _wait_port(tb: Testbed, sshd: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sshd.poll() is not None:
            err = sshd.stderr.read().decode() if sshd.stderr else ""
            pytest.fail(f"sshd exited with status {sshd.returncode}: {err}")
        with tb.socket("server") as s:
            s.settimeout(0.5)
            if s.connect_ex((tb.client_addr, 22)) == 0:
                return
        time.sleep(0.1)
    pytest.fail("sshd did not listen within 10 s")


def path_without(tmp: Path, program: str) -> str:
    """A PATH directory holding the usual programs except *program* (symlinks)."""
    bindir = tmp / f"bin-without-{program}"
    bindir.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name != program and not (bindir / name).exists():
                (bindir / name).symlink_to(os.path.join(d, name))
    return str(bindir)


@contextmanager
def ssh_peer(tb: Testbed, tmp: Path, *, path: str | None = None) -> Iterator[SshPeer]:
    """sshd in *tb*'s client namespace (see the module docstring); stopped after."""
    if not os.path.exists(SSHD):
        pytest.skip("needs Debian's openssh-server (sshd): apt-get install openssh-server")
    sshd_config, ssh_config = _configs(tmp, tb.client_addr, path)
    script = (
        "mount -t tmpfs -o size=1m tmpfs /run && mkdir -m 755 /run/sshd && "
        f'exec {SSHD} -D -e -f "$0"'
    )
    sshd = tb.popen(
        "client",
        ["unshare", "-m", "sh", "-c", script, str(sshd_config)],
        stderr=subprocess.PIPE,
    )
    try:
        _wait_port(tb, sshd)
        yield SshPeer(tb, ssh_config, sshd)
    finally:
        sshd.terminate()
        sshd.wait(timeout=5)
        if sshd.stderr is not None:
            sshd.stderr.close()


def talk(peer: SshPeer, *remote: str) -> str:
    """Run a command on the peer with the test's ssh config (a check the test makes)."""
    r = subprocess.run(
        ["ip", "netns", "exec", peer.tb.server_ns, "ssh", "-F", str(peer.ssh_config),
         "-o", "BatchMode=yes", peer.target, *remote],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return r.stdout


__all__ = ["SshPeer", "path_without", "ssh_peer", "talk"]
