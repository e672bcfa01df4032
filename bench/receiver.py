"""The receiver every contender sends to: answers 200 at once, counts, records arrivals.

    python -m bench.receiver PORT

GET /stats returns {"count": n, "held": n, "held_peak": n, "endpoints": {...}}; GET /arrivals
returns [[webhook-id, unix time], ...]; POST /reset forgets everything. Any other request is
counted as a webhook. Requests to /hang/... are held open until the sender gives up.
POST /endpoints/NAME with {"status": 503, "delay_ms": 20} makes requests to /NAME/... answer
so; such an endpoint also reports its count and its peak of requests in flight.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from dataclasses import dataclass

from aiohttp import web

_arrivals: list[tuple[str, float]] = []


@dataclass
class Endpoint:
    """How requests to one path prefix are answered, and how many were in flight at once."""

    status: int = 200
    delay: float = 0.0
    count: int = 0
    in_flight: int = 0
    peak: int = 0


_endpoints: dict[str, Endpoint] = {}
_held = [0, 0]  # requests held open now, and the most at once


async def receive(request: web.Request) -> web.Response:
    await request.read()
    _arrivals.append((request.headers.get("webhook-id", ""), time.time()))
    if not _endpoints:  # the throughput runs' path: as little work as possible
        return web.Response(text="ok")
    endpoint = _endpoints.get(request.path.split("/", 2)[1])
    if endpoint is None:
        return web.Response(text="ok")
    endpoint.count += 1
    endpoint.in_flight += 1
    endpoint.peak = max(endpoint.peak, endpoint.in_flight)
    try:
        if endpoint.delay:
            await asyncio.sleep(endpoint.delay)
    finally:
        endpoint.in_flight -= 1
    return web.Response(status=endpoint.status, text="ok")


async def hold(request: web.Request) -> web.Response:
    """Never answer; the handler is cancelled when the sender closes the connection."""
    await request.read()
    _arrivals.append((request.headers.get("webhook-id", ""), time.time()))
    _held[0] += 1
    _held[1] = max(_held[1], _held[0])
    try:
        await asyncio.Event().wait()  # set by no one
    finally:
        _held[0] -= 1
    return web.Response(status=504)


async def configure(request: web.Request) -> web.Response:
    wanted = await request.json()
    _endpoints[request.match_info["name"]] = Endpoint(
        status=int(wanted.get("status", 200)), delay=float(wanted.get("delay_ms", 0)) / 1000)
    return web.json_response({"configured": request.match_info["name"]})


async def stats(request: web.Request) -> web.Response:
    return web.json_response({
        "count": len(_arrivals), "held": _held[0], "held_peak": _held[1],
        "endpoints": {name: {"count": endpoint.count, "in_flight": endpoint.in_flight,
                             "peak": endpoint.peak} for name, endpoint in _endpoints.items()},
    })


async def arrivals(request: web.Request) -> web.Response:
    return web.json_response(_arrivals)


async def reset(request: web.Request) -> web.Response:
    _arrivals.clear()
    _endpoints.clear()
    _held[1] = _held[0]
    return web.json_response({"count": 0})


def main() -> None:
    # Held requests keep a socket each: let thousands stay open.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_get("/arrivals", arrivals)
    app.router.add_post("/reset", reset)
    app.router.add_post("/endpoints/{name}", configure)
    app.router.add_route("*", "/hang/{tail:.*}", hold)
    app.router.add_route("*", "/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
                handler_cancellation=True, print=lambda *_: print("ready", flush=True))


if __name__ == "__main__":
    main()
