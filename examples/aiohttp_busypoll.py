"""aiohttp on netdevkit's busy-polling loop (docs/servers.md).

    NETDEVKIT_BUSYPOLL=suspend python examples/aiohttp_busypoll.py 0.0.0.0 8000

``web.run_app`` takes the loop to run on (``loop=``): one made by netdevkit's factory.
"""

from __future__ import annotations

import sys

from aiohttp import web

from netdevkit.integrations import env_loop_factory


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def main() -> None:
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    loop = env_loop_factory("suspend")()
    app = web.Application()
    app.add_routes([web.get("/", hello)])
    web.run_app(app, host=host, port=port, loop=loop, access_log=None, print=None)


if __name__ == "__main__":
    main()
