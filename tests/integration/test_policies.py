"""A subscription's delivery policy: its headers reach the receiver, its retry schedule and
status rules decide each attempt, and every policy the API cannot honour is refused with
a 422 that names the field, writing nothing."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
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
    get_json,
    make_dispatcher,
    post_event,
    subscribe,
)
from tests.integration.test_api_rejections import assert_error, writes_nothing

DEFAULT_POLICY: dict[str, Any] = {"headers": {}, "retry_schedule": None, "status_rules": []}
POLICY = {
    "headers": {"X-Team": "billing", "Authorization": "Bearer receiver-token"},
    "retry_schedule": ["5s", 60, "10m"],
    "status_rules": [
        {"statuses": "409", "outcome": "succeeded"},
        {"statuses": 404, "outcome": "retry", "for": "1h"},
        {"statuses": "500-599", "outcome": "retry"},
    ],
}
# POLICY as the API answers it: durations and statuses as text, `for` always there.
POLICY_ANSWERED = {
    "headers": {"X-Team": "billing", "Authorization": "Bearer receiver-token"},
    "retry_schedule": ["5s", "1m", "10m"],
    "status_rules": [
        {"statuses": "409", "outcome": "succeeded", "for": None},
        {"statuses": "404", "outcome": "retry", "for": "1h"},
        {"statuses": "5xx", "outcome": "retry", "for": None},
    ],
}


# The API


async def test_a_policy_is_kept_answered_and_replaced(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver,
) -> None:
    created = await subscribe(api, keys.subscriber, receiver.url(), policy=POLICY)
    path = f"/v1/subscriptions/{created['id']}"
    assert created["policy"] == POLICY_ANSWERED
    assert (await get_json(api, keys.subscriber, path))["policy"] == POLICY_ANSWERED
    listed = await get_json(api, keys.subscriber, "/v1/subscriptions")
    assert listed["data"][0]["policy"] == POLICY_ANSWERED

    # A PATCH without a policy keeps it; with one, replaces all of it; null: the defaults.
    kept = await api.patch(path, json={"description": "x"}, headers=keys.auth(keys.subscriber))
    assert (await kept.json())["policy"] == POLICY_ANSWERED
    replaced = await api.patch(path, json={"policy": {"retry_schedule": []}},
                               headers=keys.auth(keys.subscriber))
    assert replaced.status == 200, await replaced.text()
    assert (await replaced.json())["policy"] == {**DEFAULT_POLICY, "retry_schedule": []}
    cleared = await api.patch(path, json={"policy": None}, headers=keys.auth(keys.subscriber))
    assert (await cleared.json())["policy"] == DEFAULT_POLICY
    assert (await get_json(api, keys.subscriber, path))["policy"] == DEFAULT_POLICY


async def test_a_subscription_without_a_policy_answers_the_defaults(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
) -> None:
    created = await subscribe(api, keys.subscriber, receiver.url())
    assert created["policy"] == DEFAULT_POLICY
    # An empty policy is the default one: nothing is stored for it.
    await subscribe(api, keys.subscriber, receiver.url(), policy={})
    assert await pool.fetchval("SELECT count(*) FROM subscriptions WHERE policy IS NULL") == 2


# Every refused name is in tests/unit/test_policy.py; these go through the API.
FORBIDDEN = ("Host", "content-length", "Content-Type", "transfer-encoding", "Connection",
             "webhook-id", "Webhook-Signature")
HEADERS_LOC = ["body", "policy", "headers"]
REFUSED = [
    *(pytest.param({"headers": {name: "x"}}, [*HEADERS_LOC, name, "[key]"],
                   f"{name} cannot be set", id=f"header-{name}") for name in FORBIDDEN),
    pytest.param({"headers": {"X Team": "x"}}, [*HEADERS_LOC, "X Team", "[key]"],
                 "a header name is", id="header-name-with-space"),
    pytest.param({"headers": {"X-Team:": "x"}}, [*HEADERS_LOC, "X-Team:", "[key]"],
                 "a header name is", id="header-name-with-colon"),
    pytest.param({"headers": {"": "x"}}, [*HEADERS_LOC, "", "[key]"], "a header name is",
                 id="header-name-empty"),
    pytest.param({"headers": {"X-" + "a" * 63: "x"}}, [*HEADERS_LOC, "X-" + "a" * 63, "[key]"],
                 "a header name is", id="header-name-too-long"),
    *(pytest.param({"headers": {"X-Team": value}}, [*HEADERS_LOC, "X-Team"],
                   "a header value is", id=f"header-value-{label}")
      for label, value in (("crlf", "a\r\nX-Evil: 1"), ("lf", "a\nb"), ("nul", "a\x00b"),
                           ("tab", "a\tb"), ("empty", ""), ("leading-space", " a"),
                           ("non-ascii", "caf\u00e9"))),
    pytest.param({"headers": {"X-Team": "x" * 1001}}, [*HEADERS_LOC, "X-Team"], "at most 1000",
                 id="header-value-too-long"),
    pytest.param({"headers": {"X-Team": "a", "x-team": "b"}}, HEADERS_LOC, "named twice",
                 id="header-named-twice"),
    pytest.param({"headers": {f"X-{n}": "x" for n in range(21)}}, HEADERS_LOC, "at most 20",
                 id="headers-too-many"),
    pytest.param({"headers": {"X-Team": 7}}, [*HEADERS_LOC, "X-Team"], "valid string",
                 id="header-value-number"),
    pytest.param({"headers": ["X-Team"]}, HEADERS_LOC, "should be an object",
                 id="headers-not-an-object"),
    *(pytest.param({"retry_schedule": [wait]}, ["body", "policy", "retry_schedule", "0"],
                   message, id=f"wait-{wait}")
      for wait, message in (("0s", "from 1s to 7d"), ("999ms", "from 1s to 7d"),
                            (0, "from 1s to 7d"), ("8d", "from 1s to 7d"),
                            ("soon", "a duration is"), ("1e400d", "a duration is"),
                            ("99999999999999d", "a duration is"), ("-5s", "a duration is"))),
    pytest.param({"retry_schedule": [1.5]}, ["body", "policy", "retry_schedule", "0", "int"],
                 "valid integer", id="wait-fraction-of-seconds"),
    pytest.param({"retry_schedule": [True]}, ["body", "policy", "retry_schedule", "0", "int"],
                 "valid integer", id="wait-boolean"),
    pytest.param({"retry_schedule": ["1s"] * 20}, ["body", "policy", "retry_schedule"],
                 "at most 19 waits", id="schedule-too-long"),
    pytest.param({"retry_schedule": ["4d", "3d", "1s"]}, ["body", "policy", "retry_schedule"],
                 "add up to 7d at most", id="schedule-over-a-week"),
    pytest.param({"retry_schedule": "5s,1m"}, ["body", "policy", "retry_schedule"],
                 "valid array", id="schedule-not-a-list"),
    *(pytest.param({"status_rules": [{"statuses": statuses, "outcome": "retry"}]},
                   ["body", "policy", "status_rules", "0", "statuses"], message,
                   id=f"statuses-{statuses}")
      for statuses, message in (("600", "a code (409)"), ("99", "a code (409)"),
                                ("4XX", "a code (409)"), ("40x", "a code (409)"),
                                ("404,410", "a code (409)"), (" 404", "a code (409)"),
                                ("599-500", "ends before it begins"), (0, "a code (409)"))),
    pytest.param({"status_rules": [{"statuses": "404", "outcome": "ignored"}]},
                 ["body", "policy", "status_rules", "0", "outcome"], "'succeeded', 'retry'",
                 id="rule-outcome-unknown"),
    pytest.param({"status_rules": [{"statuses": "404"}]},
                 ["body", "policy", "status_rules", "0", "outcome"], "Field required",
                 id="rule-without-outcome"),
    pytest.param({"status_rules": [{"statuses": "404", "outcome": "retry", "for": "0s"}]},
                 ["body", "policy", "status_rules", "0", "for"], "from 1s to 7d",
                 id="rule-for-zero"),
    pytest.param({"status_rules": [{"statuses": "404", "outcome": "retry", "within": "1h"}]},
                 ["body", "policy", "status_rules", "0", "within"], "Extra inputs",
                 id="rule-for-by-its-python-name"),
    pytest.param({"status_rules": [{"statuses": "404", "outcome": "retry"}] * 21},
                 ["body", "policy", "status_rules"], "at most 20", id="rules-too-many"),
    pytest.param({"headers": {}, "retries": 3}, ["body", "policy", "retries"], "Extra inputs",
                 id="policy-unknown-field"),
    pytest.param("retry", ["body", "policy"], "should be an object", id="policy-not-an-object"),
]


# A PATCH validates a policy as a POST does: one refusal of each field goes through both.
_BOTH_WAYS = {"header-Host", "header-value-crlf", "wait-0s", "schedule-over-a-week",
              "statuses-600", "rule-for-zero"}
REFUSALS = [pytest.param("POST", *refused.values, id=f"POST-{refused.id}")
            for refused in REFUSED] + [
    pytest.param("PATCH", *refused.values, id=f"PATCH-{refused.id}")
    for refused in REFUSED if refused.id in _BOTH_WAYS]


@pytest.mark.parametrize(("method", "policy", "loc", "message"), REFUSALS)
async def test_a_policy_that_cannot_be_honoured_is_refused_and_writes_nothing(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
    method: str, policy: Any, loc: list[str], message: str,
) -> None:
    created = await subscribe(api, keys.subscriber, receiver.url(), policy=POLICY)
    if method == "POST":
        path, body = "/v1/subscriptions", {"url": receiver.url(), "event_types": ["*"],
                                           "policy": policy}
    else:
        path, body = f"/v1/subscriptions/{created['id']}", {"policy": policy}
    async with writes_nothing(pool):
        response = await api.request(method, path, json=body,
                                     headers=keys.auth(keys.subscriber))
        error = await assert_error(response, 422, "validation_error")
    assert error["message"] == "the request body is not valid"
    details = {tuple(detail["loc"]): detail["message"] for detail in error["details"]}
    assert tuple(loc) in details, error
    assert message in details[tuple(loc)], error


async def test_allowed_headers_and_limits_are_accepted(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver,
) -> None:
    policy = {
        "headers": {**{f"X-{n}": "v" * 1000 for n in range(18)},
                    "Authorization": "Bearer a b", "x-weird!#$%&'*+.^_`|~": "ok"},
        "retry_schedule": ["1s", *(["9h"] * 17), 1],  # 19 waits, 6d 9h 2s in all
        "status_rules": [{"statuses": "100-599", "outcome": "retry", "for": "7d"}] * 20,
    }
    created = await subscribe(api, keys.subscriber, receiver.url(), policy=policy)
    assert created["policy"]["headers"] == policy["headers"]
    assert created["policy"]["retry_schedule"] == ["1s", *(["9h"] * 17), "1s"]


# Delivery


async def test_the_receiver_gets_the_policys_headers_beside_hookposts_own(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    await subscribe(api, keys.subscriber, receiver.url(), policy=POLICY)
    event = await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    [request] = receiver.requests
    assert request.headers["x-team"] == "billing"
    assert request.headers["authorization"] == "Bearer receiver-token"
    assert request.headers["webhook-id"] == event["id"]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-signature"].startswith("v1,")


async def test_a_subscription_without_a_policy_gets_no_more_headers(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    await subscribe(api, keys.subscriber, receiver.url(), policy=POLICY)
    await subscribe(api, keys.subscriber, receiver.url("/plain"))
    await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    [plain] = receiver.to("/plain")
    assert "x-team" not in plain.headers
    assert "authorization" not in plain.headers


async def test_a_status_counted_as_success_delivers(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    receiver.respond = answer_status(409)
    created = await subscribe(api, keys.subscriber, receiver.url(), policy={
        "status_rules": [{"statuses": "409", "outcome": "succeeded"}]})
    event = await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    delivery = await delivery_of(api, keys, event["id"])
    assert delivery["status"] == "succeeded"
    [attempt] = delivery["attempts"]
    assert (attempt["outcome"], attempt["response_status"], attempt["error_kind"]) == (
        "succeeded", 409, None)
    health = (await get_json(api, keys.subscriber,
                             f"/v1/subscriptions/{created['id']}"))["health"]
    assert health["last_success_at"] is not None
    assert health["failing_since"] is None


async def test_a_success_status_can_be_made_to_give_up(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    receiver.respond = answer_status(202)
    await subscribe(api, keys.subscriber, receiver.url(), policy={
        "status_rules": [{"statuses": "202", "outcome": "failed"}]})
    event = await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    delivery = await delivery_of(api, keys, event["id"])
    assert delivery["status"] == "failed"
    [attempt] = delivery["attempts"]
    assert (attempt["outcome"], attempt["error_kind"], attempt["error_message"]) == (
        "failed", "http", "HTTP 202")


def attempt_offsets(delivery: dict[str, Any], since: datetime) -> list[timedelta]:
    return [datetime.fromisoformat(a["started_at"]) - since for a in delivery["attempts"]]


async def test_a_status_retried_for_a_time_gives_up_after_it(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    """404 is retried for an hour (a receiver deploying), then the default gives up."""
    receiver.respond = answer_status(404)
    await subscribe(clocked_api, keys.subscriber, receiver.url(), policy={
        "retry_schedule": ["20m"] * 6,
        "status_rules": [{"statuses": "404", "outcome": "retry", "for": "1h"}]})
    made_at = clock.now
    event = await post_event(clocked_api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)

    await dispatcher.run(until_idle=True)
    for _ in range(6):
        clock.advance(timedelta(minutes=20))
        await dispatcher.run(until_idle=True)

    delivery = await delivery_of(clocked_api, keys, event["id"])
    assert delivery["status"] == "failed"
    assert [a["outcome"] for a in delivery["attempts"]] == ["retry"] * 3 + ["failed"]
    assert attempt_offsets(delivery, made_at) == [timedelta(minutes=m) for m in (0, 20, 40, 60)]
    assert len(receiver.requests) == 4


async def test_the_policys_schedule_sets_every_next_attempt(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    receiver.respond = answer_status(503)
    await subscribe(clocked_api, keys.subscriber, receiver.url(),
                    policy={"retry_schedule": ["2s", 7, "1m"]})
    made_at = clock.now
    event = await post_event(clocked_api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)

    next_attempts = []
    for wait in (0, 2, 7, 60):
        clock.advance(timedelta(seconds=wait))
        await dispatcher.run(until_idle=True)
        next_at = (await delivery_of(clocked_api, keys, event["id"]))["next_attempt_at"]
        next_attempts.append(None if next_at is None else
                             datetime.fromisoformat(next_at) - made_at)

    assert next_attempts == [timedelta(seconds=s) for s in (2, 9, 69)] + [None]
    delivery = await delivery_of(clocked_api, keys, event["id"])
    assert [a["outcome"] for a in delivery["attempts"]] == ["retry"] * 3 + ["failed"]
    assert attempt_offsets(delivery, made_at) == [timedelta(seconds=s) for s in (0, 2, 9, 69)]


async def test_an_empty_schedule_makes_one_attempt(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    receiver.respond = answer_status(500)
    await subscribe(api, keys.subscriber, receiver.url(), policy={"retry_schedule": []})
    event = await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    delivery = await delivery_of(api, keys, event["id"])
    assert (delivery["status"], delivery["attempt_count"]) == ("failed", 1)


async def test_410_retried_by_a_rule_does_not_disable_the_subscription(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    async def gone_then_back(request: web.Request, number: int) -> web.StreamResponse:
        return web.Response(status=410 if number == 1 else 200)

    receiver.respond = gone_then_back
    created = await subscribe(clocked_api, keys.subscriber, receiver.url(), policy={
        "retry_schedule": ["1s"], "status_rules": [{"statuses": "410", "outcome": "retry"}]})
    event = await post_event(clocked_api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)

    await dispatcher.run(until_idle=True)
    clock.advance(timedelta(seconds=1))
    await dispatcher.run(until_idle=True)

    subscription = await get_json(clocked_api, keys.subscriber,
                                  f"/v1/subscriptions/{created['id']}")
    assert subscription["status"] == "active"
    delivery = await delivery_of(clocked_api, keys, event["id"])
    assert [a["outcome"] for a in delivery["attempts"]] == ["retry", "succeeded"]
