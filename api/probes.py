"""Liveness, readiness and metrics: what an orchestrator and Prometheus ask every process."""

from __future__ import annotations

from aiohttp import web

from api import models
from api.openapi import Operation
from api.responses import model_response
from api.state import STORE
from dispatcher.worker import Dispatcher
from hookpost import metrics
from hookpost.database import DATABASE_DOWN, schema_digest
from hookpost.store import Store

# The dispatcher running in this process, if one does.
DISPATCHER: web.AppKey[Dispatcher | None] = web.AppKey("dispatcher")


async def health(request: web.Request) -> web.Response:
    dispatcher = request.app.get(DISPATCHER)
    if dispatcher is not None and not dispatcher.alive:
        # The process cannot deliver any more: a supervisor should restart it.
        return model_response(models.Health(status="failing", dispatcher_alive=False), 503)
    alive = None if dispatcher is None else True
    return model_response(models.Health(status="ok", dispatcher_alive=alive))


async def ready(request: web.Request) -> web.Response:
    try:
        digest = await request.app[STORE].schema_digest()
        database = True
    except DATABASE_DOWN:
        digest, database = None, False
    dispatcher = request.app.get(DISPATCHER)
    ticking = None if dispatcher is None else dispatcher.ticking
    schema_current = digest == schema_digest()
    ok = database and schema_current and ticking is not False
    readiness = models.Readiness(status="ready" if ok else "unavailable", database=database,
                                 schema_current=schema_current, dispatcher_ticking=ticking)
    return model_response(readiness, 200 if ok else 503)


async def metrics_text(request: web.Request) -> web.Response:
    return web.Response(body=metrics.exposition(),
                        headers={"Content-Type": metrics.CONTENT_TYPE})


PROBES = [
    Operation("GET", "/health", health,
              "Liveness: the process answers, and its dispatcher (if any) can go on",
              response=models.Health, reads_database=False, answers=((503, models.Health),)),
    Operation("GET", "/ready", ready,
              "Readiness: database reachable, schema current, dispatcher ticking",
              response=models.Readiness, reads_database=False,
              answers=((503, models.Readiness),)),
    Operation("GET", "/metrics", metrics_text, "Prometheus metrics of this process",
              content_type="text/plain", reads_database=False),
]


def create_probe_app(store: Store, dispatcher: Dispatcher | None) -> web.Application:
    """The probes alone, for a process that runs no API."""
    app = web.Application()
    app[STORE] = store
    app[DISPATCHER] = dispatcher
    app.add_routes([probe.route() for probe in PROBES])
    return app
