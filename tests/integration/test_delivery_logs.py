"""Finding out what happened to a webhook and fixing it: logs, redelivery, test events,
secret rotation, health, and who may see what."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hookpost.clock import utcnow
from hookpost.settings import Settings
from hookpost.store import Store
from tests.conftest import FakeClock
from tests.integration.conftest import (
    Keys,
    Receiver,
    answer_status,
    get_json,
    make_dispatcher,
    make_settings,
    post_event,
    subscribe,
    wait_for,
)


async def post_json(
    api: TestClient[Any, Any], key: str, path: str, body: dict[str, Any] | None = None,
    status: int = 200,
) -> dict[str, Any]:
    response = await api.post(path, json=body, headers=Keys.auth(key))
    assert response.status == status, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def deliveries(api: TestClient[Any, Any], key: str, **filters: str) -> list[dict[str, Any]]:
    """Every delivery the listing returns for `filters`, across pages."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**filters, "limit": "2", **({"cursor": cursor} if cursor else {})}
        response = await api.get("/v1/deliveries", params=query, headers=Keys.auth(key))
        assert response.status == 200, await response.text()
        page = await response.json()
        found += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def answer_by_path(statuses: dict[str, int]) -> Any:
    async def respond(request: web.Request, number: int) -> web.StreamResponse:
        return web.Response(status=statuses.get(request.path, 200))

    return respond


# Delivery logs


async def test_the_delivery_log_filters_by_subscription_event_status_type_and_time(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    api = clocked_api
    receiver.respond = answer_by_path({"/broken": 404})
    good = await subscribe(api, keys.subscriber, receiver.url("/good"))
    broken = await subscribe(api, keys.subscriber, receiver.url("/broken"))
    early = await post_event(api, keys.producer, "order.created")
    clock.advance(timedelta(minutes=10))
    middle = clock.now
    late = await post_event(api, keys.producer, "invoice.paid")
    await make_dispatcher(store, settings, clock).run(until_idle=True)

    every = await deliveries(api, keys.admin)
    assert len(every) == 4
    assert [d["created_at"] for d in every] == sorted((d["created_at"] for d in every),
                                                       reverse=True)
    failed = await deliveries(api, keys.admin, status="failed")
    assert {d["subscription_id"] for d in failed} == {broken["id"]}
    assert all(d["last_response_status"] == 404 and d["last_error_kind"] == "http"
               and d["attempt_count"] == 1 and d["next_attempt_at"] is None for d in failed)
    assert {d["subscription_id"] for d in await deliveries(api, keys.admin,
                                                            subscription_id=good["id"])} == {
        good["id"]}
    assert {d["event_id"] for d in await deliveries(api, keys.admin, event_id=late["id"])} == {
        late["id"]}
    assert {d["event_type"] for d in await deliveries(api, keys.admin,
                                                       event_type="order.created")} == {
        "order.created"}
    since = await deliveries(api, keys.admin, since=middle.isoformat())
    until = await deliveries(api, keys.admin, until=middle.isoformat())
    assert {d["event_id"] for d in since} == {late["id"]}
    assert {d["event_id"] for d in until} == {early["id"]}
    assert await deliveries(api, keys.admin, status="pending") == []


async def test_a_cursor_walk_while_events_arrive_sees_every_row_once(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver,
) -> None:
    await subscribe(api, keys.subscriber, receiver.url())
    for n in range(12):
        await post_event(api, keys.producer, data={"n": n})
    before = {d["id"] for d in await deliveries(api, keys.admin)}

    seen: list[str] = []
    cursor: str | None = None
    while True:
        query = {"limit": "5", **({"cursor": cursor} if cursor else {})}
        response = await api.get("/v1/deliveries", params=query, headers=keys.auth(keys.admin))
        page = await response.json()
        seen += [d["id"] for d in page["data"]]
        await post_event(api, keys.producer, data={"arrived": "mid-walk"})
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(seen) == len(set(seen)), "a row came twice"
    assert before <= set(seen), "a row was skipped"


# Redelivery


async def test_redelivering_sends_one_more_signed_attempt_without_restarting_the_schedule(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    api = clocked_api
    receiver.respond = answer_status(404)
    await subscribe(api, keys.subscriber, receiver.url())
    event = await post_event(api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)
    await dispatcher.run(until_idle=True)
    [delivery] = await deliveries(api, keys.subscriber)
    assert delivery["status"] == "failed"

    clock.advance(timedelta(minutes=1))
    queued = await post_json(api, keys.subscriber, f"/v1/deliveries/{delivery['id']}/redeliver",
                             status=202)
    assert queued["id"] == delivery["id"]
    await dispatcher.run(until_idle=True)
    clock.advance(timedelta(days=1))  # a failed redelivery is not retried
    await dispatcher.run(until_idle=True)

    assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event["id"]
    assert int(second.headers["webhook-timestamp"]) == int(first.headers["webhook-timestamp"]) + 60
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    detail = await get_json(api, keys.subscriber, f"/v1/deliveries/{delivery['id']}")
    assert detail["status"] == "failed"
    assert [(a["attempt_number"], a["trigger"]) for a in detail["attempts"]] == [
        (1, "scheduled"), (2, "manual")]

    receiver.respond = answer_status(200)
    await post_json(api, keys.subscriber, f"/v1/deliveries/{delivery['id']}/redeliver",
                    status=202)
    await dispatcher.run(until_idle=True)
    detail = await get_json(api, keys.subscriber, f"/v1/deliveries/{delivery['id']}")
    assert detail["status"] == "succeeded"
    assert [a["outcome"] for a in detail["attempts"]] == ["failed", "failed", "succeeded"]


async def test_a_failed_redelivery_of_a_pending_delivery_keeps_its_schedule(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    api = clocked_api
    receiver.respond = answer_status(500)
    await subscribe(api, keys.subscriber, receiver.url())
    await post_event(api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)
    await dispatcher.run(until_idle=True)
    [delivery] = await deliveries(api, keys.admin)
    next_attempt_at = delivery["next_attempt_at"]
    assert datetime.fromisoformat(next_attempt_at) == clock.now + timedelta(seconds=5)

    clock.advance(timedelta(seconds=1))
    await post_json(api, keys.admin, f"/v1/deliveries/{delivery['id']}/redeliver", status=202)
    await dispatcher.run(until_idle=True)
    [after] = await deliveries(api, keys.admin)
    assert after["status"] == "pending"
    assert after["next_attempt_at"] == next_attempt_at
    clock.advance(timedelta(seconds=4))
    await dispatcher.run(until_idle=True)

    detail = await get_json(api, keys.admin, f"/v1/deliveries/{delivery['id']}")
    assert [(a["trigger"], a["outcome"]) for a in detail["attempts"]] == [
        ("scheduled", "retry"), ("manual", "failed"), ("scheduled", "retry")]
    # The automatic schedule went on from its second attempt: the next wait is 25 s.
    assert datetime.fromisoformat(detail["next_attempt_at"]) == clock.now + timedelta(seconds=25)


async def failed_deliveries(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, count: int,
) -> dict[str, Any]:
    """A subscription with `count` failed deliveries; the receiver then recovers."""
    receiver.respond = answer_status(400)
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    for n in range(count):
        await post_event(api, keys.producer, "order.created" if n % 2 else "order.paid",
                         {"n": n})
    await make_dispatcher(store, settings).run(until_idle=True)
    receiver.requests.clear()
    receiver.respond = answer_status(200)
    return subscription


async def test_bulk_redelivery_counts_queues_once_and_respects_its_rate(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    subscription = await failed_deliveries(api, keys, receiver, store, settings, 6)
    path = f"/v1/subscriptions/{subscription['id']}/redeliver-failed"
    since = (utcnow() - timedelta(hours=1)).isoformat()

    dry = await post_json(api, keys.subscriber, path, {"since": since, "dry_run": True})
    assert dry == {"count": 6, "dry_run": True}
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE manual_due_at IS NOT NULL"
                               ) == 0
    only_paid = await post_json(api, keys.subscriber, path, {
        "since": since, "event_type": "order.paid", "dry_run": True})
    assert only_paid["count"] == 3
    nothing_yet = await post_json(api, keys.subscriber, path, {
        "since": since, "until": (utcnow() - timedelta(minutes=30)).isoformat(),
        "dry_run": True})
    assert nothing_yet["count"] == 0

    rate = 5.0  # slow enough that scheduling jitter on a busy machine is well inside 10%
    queued = await post_json(api, keys.subscriber, path, {"since": since,
                                                          "rate_per_second": rate})
    again = await post_json(api, keys.subscriber, path, {"since": since,
                                                         "rate_per_second": rate})
    assert queued["count"] == 6
    assert again["count"] == 0  # a double click queues nothing more

    dispatcher = make_dispatcher(store, make_settings(settings.database_url or "",
                                                      poll_interval=timedelta(seconds=5)))
    task = asyncio.create_task(dispatcher.run())
    try:
        await wait_for(lambda: len(receiver.requests) == 6, timeout=10)
    finally:
        dispatcher.stop()
        await task

    # Any run of k arrivals spans at least (k - 2) intervals: one late wake-up may send two
    # together, but the rate is never exceeded beyond that.
    arrivals = [request.at for request in receiver.requests]
    for first in range(len(arrivals)):
        for last in range(first + 1, len(arrivals)):
            span = arrivals[last] - arrivals[first]
            assert span >= (last - first - 1) * 0.9 / rate, arrivals
    # The whole run, by the same rule: a first send held up by its connect still leaves
    # four of the five intervals.
    assert arrivals[-1] - arrivals[0] >= 4 * 0.9 / rate
    statuses = {d["status"] for d in await deliveries(api, keys.admin)}
    assert statuses == {"succeeded"}


@pytest.mark.parametrize("body", [
    {},  # since is required
    {"since": "2026-01-01T00:00:00"},  # a time without its zone
    {"since": "2026-01-01T00:00:00Z", "rate_per_second": 0},
    {"since": "2026-01-01T00:00:00Z", "rate_per_second": 5000},
    {"since": "2026-01-01T00:00:00Z", "extra": True},
])
async def test_bulk_redelivery_refuses_a_bad_request_and_queues_nothing(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, pool: asyncpg.Pool, body: dict[str, Any],
) -> None:
    subscription = await failed_deliveries(api, keys, receiver, store, settings, 1)
    response = await api.post(f"/v1/subscriptions/{subscription['id']}/redeliver-failed",
                              json=body, headers=keys.auth(keys.subscriber))
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "validation_error"
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE manual_due_at IS NOT NULL"
                               ) == 0


# Test events


async def test_a_test_event_goes_to_that_subscription_only_signed_and_recorded(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings,
) -> None:
    target = await subscribe(api, keys.subscriber, receiver.url("/target"))
    await subscribe(api, keys.subscriber, receiver.url("/bystander"), ["*"])

    sent = await post_json(api, keys.subscriber, f"/v1/subscriptions/{target['id']}/test",
                           status=202)
    await make_dispatcher(store, settings).run(until_idle=True)

    [request] = receiver.requests
    assert request.path == "/target"
    message = Webhook(target["secret"]).verify(request.body, request.headers)
    assert message["type"] == "webhook.test"
    assert message["id"] == sent["event_id"]
    assert message["data"]["subscription_id"] == target["id"]
    detail = await get_json(api, keys.subscriber, f"/v1/deliveries/{sent['delivery_id']}")
    assert detail["status"] == "succeeded"
    assert [a["trigger"] for a in detail["attempts"]] == ["test"]


# Secret rotation


async def test_during_the_grace_period_both_secrets_verify_and_after_it_only_the_new(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    # Near real time: the verifier checks timestamps against it.
    clock = FakeClock(utcnow())
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    old_secret = subscription["secret"]
    rotated = await post_json(api, keys.subscriber,
                              f"/v1/subscriptions/{subscription['id']}/rotate-secret",
                              {"grace_seconds": 60})
    new_secret = rotated["secret"]
    assert new_secret.startswith("whsec_") and new_secret != old_secret
    dispatcher = make_dispatcher(store, settings, clock)

    await post_event(api, keys.producer)
    clock.advance(timedelta(seconds=1))  # the event was posted after the clock was read
    await dispatcher.run(until_idle=True)
    during = receiver.requests[-1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    Webhook(old_secret).verify(during.body, during.headers)
    Webhook(new_secret).verify(during.body, during.headers)

    clock.advance(timedelta(seconds=61))
    await post_event(api, keys.producer)
    await dispatcher.run(until_idle=True)
    after = receiver.requests[-1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    Webhook(new_secret).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(after.body, after.headers)


async def test_the_default_grace_period_is_a_day(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, clock: FakeClock,
) -> None:
    subscription = await subscribe(clocked_api, keys.subscriber, receiver.url())
    rotated = await post_json(clocked_api, keys.subscriber,
                              f"/v1/subscriptions/{subscription['id']}/rotate-secret")
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert expires == clock.now + timedelta(hours=24)


# Health


async def test_subscription_health_follows_failures_and_recovery(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    api = clocked_api
    receiver.respond = answer_status(503)
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    path = f"/v1/subscriptions/{subscription['id']}"
    await post_event(api, keys.producer)
    await post_event(api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)
    failing_from = clock.now
    await dispatcher.run(until_idle=True)

    health = (await get_json(api, keys.subscriber, path))["health"]
    assert datetime.fromisoformat(health["failing_since"]) == failing_from
    assert datetime.fromisoformat(health["last_failure_at"]) == failing_from
    assert health["last_success_at"] is None
    assert health["pending"] == 2

    receiver.respond = answer_status(200)
    clock.advance(timedelta(seconds=5))
    await dispatcher.run(until_idle=True)

    health = (await get_json(api, keys.subscriber, path))["health"]
    assert health["failing_since"] is None
    assert datetime.fromisoformat(health["last_success_at"]) == clock.now
    assert health["pending"] == 0


async def test_steady_successes_touch_the_subscription_at_most_once_a_second(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock, pool: asyncpg.Pool,
) -> None:
    api = clocked_api
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    path = f"/v1/subscriptions/{subscription['id']}"
    dispatcher = make_dispatcher(store, settings, clock)

    async def deliver_one() -> tuple[datetime, int]:
        await post_event(api, keys.producer)
        await dispatcher.run(until_idle=True)
        health = (await get_json(api, keys.subscriber, path))["health"]
        version: int = await pool.fetchval(
            "SELECT xmin::text::bigint FROM subscriptions WHERE id = $1", subscription["id"])
        return datetime.fromisoformat(health["last_success_at"]), version

    first = clock.now
    assert (await deliver_one())[0] == first
    _, version = await deliver_one()
    clock.advance(timedelta(milliseconds=500))
    assert await deliver_one() == (first, version)  # the row was not written
    clock.advance(timedelta(milliseconds=600))
    later, newer = await deliver_one()
    assert later == clock.now
    assert newer != version
    assert len(receiver.requests) == 4


# Isolation


async def test_a_subscriber_sees_and_acts_on_nothing_of_another_subscriber(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings,
) -> None:
    theirs = await subscribe(api, keys.other_subscriber, receiver.url("/theirs"),
                             ["invoice.*"])
    mine = await subscribe(api, keys.subscriber, receiver.url("/mine"), ["order.*"])
    their_event = await post_event(api, keys.producer, "invoice.paid")
    shared = await post_event(api, keys.producer, "order.created")
    await subscribe(api, keys.other_subscriber, receiver.url("/theirs-too"), ["order.*"])
    shared_too = await post_event(api, keys.producer, "order.created")
    await make_dispatcher(store, settings).run(until_idle=True)
    [their_delivery] = await deliveries(api, keys.other_subscriber, event_id=their_event["id"])

    me = keys.auth(keys.subscriber)
    for method, path in [
        ("GET", f"/v1/deliveries/{their_delivery['id']}"),
        ("POST", f"/v1/deliveries/{their_delivery['id']}/redeliver"),
        ("GET", f"/v1/events/{their_event['id']}"),
        ("GET", f"/v1/subscriptions/{theirs['id']}"),
        ("POST", f"/v1/subscriptions/{theirs['id']}/test"),
        ("POST", f"/v1/subscriptions/{theirs['id']}/rotate-secret"),
    ]:
        response = await api.request(method, path, headers=me)
        assert response.status == 404, (method, path, response.status)
    response = await api.post(f"/v1/subscriptions/{theirs['id']}/redeliver-failed",
                              json={"since": "2020-01-01T00:00:00Z"}, headers=me)
    assert response.status == 404

    listed = await deliveries(api, keys.subscriber)
    assert {d["subscription_id"] for d in listed} == {mine["id"]}
    assert await deliveries(api, keys.subscriber, subscription_id=theirs["id"]) == []
    # An event delivered to both: each subscriber sees only their own delivery of it.
    event = await get_json(api, keys.subscriber, f"/v1/events/{shared_too['id']}")
    assert {d["subscription_id"] for d in event["deliveries"]} == {mine["id"]}
    assert (await get_json(api, keys.subscriber, f"/v1/events/{shared['id']}"))["id"]
    admin_view = await get_json(api, keys.admin, f"/v1/events/{shared_too['id']}")
    assert len(admin_view["deliveries"]) == 2
    assert len(await deliveries(api, keys.admin)) == 4


async def test_producers_read_their_own_events_but_not_delivery_logs(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver,
) -> None:
    await subscribe(api, keys.subscriber, receiver.url())
    event = await post_event(api, keys.producer)
    assert (await get_json(api, keys.producer, f"/v1/events/{event['id']}"))["id"] == event["id"]
    listed = await api.get("/v1/deliveries", headers=keys.auth(keys.producer))
    assert listed.status == 403
    redeliver = await api.post("/v1/subscriptions/sub_x/test", headers=keys.auth(keys.producer))
    assert redeliver.status == 403
