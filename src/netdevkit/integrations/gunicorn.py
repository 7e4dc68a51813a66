"""gunicorn with uvicorn workers on netdevkit's busy-polling loop.

    gunicorn app:app -k netdevkit.integrations.gunicorn.SuspendWorker --workers 4

Each class is uvicorn's gunicorn worker (``uvicorn_worker.UvicornWorker`` when that package
is installed, else ``uvicorn.workers.UvicornWorker``) with ``--loop`` set to the
:mod:`netdevkit.integrations.uvicorn` function of the same name: every worker process runs
on its own :class:`~netdevkit.busypoll.aio.BusyPollEventLoop`. (gunicorn names a worker
class with dots, ``module.Class``, not ``module:Class``.)

- ``NapibusyWorker``, ``FullbusyWorker``, ``SuspendWorker``: the presets' epoll halves;
- ``AdaptiveWindowWorker``, ``HotSpinWorker``, ``HybridWorker``: netdevkit's loop modes;
- ``BusyPollWorker``: the configuration in ``NETDEVKIT_BUSYPOLL``
  (:data:`netdevkit.integrations.ENV`).

gunicorn's arbiter calls ``check_config`` once, in the master, before it forks a worker:
a bad configuration (or a budget above 64 without CAP_NET_ADMIN) ends gunicorn there with
one line on stderr and exit status 2 (1: refused), instead of workers failing to boot.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

from ..busypoll.config import LOOP_KNOBS, BusyPollConfig, checked
from ..errors import NetdevkitError
from . import config_from_env, config_named, exit_with
from .uvicorn import loop_named

try:
    from uvicorn_worker import UvicornWorker as _UvicornWorker  # type: ignore[import-not-found]
except ImportError:
    with warnings.catch_warnings():  # uvicorn.workers: deprecated for uvicorn-worker
        warnings.simplefilter("ignore", DeprecationWarning)
        from uvicorn.workers import UvicornWorker as _UvicornWorker

__all__ = [
    "AdaptiveWindowWorker",
    "BusyPollWorker",
    "FullbusyWorker",
    "HotSpinWorker",
    "HybridWorker",
    "NapibusyWorker",
    "SuspendWorker",
]


class BusyPollWorker(_UvicornWorker):  # type: ignore[misc]
    """A uvicorn worker on netdevkit's loop; the configuration from ``NETDEVKIT_BUSYPOLL``."""

    #: a preset or mode name, or "env"
    BUSYPOLL: ClassVar[str] = "env"
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": loop_named("env"), "http": "auto"}

    @classmethod
    def busypoll_config(cls) -> BusyPollConfig:
        """The configuration this worker class runs with (checked)."""
        config = config_from_env() if cls.BUSYPOLL == "env" else config_named(cls.BUSYPOLL)
        return checked(config, "the gunicorn worker", LOOP_KNOBS)

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """gunicorn's hook, run in the master before any worker starts."""
        parent = getattr(super(), "check_config", None)
        if parent is not None:
            parent(cfg, log)
        try:
            cls.busypoll_config()
        except NetdevkitError as err:
            exit_with(err)


def _kwargs(name: str) -> dict[str, Any]:
    """uvicorn Config arguments of a worker class: ``--loop`` for *name*."""
    return {"loop": loop_named(name), "http": "auto"}


class NapibusyWorker(BusyPollWorker):
    BUSYPOLL = "napibusy"
    CONFIG_KWARGS = _kwargs("napibusy")


class FullbusyWorker(BusyPollWorker):
    BUSYPOLL = "fullbusy"
    CONFIG_KWARGS = _kwargs("fullbusy")


class SuspendWorker(BusyPollWorker):
    BUSYPOLL = "suspend"
    CONFIG_KWARGS = _kwargs("suspend")


class AdaptiveWindowWorker(BusyPollWorker):
    BUSYPOLL = "adaptive-window"
    CONFIG_KWARGS = _kwargs("adaptive-window")


class HotSpinWorker(BusyPollWorker):
    BUSYPOLL = "hot-spin"
    CONFIG_KWARGS = _kwargs("hot-spin")


class HybridWorker(BusyPollWorker):
    BUSYPOLL = "hybrid"
    CONFIG_KWARGS = _kwargs("hybrid")
