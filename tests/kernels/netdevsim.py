"""netdevsim, the kernel's test NIC, built out of tree for a guest kernel of the matrix.

Debian does not build netdevsim (``# CONFIG_NETDEVSIM is not set``) but ships the
matching source (``linux-source-X.Y``) and headers (``linux-headers-RELEASE``, for
``Module.symvers``). Both are fetched like the kernels (the private apt configuration,
every ``.deb`` checked against the package index) into ``.cache/kernels/debs``.

The build: the source tarball unpacked (without ``Documentation/`` and selftests), the
guest kernel's own config plus ``CONFIG_NETDEVSIM=m``, ``olddefconfig``,
``modules_prepare`` (host tools: fixdep, modpost, objtool), then ``make M=drivers/net/
netdevsim`` with the kernel's ``Module.symvers`` and ``KERNELRELEASE`` set, so the
vermagic is the guest's. This machine's gcc is not the one Debian used (gcc-12 here,
gcc-14 for 7.x; trixie's compiler needs a newer libc than this machine has): Kconfig
then drops only compiler- and Rust-dependent symbols, listed in ``config.diff``. A
stand-in ``pahole`` reports Debian's version, because without it Kconfig drops
``DEBUG_INFO_BTF`` and with it ``SCHED_CLASS_EXT``, which changes ``struct
task_struct`` under the module; module BTF is skipped anyway (there is no vmlinux).

The ``.ko`` is kept in ``.cache/kernels/netdevsim/LABEL/`` with ``build.json`` (what it
was built from): a second run builds nothing. It is installed as
``updates/netdevsim.ko`` in the unpacked kernel's module tree (``depmod`` again), where
the guest's ``modprobe netdevsim`` finds it with its dependencies; the build tree is
removed (about 1.7 GB).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from fetch import FetchError, Kernel, PrivateApt, verified_debs

#: the guest kernels netdevsim is built for (6.12's has no queue API: nothing to test)
NETDEVSIM_KERNELS = ("7.x",)
#: raise when the recipe below changes, so cached modules are rebuilt
RECIPE = 1
_PAHOLE = "#!/bin/sh\n# stand-in for Debian's pahole: only its version is asked\necho v1.30\n"


class NetdevsimError(Exception):
    """netdevsim could not be built for a kernel (the message names the package)."""


def _version(kernel: Kernel) -> str:
    """The Debian version of *kernel*'s packages (from the name of its first ``.deb``)."""
    return kernel.debs[0].split("_")[1].replace("%3a", ":")


def pins(kernel: Kernel) -> tuple[str, str]:
    """``name=version`` of the source and headers packages matching *kernel*."""
    version = _version(kernel)
    major_minor = ".".join(kernel.release.split(".")[:2])
    return (
        f"linux-source-{major_minor}={version}",
        f"linux-headers-{kernel.release}={version}",
    )


def _run(argv: list[str], cwd: Path, log: Path, what: str) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise NetdevsimError(f"{what} failed (exit {proc.returncode}; {log}): {' | '.join(tail)}")


def _unpack_source(source_deb: Path, headers_deb: Path, work: Path, log: Path) -> Path:
    """The kernel tree from *source_deb*, with ``Module.symvers`` from *headers_deb*."""
    tarball = subprocess.run(
        ["dpkg-deb", "-c", str(source_deb)], capture_output=True, text=True, check=True
    ).stdout.split()
    name = next((w for w in tarball if w.endswith(".tar.xz")), None)
    if name is None:
        raise NetdevsimError(f"{source_deb.name} holds no source tarball")
    pipe = f"dpkg-deb --fsys-tarfile '{source_deb}' | tar -x -O '{name}' | tar -xJ"
    exclude = ["--exclude=*/Documentation/[!K]*", "--exclude=*/tools/testing"]
    _run(["sh", "-c", " ".join([pipe, *exclude])], work, log, f"unpacking {source_deb.name}")
    trees = [p for p in work.iterdir() if (p / "Makefile").exists()]
    if len(trees) != 1:
        raise NetdevsimError(f"{source_deb.name}: expected one kernel tree")
    symvers = "./usr/src/*/Module.symvers"
    _run(
        ["sh", "-c", f"dpkg-deb --fsys-tarfile '{headers_deb}' | tar -x -O --wildcards "
         f"'{symvers}' > '{trees[0] / 'Module.symvers'}'"],
        work, log, f"Module.symvers from {headers_deb.name}",
    )  # fmt: skip
    return trees[0]


def _config_diff(ours: Path, theirs: Path) -> str:
    def symbols(p: Path) -> set[str]:
        return {ln for ln in p.read_text().splitlines() if ln.startswith("CONFIG_")}

    a, b = symbols(theirs), symbols(ours)
    return "".join(f"-{s}\n" for s in sorted(a - b)) + "".join(f"+{s}\n" for s in sorted(b - a))


def _compile(kernel: Kernel, tree: Path, out: Path, log: Path) -> Path:
    """netdevsim.ko built in *tree* for *kernel*; the config's differences go to *out*."""
    pahole = out / "pahole"
    pahole.write_text(_PAHOLE)
    pahole.chmod(0o755)
    shutil.copyfile(kernel.config, tree / ".config")
    _run(
        ["./scripts/config", "--file", ".config", "-m", "NETDEVSIM", "-d", "MODULE_SIG_ALL",
         "--set-str", "SYSTEM_TRUSTED_KEYS", "", "--set-str", "SYSTEM_REVOCATION_KEYS", ""],
        tree, log, "scripts/config",
    )  # fmt: skip
    make = ["make", "-j2", f"PAHOLE={pahole}", f"KERNELRELEASE={kernel.release}"]
    _run([*make, "olddefconfig"], tree, log, "make olddefconfig")
    (out / "config.diff").write_text(_config_diff(tree / ".config", Path(kernel.config)))
    _run([*make, "modules_prepare"], tree, log, "make modules_prepare")
    _run([*make, "M=drivers/net/netdevsim", "modules"], tree, log, "make M=drivers/net/netdevsim")
    ko = tree / "drivers" / "net" / "netdevsim" / "netdevsim.ko"
    if not ko.exists():
        raise NetdevsimError(f"the build left no netdevsim.ko ({log})")
    return ko


def _install(kernel: Kernel, ko: Path) -> None:
    """*ko* as ``updates/netdevsim.ko`` of the unpacked kernel, its index rebuilt."""
    moddir = Path(kernel.moddir)
    dest = moddir / "updates" / "netdevsim.ko"
    if dest.exists() and dest.read_bytes() == ko.read_bytes():
        return
    dest.parent.mkdir(exist_ok=True)
    shutil.copyfile(ko, dest)
    subprocess.run(["depmod", "-b", str(moddir.parent.parent.parent), kernel.release], check=True)


def build(kernel: Kernel, cache: Path, apt: PrivateApt) -> tuple[Path, bool]:
    """netdevsim.ko for *kernel*, installed in its module tree; (path, whether it was built).

    Cached in ``cache/netdevsim/LABEL``: a second run neither downloads nor builds.
    """
    out = cache.resolve() / "netdevsim" / kernel.label
    record, ko = out / "build.json", out / "netdevsim.ko"
    source_pin, headers_pin = pins(kernel)
    want = {"release": kernel.release, "source": source_pin, "headers": headers_pin,
            "recipe": RECIPE}  # fmt: skip
    try:
        done = json.loads(record.read_text()) == want and ko.exists()
    except (OSError, ValueError):
        done = False
    if not done:
        try:
            _fresh_build(kernel, cache, apt, out, (source_pin, headers_pin))
        except (FetchError, NetdevsimError, OSError, subprocess.CalledProcessError) as err:
            raise NetdevsimError(
                f"cannot build netdevsim for kernel {kernel.label} ({kernel.release}) from "
                f"package {source_pin} (with {headers_pin}): {err}"
            ) from err
        record.write_text(json.dumps(want, indent=1) + "\n")
    _install(kernel, ko)
    return ko, not done


def _fresh_build(
    kernel: Kernel, cache: Path, apt: PrivateApt, out: Path, pkgs: tuple[str, str]
) -> None:
    if out.exists():
        shutil.rmtree(out)
    work = out / "build"
    work.mkdir(parents=True)
    log = out / "build.log"
    apt.update()
    source_deb, headers_deb = verified_debs(apt, list(pkgs), cache.resolve() / "debs")
    try:
        tree = _unpack_source(source_deb, headers_deb, work, log)
        shutil.copyfile(_compile(kernel, tree, out, log), out / "netdevsim.ko")
    finally:
        shutil.rmtree(work, ignore_errors=True)
