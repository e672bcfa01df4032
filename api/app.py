"""The aiohttp application."""

from __future__ import annotations

from aiohttp import web

from api.errors import errors_middleware
from api.routes import ROUTES
from api.state import CLOCK, SETTINGS, STORE
from hookpost.clock import Clock, utcnow
from hookpost.settings import Settings
from hookpost.store import Store


def create_app(settings: Settings, store: Store, *, clock: Clock = utcnow) -> web.Application:
    """The REST API over `store`; the caller owns the store's pool."""
    app = web.Application(
        middlewares=[errors_middleware],
        client_max_size=settings.max_payload_bytes,
    )
    app[SETTINGS] = settings
    app[STORE] = store
    app[CLOCK] = clock
    app.add_routes(ROUTES)
    return app
