"""Device-wide NAPI knobs in sysfs, read and written inside any network namespace.

The fallback for kernels without ``napi-set`` (before Linux 6.13):
``/sys/class/net/DEV/{napi_defer_hard_irqs,gro_flush_timeout,threaded}``.
Each applies to the *whole device*: on 6.13+ a write also overwrites the
per-NAPI value of every NAPI of the device (``netdev_set_defer_hard_irqs``,
``netdev_set_gro_flush_timeout`` walk ``dev->napi_list``), and NAPIs created
later start from it. There is no sysfs knob for ``irq-suspend-timeout``.

Kernel facts that shape :func:`in_netns`:

- A sysfs mount shows the ``/sys/class/net`` of the network namespace that
  *mounted* it (the mount is tagged with the mounter's netns), not the one the
  reader is in. Reading another namespace's devices therefore needs a sysfs
  mounted from inside that namespace -- which is what ``ip netns exec``
  does (unshare the mount namespace, mount a fresh sysfs on /sys).
- ``unshare(CLONE_NEWNS | CLONE_FS)`` works for a single thread of a
  multi-threaded process: CLONE_FS gives the thread its own fs_struct, so the
  new mount namespace is that thread's alone. ``setns(CLONE_NEWNET)`` moves
  only the calling thread too.
- The mount namespace dies with the last task in it, taking the sysfs mount
  along. So a *throwaway thread* that unshares, makes its mounts private
  (so nothing propagates back to the host), enters the netns, mounts sysfs on
  /sys, does its reads/writes and exits leaves no trace and never disturbs
  the calling thread's namespaces. No fork, no subprocess, no cleanup.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from ..errors import NotFoundError, PrivilegeError, translate_oserror
from ..netns import CLONE_NEWNET, path_of
from .model import threaded_value
from .presets import NapiSettings

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

# sysfs file -> NapiSettings field. gro_flush_timeout is in ns;
# napi_defer_hard_irqs is capped at S32_MAX by the kernel; threaded reads 0/1.
FILES: dict[str, str] = {
    "defer_hard_irqs": "napi_defer_hard_irqs",
    "gro_flush_timeout": "gro_flush_timeout",
    "threaded": "threaded",
}

T = TypeVar("T")


def _c() -> ctypes.CDLL:
    # dlopen of the already-loaded libc: cheap, and no module-level cache.
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _enter_private_sysfs(netns: str) -> None:
    """In the calling (throwaway) thread: own mount ns, enter *netns*, fresh /sys."""
    libc = _c()
    _check(libc.unshare(CLONE_NEWNS | CLONE_FS), "unshare(CLONE_NEWNS|CLONE_FS)")
    # Without this the sysfs mount below would propagate to shared peers.
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    fd = os.open(path_of(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(libc.setns(fd, CLONE_NEWNET), f"setns({netns})")
    finally:
        os.close(fd)
    _check(libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None), "mount sysfs on /sys")


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run *fn* where ``/sys/class/net`` shows the devices of *netns*.

    ``None`` runs *fn* right here (the process's own sysfs). Otherwise *fn*
    runs in a throwaway thread (see the module docstring); its exceptions
    are re-raised in the caller. Needs CAP_SYS_ADMIN for a named netns.
    """
    if netns is None:
        return fn()
    if not os.path.exists(path_of(netns)):
        raise NotFoundError(f"network namespace {netns!r} does not exist (see `ip netns list`)")
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            _enter_private_sysfs(netns)
        except OSError as err:
            failure.append(
                PrivilegeError(
                    f"cannot mount a sysfs for network namespace {netns!r} ({err}); "
                    "needs CAP_SYS_ADMIN (run as root)"
                )
            )
            return
        try:
            result.append(fn())
        except BaseException as err:  # re-raised in the caller below
            failure.append(err)

    t = threading.Thread(target=run, name=f"netdevkit-sysfs-{netns}", daemon=True)
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return result[0]


def _path(ifname: str, name: str) -> str:
    if not ifname or "/" in ifname or ifname in (".", ".."):
        raise NotFoundError(f"no interface named {ifname!r}")
    return os.path.join("/sys/class/net", ifname, name)


def _read_here(ifname: str) -> NapiSettings:
    vals: dict[str, int | bool | None] = {}
    if not os.path.isdir(_path(ifname, "")):
        raise NotFoundError(f"no interface named {ifname!r} in /sys/class/net")
    for field, fname in FILES.items():
        try:
            with open(_path(ifname, fname), encoding="ascii") as f:
                text = f.read().strip()
        except FileNotFoundError:
            continue  # an old kernel without this knob
        # threaded reads 0/1, and 2 for busy-poll threading on 6.19+.
        vals[field] = threaded_value(int(text)) if field == "threaded" else int(text)
    return NapiSettings(**vals)  # type: ignore[arg-type]


def _write_here(ifname: str, values: NapiSettings, netns: str | None) -> None:
    for field, fname in FILES.items():
        v = getattr(values, field)
        if v is None:
            continue
        text = str(int(v))
        what = f"write {text} to /sys/class/net/{ifname}/{fname}" + (
            f" in netns {netns}" if netns else ""
        )
        try:
            with open(_path(ifname, fname), "w", encoding="ascii") as f:
                f.write(text)
        except FileNotFoundError:
            raise NotFoundError(f"{what}: no such device or knob") from None
        except OSError as err:
            raise translate_oserror(err, what, capability="CAP_NET_ADMIN") from err


def read(netns: str | None, ifname: str) -> NapiSettings:
    """The device-wide values (irq_suspend_timeout stays None: no sysfs knob)."""
    return in_netns(netns, lambda: _read_here(ifname))


def write(netns: str | None, ifname: str, values: NapiSettings) -> None:
    """Write the knobs *values* sets, in the order defer, gro, threaded."""
    in_netns(netns, lambda: _write_here(ifname, values, netns))
