"""Type checks at the boundary of the public API, so that a wrong type is one clear error.

A public function given, say, a string where an int belongs would otherwise fail deep
inside (``'str' object has no attribute 'fd'``, ``'<=' not supported between instances``)
or, worse, do something else (``open(5)`` reads fd 5). These raise
:class:`~netdevkit.errors.ArgumentTypeError` (a ``RequestError`` and a ``TypeError``)
naming the parameter, before anything is opened or changed. ``bool`` is not accepted
where an int is meant.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ArgumentTypeError


def _got(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def fail(name: str, what: str, value: object) -> ArgumentTypeError:
    """The error for parameter *name* that must be *what* (e.g. ``"an int"``)."""
    return ArgumentTypeError(f"{name} must be {what}, got {_got(value)}")


def int_arg(name: str, value: object, *, none_ok: bool = False) -> None:
    """*value* is an int (not a bool), or None where *none_ok*."""
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(name, "an int" + (" or None" if none_ok else ""), value)


def str_arg(name: str, value: object, *, none_ok: bool = False) -> None:
    """*value* is a str, or None where *none_ok*."""
    if value is None and none_ok:
        return
    if not isinstance(value, str):
        raise fail(name, "a str" + (" or None" if none_ok else ""), value)


def path_arg(name: str, value: object) -> None:
    """*value* is a file name: a str or an ``os.PathLike`` (never an int: ``open(5)``
    would read file descriptor 5)."""
    if not isinstance(value, str | os.PathLike):
        raise fail(name, "a path (str or os.PathLike)", value)


def instance_arg(
    name: str, value: object, cls: type[Any] | tuple[type[Any], ...], what: str
) -> None:
    """*value* is an instance of *cls* (described as *what*)."""
    if not isinstance(value, cls):
        raise fail(name, what, value)


def has_fileno(name: str, value: object) -> None:
    """*value* is something with a ``fileno()`` (a socket)."""
    if not callable(getattr(value, "fileno", None)):
        raise fail(name, "a socket (an object with fileno())", value)


def ints_arg(name: str, value: object, *, none_ok: bool = False) -> None:
    """*value* is a collection of ints (a list, tuple, set, range...), or None where
    *none_ok*; a str or a bare int is not."""
    if value is None and none_ok:
        return
    what = "a sequence of ints" + (" or None" if none_ok else "")
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise fail(name, what, value)
    if any(isinstance(item, bool) or not isinstance(item, int) for item in value):
        raise fail(name, what, value)
