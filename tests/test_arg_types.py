"""The public API given arguments of the wrong type: one clear error naming the parameter.

Before these checks a wrong type failed deep inside (``bind_rx("eth1", [0], "3")``:
``'str' object has no attribute 'fd'``; ``udmabuf("4096")``: ``'<=' not supported``;
``load_profile(5)`` read file descriptor 5). Now every entry point below raises
:class:`~netdevkit.errors.ArgumentTypeError` -- a ``RequestError`` and a ``TypeError`` --
whose message starts with the parameter's name, before anything is opened or changed.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from netdevkit.errors import ArgumentTypeError, RequestError

PID = os.getpid()


def _config() -> Any:
    from netdevkit.busypoll import BusyPollConfig

    return BusyPollConfig()


def _netdev_cases() -> Iterator[tuple[str, str, Callable[[], object]]]:
    from netdevkit import Netdev
    from netdevkit.netdev.client import ifindex_of, ifname_of, ifnames

    yield "ifindex_of(name=int)", "name", lambda: ifindex_of(1)  # type: ignore[arg-type]
    yield "ifindex_of(netns=int)", "netns", lambda: ifindex_of("lo", 5)  # type: ignore[arg-type]
    yield "ifname_of(ifindex=str)", "ifindex", lambda: ifname_of("1")  # type: ignore[arg-type]
    yield "ifnames(netns=int)", "netns", lambda: ifnames(5)  # type: ignore[arg-type]
    yield "Netdev.open(netns=int)", "netns", lambda: Netdev.open(5)  # type: ignore[arg-type]

    def on_netdev(call: Callable[[Any], object]) -> Callable[[], object]:
        def run() -> object:
            with Netdev.open() as nd:
                return call(nd)

        return run

    yield "napi_dump(ifindex=str)", "ifindex", on_netdev(lambda nd: nd.napi_dump("1"))
    yield "queue_dump(ifindex=str)", "ifindex", on_netdev(lambda nd: nd.queue_dump("1"))
    yield "qstats_dump(ifindex=str)", "ifindex", on_netdev(lambda nd: nd.qstats_dump("1"))
    yield "page_pool_dump(ifindex=str)", "ifindex", on_netdev(lambda nd: nd.page_pool_dump("1"))
    yield "queue_get(qtype=str)", "qtype", on_netdev(lambda nd: nd.queue_get(1, "rx", 0))


def _devmem_cases() -> Iterator[tuple[str, str, Callable[[], object]]]:
    from netdevkit.devmem import (
        DevmemReceiver,
        DevmemSender,
        DmabufFd,
        bind_rx,
        bind_tx,
        cuda,
        udmabuf,
    )

    yield "bind_rx(dmabuf=str)", "dmabuf", lambda: bind_rx("lo", [0], "3")  # type: ignore[arg-type]
    yield "bind_rx on a missing interface", "dmabuf", lambda: bind_rx("eth1", [0], "3")  # type: ignore[arg-type]
    yield "bind_rx(ifname=int)", "ifname", lambda: bind_rx(1, [0], 3)  # type: ignore[arg-type]
    yield "bind_rx(queues=int)", "queues", lambda: bind_rx("lo", 0, 3)  # type: ignore[arg-type]
    yield "bind_rx(queues=str)", "queues", lambda: bind_rx("lo", "0", 3)  # type: ignore[arg-type]
    yield (
        "bind_rx(rx_page_size=str)",
        "rx_page_size",
        lambda: bind_rx("lo", [0], 3, rx_page_size="4096"),  # type: ignore[arg-type]
    )
    yield "bind_rx(netns=int)", "netns", lambda: bind_rx("lo", [0], 3, netns=5)  # type: ignore[arg-type]
    yield "bind_tx(dmabuf=str)", "dmabuf", lambda: bind_tx("lo", "3")  # type: ignore[arg-type]
    yield "bind_tx(ifname=int)", "ifname", lambda: bind_tx(1, 3)  # type: ignore[arg-type]
    yield "udmabuf(size=str)", "size", lambda: udmabuf("4096")  # type: ignore[arg-type]
    yield "udmabuf(name=int)", "name", lambda: udmabuf(4096, name=5)  # type: ignore[arg-type]
    yield "cuda(size=str)", "size", lambda: cuda("4096")  # type: ignore[arg-type]
    yield "cuda(device=str)", "device", lambda: cuda(4096, device="0")  # type: ignore[arg-type]
    yield "DmabufFd(fd=str)", "fd", lambda: DmabufFd("3", 0)  # type: ignore[arg-type]
    yield "DmabufFd(size=str)", "size", lambda: DmabufFd(3, "0")  # type: ignore[arg-type]
    yield "DevmemReceiver(sock=str)", "sock", lambda: DevmemReceiver("x")  # type: ignore[arg-type]
    yield "DevmemSender(sock=str)", "sock", lambda: DevmemSender("x", None)  # type: ignore[arg-type]

    def sender_with_a_string_binding() -> object:
        with socket.socket() as s:
            return DevmemSender(s, "b")

    yield "DevmemSender(binding=str)", "binding", sender_with_a_string_binding


def _tuning_cases() -> Iterator[tuple[str, str, Callable[[], object]]]:
    from netdevkit.tuning import Tuner, get_preset, load_profile, parse_profile, tuned

    yield "get_preset(name=int)", "name", lambda: get_preset(5)  # type: ignore[arg-type]
    yield "parse_profile(text=int)", "text", lambda: parse_profile(5)  # type: ignore[arg-type]
    yield "parse_profile(text=bytes)", "text", lambda: parse_profile(b"")  # type: ignore[arg-type]
    yield "load_profile(path=int)", "path", lambda: load_profile(5)  # type: ignore[arg-type]
    yield "tuned(ifname=int)", "ifname", lambda: tuned(5, preset="base")  # type: ignore[arg-type]
    yield "tuned(preset=int)", "preset", lambda: tuned("lo", preset=5)  # type: ignore[arg-type]
    yield "tuned(netns=int)", "netns", lambda: tuned("lo", preset="base", netns=5)  # type: ignore[arg-type]
    yield "tuned(napi_ids=str)", "napi_ids", lambda: tuned(preset="base", napi_ids="12")  # type: ignore[arg-type]
    yield "tuned(napi_ids=[str])", "napi_ids", lambda: tuned(preset="base", napi_ids=["1"])  # type: ignore[list-item]
    yield "tuned(settings=dict)", "settings", lambda: tuned("lo", settings={})  # type: ignore[arg-type]
    yield "tuned(journal=str)", "journal", lambda: tuned("lo", journal="j")  # type: ignore[arg-type]
    yield "Tuner(backend=int)", "backend", lambda: Tuner(5)  # type: ignore[arg-type]
    yield "Tuner(journal=str)", "journal", lambda: Tuner(journal="j")  # type: ignore[arg-type]

    def resolve(**kw: Any) -> Callable[[], object]:
        return lambda: Tuner(journal=False).resolve(**kw)

    yield "Tuner.resolve(ifname=int)", "ifname", resolve(ifname=5)
    yield "Tuner.resolve(napi_ids=int)", "napi_ids", resolve(napi_ids=5)
    yield "Tuner.resolve(netns=int)", "netns", resolve(netns=5, ifname="lo")


def _attach_cases() -> Iterator[tuple[str, str, Callable[[], object]]]:
    from netdevkit.attach import (
        AttachWatcher,
        attach,
        descendants,
        detach,
        find_epoll_fds,
        inspect,
        watched_fds,
    )

    yield "attach(pid=str)", "pid", lambda: attach("1", _config())  # type: ignore[arg-type]
    yield "attach(pid=float)", "pid", lambda: attach(1.5, _config())  # type: ignore[arg-type]
    yield "attach(config=str)", "config", lambda: attach(PID, "suspend")  # type: ignore[arg-type]
    yield "attach(journal=int)", "journal", lambda: attach(PID, _config(), journal=5)  # type: ignore[arg-type]
    yield "detach(result=str)", "result", lambda: detach("x")  # type: ignore[arg-type]
    yield "inspect(pid=str)", "pid", lambda: inspect("1")  # type: ignore[arg-type]
    yield "watched_fds(pid=str)", "pid", lambda: watched_fds("1", 3)  # type: ignore[arg-type]
    yield "watched_fds(epfd=str)", "epfd", lambda: watched_fds(PID, "3")  # type: ignore[arg-type]
    yield "AttachWatcher(pid=str)", "pid", lambda: AttachWatcher("1", _config()).scan()  # type: ignore[arg-type]
    yield "AttachWatcher(config=str)", "config", lambda: AttachWatcher(1, "x")  # type: ignore[arg-type]
    yield "find_epoll_fds(pid=str)", "pid", lambda: find_epoll_fds("1")  # type: ignore[arg-type]
    yield "descendants(pid=str)", "pid", lambda: descendants("1")  # type: ignore[arg-type]


def _busypoll_cases() -> Iterator[tuple[str, str, Callable[[], object]]]:
    from netdevkit.busypoll import (
        BusyPollConfig,
        BusyPollSelector,
        EpollParams,
        FastLoop,
        apply_to_loop,
        epoll_fds_watching,
        get_incoming_napi_id,
        get_params,
        loop_factory,
        set_busy_poll,
        set_params,
    )

    ep = select.epoll()
    yield "BusyPollConfig(busy_poll_usecs=str)", "busy_poll_usecs", lambda: BusyPollConfig("5")  # type: ignore[arg-type]
    yield "BusyPollConfig.from_params(str)", "params", lambda: BusyPollConfig.from_params("x")  # type: ignore[arg-type]
    yield "get_params(epfd=str)", "epfd", lambda: get_params("3")  # type: ignore[arg-type]
    yield "set_params(epfd=str)", "epfd", lambda: set_params("3", EpollParams())  # type: ignore[arg-type]
    yield "set_params(params=str)", "params", lambda: set_params(ep.fileno(), "x")  # type: ignore[arg-type]
    yield "set_busy_poll(sock=str)", "sock", lambda: set_busy_poll("x", 5)  # type: ignore[arg-type]
    yield "get_incoming_napi_id(sock=str)", "sock", lambda: get_incoming_napi_id("x")  # type: ignore[arg-type]
    yield "BusyPollSelector(config=str)", "config", lambda: BusyPollSelector("x")  # type: ignore[arg-type]
    yield "loop_factory(config=str)", "config", lambda: loop_factory("x")  # type: ignore[arg-type]
    yield "FastLoop(config=str)", "config", lambda: FastLoop("x")  # type: ignore[arg-type]
    yield "epoll_fds_watching(fd=str)", "fd", lambda: epoll_fds_watching("3")  # type: ignore[arg-type]
    yield "apply_to_loop(loop=str)", "loop", lambda: apply_to_loop("x", BusyPollConfig())  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    loop.close()
    yield "apply_to_loop(config=str)", "config", lambda: apply_to_loop(loop, "x")  # type: ignore[arg-type]


def _other_cases() -> Iterator[tuple[str, str, Callable[[], object]]]:
    from netdevkit.dispatch import NapiDispatcher
    from netdevkit.observe.monitor import Monitor
    from netdevkit.observe.sources import NamespaceReader

    yield "NapiDispatcher(handler=str)", "handler", lambda: NapiDispatcher("x")  # type: ignore[arg-type]
    yield (
        "NapiDispatcher(max_workers=str)",
        "max_workers",
        lambda: NapiDispatcher(print, max_workers="2"),  # type: ignore[arg-type]
    )
    yield "NamespaceReader(netns=int)", "netns", lambda: NamespaceReader(5).read()  # type: ignore[arg-type]
    yield "Monitor(netns=int)", "netns", lambda: Monitor(5)  # type: ignore[arg-type]


CASES = [
    *_netdev_cases(),
    *_devmem_cases(),
    *_tuning_cases(),
    *_attach_cases(),
    *_busypoll_cases(),
    *_other_cases(),
]


@pytest.mark.parametrize(("param", "call"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_wrong_type_is_one_error_naming_the_parameter(
    param: str, call: Callable[[], object]
) -> None:
    with pytest.raises(ArgumentTypeError) as info:
        call()
    err = info.value
    assert isinstance(err, TypeError) and isinstance(err, RequestError)
    assert str(err).startswith(f"{param} must be "), str(err)
    assert "object has no attribute" not in str(err) and "not supported between" not in str(err)
