"""The dashboard's subscription pages: the list, one subscription with its health and
recent deliveries, and its actions (pause, resume, enable, edit, send a test event, rotate
the secret, redeliver what failed). Each action runs what its API route runs, through
api.routes, with that route's roles."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from api import models
from api.auth import scope
from api.cursors import decode_cursor, page_of
from api.errors import ApiError
from api.routes import (
    change_subscription,
    own_subscription,
    path_id,
    queue_failed_redeliveries,
    rotate_subscription_secret,
    test_subscription,
)
from api.state import CLOCK, STORE
from hookpost import store as records
from hookpost.store import UiSession
from ui.activity import activity
from ui.forms import as_body, as_local_field, event_types_of, instant_of, problems_of
from ui.pages import PAGE_SIZE, acting, api_roles, render, see_other, signed_in

LIST = api_roles("GET", "/v1/subscriptions")
READ = api_roles("GET", "/v1/subscriptions/{id}")
CHANGE = api_roles("PATCH", "/v1/subscriptions/{id}")
TEST = api_roles("POST", "/v1/subscriptions/{id}/test")
ROTATE = api_roles("POST", "/v1/subscriptions/{id}/rotate-secret")
REDELIVER_FAILED = api_roles("POST", "/v1/subscriptions/{id}/redeliver-failed")

RECENT_DELIVERIES = 10
# What the page says after an action; only these words, never text taken from the URL.
DONE = {
    "paused": "Paused: nothing is sent until it is resumed; new events wait for it.",
    "active": "Active: deliveries are sent again, the ones that waited first.",
    "edited": "Saved.",
    "tested": "Test event sent: a webhook.test delivery to this subscription only.",
    "queued": "Failed deliveries queued for redelivery.",
}
# The status each button asks for; enabling a disabled subscription makes it active.
STATUS_ACTIONS = {"pause": "paused", "resume": "active", "enable": "active"}


def done_message(query: Mapping[str, str]) -> str | None:
    """What the page says after an action named in its query."""
    message = DONE.get(query.get("done", ""))
    count = query.get("count", "")
    if message is not None and count.isdigit():
        message = f"{message} ({count})"
    return message


async def subscriptions_page(request: web.Request) -> web.Response:
    session = await signed_in(request, LIST)
    cursor = request.query.get("cursor")
    after = decode_cursor(cursor)  # a cursor not given out here is a 400 page
    rows, next_cursor = page_of(
        await request.config_dict[STORE].list_subscriptions(scope(session.api_key),
                                                            PAGE_SIZE + 1, after),
        PAGE_SIZE,
    )
    next_page = None
    if next_cursor is not None:
        next_page = str(request.rel_url.with_query(cursor=next_cursor))
    return await render(request, "subscriptions.html", session, rows=rows,
                         next_page=next_page, paged=cursor is not None)


async def _subscription_page(request: web.Request, session: UiSession,
                             subscription: records.Subscription, status: int = 200,
                             **values: Any) -> web.Response:
    store = request.config_dict[STORE]
    recent = await store.list_deliveries(
        scope(session.api_key), records.DeliveryFilters(subscription_id=subscription.id),
        RECENT_DELIVERIES, None)
    now: datetime = request.config_dict[CLOCK]()
    role = session.api_key.role
    page: dict[str, Any] = {
        "subscription": subscription,
        "backlog": await store.subscription_backlog(subscription.id),
        "activity": await activity(request, subscription.id),
        "recent": recent,
        "done": done_message(request.query),
        "tested_delivery": request.query.get("delivery", ""),
        "may_change": role in CHANGE, "may_test": role in TEST, "may_rotate": role in ROTATE,
        "may_redeliver": role in REDELIVER_FAILED,
        "edit": {"url": subscription.url, "event_types": " ".join(subscription.event_types),
                 "description": subscription.description},
        "edit_problems": [],
        "since": as_local_field(now - timedelta(days=1)),
        "secret": None,
        **values,
    }
    return await render(request, "subscription.html", session, status, **page)


async def subscription_page(request: web.Request) -> web.Response:
    session = await signed_in(request, READ)
    subscription = await own_subscription(request, session.api_key,
                                          path_id(request, "subscription"))
    return await _subscription_page(request, session, subscription)


def _back(id: str, done: str, **more: str) -> web.Response:
    query = "&".join(f"{name}={value}" for name, value in {"done": done, **more}.items())
    return see_other(f"/ui/subscriptions/{id}?{query}")


async def change_status(request: web.Request) -> web.Response:
    """Pause, resume or enable: what PATCH /v1/subscriptions/{id} does with a status."""
    session, form = await acting(request, CHANGE)
    status = STATUS_ACTIONS.get(form.get("action", ""))
    if status is None:
        raise web.HTTPBadRequest(reason="the form asked for no known change of status")
    id = path_id(request, "subscription")
    await change_subscription(request, session.api_key, id,
                              as_body(models.SubscriptionUpdate, {"status": status}))
    return _back(id, status)


async def edit(request: web.Request) -> web.Response:
    """What PATCH /v1/subscriptions/{id} does with a url, event types and description."""
    session, form = await acting(request, CHANGE)
    id = path_id(request, "subscription")
    subscription = await own_subscription(request, session.api_key, id)
    fields = {"url": form.get("url", "").strip(),
              "event_types": event_types_of(form.get("event_types", "")),
              "description": form.get("description", "")}
    try:
        change = as_body(models.SubscriptionUpdate, fields)
        await change_subscription(request, session.api_key, id, change)
    except (ValidationError, ApiError) as error:
        if isinstance(error, ApiError) and error.status != 422:
            raise
        shown = {**fields, "event_types": form.get("event_types", "")}
        return await _subscription_page(request, session, subscription, 422, edit=shown,
                                        edit_problems=problems_of(error))
    return _back(id, "edited")


async def send_test(request: web.Request) -> web.Response:
    session, _ = await acting(request, TEST)
    subscription = await own_subscription(request, session.api_key,
                                          path_id(request, "subscription"))
    # Posted in the name of a key: for a portal session, the key that made its link.
    sent = await test_subscription(request, session.owner_key_id, subscription)
    return _back(subscription.id, "tested", delivery=sent.delivery_id)


async def rotate_secret(request: web.Request) -> web.Response:
    """The new secret, shown on this answer only (never in a URL or a later page)."""
    session, _ = await acting(request, ROTATE)
    id = path_id(request, "subscription")
    rotated = await rotate_subscription_secret(request, session.api_key, id,
                                               models.RotateSecret())
    subscription = await own_subscription(request, session.api_key, id)
    return await _subscription_page(request, session, subscription, secret=rotated)


def _redelivery_choice(fields: dict[str, str], dry_run: bool) -> models.RedeliverFailed:
    choice: dict[str, Any] = {"since": instant_of(fields.get("since", "")), "dry_run": dry_run}
    if fields.get("event_type", "").strip():
        choice["event_type"] = fields["event_type"].strip()
    return as_body(models.RedeliverFailed, choice)


async def redeliver_failed_page(request: web.Request) -> web.Response:
    """Step one of bulk redelivery: how many failed deliveries a choice matches (a dry
    run, which changes nothing), and a form to confirm it."""
    session = await signed_in(request, REDELIVER_FAILED)
    subscription = await own_subscription(request, session.api_key,
                                          path_id(request, "subscription"))
    fields = {name: request.query.get(name, "") for name in ("since", "event_type")}
    try:
        choice = _redelivery_choice(fields, dry_run=True)
    except ValidationError as error:
        return await render(request, "redeliver_failed.html", session, 422,
                             subscription=subscription, fields=fields,
                             problems=problems_of(error), count=None, choice=None)
    counted = await queue_failed_redeliveries(request, subscription, choice)
    return await render(request, "redeliver_failed.html", session,
                         subscription=subscription, fields=fields, problems=[],
                         count=counted.count, choice=choice)


async def redeliver_failed(request: web.Request) -> web.Response:
    """Step two: the confirmed choice is queued, at the API's default rate."""
    session, form = await acting(request, REDELIVER_FAILED)
    subscription = await own_subscription(request, session.api_key,
                                          path_id(request, "subscription"))
    try:
        choice = _redelivery_choice(form, dry_run=False)
    except ValidationError as error:
        raise web.HTTPBadRequest(reason="; ".join(problems_of(error))) from None
    queued = await queue_failed_redeliveries(request, subscription, choice)
    return _back(subscription.id, "queued", count=str(queued.count))


ROUTES = [
    web.get("/subscriptions", subscriptions_page),
    web.get("/subscriptions/{id}", subscription_page),
    web.post("/subscriptions/{id}/status", change_status),
    web.post("/subscriptions/{id}/edit", edit),
    web.post("/subscriptions/{id}/test", send_test),
    web.post("/subscriptions/{id}/rotate-secret", rotate_secret),
    web.get("/subscriptions/{id}/redeliver-failed", redeliver_failed_page),
    web.post("/subscriptions/{id}/redeliver-failed", redeliver_failed),
]
