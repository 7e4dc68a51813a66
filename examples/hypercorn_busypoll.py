"""hypercorn on netdevkit's busy-polling loop (docs/servers.md).

    NETDEVKIT_BUSYPOLL=suspend python examples/hypercorn_busypoll.py 0.0.0.0:8000

hypercorn's command line has no custom loop; its programmatic ``serve`` runs on whatever
loop runs it, here ``asyncio.Runner(loop_factory=...)`` with netdevkit's loop.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from netdevkit.integrations import env_loop_factory


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A hello-world ASGI app (any ASGI app, FastAPI or Quart included, goes here)."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def main() -> None:
    config = Config()
    config.bind = [sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000"]
    config.accesslog = None
    with asyncio.Runner(loop_factory=env_loop_factory("suspend")) as runner:
        runner.run(serve(app, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
