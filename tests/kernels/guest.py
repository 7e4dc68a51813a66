"""Boot one Debian kernel under qemu and run the matrix tests inside it.

The guest sees this machine's root filesystem read-only over 9p with a tmpfs
overlay on top (it can never change the host's files), the guest kernel's
modules bind-mounted at ``/usr/lib/modules/RELEASE`` and a second, writable
9p share (the only way out) for its results. A busybox initramfs built here
loads the 9p/virtio/overlay modules, assembles that root and ``switch_root``s
into it (not chroot: the kernel's module auto-loading must find the real
modprobe); ``guest-run.sh`` then runs one pytest over the ``matrix`` tests.

KVM is not usable on these machines, so qemu runs with TCG. The guest's only
NIC is a virtio_net device whose user-mode backend is restricted: nothing the
guest sends leaves it.
"""

from __future__ import annotations

import lzma
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fetch import Kernel

BUSYBOX = "/bin/busybox"
#: what the initramfs loads (with their dependencies, from modules.dep)
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_net")
GUEST_SCRIPT = Path(__file__).with_name("guest-run.sh")

_INIT = """#!/bin/busybox sh
# netdevkit kernel-matrix initramfs: assemble the root and switch_root into it.
bb=/bin/busybox
fail() { echo "ndk-init: $*"; $bb echo o > /proc/sysrq-trigger; $bb sleep 10; }
$bb mkdir -p /proc /sys /dev /lower /rw /newroot
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
set -a
. /env
set +a
for m in $NDK_MODULES; do $bb insmod /mods/$m || fail "insmod $m"; done
$bb mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 host /lower \\
  || fail "mount host root"
$bb mount -t tmpfs -o size=1g tmpfs /rw || fail "tmpfs"
$bb mkdir -p /rw/upper /rw/work
$bb mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \\
  || fail "overlay"
$bb mkdir -p /newroot/usr/lib/modules/$NDK_RELEASE /newroot/ndk-out
$bb mount --bind /newroot$NDK_MODDIR /newroot/usr/lib/modules/$NDK_RELEASE || fail "modules"
$bb mkdir -p /newroot/boot && $bb touch /newroot/boot/config-$NDK_RELEASE
$bb mount --bind /newroot$NDK_CONFIG /newroot/boot/config-$NDK_RELEASE || fail "config"
$bb mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /newroot/ndk-out \\
  || fail "mount results share"
$bb mount --move /dev /newroot/dev
$bb umount /sys
$bb umount /proc
exec $bb switch_root /newroot /bin/sh "$NDK_SCRIPT"
"""


@dataclass(frozen=True, slots=True)
class BootResult:
    """What one guest run left behind, and how long its phases took (seconds)."""

    label: str
    release: str
    outdir: str
    #: pytest's exit status inside the guest, None when the guest never reported one
    pytest_rc: int | None
    #: qemu's exit status (None: killed at the timeout)
    qemu_rc: int | None
    boot_s: float
    tests_s: float
    poweroff_s: float
    total_s: float
    error: str = ""


def _module_order(moddir: Path, wanted: tuple[str, ...]) -> list[str]:
    """Paths (relative to *moddir*) of *wanted* modules and their dependencies, deps first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[Path(path).name.split(".ko")[0].replace("-", "_")] = path
    builtin = (moddir / "modules.builtin").read_text()
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps[path]:
            visit(dep)
        order.append(path)

    for name in wanted:
        if name in by_name:
            visit(by_name[name])
        elif f"/{name}.ko" not in builtin:
            raise RuntimeError(f"kernel {moddir.name} has no module {name}")
    return order


def build_initramfs(kernel: Kernel, workdir: Path, pytest_args: list[str]) -> Path:
    """A newc cpio with busybox, the modules and an init for *kernel*."""
    moddir = Path(kernel.moddir)
    tree = workdir / "initramfs"
    if tree.exists():
        shutil.rmtree(tree)
    (tree / "bin").mkdir(parents=True)
    (tree / "mods").mkdir()
    shutil.copy2(BUSYBOX, tree / "bin" / "busybox")
    names: list[str] = []
    for rel in _module_order(moddir, INITRAMFS_MODULES):
        src = moddir / rel
        name = Path(rel).name.removesuffix(".xz")
        data = src.read_bytes()
        (tree / "mods" / name).write_bytes(lzma.decompress(data) if rel.endswith(".xz") else data)
        names.append(name)
    env = {
        "NDK_MODULES": " ".join(names),
        "NDK_RELEASE": kernel.release,
        "NDK_MODDIR": str(moddir),
        "NDK_CONFIG": kernel.config,
        "NDK_SCRIPT": str(GUEST_SCRIPT.resolve()),
        "NDK_PYTEST_ARGS": shlex.join(pytest_args),
    }
    (tree / "env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    init = tree / "init"
    init.write_text(_INIT)
    init.chmod(0o755)
    image = workdir / "initramfs.cpio"
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    with image.open("wb") as out:
        subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
            input="\n".join(files).encode(),
            stdout=out,
            cwd=tree,
            check=True,
        )
    return image


def qemu_argv(kernel: Kernel, initramfs: Path, outdir: Path, console: Path) -> list[str]:
    return [
        "qemu-system-x86_64",
        "-accel", "tcg,thread=multi",
        "-cpu", "max",
        "-smp", "2",
        "-m", "2048",
        "-nodefaults", "-no-user-config", "-no-reboot",
        "-display", "none",
        "-serial", f"file:{console}",
        "-kernel", kernel.vmlinuz,
        "-initrd", str(initramfs),
        "-append", "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init",
        "-virtfs",
        "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={outdir},mount_tag=out,security_model=none",
        # a real NIC for the driver-facing tests; restrict=on: nothing leaves the guest
        "-netdev", "user,id=n0,restrict=on",
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip


def _read_float(path: Path) -> float | None:
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def boot(kernel: Kernel, workdir: Path, timeout: float, pytest_args: list[str]) -> BootResult:
    """Boot *kernel*, run the matrix tests, power off; never leaves qemu running."""
    workdir.mkdir(parents=True, exist_ok=True)
    outdir = workdir / "out"
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir()
    initramfs = build_initramfs(kernel, workdir, pytest_args)
    console = workdir / "console.log"
    argv = qemu_argv(kernel, initramfs, outdir, console)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    error = ""
    try:
        qemu_rc: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        qemu_rc = None
        error = f"timed out after {timeout:.0f} s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    total = time.monotonic() - t0
    # guest-run.sh writes guest uptimes: when it started (boot done), when pytest ended
    started = _read_float(outdir / "t-start")
    ended = _read_float(outdir / "t-end")
    rc_text = (outdir / "rc").read_text().strip() if (outdir / "rc").exists() else ""
    pytest_rc = int(rc_text) if rc_text.isdigit() else None
    if pytest_rc is None and not error:
        error = f"the guest reported no result (console: {console})"
    boot_s = started if started is not None else total
    tests_s = (ended - started) if started is not None and ended is not None else 0.0
    return BootResult(
        kernel.label,
        kernel.release,
        str(outdir),
        pytest_rc,
        qemu_rc,
        boot_s,
        tests_s,
        max(0.0, total - boot_s - tests_s),
        total,
        error,
    )
