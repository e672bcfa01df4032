"""The dashboard's pages and form actions, and their route table. Every page finds its
caller through the session, checks the caller's role against the roles of the API route
that does the same thing, and reads through the same scoped store methods as the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from pydantic import ValidationError

from api import models
from api.auth import AUTHORIZATION_LIMIT, Role, check_role, hash_key, scope
from api.cursors import decode_cursor, page_of
from api.errors import not_found
from api.routes import OPERATIONS, delivery_filters, path_id
from api.state import CLOCK, STORE
from hookpost.store import UiSession
from ui.forms import instant_of, problems_of
from ui.sessions import (
    CSRF_FIELD,
    check_csrf,
    check_login_csrf,
    current_session,
    end_session,
    keep_login_token,
    login_token,
    start_session,
)


def api_roles(method: str, path: str) -> tuple[Role, ...]:
    """The roles the API's route `method path` accepts, so a page never decides its own."""
    for operation in OPERATIONS:
        if operation.method == method and operation.path == path:
            return operation.roles
    raise LookupError(f"no API route {method} {path}")


LIST_DELIVERIES = api_roles("GET", "/v1/deliveries")
READ_DELIVERY = api_roles("GET", "/v1/deliveries/{id}")
REDELIVER = api_roles("POST", "/v1/deliveries/{id}/redeliver")

# The overview: where signing in leads.
HOME = "/ui/"
SIGNED_OUT = "/ui/signed-out"  # where a portal session ends
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
PAGE_SIZE = 50
# How often the delivery log reloads itself (a meta refresh: it works with JavaScript off).
REFRESH_SECONDS = 10
TIME_FILTERS = ("since", "until")


def see_other(location: str) -> web.Response:
    # 303: after a form's POST the browser GETs the page, so a reload does not post again.
    return web.Response(status=303, headers={"Location": location})


async def signed_in(request: web.Request, roles: tuple[Role, ...]) -> UiSession:
    """The caller's session, if its key has one of `roles` (else 403); with none, the
    browser is sent to sign in."""
    session = await current_session(request)
    if session is None:
        raise web.HTTPSeeOther("/ui/login")
    check_role(session.api_key, *roles)
    return session


async def acting(request: web.Request, roles: tuple[Role, ...]
                  ) -> tuple[UiSession, dict[str, str]]:
    """The caller's session and the text fields of the form it posted, if the form carries
    the session's CSRF token (else 403) and the key has one of `roles` (else 403)."""
    form = await request.post()
    session = await current_session(request)
    if session is None:
        raise web.HTTPSeeOther("/ui/login")
    check_csrf(form.get(CSRF_FIELD), session.csrf_token)
    check_role(session.api_key, *roles)
    return session, {name: value for name, value in form.items() if isinstance(value, str)}


async def _header(request: web.Request, session: UiSession) -> tuple[str, str | None]:
    """What the header says of the rows the caller reaches (every tenant, or one tenant's),
    and for a portal session the name of its tenant; one lookup of the tenant for both."""
    reach = scope(session.api_key)
    if reach.tenant_id is None:
        return "every tenant", None
    tenant = await request.config_dict[STORE].resolve_tenant(reach.tenant_id)
    name = reach.tenant_id if tenant is None else tenant.name
    described = reach.tenant_id if tenant is None else f"{tenant.name} ({tenant.id})"
    words = f"tenant {described}"
    if reach.owner_key_id is not None:
        words += ", its own subscriptions"
    return words, name if session.portal else None


async def render(request: web.Request, template: str, session: UiSession | None,
                  status: int = 200, **values: Any) -> web.Response:
    context: dict[str, Any] = {"csrf_field": CSRF_FIELD, **values}
    if session is not None:
        context["who"] = session.api_key
        context["reach"], context["portal_of"] = await _header(request, session)
        context["csrf"] = session.csrf_token
    return aiohttp_jinja2.render_template(template, request, context, status=status)


# Signing in and out


async def login_page(request: web.Request) -> web.Response:
    if await current_session(request) is not None:
        return see_other(HOME)
    return await _login_form(request)


async def _login_form(request: web.Request, problem: str | None = None,
                      status: int = 200) -> web.Response:
    token = login_token(request)
    response = aiohttp_jinja2.render_template(
        "login.html", request,
        {"csrf_field": CSRF_FIELD, "login_token": token, "problem": problem}, status=status)
    keep_login_token(request, response, token)
    return response


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    check_login_csrf(request, form.get(CSRF_FIELD))
    key = form.get("key")
    key = key.strip() if isinstance(key, str) else ""
    api_key = None
    if key and len(key) <= AUTHORIZATION_LIMIT:
        # Not through the API's key cache: a key revoked a moment ago must not sign in.
        api_key = await request.config_dict[STORE].api_key_by_hash(hash_key(key))
    if api_key is None:
        return await _login_form(request, "That API key is not valid (or it has been "
                                 "revoked). Paste the whole key, starting with hp_.", 401)
    response = see_other(HOME)
    await start_session(request, response, api_key)
    return response


async def logout(request: web.Request) -> web.Response:
    form = await request.post()
    session = await current_session(request)
    # A portal's user has no key to sign in with again: they are told where to come back.
    response = see_other(SIGNED_OUT if session is not None and session.portal else "/ui/login")
    if session is not None:
        check_csrf(form.get(CSRF_FIELD), session.csrf_token)
        await end_session(request, response)
    return response


async def signed_out_page(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("signed_out.html", request, {})


# Deliveries


async def deliveries_page(request: web.Request) -> web.Response:
    session = await signed_in(request, LIST_DELIVERIES)
    # A GET form sends every field, the ones left empty too: empty means no filter.
    sent = {name: value for name, value in request.query.items() if value.strip()}
    sent.pop("limit", None)
    # The first page refreshes by itself, unless asked not to; an older page stays put.
    refresh = (sent.pop("refresh", "") != "off") and "cursor" not in sent
    links = {"stop": str(request.rel_url.update_query(refresh="off")),
             "start": str(request.rel_url.with_query(
                 [(name, value) for name, value in request.query.items() if name != "refresh"]))}
    # Times come from datetime-local fields, in UTC.
    asked = {name: instant_of(value) if name in TIME_FILTERS else value
             for name, value in sent.items()}
    try:
        query = models.DeliveryQuery.model_validate(asked)
    except ValidationError as error:
        problems = problems_of(error)
        return await render(request, "deliveries.html", session, 422, rows=[], filters=sent,
                             statuses=DELIVERY_STATUSES, problems=problems, next_page=None,
                             paged=False, refresh=False, links=links)
    rows, next_cursor = page_of(
        await request.config_dict[STORE].list_deliveries(
            scope(session.api_key), delivery_filters(query), PAGE_SIZE + 1,
            decode_cursor(query.cursor)),
        PAGE_SIZE,
    )
    next_page = None
    if next_cursor is not None:
        next_page = str(request.rel_url.update_query(cursor=next_cursor))
    return await render(request, "deliveries.html", session, rows=rows, filters=sent,
                         statuses=DELIVERY_STATUSES, problems=[], next_page=next_page,
                         paged="cursor" in sent, refresh=refresh, links=links,
                         refresh_seconds=REFRESH_SECONDS)


async def delivery_page(request: web.Request) -> web.Response:
    session = await signed_in(request, READ_DELIVERY)
    store = request.config_dict[STORE]
    delivery = await store.get_delivery(path_id(request, "delivery"), scope(session.api_key))
    if delivery is None:
        raise not_found("delivery")
    attempts = await store.attempts_of_delivery(delivery.id)
    return await render(request, "delivery.html", session, delivery=delivery,
                         attempts=attempts, redelivered="redelivered" in request.query,
                         may_redeliver=session.api_key.role in REDELIVER)


async def redeliver(request: web.Request) -> web.Response:
    """What POST /v1/deliveries/{id}/redeliver does: one more attempt now."""
    session, _ = await acting(request, REDELIVER)
    id = path_id(request, "delivery")
    now: datetime = request.config_dict[CLOCK]()
    if not await request.config_dict[STORE].request_redelivery(id, scope(session.api_key),
                                                                now):
        raise not_found("delivery")
    return see_other(f"/ui/deliveries/{id}?redelivered=1")


ROUTES = [
    web.get("/login", login_page),
    web.post("/login", login),
    web.post("/logout", logout),
    web.get("/signed-out", signed_out_page),
    web.get("/deliveries", deliveries_page),
    web.get("/deliveries/{id}", delivery_page),
    web.post("/deliveries/{id}/redeliver", redeliver),
]
