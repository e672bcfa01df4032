"""The tenants pages: every tenant, and one tenant with its subscriptions and the form that
makes a portal link. The roles are the API's own routes' (GET /v1/tenants, GET
/v1/tenants/{id}, POST /v1/tenants/{id}/portal-link), and a portal link is made and checked
by the same functions as there."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from yarl import URL

from api import models
from api.auth import check_role
from api.cursors import decode_cursor, page_of
from api.errors import invalid, not_found
from api.portal import make_portal_link, portal_refusal, portal_url
from api.routes import path_id
from api.state import CLOCK, STORE
from hookpost import store as records
from hookpost.store import Scope, UiSession
from ui.pages import PAGE_SIZE, acting, api_roles, render, signed_in

LIST_TENANTS = api_roles("GET", "/v1/tenants")
READ_TENANT = api_roles("GET", "/v1/tenants/{id}")
MAKE_PORTAL_LINK = api_roles("POST", "/v1/tenants/{id}/portal-link")

SUBSCRIPTION_STATUSES = ("active", "paused", "disabled")
# What the form offers, in seconds; the API takes any number of seconds within its bounds.
PORTAL_LINK_LIFETIMES = ((300, "5 minutes"), (600, "10 minutes"), (1800, "30 minutes"),
                         (3600, "1 hour"))


def _next_page(path: str, cursor: str | None) -> str | None:
    return None if cursor is None else str(URL(path).with_query(cursor=cursor))


async def tenants_page(request: web.Request) -> web.Response:
    session = await signed_in(request, LIST_TENANTS)
    store = request.config_dict[STORE]
    cursor = request.query.get("cursor") or None
    rows, next_cursor = page_of(
        await store.list_tenants(PAGE_SIZE + 1, decode_cursor(cursor)), PAGE_SIZE)
    counts = await store.tenant_counts([tenant.id for tenant in rows])
    return await render(request, "tenants.html", session, rows=rows, counts=counts,
                         next_page=_next_page("/ui/tenants", next_cursor), paged=cursor is not None)


async def _named_tenant(request: web.Request) -> records.Tenant:
    """The tenant named in the path, by id or uid, as the API finds it; else 404."""
    tenant = await request.config_dict[STORE].resolve_tenant(path_id(request, "tenant"))
    if tenant is None:
        raise not_found("tenant")
    return tenant


async def _tenant_page(request: web.Request, session: UiSession, tenant: records.Tenant,
                       status: int = 200, **values: Any) -> web.Response:
    store = request.config_dict[STORE]
    by_status, pending = await store.tenant_summary(tenant.id)
    cursor = request.query.get("cursor") or None
    subscriptions, next_cursor = page_of(
        await store.list_subscriptions(Scope(tenant_id=tenant.id), PAGE_SIZE + 1,
                                       decode_cursor(cursor)),
        PAGE_SIZE,
    )
    context: dict[str, Any] = {
        "tenant": tenant, "by_status": by_status, "statuses": SUBSCRIPTION_STATUSES,
        "pending": pending, "subscriptions": subscriptions, "paged": cursor is not None,
        "next_page": _next_page(f"/ui/tenants/{tenant.id}", next_cursor),
        "lifetimes": PORTAL_LINK_LIFETIMES,
        "default_lifetime": models.PortalLinkCreate().expires_in_seconds,
        "may_make_link": session.api_key.role in MAKE_PORTAL_LINK, "link": None,
    }
    return await render(request, "tenant.html", session, status, **{**context, **values})


async def tenant_page(request: web.Request) -> web.Response:
    session = await signed_in(request, READ_TENANT)
    return await _tenant_page(request, session, await _named_tenant(request))


def _link_request(sent: object) -> models.PortalLinkCreate:
    """The form's lifetime, validated as the API validates its body."""
    try:
        seconds = int(sent) if isinstance(sent, str) else None
        return models.PortalLinkCreate.model_validate(
            {} if seconds is None else {"expires_in_seconds": seconds})
    except (ValueError, ValidationError):
        low, high = models.PORTAL_LINK_SECONDS
        raise invalid(f"expires_in_seconds must be a number of seconds from {low} to {high}",
                      ["form", "expires_in_seconds"]) from None


async def make_link(request: web.Request) -> web.Response:
    """What POST /v1/tenants/{id}/portal-link does; the tenant's page shows the link once."""
    session, form = await acting(request, MAKE_PORTAL_LINK)
    check_role(session.api_key, *READ_TENANT)  # the page it answers with shows the tenant
    tenant = await _named_tenant(request)
    refusal = portal_refusal(session.api_key, tenant.id)
    if refusal is not None:
        raise refusal
    wanted = _link_request(form.get("expires_in_seconds"))
    now: datetime = request.config_dict[CLOCK]()
    token, link = await make_portal_link(
        request.config_dict[STORE], session.owner_key_id, tenant.id,
        timedelta(seconds=wanted.expires_in_seconds), now)
    return await _tenant_page(request, session, tenant, 201, link=link,
                              link_url=portal_url(request, token))


ROUTES = [
    web.get("/tenants", tenants_page),
    web.get("/tenants/{id}", tenant_page),
    web.post("/tenants/{id}/portal-link", make_link),
]
