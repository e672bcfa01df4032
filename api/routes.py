"""The REST handlers and their route table."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from api import json_input, models
from api.auth import (
    KEY_CACHE,
    KEY_CACHE_SECONDS,
    LAST_ADMIN_KEY,
    AdminKeyBound,
    Role,
    authorize,
    create_key,
    scope,
    tenant_to_bind,
)
from api.cursors import decode_cursor, page_of
from api.errors import ApiError, invalid, not_found, validation_details
from api.headers import read_header
from api.openapi import Header, Operation, build_document
from api.portal import make_portal_link, portal_refusal, portal_url
from api.probes import PROBES
from api.responses import model_response
from api.state import CLOCK, INGEST, SETTINGS, STORE
from api.tenancy import TENANT_CACHE, tenant_to_write
from dispatcher.destinations import check_destination
from dispatcher.signing import new_secret, new_signing_key
from hookpost import __version__, metrics, stats
from hookpost import store as records
from hookpost.ids import new_id

Body = TypeVar("Body", bound=BaseModel)

async def _body(request: web.Request, model: type[Body], *, optional: bool = False) -> Body:
    """The request body, parsed and validated against `model`; nothing else is accepted.

    With `optional`, an empty body stands for `{}`.
    """
    limit = request.app[SETTINGS].max_payload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"the request body is over {limit} bytes")
    raw = await request.read()
    if len(raw) > limit:
        raise ApiError(413, "payload_too_large", f"the request body is over {limit} bytes")
    if optional and not raw.strip():
        raw = b"{}"
    try:
        parsed = json_input.loads(raw)
    except ValueError as error:  # bad JSON or UTF-8, NaN, an infinite number, too deep
        message = f"the request body is not valid JSON: {error}"
        raise ApiError(400, "invalid_json", message) from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        if any(item["type"] == "json_invalid" for item in error.errors()):
            # JSON Python reads and pydantic does not, such as a lone surrogate "\udcff".
            message = "the request body is not valid JSON: " + error.errors()[0]["msg"]
            raise ApiError(400, "invalid_json", message) from None
        raise ApiError(
            422, "validation_error", "the request body is not valid",
            validation_details(error, ("body",)),
        ) from None


def _query(request: web.Request, model: type[Body]) -> Body:
    """The query string, validated against `model`; unknown parameters are refused."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as error:
        raise ApiError(
            422, "validation_error", "the query is not valid",
            validation_details(error, ("query",)),
        ) from None


def path_id(request: web.Request, what: str) -> str:
    """The id in the path; one Postgres text cannot hold (a NUL in it) names no `what`."""
    id = request.match_info["id"]
    if "\x00" in id:
        raise not_found(what)
    return id


async def _check_url(request: web.Request, url: str) -> None:
    settings = request.config_dict[SETTINGS]
    try:
        problem = await check_destination(url, settings.allowed_networks, settings.allow_http)
    except UnicodeError as error:  # the host has an empty or over-long label: not a DNS name
        problem = f"the host is not a valid name: {error}"
    if problem is not None:
        raise invalid(f"url is not an allowed destination: {problem}", ["body", "url"])


def _subscription(record: records.Subscription) -> models.Subscription:
    return models.Subscription.model_validate(record.model_dump())


# Subscriptions


async def create_subscription(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    body = await _body(request, models.SubscriptionCreate)
    tenant_id = await tenant_to_write(request, store, caller, body.tenant_id)
    await _check_url(request, body.url)
    try:
        record = await store.insert_subscription(
            caller.id, body.url, body.event_types, body.description, body.status, new_secret(),
            request.app[CLOCK](), body.max_concurrency, body.rate_limit, tenant_id,
            body.signature_scheme, new_signing_key(),
            None if body.policy is None else body.policy.stored(),
        )
    except records.TenantGone:  # deleted a moment ago
        raise not_found("tenant") from None
    return model_response(models.SubscriptionCreated.model_validate(record.model_dump()), 201)


async def list_subscriptions(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    query = _query(request, models.PageQuery)
    after = decode_cursor(query.cursor)
    rows, next_cursor = page_of(
        await store.list_subscriptions(scope(caller), query.limit + 1, after), query.limit
    )
    page = models.SubscriptionPage(data=[_subscription(row) for row in rows],
                                   next_cursor=next_cursor)
    return model_response(page)


# What a subscription's routes do, for the API's handlers and the dashboard's forms alike:
# each takes the caller already checked and the request already read.


async def own_subscription(request: web.Request, caller: records.ApiKey, id: str
                           ) -> records.Subscription:
    """Subscription `id`, if the caller may see it; else 404."""
    record = await request.config_dict[STORE].get_subscription(id, scope(caller))
    if record is None:
        raise not_found("subscription")
    return record


async def change_subscription(request: web.Request, caller: records.ApiKey, id: str,
                              change: models.SubscriptionUpdate) -> records.Subscription:
    """What PATCH /v1/subscriptions/{id} does: the fields sent change, a new url only if
    it is an allowed destination."""
    await own_subscription(request, caller, id)
    if change.url is not None:
        await _check_url(request, change.url)
    record = await request.config_dict[STORE].update_subscription(
        id, scope(caller), url=change.url, event_types=change.event_types,
        description=change.description, status=change.status,
        now=request.config_dict[CLOCK](),
        limits={name: getattr(change, name) for name in models.LIMITS
                if name in change.model_fields_set},
        # One made before v1a has no key pair yet: it gets one as it leaves v1.
        signature_scheme=change.signature_scheme,
        signing_key=None if change.signature_scheme in (None, "v1") else new_signing_key(),
        set_policy="policy" in change.model_fields_set,
        policy=None if change.policy is None else change.policy.stored(),
    )
    if record is None:  # deleted a moment ago
        raise not_found("subscription")
    return record


async def rotate_subscription_secret(request: web.Request, caller: records.ApiKey, id: str,
                                     rotation: models.RotateSecret) -> models.SecretRotated:
    """What POST /v1/subscriptions/{id}/rotate-secret does."""
    now = request.config_dict[CLOCK]()
    expires_at = now + timedelta(seconds=rotation.grace_seconds)
    record = await request.config_dict[STORE].rotate_secret(id, scope(caller), new_secret(),
                                                            expires_at, now)
    if record is None:
        raise not_found("subscription")
    return models.SecretRotated(secret=record.secret, previous_secret_expires_at=expires_at)


async def test_subscription(request: web.Request, producer_key_id: str,
                            subscription: records.Subscription) -> models.TestSent:
    """What POST /v1/subscriptions/{id}/test does: a webhook.test event to it alone, posted
    in the name of key `producer_key_id`."""
    now = request.config_dict[CLOCK]()
    event_id = new_id("evt", now)
    data = {"subscription_id": subscription.id,
            "message": "a test event sent on request; it needs no action"}
    payload = event_payload(event_id, records.TEST_EVENT_TYPE, now, data)
    delivery_id = await request.config_dict[STORE].send_test_event(
        event_id, payload, producer_key_id, subscription, now)
    return models.TestSent(event_id=event_id, delivery_id=delivery_id)


async def queue_failed_redeliveries(request: web.Request, subscription: records.Subscription,
                                    choice: models.RedeliverFailed) -> models.RedeliveryCount:
    """What POST /v1/subscriptions/{id}/redeliver-failed does (a dry run only counts)."""
    count = await request.config_dict[STORE].redeliver_failed(
        subscription.id, choice.since, choice.until, choice.event_type,
        request.config_dict[CLOCK](), choice.rate_per_second, choice.dry_run,
    )
    return models.RedeliveryCount(count=count, dry_run=choice.dry_run)


async def _own_subscription(request: web.Request, caller: records.ApiKey
                            ) -> records.Subscription:
    """The subscription named in the path, if the caller may see it; else 404."""
    return await own_subscription(request, caller, path_id(request, "subscription"))


async def get_subscription(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    record = await _own_subscription(request, caller)
    health = models.SubscriptionHealth(
        last_success_at=record.last_success_at,
        last_failure_at=record.last_failure_at,
        failing_since=record.failing_since,
        pending=await store.subscription_backlog(record.id),
    )
    detail = models.SubscriptionDetail.model_validate({**record.model_dump(), "health": health})
    return model_response(detail)


async def update_subscription(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    body = await _body(request, models.SubscriptionUpdate)
    record = await change_subscription(request, caller, path_id(request, "subscription"), body)
    return model_response(_subscription(record))


async def delete_subscription(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    deleted = await store.delete_subscription(
        path_id(request, "subscription"), scope(caller), request.app[CLOCK]()
    )
    if not deleted:
        raise not_found("subscription")
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    body = await _body(request, models.RotateSecret, optional=True)
    return model_response(await rotate_subscription_secret(
        request, caller, path_id(request, "subscription"), body))


async def send_test_event(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    subscription = await _own_subscription(request, caller)
    return model_response(await test_subscription(request, caller.id, subscription), 202)


async def redeliver_failed(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    body = await _body(request, models.RedeliverFailed)
    subscription = await _own_subscription(request, caller)
    return model_response(await queue_failed_redeliveries(request, subscription, body))


# Events


_ENVELOPE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def event_payload(id: str, type: str, timestamp: datetime, data: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent for an event, serialized once."""
    envelope = {"id": id, "type": type, "timestamp": timestamp.isoformat().replace("+00:00", "Z"),
                "data": data}
    return _ENVELOPE.encode(envelope).encode()


async def create_event(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.PRODUCER, Role.ADMIN)
    body = await _body(request, models.EventCreate)
    tenant_id = await tenant_to_write(request, store, caller, body.tenant_id)
    key = _idempotency_key(request, body)
    now = request.app[CLOCK]()
    event_id = new_id("evt", now)
    payload = event_payload(event_id, body.type, now, body.data)
    limit = request.app[SETTINGS].max_payload_bytes
    if len(payload) > limit:
        raise ApiError(413, "payload_too_large", f"the event payload is over {limit} bytes")
    deliveries = await request.app[INGEST].ingest(
        records.NewEvent(event_id, body.type, payload, caller.id, key, now, tenant_id)
    )
    if deliveries is not None:
        metrics.events_counter(body.type).inc()
        accepted = models.EventAccepted(id=event_id, tenant_id=tenant_id, type=body.type,
                                        created_at=now, deliveries=deliveries)
        return model_response(accepted, 202)
    assert key is not None  # only an idempotency key makes an event not be stored
    event, deliveries = await store.event_by_idempotency_key(caller.id, key)
    if not _same_event(event, body, tenant_id):
        raise ApiError(
            409, "idempotency_conflict",
            "this idempotency key was already used for an event with another tenant, type "
            "or data (a producer's keys are unique across every tenant it posts to)",
        )
    accepted = models.EventAccepted(
        id=event.id, tenant_id=event.tenant_id, type=event.type, created_at=event.created_at,
        deliveries=deliveries,
    )
    response = model_response(accepted, 202)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _same_event(event: records.Event, body: models.EventCreate, tenant_id: str) -> bool:
    """Whether a replayed request asks for the event the idempotency key already made."""
    return (event.tenant_id == tenant_id and event.type == body.type
            and json.loads(event.payload)["data"] == body.data)


def _idempotency_key(request: web.Request, body: models.EventCreate) -> str | None:
    header = read_header(request, "Idempotency-Key", models.IDEMPOTENCY_KEY_LIMIT)
    if header == "":
        raise invalid("Idempotency-Key must not be empty", ["header", "Idempotency-Key"])
    if header is not None and body.idempotency_key is not None and header != body.idempotency_key:
        raise invalid(
            "the Idempotency-Key header and the idempotency_key field differ",
            ["header", "Idempotency-Key"],
        )
    return header if header is not None else body.idempotency_key


async def get_event(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.PRODUCER, Role.SUBSCRIBER, Role.ADMIN)
    # Producers see the events they posted; subscribers, those of their tenant (a key bound
    # to none: those delivered to its subscriptions, and only those deliveries of it).
    producer = caller.id if caller.role == Role.PRODUCER else None
    event = await store.get_event(path_id(request, "event"), producer, scope(caller))
    if event is None:
        raise not_found("event")
    deliveries = await store.deliveries_of_event(event.id, scope(caller))
    envelope = json.loads(event.payload)
    body = models.Event(
        id=event.id, tenant_id=event.tenant_id, type=event.type, data=envelope["data"],
        created_at=event.created_at,
        deliveries=[models.DeliverySummary.model_validate(d.model_dump()) for d in deliveries],
    )
    return model_response(body)


# Deliveries


def delivery_filters(query: models.DeliveryQuery) -> records.DeliveryFilters:
    """The store's filters of a delivery listing, from its query string."""
    return records.DeliveryFilters(
        subscription_id=query.subscription_id, event_id=query.event_id, status=query.status,
        event_type=query.event_type, since=query.since, until=query.until,
    )


async def list_deliveries(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    query = _query(request, models.DeliveryQuery)
    rows, next_cursor = page_of(
        await store.list_deliveries(scope(caller), delivery_filters(query), query.limit + 1,
                                    decode_cursor(query.cursor)),
        query.limit,
    )
    page = models.DeliveryPage(
        data=[models.DeliverySummary.model_validate(row.model_dump()) for row in rows],
        next_cursor=next_cursor,
    )
    return model_response(page)


async def redeliver(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    id = path_id(request, "delivery")
    if not await store.request_redelivery(id, scope(caller), request.app[CLOCK]()):
        raise not_found("delivery")
    delivery = await store.get_delivery(id, scope(caller))
    if delivery is None:
        raise not_found("delivery")
    return model_response(models.DeliverySummary.model_validate(delivery.model_dump()), 202)


async def get_delivery(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    delivery = await store.get_delivery(path_id(request, "delivery"), scope(caller))
    if delivery is None:
        raise not_found("delivery")
    attempts = await store.attempts_of_delivery(delivery.id)
    body = models.Delivery.model_validate(
        {**delivery.model_dump(), "attempts": [a.model_dump() for a in attempts]}
    )
    return model_response(body)


# Tenants


def _tenant(record: records.Tenant) -> models.Tenant:
    return models.Tenant.model_validate(record.model_dump())


async def _named_tenant(request: web.Request) -> records.Tenant:
    """The tenant named in the path, by id or uid; else 404."""
    tenant = await request.app[STORE].resolve_tenant(path_id(request, "tenant"))
    if tenant is None:
        raise not_found("tenant")
    return tenant


def _uid_taken(uid: str | None) -> ApiError:
    return ApiError(409, "uid_taken", f"another tenant has the uid {uid!r}")


async def create_tenant(request: web.Request) -> web.Response:
    store = request.app[STORE]
    await authorize(request, store, Role.ADMIN)
    body = await _body(request, models.TenantCreate)
    try:
        record = await store.insert_tenant(body.name, body.uid, request.app[CLOCK]())
    except records.UniqueViolation:
        raise _uid_taken(body.uid) from None
    return model_response(_tenant(record), 201)


async def list_tenants(request: web.Request) -> web.Response:
    store = request.app[STORE]
    await authorize(request, store, Role.ADMIN)
    query = _query(request, models.PageQuery)
    rows, next_cursor = page_of(
        await store.list_tenants(query.limit + 1, decode_cursor(query.cursor)), query.limit
    )
    return model_response(models.TenantPage(data=[_tenant(row) for row in rows],
                                            next_cursor=next_cursor))


async def get_tenant(request: web.Request) -> web.Response:
    store = request.app[STORE]
    await authorize(request, store, Role.ADMIN)
    tenant = await _named_tenant(request)
    by_status, pending = await store.tenant_summary(tenant.id)
    detail = models.TenantDetail.model_validate(
        {**tenant.model_dump(), "subscriptions": by_status, "pending": pending})
    return model_response(detail)


async def update_tenant(request: web.Request) -> web.Response:
    store = request.app[STORE]
    await authorize(request, store, Role.ADMIN)
    body = await _body(request, models.TenantUpdate)
    tenant = await _named_tenant(request)
    if tenant.id == records.DEFAULT_TENANT and "uid" in body.model_fields_set:
        raise ApiError(409, "default_tenant",
                       "the default tenant keeps the uid default, which names it everywhere")
    try:
        record = await store.update_tenant(
            tenant.id, name=body.name, uid=body.uid, set_uid="uid" in body.model_fields_set,
            now=request.app[CLOCK](),
        )
    except records.UniqueViolation:
        raise _uid_taken(body.uid) from None
    if record is None:
        raise not_found("tenant")
    return model_response(_tenant(record))


async def delete_tenant(request: web.Request) -> web.Response:
    store = request.app[STORE]
    await authorize(request, store, Role.ADMIN)
    tenant = await _named_tenant(request)
    if tenant.id == records.DEFAULT_TENANT:
        raise ApiError(409, "default_tenant",
                       "the default tenant takes whatever names no tenant; it stays")
    if tenant.id == records.SYSTEM_TENANT:
        raise ApiError(409, "system_tenant",
                       "the system tenant takes hookpost's operational events; it stays")
    revoked = await store.delete_tenant(tenant.id, request.app[CLOCK]())
    if revoked is None:
        raise not_found("tenant")
    # This process refuses them at once; every other one within the caches' lifetime.
    request.app[TENANT_CACHE].forget(tenant.id)
    for key_id in revoked:
        request.app[KEY_CACHE].forget(key_id)
    return web.Response(status=204)


async def create_portal_link(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.ADMIN, Role.PRODUCER)
    body = await _body(request, models.PortalLinkCreate, optional=True)
    tenant = await _named_tenant(request)
    refusal = portal_refusal(caller, tenant.id)
    if refusal is not None:
        raise refusal
    token, link = await make_portal_link(store, caller.id, tenant.id,
                                         timedelta(seconds=body.expires_in_seconds),
                                         request.app[CLOCK]())
    created = models.PortalLinkCreated(url=portal_url(request, token), expires_at=link.expires_at)
    return model_response(created, 201)


# API keys


def _api_key(record: records.ApiKey) -> models.ApiKey:
    return models.ApiKey.model_validate(record.model_dump())


async def create_api_key(request: web.Request) -> web.Response:
    store = request.app[STORE]
    await authorize(request, store, Role.ADMIN)
    body = await _body(request, models.KeyCreate)
    try:
        tenant_id = await tenant_to_bind(store, Role(body.role), body.tenant_id)
    except AdminKeyBound as refused:
        raise invalid(str(refused), ["body", "tenant_id"]) from None
    except records.TenantGone:
        raise not_found("tenant") from None
    key, record = await create_key(store, Role(body.role), body.name, tenant_id)
    created = models.ApiKeyCreated.model_validate({**record.model_dump(), "key": key})
    return model_response(created, 201)


async def list_api_keys(request: web.Request) -> web.Response:
    store = request.app[STORE]
    await authorize(request, store, Role.ADMIN)
    query = _query(request, models.PageQuery)
    rows, next_cursor = page_of(
        await store.list_api_keys(query.limit + 1, decode_cursor(query.cursor)), query.limit
    )
    return model_response(models.ApiKeyPage(data=[_api_key(row) for row in rows],
                                            next_cursor=next_cursor))


async def revoke_api_key(request: web.Request) -> web.Response:
    store = request.app[STORE]
    await authorize(request, store, Role.ADMIN)
    id = path_id(request, "API key")
    revocation = await store.revoke_api_key(id, request.app[CLOCK]())
    if revocation == "not_found":
        raise not_found("API key")
    if revocation == "last_admin":
        raise ApiError(409, "last_admin_key", LAST_ADMIN_KEY)
    request.app[KEY_CACHE].forget(id)
    return web.Response(status=204)


# Statistics


def _summary(summary: stats.Summary) -> dict[str, Any]:
    latency = summary.latency_ms
    return {"attempts": summary.attempts, "succeeded": summary.succeeded,
            "retried": summary.retried, "failed": summary.failed,
            "success_rate": summary.success_rate,
            "latency_ms": {"p50": latency.p50, "p95": latency.p95, "p99": latency.p99}}


# A statistics answer is written straight from its report, not through models.Stats (which
# tests hold it to): a day per minute is 1,440 points, and validating and serializing them
# took longer than all the rest of the answer. A point is its start and its summary, whose
# JSON is remembered by the summary, as stats.summarize remembers summaries by counts.


@functools.lru_cache(maxsize=8192)
def _summary_fields(summary: stats.Summary) -> str:
    """The JSON of a summary, without its braces."""
    return json.dumps(_summary(summary), separators=(",", ":"), allow_nan=False)[1:-1]


def _instant(at: datetime) -> str:
    """A time as the API writes its times: ISO 8601 in UTC, with a Z."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


# The starts of periods recur in every answer of the same minute.
_period_start = functools.lru_cache(maxsize=4096)(_instant)


def stats_answer(scope: str, now: datetime, report: stats.Report) -> bytes:
    """The API's answer (models.Stats, as JSON) of a statistics report (stats.report) of
    `scope` at `now`."""
    points = ",".join(
        f'{{"start":"{_period_start(point.start)}",{_summary_fields(point.summary)}}}'
        for point in report.series)
    answer = json.dumps({
        "scope": scope, "as_of": _instant(now),
        "totals": {span: _summary(summary) for span, summary in report.totals.items()},
        "series": {"window": report.window, "interval": report.interval, "points": []},
    }, separators=(",", ":"), allow_nan=False)
    # The points go into the empty list that the answer ends with.
    head, tail = answer.rsplit("[]", 1)
    return f"{head}[{points}]{tail}".encode()


async def _stats_response(request: web.Request, scope: str, query: models.StatsQuery
                          ) -> web.Response:
    now = request.app[CLOCK]()
    interval = query.series_interval
    rows = await request.app[STORE].attempt_stats(scope, now, query.window, interval)
    report = stats.report(rows, now, query.window, interval)
    return web.Response(body=stats_answer(scope, now, report),
                        content_type="application/json")


async def subscription_stats(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    query = _query(request, models.StatsQuery)
    subscription = await _own_subscription(request, caller)
    return await _stats_response(request, subscription.id, query)


def reaches_tenant(reach: records.Scope, tenant_id: str) -> bool:
    """Whether a caller of scope `reach` sees every subscription of a tenant, and so its
    statistics: not a key that sees only the subscriptions it made."""
    return reach.owner_key_id is None and reach.tenant_id in (None, tenant_id)


async def tenant_stats(request: web.Request) -> web.Response:
    store = request.app[STORE]
    caller = await authorize(request, store, Role.SUBSCRIBER, Role.ADMIN)
    query = _query(request, models.StatsQuery)
    tenant = await _named_tenant(request)
    if not reaches_tenant(scope(caller), tenant.id):
        raise not_found("tenant")
    return await _stats_response(request, tenant.id, query)


async def overall_stats(request: web.Request) -> web.Response:
    store = request.app[STORE]
    await authorize(request, store, Role.ADMIN)
    query = _query(request, models.StatsQuery)
    return await _stats_response(request, stats.EVERYTHING, query)


# Liveness


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


_OWNER = (Role.SUBSCRIBER, Role.ADMIN)
_IDEMPOTENCY_KEY = Header(
    "Idempotency-Key", TypeAdapter(models.IdempotencyKey).json_schema(),
    "Posting again with the same key answers the first event; same as idempotency_key.",
)
_REPLAYED = Header(
    "Idempotent-Replayed", {"type": "string", "enum": ["true"]},
    "Sent when the idempotency key was used before: the answer is the first event.",
)

_ADMIN = (Role.ADMIN,)

OPERATIONS = [
    Operation("POST", "/v1/tenants", create_tenant, "Create a tenant", _ADMIN,
              models.TenantCreate, models.Tenant, 201, errors=(409,)),
    Operation("GET", "/v1/tenants", list_tenants, "List tenants, newest first", _ADMIN,
              response=models.TenantPage, query=models.PageQuery),
    Operation("GET", "/v1/tenants/{id}", get_tenant,
              "Read a tenant (by id or uid) with its subscriptions by status and its backlog",
              _ADMIN, response=models.TenantDetail),
    Operation("PATCH", "/v1/tenants/{id}", update_tenant, "Rename a tenant or change its uid",
              _ADMIN, models.TenantUpdate, models.Tenant, errors=(409,)),
    Operation("DELETE", "/v1/tenants/{id}", delete_tenant,
              "Delete a tenant: its subscriptions are deleted and its keys revoked", _ADMIN,
              status=204, errors=(409,)),
    Operation("POST", "/v1/tenants/{id}/portal-link", create_portal_link,
              "Make a one-time link that opens the tenant's portal without a key: its "
              "subscriptions and delivery log, for the tenant's own people. An admin key "
              "may for every tenant, a producer key bound to a tenant for that one",
              (Role.ADMIN, Role.PRODUCER), models.PortalLinkCreate, models.PortalLinkCreated,
              201, body_optional=True),
    Operation("POST", "/v1/keys", create_api_key,
              "Create an API key; the key itself is shown only in this answer", _ADMIN,
              models.KeyCreate, models.ApiKeyCreated, 201, errors=(404,)),
    Operation("GET", "/v1/keys", list_api_keys,
              "List API keys, newest first, revoked ones too (never the keys themselves)",
              _ADMIN, response=models.ApiKeyPage, query=models.PageQuery),
    Operation("DELETE", "/v1/keys/{id}", revoke_api_key,
              f"Revoke an API key: every API process refuses it within {KEY_CACHE_SECONDS:g} "
              "seconds. The last valid admin key cannot be revoked", _ADMIN, status=204,
              errors=(409,)),
    Operation("POST", "/v1/subscriptions", create_subscription, "Create a subscription",
              _OWNER, models.SubscriptionCreate, models.SubscriptionCreated, 201,
              errors=(404,)),
    Operation("GET", "/v1/subscriptions", list_subscriptions, "List subscriptions",
              _OWNER, response=models.SubscriptionPage, query=models.PageQuery),
    Operation("GET", "/v1/subscriptions/{id}", get_subscription,
              "Read a subscription with its health", _OWNER,
              response=models.SubscriptionDetail),
    Operation("PATCH", "/v1/subscriptions/{id}", update_subscription,
              "Change a subscription's url, event types, description, status or limits",
              _OWNER,
              models.SubscriptionUpdate, models.Subscription),
    Operation("DELETE", "/v1/subscriptions/{id}", delete_subscription,
              "Delete a subscription; its pending deliveries end as failed", _OWNER,
              status=204),
    Operation("POST", "/v1/subscriptions/{id}/rotate-secret", rotate_secret,
              "Replace the signing secret; the old one keeps signing for a grace period",
              _OWNER, models.RotateSecret, models.SecretRotated, body_optional=True),
    Operation("POST", "/v1/subscriptions/{id}/test", send_test_event,
              "Send a webhook.test event to this subscription only", _OWNER,
              response=models.TestSent, status=202),
    Operation("POST", "/v1/subscriptions/{id}/redeliver-failed", redeliver_failed,
              "Redeliver the subscription's failed deliveries, at a bounded rate", _OWNER,
              models.RedeliverFailed, models.RedeliveryCount),
    Operation("POST", "/v1/events", create_event, "Post an event",
              (Role.PRODUCER, Role.ADMIN), models.EventCreate, models.EventAccepted, 202,
              errors=(404, 409), headers=(_IDEMPOTENCY_KEY,),
              response_headers=(_REPLAYED,)),
    Operation("GET", "/v1/events/{id}", get_event, "Read an event and its deliveries",
              (Role.PRODUCER, Role.SUBSCRIBER, Role.ADMIN), response=models.Event),
    Operation("GET", "/v1/deliveries", list_deliveries, "List deliveries, newest first",
              _OWNER, response=models.DeliveryPage, query=models.DeliveryQuery),
    Operation("GET", "/v1/deliveries/{id}", get_delivery, "Read a delivery with every attempt",
              _OWNER, response=models.Delivery),
    Operation("POST", "/v1/deliveries/{id}/redeliver", redeliver,
              "Make one more attempt now", _OWNER, response=models.DeliverySummary,
              status=202),
    Operation("GET", "/v1/subscriptions/{id}/stats", subscription_stats,
              "Delivery statistics of a subscription: attempts by outcome, success rate and "
              "latency percentiles of the last hour, day and week, and a chart series",
              _OWNER, response=models.Stats, query=models.StatsQuery),
    Operation("GET", "/v1/tenants/{id}/stats", tenant_stats,
              "Delivery statistics of a tenant (by id or uid), as for a subscription; a "
              "subscriber key bound to the tenant may read them", _OWNER,
              response=models.Stats, query=models.StatsQuery),
    Operation("GET", "/v1/stats", overall_stats,
              "Delivery statistics of every attempt, as for a subscription", _ADMIN,
              response=models.Stats, query=models.StatsQuery),
    *PROBES,
    Operation("GET", "/openapi.json", openapi_document, "This document", document=False),
]

OPENAPI = build_document(OPERATIONS, __version__)
ROUTES = [operation.route() for operation in OPERATIONS]
