"""Operational events: hookpost tells the system tenant's subscriptions (which only admins
make) when a subscription is disabled, failing or recovered and when a delivery is given up
on, signed and retried like any event; never of the system tenant's own subscriptions, and
never to another tenant."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook

from api.auth import Role, create_key
from api.routes import event_payload
from dispatcher.maintenance import Maintenance
from dispatcher.signing import sign
from hookpost.settings import Settings
from hookpost.store import SYSTEM_TENANT, Store
from tests.conftest import FakeClock
from tests.integration.conftest import (
    Keys,
    Received,
    Receiver,
    get_json,
    make_dispatcher,
    post_event,
    subscribe,
)


def answering(statuses: dict[str, int]) -> Any:
    """A responder answering each path its status (200 for any other)."""

    async def respond(request: web.Request, number: int) -> web.StreamResponse:
        return web.Response(status=statuses.get(request.path, 200), text="answered")

    return respond


async def make_tenant(api: TestClient[Any, Any], keys: Keys, name: str) -> str:
    response = await api.post("/v1/tenants", json={"name": name}, headers=Keys.auth(keys.admin))
    assert response.status == 201, await response.text()
    tenant_id: str = (await response.json())["id"]
    return tenant_id


async def watch(api: TestClient[Any, Any], keys: Keys, receiver: Receiver,
                event_types: list[str] | None = None) -> dict[str, Any]:
    """An admin's subscription of the system tenant, at /ops."""
    return await subscribe(api, keys.admin, receiver.url("/ops"), event_types or ["hookpost.*"],
                           tenant_id=SYSTEM_TENANT)


def told(receiver: Receiver) -> list[dict[str, Any]]:
    """The operational events /ops received, in order."""
    return [json.loads(request.body) for request in receiver.to("/ops")]


def types_told(receiver: Receiver) -> list[str]:
    return [event["type"] for event in told(receiver)]


def signed_with(secret: str, request: Received) -> bool:
    """Whether the request carries the signature of `secret` (for a fake clock's times,
    which standardwebhooks would refuse as too old)."""
    headers = request.headers
    return sign(secret, headers["webhook-id"], int(headers["webhook-timestamp"]),
                request.body) == headers["webhook-signature"]


async def system_events(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1",
                                     SYSTEM_TENANT)
    return count


async def test_a_410_tells_the_admins_subscription_it_disabled_and_gave_up_signed(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    receiver.respond = answering({"/acme": 410})
    ops = await watch(api, keys, receiver)
    acme = await make_tenant(api, keys, "Acme")
    globex = await make_tenant(api, keys, "Globex")
    gone = await subscribe(api, keys.admin, receiver.url("/acme"), ["order.*"], tenant_id=acme)
    await subscribe(api, keys.admin, receiver.url("/globex"), ["*"], tenant_id=globex)
    posted = await post_event(api, keys.producer, "order.created", tenant_id=acme)

    await make_dispatcher(store, settings).run(until_idle=True)

    assert sorted(types_told(receiver)) == ["hookpost.delivery.exhausted",
                                            "hookpost.subscription.disabled"]
    delivery = (await get_json(api, keys.admin, f"/v1/events/{posted['id']}"))["deliveries"][0]
    for request in receiver.to("/ops"):
        event = Webhook(ops["secret"]).verify(request.body, request.headers)
        assert event["id"] == request.headers["webhook-id"]
        # The envelope posted events have, to the byte.
        at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        assert request.body == event_payload(event["id"], event["type"], at, event["data"])
        data = event["data"]
        attempted_at = data["last_attempt"].pop("at")
        disabled = event["type"] == "hookpost.subscription.disabled"
        assert data == {
            "subscription_id": gone["id"], "tenant_id": acme, "url": gone["url"],
            "delivery_id": delivery["id"], "event_id": posted["id"],
            "event_type": "order.created", "attempts": 1,
            "reason": "the endpoint answered 410 Gone" if disabled else None,
            "failing_since": attempted_at if disabled else None,
            "last_attempt": {"status": 410, "error_kind": "http", "error_message": "HTTP 410"},
        }
        stored = await get_json(api, keys.admin, f"/v1/events/{event['id']}")
        assert (stored["tenant_id"], stored["type"]) == (SYSTEM_TENANT, event["type"])
    assert receiver.to("/globex") == [], "another tenant heard of acme's subscription"


async def test_failing_is_told_at_most_once_an_hour_and_recovery_after_it(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    statuses = {"/hook": 500}
    receiver.respond = answering(statuses)
    ops = await watch(clocked_api, keys, receiver, ["hookpost.subscription.*"])
    exhausted = await subscribe(clocked_api, keys.admin, receiver.url("/ops"),
                                ["hookpost.delivery.exhausted"], tenant_id=SYSTEM_TENANT)
    failing = await subscribe(clocked_api, keys.subscriber, receiver.url("/hook"))
    started = clock()
    await post_event(clocked_api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)

    for wait in (0, 5, 25, 120, 600):  # five failures within the first hour
        clock.advance(timedelta(seconds=wait))
        await dispatcher.run(until_idle=True)
    assert types_told(receiver) == ["hookpost.subscription.failing"]
    first = told(receiver)[0]["data"]
    assert first["subscription_id"] == failing["id"]
    assert first["failing_since"] == "2026-01-01T12:00:00Z"
    assert (first["attempts"], first["last_attempt"]["status"]) == (1, 500)

    clock.advance(timedelta(seconds=3600))  # the sixth and last, over an hour on
    await dispatcher.run(until_idle=True)
    assert sorted(types_told(receiver)[1:]) == ["hookpost.delivery.exhausted",
                                                "hookpost.subscription.failing"]
    for request, event in zip(receiver.to("/ops"), told(receiver), strict=True):
        secret = exhausted["secret"] if event["type"].endswith("exhausted") else ops["secret"]
        assert signed_with(secret, request)
        assert event["data"]["failing_since"] == (
            None if event["type"].endswith("exhausted") else "2026-01-01T12:00:00Z")
    [gave_up] = [e["data"] for e in told(receiver) if e["type"].endswith("exhausted")]
    assert (gave_up["attempts"], gave_up["last_attempt"]["error_kind"]) == (6, "http")

    statuses["/hook"] = 200
    await post_event(clocked_api, keys.producer)
    await dispatcher.run(until_idle=True)
    assert types_told(receiver)[-1] == "hookpost.subscription.recovered"
    recovered = told(receiver)[-1]["data"]
    assert (recovered["subscription_id"], recovered["failing_since"]) == (failing["id"], None)
    assert recovered["last_attempt"]["status"] == 200
    assert len(told(receiver)) == 4

    # Failing again within the hour of the last telling: nothing, and so no recovery either.
    clock.advance(timedelta(minutes=1))
    statuses["/hook"] = 503
    await post_event(clocked_api, keys.producer)
    await dispatcher.run(until_idle=True)
    statuses["/hook"] = 200
    clock.advance(timedelta(seconds=5))
    await dispatcher.run(until_idle=True)
    assert len(told(receiver)) == 4
    assert clock() - started < timedelta(hours=2)


async def test_the_system_tenants_own_trouble_is_never_told(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    receiver.respond = answering({"/hook": 400, "/ops": 500, "/gone": 410})
    ops = await watch(api, keys, receiver, ["*"])
    gone = await subscribe(api, keys.admin, receiver.url("/gone"), ["hookpost.*"],
                           tenant_id=SYSTEM_TENANT)
    tenants = await subscribe(api, keys.subscriber, receiver.url("/hook"))
    await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    # The tenant's subscription is failing and gave up a delivery (400); the system
    # subscriptions told of it failing (500) and disabled (410) make nothing more.
    told_of = await pool.fetch("SELECT type, payload FROM events WHERE tenant_id = $1",
                               SYSTEM_TENANT)
    assert sorted(row["type"] for row in told_of) == ["hookpost.delivery.exhausted",
                                                      "hookpost.subscription.failing"]
    assert {json.loads(row["payload"])["data"]["subscription_id"] for row in told_of} == {
        tenants["id"]}
    assert len(receiver.to("/ops")) == 2
    body = await get_json(api, keys.admin, f"/v1/subscriptions/{ops['id']}")
    assert body["health"]["failing_since"] is not None
    body = await get_json(api, keys.admin, f"/v1/subscriptions/{gone['id']}")
    assert body["status"] == "disabled"


async def test_nothing_is_made_when_no_one_listens(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    receiver.respond = answering({"/hook": 410})
    await watch(api, keys, receiver, ["hookpost.subscription.recovered"])
    await subscribe(api, keys.subscriber, receiver.url("/hook"))
    await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    assert await system_events(pool) == 0
    assert receiver.to("/ops") == []


async def test_disabling_a_subscription_failing_too_long_is_told(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    receiver.respond = answering({"/hook": 502})
    await watch(clocked_api, keys, receiver, ["hookpost.subscription.disabled"])
    failing = await subscribe(clocked_api, keys.subscriber, receiver.url("/hook"))
    posted = await post_event(clocked_api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)
    for wait in (0, 5, 25, 120, 600, 3600):
        clock.advance(timedelta(seconds=wait))
        await dispatcher.run(until_idle=True)
    clock.advance(timedelta(days=5))

    assert await Maintenance(store, settings, clock=clock).disable_failing() == [failing["id"]]
    await dispatcher.run(until_idle=True)

    [event] = told(receiver)
    assert event["type"] == "hookpost.subscription.disabled"
    data = event["data"]
    assert data["reason"].startswith("failing continuously for more than")
    assert (data["subscription_id"], data["event_id"], data["attempts"]) == (
        failing["id"], posted["id"], 6)
    assert (data["failing_since"], data["last_attempt"]["status"]) == (
        "2026-01-01T12:00:00Z", 502)


# Who may reach them


async def test_only_admins_and_keys_bound_to_it_write_to_the_system_tenant(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    pool: asyncpg.Pool,
) -> None:
    acme = await make_tenant(api, keys, "Acme")
    bound, _ = await create_key(store, Role.SUBSCRIBER, "acme subscriber", acme)
    unbound_producer = keys.producer
    refused: list[tuple[str, str, dict[str, Any]]] = [
        (keys.subscriber, "/v1/subscriptions", {"url": receiver.url(), "event_types": ["*"]}),
        (bound, "/v1/subscriptions", {"url": receiver.url(), "event_types": ["hookpost.*"]}),
        (unbound_producer, "/v1/events", {"type": "order.created", "data": {}}),
    ]
    before = await pool.fetchval("SELECT (SELECT count(*) FROM subscriptions)"
                                 " + (SELECT count(*) FROM events)")
    for key, path, body in refused:
        response = await api.post(path, json={**body, "tenant_id": SYSTEM_TENANT},
                                  headers=Keys.auth(key))
        assert response.status == 404, path
        assert await response.json() == {"error": {"code": "not_found",
                                                   "message": "tenant not found",
                                                   "details": []}}
    assert await pool.fetchval("SELECT (SELECT count(*) FROM subscriptions)"
                               " + (SELECT count(*) FROM events)") == before

    system, _ = await create_key(store, Role.SUBSCRIBER, "operations", SYSTEM_TENANT)
    made = await subscribe(api, system, receiver.url("/ops"), ["hookpost.*"])
    assert made["tenant_id"] == SYSTEM_TENANT


@pytest.mark.parametrize("type", ["hookpost.subscription.disabled", "hookpost.anything"])
async def test_no_one_posts_an_operational_event(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, type: str,
) -> None:
    for key in (keys.producer, keys.admin):
        response = await api.post("/v1/events", json={"type": type, "data": {}},
                                  headers=Keys.auth(key))
        assert response.status == 422
        error = (await response.json())["error"]
        assert error["code"] == "validation_error"
        [detail] = error["details"]
        assert detail["loc"] == ["body", "type"]
        assert "hookpost's own operational events" in detail["message"]
    assert await pool.fetchval("SELECT count(*) FROM events") == 0


async def test_the_system_tenant_stays(api: TestClient[Any, Any], keys: Keys) -> None:
    response = await api.delete(f"/v1/tenants/{SYSTEM_TENANT}", headers=Keys.auth(keys.admin))
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "system_tenant"
    assert (await get_json(api, keys.admin, f"/v1/tenants/{SYSTEM_TENANT}"))["name"] == "system"


# The envelope made in SQL


@pytest.mark.parametrize("text", [
    "plain", "quote \" backslash \\ slash /", "line\nfeed\ttab\r\x08\x0c", "\x01\x1f\x7f",
    "Zoë ☃ \u2028 😀",
])
@pytest.mark.parametrize("at", [datetime.fromisoformat("2026-01-01T12:00:00+00:00"),
                                datetime.fromisoformat("2026-03-04T05:06:07.000891+00:00")])
async def test_sql_writes_the_envelope_python_writes(
    pool: asyncpg.Pool, text: str, at: datetime,
) -> None:
    payload = await pool.fetchval(
        "SELECT event_payload('evt_1', 'hookpost.x', $2, operational_data("
        "'sub_1', 'ten_1', $1, NULL, NULL, NULL, 3, $1, $2, 500, 'http', $1, $2))", text, at)
    data = json.loads(payload)["data"]
    assert payload == event_payload("evt_1", "hookpost.x", at, data)
    assert data["reason"] == data["url"] == data["last_attempt"]["error_message"] == text
