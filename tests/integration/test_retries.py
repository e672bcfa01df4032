"""The retry schedule, driven by a controllable clock: no test here waits for it."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from hookpost.settings import Settings
from hookpost.store import Store
from tests.conftest import FakeClock
from tests.integration.conftest import (
    Keys,
    Receiver,
    answer_status,
    delivery_of,
    make_dispatcher,
    make_settings,
    post_event,
    subscribe,
)

SCHEDULE = [timedelta(seconds=s) for s in (5, 25, 120, 600, 3600)]
JUST_BEFORE = timedelta(milliseconds=1)


def started(attempt: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(attempt["started_at"])


async def test_a_failing_receiver_gets_six_attempts_on_the_schedule_then_the_delivery_fails(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    receiver.respond = answer_status(500)
    await subscribe(clocked_api, keys.subscriber, receiver.url())
    event = await post_event(clocked_api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)
    first_attempt_at = clock.now

    await dispatcher.run(until_idle=True)
    for number, wait in enumerate(SCHEDULE, start=2):
        clock.advance(wait - JUST_BEFORE)
        await dispatcher.run(until_idle=True)
        assert len(receiver.requests) == number - 1, f"attempt {number} came early"
        clock.advance(JUST_BEFORE)
        await dispatcher.run(until_idle=True)
        assert len(receiver.requests) == number
    clock.advance(timedelta(days=1))
    await dispatcher.run(until_idle=True)

    assert len(receiver.requests) == 6
    delivery = await delivery_of(clocked_api, keys, event["id"])
    assert delivery["status"] == "failed"
    assert delivery["attempt_count"] == 6
    assert delivery["next_attempt_at"] is None
    attempts = delivery["attempts"]
    assert [a["attempt_number"] for a in attempts] == [1, 2, 3, 4, 5, 6]
    assert [a["outcome"] for a in attempts] == ["retry"] * 5 + ["failed"]
    offsets = [started(a) - first_attempt_at for a in attempts]
    assert offsets == [timedelta(seconds=s) for s in (0, 5, 30, 150, 750, 4350)]
    # The same message every time, signed afresh for each attempt.
    assert {r.headers["webhook-id"] for r in receiver.requests} == {event["id"]}
    timestamps = [int(r.headers["webhook-timestamp"]) for r in receiver.requests]
    assert timestamps == [int(started(a).timestamp()) for a in attempts]
    assert len({r.headers["webhook-signature"] for r in receiver.requests}) == 6


async def test_a_configured_schedule_sets_the_waits_and_the_number_of_attempts(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    database_url: str, clock: FakeClock,
) -> None:
    settings = make_settings(database_url, retry_schedule="1s,2s")
    receiver.respond = answer_status(503)
    await subscribe(clocked_api, keys.subscriber, receiver.url())
    event = await post_event(clocked_api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)

    for wait in (0, 1, 2, 3600):
        clock.advance(timedelta(seconds=wait))
        await dispatcher.run(until_idle=True)

    delivery = await delivery_of(clocked_api, keys, event["id"])
    assert [a["outcome"] for a in delivery["attempts"]] == ["retry", "retry", "failed"]
    assert delivery["status"] == "failed"


async def test_a_receiver_that_recovers_ends_the_retries(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    async def fail_twice(request: web.Request, number: int) -> web.StreamResponse:
        return web.Response(status=502 if number <= 2 else 200)

    receiver.respond = fail_twice
    await subscribe(clocked_api, keys.subscriber, receiver.url())
    event = await post_event(clocked_api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)

    for wait in (timedelta(0), *SCHEDULE):
        clock.advance(wait)
        await dispatcher.run(until_idle=True)

    assert len(receiver.requests) == 3
    delivery = await delivery_of(clocked_api, keys, event["id"])
    assert delivery["status"] == "succeeded"
    assert [a["outcome"] for a in delivery["attempts"]] == ["retry", "retry", "succeeded"]


async def test_a_receiver_answering_webhook_delivery_abort_ends_the_retries_at_once(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    receiver.respond = answer_status(500, {"Webhook-Delivery": "Abort"})
    await subscribe(clocked_api, keys.subscriber, receiver.url())
    event = await post_event(clocked_api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)

    for wait in (timedelta(0), *SCHEDULE, timedelta(days=1)):
        clock.advance(wait)
        await dispatcher.run(until_idle=True)

    assert len(receiver.requests) == 1
    delivery = await delivery_of(clocked_api, keys, event["id"])
    assert (delivery["status"], delivery["next_attempt_at"]) == ("failed", None)
    [attempt] = delivery["attempts"]
    assert (attempt["outcome"], attempt["response_status"], attempt["error_kind"]) == (
        "failed", 500, "http")
    assert attempt["error_message"] == (
        "HTTP 500; the receiver asked for no more retries (webhook-delivery: abort)")
    assert attempt["response_headers"]["webhook-delivery"] == "Abort"


async def test_retry_after_can_only_push_the_next_attempt_later_and_at_most_an_hour(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    answers = [
        (429, "120"),  # later than the 5 s wait: honoured
        (503, "1"),  # earlier than the 25 s wait: ignored
        (429, "86400"),  # a day: capped at an hour
        (429, None),  # a date, computed when answering
        (200, None),
    ]

    async def respond(request: web.Request, number: int) -> web.StreamResponse:
        status, retry_after = answers[number - 1]
        if number == 4:
            retry_after = format_datetime(clock.now + timedelta(minutes=30), usegmt=True)
        headers = {} if retry_after is None else {"Retry-After": retry_after}
        return web.Response(status=status, headers=headers)

    receiver.respond = respond
    await subscribe(clocked_api, keys.subscriber, receiver.url())
    event = await post_event(clocked_api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)

    expected_waits = [timedelta(seconds=120), timedelta(seconds=25), timedelta(hours=1),
                      timedelta(minutes=30)]
    await dispatcher.run(until_idle=True)
    for attempt_number, wait in enumerate(expected_waits, start=1):
        delivery = await delivery_of(clocked_api, keys, event["id"])
        assert delivery["status"] == "pending"
        assert datetime.fromisoformat(delivery["next_attempt_at"]) == clock.now + wait, (
            f"after attempt {attempt_number}"
        )
        clock.advance(wait)
        await dispatcher.run(until_idle=True)

    delivery = await delivery_of(clocked_api, keys, event["id"])
    assert delivery["status"] == "succeeded"
    assert [a["response_status"] for a in delivery["attempts"]] == [429, 503, 429, 429, 200]
