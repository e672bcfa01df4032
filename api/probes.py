"""Liveness, readiness and metrics: what an orchestrator and Prometheus ask every process."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from api.state import STORE
from dispatcher.worker import Dispatcher
from hookpost import metrics
from hookpost.database import DATABASE_DOWN, schema_digest
from hookpost.store import Store

# The dispatcher running in this process, if one does.
DISPATCHER: web.AppKey[Dispatcher | None] = web.AppKey("dispatcher")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str  # ready or unavailable
    database: bool
    schema_current: bool
    dispatcher_ticking: bool | None  # None: no dispatcher in this process


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(body=model.model_dump_json().encode(), status=status,
                        content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return _json(Health(status="ok"))


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
    readiness = Readiness(status="ready" if ok else "unavailable", database=database,
                          schema_current=schema_current, dispatcher_ticking=ticking)
    return _json(readiness, 200 if ok else 503)


async def metrics_text(request: web.Request) -> web.Response:
    return web.Response(body=metrics.exposition(),
                        headers={"Content-Type": metrics.CONTENT_TYPE})


def add_probe_routes(app: web.Application) -> None:
    """/health, /ready and /metrics: every hookpost process serves them."""
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics_text)


def create_probe_app(store: Store, dispatcher: Dispatcher | None) -> web.Application:
    """The probes alone, for a process that runs no API."""
    app = web.Application()
    app[STORE] = store
    app[DISPATCHER] = dispatcher
    add_probe_routes(app)
    return app
