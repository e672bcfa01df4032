"""The dashboard's overview, its first page: the backlog, and the subscriptions that need
someone (failing, disabled, paused), within what the caller reaches."""

from __future__ import annotations

from aiohttp import web

from api.auth import scope
from api.state import CLOCK, STORE
from ui.activity import activity, overview_scope
from ui.pages import api_roles, render, signed_in

# The backlog is counted from deliveries, the list from subscriptions: the roles of both.
READ = tuple(role for role in api_roles("GET", "/v1/deliveries")
             if role in api_roles("GET", "/v1/subscriptions"))
ATTENTION_LIMIT = 50


def waited(seconds: float) -> str:
    """A wait as a person reads it: 0 s, 42 s, 3 min 5 s, 2 h 10 min."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


async def overview_page(request: web.Request) -> web.Response:
    session = await signed_in(request, READ)
    store = request.config_dict[STORE]
    reach = scope(session.api_key)
    backlog = await store.delivery_gauges(request.config_dict[CLOCK](), reach)
    attention = await store.subscriptions_needing_attention(reach, ATTENTION_LIMIT)
    stats_scope = overview_scope(session.api_key)
    recent = None if stats_scope is None else await activity(request, stats_scope)
    return await render(request, "overview.html", session, backlog=backlog,
                        oldest_due=waited(backlog.oldest_due_seconds), attention=attention,
                        attention_limit=ATTENTION_LIMIT, activity=recent)


ROUTES = [web.get("/", overview_page)]
