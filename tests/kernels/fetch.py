"""Debian kernels for the kernel matrix, fetched through a private apt configuration.

The system's apt sources are never touched: a sources list, a lists directory
and a cache of our own live under the matrix cache directory (ignored by git),
pointing at the same mirror the system's apt uses (read from
/etc/apt/sources.list*). ``apt-get download`` fetches the kernel packages,
``dpkg-deb -x`` unpacks them and ``depmod -b`` writes the module index the
guest's modprobe needs (Debian generates it at install time, not in the package).

A kernel once unpacked is recorded in ``kernel.json`` and reused: a second run
neither updates the package lists nor downloads anything. Every ``.deb`` it is about to
unpack -- one cached by an earlier run or one just downloaded -- is checked against the
package index (``Size`` and ``SHA256`` of its ``Packages`` stanza): a truncated or damaged
file is removed and fetched again, saying so, instead of failing later in dpkg-deb.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
#: versioned kernel packages (not metapackages): linux-image-6.1.0-50-amd64,
#: linux-binary-7.3.4+deb13-amd64, linux-modules-..., linux-base-...
_KERNEL_PKG = re.compile(r"^linux-(image|binary|modules|base)-\d")
_DEP = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]*)\s*\(=\s*([^)\s]+)\)\s*$")


class FetchError(Exception):
    """A kernel could not be fetched or unpacked (the message names package and suite)."""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What the package index (``Packages``) says a ``.deb`` is."""

    size: int
    sha256: str
    #: ``amd64``, or ``all`` for architecture-independent packages (linux-source-*)
    arch: str = "amd64"


def check_deb(path: Path, want: IndexEntry) -> str | None:
    """What is wrong with the file at *path* against *want*, or None when it matches."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size != want.size:
        return f"{size} bytes where the package index says {want.size} (truncated download?)"
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != want.sha256.lower():
        return (
            f"SHA256 {digest.hexdigest()[:12]}... where the package index says "
            f"{want.sha256[:12]}... (damaged download)"
        )
    return None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class KernelSpec:
    """A kernel of the matrix: Debian's metapackage in a suite, or the newest of
    several suites (``"trixie-backports,sid"``)."""

    label: str
    package: str
    suite: str

    @property
    def suites(self) -> tuple[str, ...]:
        return tuple(self.suite.split(","))


@dataclass(frozen=True, slots=True)
class Kernel:
    """An unpacked kernel, ready to boot."""

    label: str
    package: str
    suite: str
    release: str
    #: the suite the kernel came from (the newest of the spec's suites)
    from_suite: str
    vmlinuz: str
    config: str
    #: the ``lib/modules/RELEASE`` directory (with modules.dep)
    moddir: str
    debs: tuple[str, ...]


#: the matrix: Debian's 6.1 (bookworm), 6.12 (bookworm-security) and newest 7.x
DEFAULT_KERNELS: tuple[KernelSpec, ...] = (
    KernelSpec("6.1", "linux-image-amd64", "bookworm"),
    KernelSpec("6.12", "linux-image-6.12-amd64", "bookworm-security"),
    KernelSpec("7.x", "linux-image-amd64", "trixie-backports,sid"),
)
#: suites the private configuration knows, and the system source they reuse
_SUITES = {
    "bookworm": "debian",
    "bookworm-security": "debian-security",
    "trixie-backports": "debian",
    "sid": "debian",
}


def system_mirrors(etc: Path = Path("/etc/apt")) -> dict[str, str]:
    """``{"debian": URI, "debian-security": URI}`` as the system's apt sources name them."""
    uris: list[str] = []
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file() or not (f.name.endswith(".list") or f.name.endswith(".sources")):
            continue
        for raw in f.read_text().splitlines():
            line = raw.strip()
            if line.startswith("URIs:"):
                uris += line.split()[1:]
            elif line.startswith("deb "):
                uris += [w for w in line.split()[1:] if "://" in w][:1]
    found: dict[str, str] = {}
    for uri in uris:
        base = uri.rstrip("/")
        if base.endswith("/debian-security"):
            found.setdefault("debian-security", base)
        elif base.endswith("/debian"):
            found.setdefault("debian", base)
    if "debian" not in found:
        raise FetchError(f"no Debian mirror in the system's apt sources ({etc}/sources.list*)")
    found.setdefault("debian-security", found["debian"] + "-security")
    return found


class PrivateApt:
    """apt-get/apt-cache with sources, lists and cache under *root* only."""

    def __init__(self, root: Path) -> None:
        # absolute: apt resolves relative Dir:: paths against its own directories
        self.root = root.resolve()
        self._updated = False

    def _opts(self) -> list[str]:
        r = self.root
        return [
            "-o", f"Dir::Etc::sourcelist={r / 'sources.list'}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={r / 'lists'}",
            "-o", f"Dir::Cache={r / 'apt-cache'}",
            "-o", "Dir::State::status=/dev/null",
            "-o", "APT::Sandbox::User=root",
            "-o", "Debug::NoLocking=1",
        ]  # fmt: skip

    def update(self) -> None:
        if self._updated:
            return
        mirrors = system_mirrors()
        (self.root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "apt-cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        lines = [
            f"deb [signed-by={KEYRING}] {mirrors[src]} {suite} main"
            for suite, src in _SUITES.items()
        ]
        (self.root / "sources.list").write_text("\n".join(lines) + "\n")
        self._run(["apt-get", *self._opts(), "-qq", "update"], "update the package lists")
        self._updated = True

    def _run(self, argv: list[str], what: str, cwd: Path | None = None) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
        if proc.returncode != 0:
            raise FetchError(f"apt could not {what}: {proc.stderr.strip()[-400:]}")
        return proc.stdout

    def _stanza(self, what: str, missing: str) -> dict[str, str]:
        """The fields of ``apt-cache show WHAT``'s first stanza; FetchError *missing*."""
        proc = subprocess.run(
            ["apt-cache", *self._opts(), "show", what],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            raise FetchError(missing)
        stanza = proc.stdout.split("\n\n")[0]
        return dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )

    def index_entry(self, pin: str) -> IndexEntry:
        """Size and SHA256 of ``name=version`` as the package index lists them."""
        fields = self._stanza(pin, f"package {pin} is not in the package index")
        try:
            arch = fields.get("Architecture", "amd64").strip()
            return IndexEntry(int(fields["Size"]), fields["SHA256"].strip(), arch)
        except (KeyError, ValueError):
            raise FetchError(f"the package index lists no Size/SHA256 for {pin}") from None

    def depends(self, package: str, suite: str) -> tuple[str, list[tuple[str, str]]]:
        """(version of *package* in *suite*, its ``name (= version)`` dependencies)."""
        fields = self._stanza(f"{package}/{suite}", f"package {package} not found in suite {suite}")
        deps: list[tuple[str, str]] = []
        for alt in fields.get("Depends", "").split(","):
            m = _DEP.match(alt.split("|")[0])
            if m:
                deps.append((m.group(1), m.group(2)))
        return fields["Version"], deps

    def download(self, pins: list[str], dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        self._run(["apt-get", *self._opts(), "-qq", "download", *pins], "download", cwd=dest)


def _newer(a: str, b: str) -> bool:
    """Whether Debian version *a* is newer than *b* (``dpkg --compare-versions``)."""
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0


def _resolve(apt: PrivateApt, spec: KernelSpec) -> tuple[str, list[str]]:
    """The suite chosen (the newest metapackage of *spec*'s suites) and ``name=version``
    of the versioned kernel packages behind it."""
    found: list[tuple[str, str, list[tuple[str, str]]]] = []
    errors: list[str] = []
    for suite in spec.suites:
        try:
            version, deps = apt.depends(spec.package, suite)
        except FetchError as err:
            errors.append(str(err))
            continue
        found.append((suite, version, deps))
    if not found:
        raise FetchError("; ".join(errors))
    suite, _version, deps = found[0]
    for other in found[1:]:
        if _newer(other[1], _version):
            suite, _version, deps = other
    pins: list[str] = []
    todo = list(deps)
    while todo:
        name, version = todo.pop(0)
        if not _KERNEL_PKG.match(name) or f"{name}={version}" in pins:
            continue
        pins.append(f"{name}={version}")
        _v, more = apt.depends(name, suite)
        todo += more
    if not pins:
        raise FetchError(f"{spec.package} in {suite} depends on no versioned kernel package")
    return suite, pins


def _unpack(spec: KernelSpec, suite: str, debs: list[Path], dest: Path) -> Kernel:
    if dest.exists():
        shutil.rmtree(dest)
    root = dest / "root"
    root.mkdir(parents=True)
    for deb in debs:
        proc = subprocess.run(
            ["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise FetchError(f"dpkg-deb could not unpack {deb.name}: {last}")
    moddirs = [p for p in root.glob("*lib/modules/*") if (p / "modules.order").exists()]
    moddirs += [p for p in root.glob("usr/lib/modules/*") if (p / "modules.order").exists()]
    if len(moddirs) != 1:
        raise FetchError(f"{spec.package} ({spec.suite}): expected one modules directory")
    moddir = moddirs[0]
    release = moddir.name
    vmlinuz = next(
        (p for p in (root / "boot" / f"vmlinuz-{release}", moddir / "vmlinuz") if p.exists()),
        None,
    )
    config = next(
        (p for p in (root / "boot" / f"config-{release}", moddir / "config") if p.exists()),
        None,
    )
    if vmlinuz is None or config is None:
        raise FetchError(f"{spec.package} ({spec.suite}): no vmlinuz/config for {release}")
    # depmod -b BASE looks in BASE/lib/modules/RELEASE
    subprocess.run(["depmod", "-b", str(moddir.parent.parent.parent), release], check=True)
    return Kernel(
        spec.label,
        spec.package,
        spec.suite,
        release,
        suite,
        str(vmlinuz),
        str(config),
        str(moddir),
        tuple(d.name for d in debs),
    )


def verified_debs(
    apt: PrivateApt, pins: list[str], debdir: Path, say: Callable[[str], None] = _stderr
) -> list[Path]:
    """The ``.deb`` of each pin in *debdir*, each checked against the package index.

    A cached file that does not match (a download cut short, a full disk) is removed and
    downloaded again, and *say* is told; one that still does not match after the download
    is removed and fails the fetch.
    """
    index = {pin: apt.index_entry(pin) for pin in pins}
    want = {pin: debdir / _deb_name(pin, index[pin].arch) for pin in pins}
    for pin, deb in want.items():
        bad = check_deb(deb, index[pin]) if deb.exists() else None
        if bad is not None:
            say(f"kernel matrix: cached {deb.name}: {bad}: removed, downloading it again")
            deb.unlink()
    missing = [pin for pin, deb in want.items() if not deb.exists()]
    if missing:
        apt.download(missing, debdir)
    for pin, deb in want.items():
        if not deb.exists():
            raise FetchError(f"apt-get download left no {deb.name}")
        bad = check_deb(deb, index[pin])
        if bad is not None:
            deb.unlink()
            raise FetchError(f"apt-get download of {pin}: {bad}; removed {deb.name}")
    return list(want.values())


def fetch(spec: KernelSpec, cache: Path, apt: PrivateApt, refresh: bool = False) -> Kernel:
    """The unpacked kernel of *spec*, from the cache when it is there."""
    cache = cache.resolve()
    dest = cache / "kernels" / spec.label
    record = dest / "kernel.json"
    if record.exists() and not refresh:
        try:
            data = json.loads(record.read_text())
            data["debs"] = tuple(data["debs"])
            kernel = Kernel(**data)
        except (ValueError, TypeError):
            pass  # a record of an older layout: fetch again
        else:
            same = (kernel.package, kernel.suite) == (spec.package, spec.suite)
            if same and Path(kernel.moddir, "modules.dep").exists():
                return kernel
    try:
        apt.update()
        suite, pins = _resolve(apt, spec)
        kernel = _unpack(spec, suite, verified_debs(apt, pins, cache / "debs"), dest)
    except (FetchError, subprocess.CalledProcessError, OSError) as err:
        raise FetchError(
            f"cannot fetch kernel {spec.label}: package {spec.package} from suite "
            f"{spec.suite}: {err}"
        ) from err
    record.write_text(json.dumps(asdict(kernel), indent=1) + "\n")
    return kernel


def _deb_name(pin: str, arch: str = "amd64") -> str:
    """The file name ``apt-get download`` gives ``name=version`` (epoch ':' as %3a)."""
    name, version = pin.split("=", 1)
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
