"""The aiohttp application."""

from __future__ import annotations

from aiohttp import web

from api.auth import KEY_CACHE, KeyCache
from api.errors import errors_middleware
from api.ingest import IngestBatcher
from api.probes import DISPATCHER
from api.routes import ROUTES
from api.state import CLOCK, INGEST, SETTINGS, STORE
from api.tenancy import TENANT_CACHE, TenantCache
from dispatcher.worker import Dispatcher
from hookpost.clock import Clock, utcnow
from hookpost.settings import Settings
from hookpost.store import Store
from ui.app import create_ui_app


def create_app(
    settings: Settings, store: Store, *, clock: Clock = utcnow,
    dispatcher: Dispatcher | None = None,
) -> web.Application:
    """The REST API over `store`, with the dashboard at /ui/; the caller owns the store's
    pool. `dispatcher` is the one running in the same process, if any, for /ready."""
    app = web.Application(
        middlewares=[errors_middleware],
        client_max_size=settings.max_payload_bytes,
    )
    app[SETTINGS] = settings
    app[STORE] = store
    app[CLOCK] = clock
    app[DISPATCHER] = dispatcher
    app[KEY_CACHE] = KeyCache()
    app[TENANT_CACHE] = TenantCache()
    app[INGEST] = IngestBatcher(store)
    app.add_routes(ROUTES)
    app.router.add_get("/", _to_dashboard)
    app.add_subapp("/ui/", create_ui_app())
    return app


async def _to_dashboard(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/ui/"})
