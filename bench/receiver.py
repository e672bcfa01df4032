"""The receiver every contender sends to: answers 200 at once, counts, records arrivals.

    python -m bench.receiver PORT

GET /stats returns {"count": n}; GET /arrivals returns [[webhook-id, unix time], ...];
POST /reset forgets everything. Any other request is counted as a webhook.
"""

from __future__ import annotations

import sys
import time

from aiohttp import web

_arrivals: list[tuple[str, float]] = []


async def receive(request: web.Request) -> web.Response:
    await request.read()
    _arrivals.append((request.headers.get("webhook-id", ""), time.time()))
    return web.Response(text="ok")


async def stats(request: web.Request) -> web.Response:
    return web.json_response({"count": len(_arrivals)})


async def arrivals(request: web.Request) -> web.Response:
    return web.json_response(_arrivals)


async def reset(request: web.Request) -> web.Response:
    _arrivals.clear()
    return web.json_response({"count": 0})


def main() -> None:
    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_get("/arrivals", arrivals)
    app.router.add_post("/reset", reset)
    app.router.add_route("*", "/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
                print=lambda *_: print("ready", flush=True))


if __name__ == "__main__":
    main()
