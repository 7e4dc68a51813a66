"""Enter a named network namespace for the current thread, without pyroute2.

Kernel fact relied on: ``setns(fd, CLONE_NEWNET)`` moves only the calling
thread, and a socket stays in the namespace it was created in for its whole
life. So a netlink socket (or any socket) opened inside :func:`entered` keeps
talking to that namespace after the thread has switched back.

Named namespaces are the bind mounts that ``ip netns add`` (and pyroute2)
create under ``/run/netns``.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from ._argcheck import str_arg
from .errors import NotFoundError, PrivilegeError, RequestError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000


def _setns(fd: int, nstype: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, nstype)
        return
    import ctypes  # only on 3.11 (os.setns is 3.12+), and only when switching: start-up time

    libc = ctypes.CDLL(None, use_errno=True)  # the process, libc included
    if libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


#: NAME_MAX: the longest file name under /run/netns (and so the longest namespace name)
NAME_MAX = 255


def path_of(name: str) -> str:
    """The bind-mount path of namespace *name*.

    Raises :class:`RequestError` for names no namespace can have: empty, ``.``/``..``,
    with a slash or a NUL, or longer than NAME_MAX bytes, and
    :class:`~netdevkit.errors.ArgumentTypeError` for a name that is not a str.
    """
    str_arg("netns", name)
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise RequestError(f"network namespace {name[:40]!r}: not a valid namespace name")
    if len(os.fsencode(name)) > NAME_MAX:
        raise RequestError(
            f"network namespace {name[:20]!r}... is {len(os.fsencode(name))} bytes long: "
            f"a namespace name has at most {NAME_MAX} (see `ip netns list`)"
        )
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path_of(name))


def list_names() -> list[str]:
    """Names of the namespaces under /run/netns, sorted."""
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the body with the current thread inside namespace *name*.

    ``None`` means "stay where you are". The thread always returns to its
    original namespace, also when the body raises.
    """
    if name is None:
        yield
        return
    try:
        target = os.open(path_of(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError(
            f"network namespace {name!r} does not exist (see `ip netns list`)"
        ) from None
    except PermissionError as err:
        raise PrivilegeError(f"cannot open network namespace {name!r}: {err}") from err
    except OSError as err:
        raise NotFoundError(f"cannot open network namespace {name!r}: {err.strerror}") from None
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _setns(target, CLONE_NEWNET)
            except PermissionError as err:
                raise PrivilegeError(
                    f"cannot enter network namespace {name!r}: needs CAP_SYS_ADMIN (run as root)"
                ) from err
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                # setns() of a file that is no nsfs mount (or another kind of namespace)
                raise NotFoundError(
                    f"{path_of(name)} is not a network namespace (a plain file, or another "
                    "kind of namespace): `ip netns list` shows the real ones"
                ) from None
            try:
                yield
            finally:
                _setns(home, CLONE_NEWNET)
        finally:
            os.close(home)
    finally:
        os.close(target)
