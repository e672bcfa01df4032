"""The verdict on an attempt, from what the send saw to the row and the next state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.policy import DeliveryPolicy, StatusRule
from dispatcher.schedule import Outcome
from dispatcher.verdict import (
    ABORTED,
    GONE_REASON,
    AttemptResult,
    ErrorKind,
    classify,
    cut_off,
    decide,
    unknown_outcome,
)
from hookpost.store import ClaimedDelivery

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SCHEDULE = [timedelta(seconds=s) for s in (5, 25, 120, 600, 3600)]
PENDING = ClaimedDelivery(
    id="dlv_1", event_id="evt_1", event_type="order.created", subscription_id="sub_1",
    attempt_count=0, scheduled_attempts=0, status="pending", next_attempt_at=NOW,
    origin="event", manual=False, taken_over=False, payload=b"{}", url="https://x.test/",
    secret="whsec_x", previous_secret=None, lease_token="lease_1",
    lease_expires_at=NOW + timedelta(minutes=2),
)
# The sixth and last attempt of the default schedule.
LAST = PENDING._replace(attempt_count=5, scheduled_attempts=5)
# A manual redelivery of a delivery that had failed.
MANUAL = PENDING._replace(attempt_count=6, scheduled_attempts=6, status="failed",
                 next_attempt_at=None, manual=True)
# A manual redelivery of a delivery still retrying, its next attempt due in 10 minutes.
MANUAL_PENDING = PENDING._replace(attempt_count=2, scheduled_attempts=2, manual=True,
                                  next_attempt_at=NOW + timedelta(minutes=10))
ABORT = {"webhook-delivery": "abort"}


def answered(status: int, headers: dict[str, str] | None = None) -> AttemptResult:
    return AttemptResult(NOW, 12, status, headers or {}, "body", None, None)


def failed(kind: ErrorKind) -> AttemptResult:
    return AttemptResult(NOW, 12, None, None, None, kind, f"{kind} happened")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        *[(code, Outcome.RETRY) for code in (None, 300, 301, 304, 308, 429, 500, 502, 503)],
        *[(code, Outcome.SUCCEEDED) for code in (200, 201, 204, 299)],
        *[(code, Outcome.FAILED) for code in (400, 401, 403, 404, 409, 410, 422, 499)],
    ],
)
def test_classify(status: int | None, expected: Outcome) -> None:
    assert classify(status) == expected


# (delivery, result) -> (outcome, status, next attempt after NOW, scheduled attempts,
# error kind, health, disable reason)
CASES = [
    ("2xx succeeds", PENDING, answered(200),
     ("succeeded", "succeeded", None, 1, None, "success", None)),
    ("5xx retries in 5s", PENDING, answered(500),
     ("retry", "pending", timedelta(seconds=5), 1, "http", "failure", None)),
    ("429 retries", PENDING, answered(429),
     ("retry", "pending", timedelta(seconds=5), 1, "http", "failure", None)),
    ("Retry-After pushes later", PENDING, answered(503, {"retry-after": "90"}),
     ("retry", "pending", timedelta(seconds=90), 1, "http", "failure", None)),
    ("Retry-After only on 429/503", PENDING, answered(500, {"retry-after": "90"}),
     ("retry", "pending", timedelta(seconds=5), 1, "http", "failure", None)),
    ("4xx gives up at once", PENDING, answered(404),
     ("failed", "failed", None, 1, "http", "failure", None)),
    ("410 gives up and disables", PENDING, answered(410),
     ("failed", "failed", None, 1, "http", "failure", GONE_REASON)),
    ("timeout retries", PENDING, failed(ErrorKind.TIMEOUT),
     ("retry", "pending", timedelta(seconds=5), 1, "timeout", "failure", None)),
    ("refused destination retries", PENDING, failed(ErrorKind.REFUSED),
     ("retry", "pending", timedelta(seconds=5), 1, "refused", "failure", None)),
    ("last attempt fails", LAST, answered(500),
     ("failed", "failed", None, 6, "http", "failure", None)),
    ("last attempt succeeds", LAST, answered(204),
     ("succeeded", "succeeded", None, 6, None, "success", None)),
    ("manual success ends it", MANUAL, answered(200),
     ("succeeded", "succeeded", None, 6, None, "success", None)),
    ("manual failure stays failed", MANUAL, answered(500),
     ("failed", "failed", None, 6, "http", "failure", None)),
    ("cut off goes out again now", PENDING, cut_off(NOW - timedelta(seconds=3), NOW),
     ("retry", "pending", timedelta(0), 0, "cut_off", None, None)),
    ("cut off manual stays asked for", MANUAL, cut_off(NOW, NOW),
     ("retry", "failed", None, 6, "cut_off", None, None)),
    ("unknown send only logged", PENDING, unknown_outcome(NOW - timedelta(minutes=2)),
     ("retry", "pending", timedelta(0), 0, "unknown", None, None)),
    ("proxy failure retries", PENDING, failed(ErrorKind.PROXY),
     ("retry", "pending", timedelta(seconds=5), 1, "proxy", None, None)),
    ("abort ends a 5xx's retries", PENDING, answered(500, ABORT),
     ("failed", "failed", None, 1, "http", "failure", None)),
    ("abort outweighs Retry-After", PENDING, answered(429, {**ABORT, "retry-after": "90"}),
     ("failed", "failed", None, 1, "http", "failure", None)),
    ("abort's value in any case", PENDING, answered(503, {"webhook-delivery": " ABORT "}),
     ("failed", "failed", None, 1, "http", "failure", None)),
    ("another value is no abort", PENDING, answered(500, {"webhook-delivery": "retry"}),
     ("retry", "pending", timedelta(seconds=5), 1, "http", "failure", None)),
    ("abort on a 2xx still succeeds", PENDING, answered(200, ABORT),
     ("succeeded", "succeeded", None, 1, None, "success", None)),
    ("abort on a 4xx fails as before", PENDING, answered(404, ABORT),
     ("failed", "failed", None, 1, "http", "failure", None)),
    ("abort on a 410 still disables", PENDING, answered(410, ABORT),
     ("failed", "failed", None, 1, "http", "failure", GONE_REASON)),
    ("manual failure keeps the schedule", MANUAL_PENDING, answered(500),
     ("failed", "pending", timedelta(minutes=10), 2, "http", "failure", None)),
    ("abort on a manual try ends the schedule", MANUAL_PENDING, answered(500, ABORT),
     ("failed", "failed", None, 2, "http", "failure", None)),
]


@pytest.mark.parametrize(("delivery", "result", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_decide(
    delivery: ClaimedDelivery, result: AttemptResult,
    expected: tuple[str, str, timedelta | None, int, str | None, str | None, str | None],
) -> None:
    record = decide(delivery, result, NOW, SCHEDULE)
    next_at = None if record.next_attempt_at is None else record.next_attempt_at - NOW
    assert (record.outcome, record.status, next_at, record.scheduled_attempts,
            record.error_kind, record.health, record.disable_reason) == expected
    assert record.attempt_number == delivery.attempt_count + 1
    assert record.lease_token == delivery.lease_token


def test_an_http_error_says_its_status() -> None:
    record = decide(PENDING, answered(502), NOW, SCHEDULE)
    assert (record.error_kind, record.error_message) == ("http", "HTTP 502")
    assert record.response_headers == "{}"


def test_only_what_moves_a_delivery_moves_it() -> None:
    assert decide(PENDING, answered(200), NOW, SCHEDULE).moves_delivery
    assert decide(PENDING, cut_off(NOW, NOW), NOW, SCHEDULE).moves_delivery
    # The lease that made the unknown send is gone; this dispatcher's own attempt moves it.
    assert not decide(PENDING, unknown_outcome(NOW), NOW, SCHEDULE).moves_delivery


def test_a_manual_attempt_clears_the_request_unless_cut_off() -> None:
    assert decide(MANUAL, answered(500), NOW, SCHEDULE).manual_done
    assert not decide(MANUAL, cut_off(NOW, NOW), NOW, SCHEDULE).manual_done
    assert decide(MANUAL, answered(500), NOW, SCHEDULE).trigger == "manual"


def test_a_resend_is_carried_to_the_row() -> None:
    result = answered(200)._replace(resent=True)
    assert decide(PENDING, result, NOW, SCHEDULE).resent


def test_an_abort_says_the_receiver_asked_to_stop() -> None:
    record = decide(PENDING, answered(500, ABORT), NOW, SCHEDULE)
    assert record.error_message == f"HTTP 500; {ABORTED}"
    assert decide(PENDING, answered(200, ABORT), NOW, SCHEDULE).error_message is None


# A subscription's policy: its status rules, then the default.

HOUR = timedelta(hours=1)
RULES = (
    StatusRule(409, 409, Outcome.SUCCEEDED),
    StatusRule(404, 404, Outcome.RETRY, HOUR),
    StatusRule(500, 599, Outcome.FAILED),
    StatusRule(503, 503, Outcome.RETRY),  # never reached: 500-599 comes first
    StatusRule(200, 200, Outcome.RETRY, timedelta(seconds=30)),
)


@pytest.mark.parametrize(
    ("status", "age", "expected"),
    [
        (409, timedelta(0), Outcome.SUCCEEDED),
        (409, timedelta(days=30), Outcome.SUCCEEDED),  # a rule without `for` always holds
        (404, timedelta(0), Outcome.RETRY),
        (404, HOUR - timedelta(milliseconds=1), Outcome.RETRY),
        (404, HOUR, Outcome.FAILED),  # after its hour, the default
        (500, timedelta(0), Outcome.FAILED),
        (503, timedelta(0), Outcome.FAILED),  # the first rule that covers it decides
        (200, timedelta(seconds=29), Outcome.RETRY),
        (200, timedelta(seconds=30), Outcome.SUCCEEDED),
        (410, timedelta(0), Outcome.FAILED),  # no rule: the default
        (429, timedelta(0), Outcome.RETRY),
        (201, timedelta(0), Outcome.SUCCEEDED),
        (None, timedelta(0), Outcome.RETRY),  # no answer: retried, whatever the rules
    ],
)
def test_classify_by_rules(status: int | None, age: timedelta, expected: Outcome) -> None:
    assert classify(status, RULES, age) == expected


CREATED = PENDING._replace(created_at=NOW - timedelta(minutes=10))
SHORT = (timedelta(seconds=1), timedelta(seconds=2))


def policy(*rules: StatusRule, schedule: tuple[timedelta, ...] | None = None
           ) -> DeliveryPolicy:
    return DeliveryPolicy(status_rules=rules, retry_schedule=schedule)


# (delivery, result, policy) -> as in CASES
POLICY_CASES = [
    ("409 as success", CREATED, answered(409), policy(StatusRule(409, 409, Outcome.SUCCEEDED)),
     ("succeeded", "succeeded", None, 1, None, "success", None)),
    ("404 retried within its time", CREATED, answered(404),
     policy(StatusRule(404, 404, Outcome.RETRY, HOUR)),
     ("retry", "pending", timedelta(seconds=5), 1, "http", "failure", None)),
    ("404 given up after its time", CREATED, answered(404),
     policy(StatusRule(404, 404, Outcome.RETRY, timedelta(minutes=10))),
     ("failed", "failed", None, 1, "http", "failure", None)),
    ("5xx given up at once", CREATED, answered(502), policy(StatusRule(500, 599, Outcome.FAILED)),
     ("failed", "failed", None, 1, "http", "failure", None)),
    ("2xx made to fail", CREATED, answered(202), policy(StatusRule(202, 202, Outcome.FAILED)),
     ("failed", "failed", None, 1, "http", "failure", None)),
    ("own schedule's first wait", CREATED, answered(500), policy(schedule=SHORT),
     ("retry", "pending", timedelta(seconds=1), 1, "http", "failure", None)),
    ("own schedule's second wait", CREATED._replace(attempt_count=1, scheduled_attempts=1),
     answered(500), policy(schedule=SHORT),
     ("retry", "pending", timedelta(seconds=2), 2, "http", "failure", None)),
    ("own schedule runs out", CREATED._replace(attempt_count=2, scheduled_attempts=2),
     answered(500), policy(schedule=SHORT),
     ("failed", "failed", None, 3, "http", "failure", None)),
    ("no retries at all", CREATED, answered(500), policy(schedule=()),
     ("failed", "failed", None, 1, "http", "failure", None)),
    ("Retry-After still pushes later", CREATED, answered(429, {"retry-after": "90"}),
     policy(schedule=SHORT),
     ("retry", "pending", timedelta(seconds=90), 1, "http", "failure", None)),
    ("410 retried keeps the subscription", CREATED, answered(410),
     policy(StatusRule(410, 410, Outcome.RETRY)),
     ("retry", "pending", timedelta(seconds=5), 1, "http", "failure", None)),
    ("410 retried to the end keeps it", LAST._replace(created_at=NOW), answered(410),
     policy(StatusRule(410, 410, Outcome.RETRY)),
     ("failed", "failed", None, 6, "http", "failure", None)),
    ("410 by a failing rule disables", CREATED, answered(410),
     policy(StatusRule(400, 499, Outcome.FAILED)),
     ("failed", "failed", None, 1, "http", "failure", GONE_REASON)),
    ("manual 409 as success", MANUAL, answered(409),
     policy(StatusRule(409, 409, Outcome.SUCCEEDED)),
     ("succeeded", "succeeded", None, 6, None, "success", None)),
    ("cut off ignores the policy", CREATED, cut_off(NOW, NOW), policy(schedule=()),
     ("retry", "pending", timedelta(0), 0, "cut_off", None, None)),
]


@pytest.mark.parametrize(("delivery", "result", "rules", "expected"),
                         [case[1:] for case in POLICY_CASES],
                         ids=[case[0] for case in POLICY_CASES])
def test_decide_by_policy(
    delivery: ClaimedDelivery, result: AttemptResult, rules: DeliveryPolicy,
    expected: tuple[str, str, timedelta | None, int, str | None, str | None, str | None],
) -> None:
    record = decide(delivery, result, NOW, SCHEDULE, rules)
    next_at = None if record.next_attempt_at is None else record.next_attempt_at - NOW
    assert (record.outcome, record.status, next_at, record.scheduled_attempts,
            record.error_kind, record.health, record.disable_reason) == expected


@pytest.mark.parametrize(("delivery", "result", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_the_default_policy_decides_as_before(
    delivery: ClaimedDelivery, result: AttemptResult,
    expected: tuple[str, str, timedelta | None, int, str | None, str | None, str | None],
) -> None:
    assert decide(delivery, result, NOW, SCHEDULE, DeliveryPolicy()) == decide(
        delivery, result, NOW, SCHEDULE)
