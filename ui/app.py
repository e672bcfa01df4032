"""The dashboard as an aiohttp sub-application, mounted by api.app at /ui/: templates,
static files, error pages and the headers every dashboard answer carries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from api.errors import ApiError, Handler
from hookpost.database import DATABASE_DOWN
from ui import overview, pages, portal, subscription_pages, tenant_pages
from ui.error_kinds import in_plain_words

log = logging.getLogger("hookpost.ui")

STATIC = Path(__file__).with_name("static")
# No inline script or style anywhere, so none may run: whatever a receiver sent back that
# slipped into a page could not execute. Forms post only to the dashboard itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def when(moment: datetime | None) -> str:
    """A time as the pages show it: UTC, to the millisecond."""
    if moment is None:
        return ""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


def percent(share: float | None) -> str:
    """A share as the pages show it: 99.2%, or "none" when there was nothing to share."""
    if share is None:
        return "none"
    if share >= 1:
        return "100%"
    # 99.99% is not all: it shows as 99.9%.
    return f"{min(share * 100, 99.9):.1f}%"


def milliseconds(duration: float | None) -> str:
    """A duration in ms as the pages show it: 8 ms, 340 ms, 2.5 s, or "none"."""
    if duration is None:
        return "none"
    if duration < 1000:
        return f"{duration:.0f} ms"
    return f"{duration / 1000:.1f} s"


FILTERS: dict[str, Callable[..., str]] = {
    "when": when, "in_plain_words": in_plain_words, "percent": percent,
    "milliseconds": milliseconds,
}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if not request.path.startswith("/ui/static/"):
        # Pages show a signed-in caller's rows: no cache may keep them.
        response.headers["Cache-Control"] = "no-store"


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    return aiohttp_jinja2.render_template(
        "error.html", request, {"status": status, "message": message}, status=status)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals and failures as pages, not as the API's JSON errors."""
    try:
        return await handler(request)
    except ApiError as error:
        return _error_page(request, error.status, error.message)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _error_page(request, error.status, error.reason)
    except DATABASE_DOWN as error:
        log.warning("database unavailable during %s %s: %s", request.method, request.path, error)
        return _error_page(request, 503, "the database is unavailable; try again")


def create_ui_app() -> web.Application:
    """The dashboard; it reads the store, settings and clock of the app it is mounted in."""
    # /ui, the address one types, leads to /ui/ as any other page without its slash would.
    app = web.Application(middlewares=[error_pages, web.normalize_path_middleware()])
    aiohttp_jinja2.setup(
        app, loader=jinja2.PackageLoader("ui", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined,
        filters=FILTERS,
    )
    app.on_response_prepare.append(_security_headers)
    for routes in (overview.ROUTES, pages.ROUTES, subscription_pages.ROUTES,
                   tenant_pages.ROUTES, portal.ROUTES):
        app.add_routes(routes)
    app.router.add_static("/static/", STATIC)
    return app
