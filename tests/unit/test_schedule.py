"""Outcome classification, the retry schedule and Retry-After, as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from dispatcher.schedule import Outcome, next_attempt_at, parse_retry_after

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DEFAULT_SCHEDULE = [
    timedelta(seconds=5),
    timedelta(seconds=25),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(hours=1),
]


@pytest.mark.parametrize(
    ("attempt_number", "wait"),
    [
        (1, timedelta(seconds=5)),
        (2, timedelta(seconds=25)),
        (3, timedelta(minutes=2)),
        (4, timedelta(minutes=10)),
        (5, timedelta(hours=1)),
    ],
)
def test_retry_follows_the_default_schedule(attempt_number: int, wait: timedelta) -> None:
    assert next_attempt_at(attempt_number, Outcome.RETRY, NOW, DEFAULT_SCHEDULE) == NOW + wait


@pytest.mark.parametrize(
    ("attempt_number", "outcome"),
    [
        (6, Outcome.RETRY),
        (7, Outcome.RETRY),
        (1, Outcome.SUCCEEDED),
        (1, Outcome.FAILED),
        (5, Outcome.SUCCEEDED),
    ],
    ids=["sixth attempt retry", "past the end", "succeeded", "failed", "late success"],
)
def test_no_next_attempt_when_finished(attempt_number: int, outcome: Outcome) -> None:
    assert next_attempt_at(attempt_number, outcome, NOW, DEFAULT_SCHEDULE) is None


@pytest.mark.parametrize(
    ("attempt_number", "retry_after", "wait"),
    [
        (1, timedelta(seconds=90), timedelta(seconds=90)),  # longer: pushes later
        (2, timedelta(seconds=1), timedelta(seconds=25)),  # shorter: never earlier
        (3, timedelta(0), timedelta(minutes=2)),
        (1, timedelta(hours=2), timedelta(hours=1)),  # capped at one hour
        (1, timedelta(hours=1), timedelta(hours=1)),
        (5, timedelta(hours=2), timedelta(hours=1)),  # schedule already at the cap
        (5, timedelta(minutes=5), timedelta(hours=1)),
    ],
)
def test_retry_after_only_pushes_later_up_to_an_hour(
    attempt_number: int, retry_after: timedelta, wait: timedelta
) -> None:
    assert (
        next_attempt_at(attempt_number, Outcome.RETRY, NOW, DEFAULT_SCHEDULE, retry_after)
        == NOW + wait
    )


def test_retry_after_does_not_extend_a_finished_delivery() -> None:
    assert next_attempt_at(6, Outcome.RETRY, NOW, DEFAULT_SCHEDULE, timedelta(minutes=5)) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", timedelta(seconds=120)),
        (" 7 ", timedelta(seconds=7)),
        ("0", timedelta(0)),
        (format_datetime(NOW + timedelta(minutes=3), usegmt=True), timedelta(minutes=3)),
        (format_datetime(NOW - timedelta(minutes=3), usegmt=True), timedelta(0)),
        ("Thu, 01 Jan 2026 12:00:30 GMT", timedelta(seconds=30)),
        ("garbage", None),
        ("", None),
        ("   ", None),
        (None, None),
        ("-5", None),
        ("1.5", None),
        ("5 seconds", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: timedelta | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100000000000000", timedelta(days=365)),
        ("\u00b2", None),
        ("\u0661\u0662", None),
    ],
    ids=["beyond timedelta range", "unicode superscript digit", "arabic-indic digits"],
)
def test_parse_retry_after_never_raises_on_a_hostile_header(
    value: str, expected: timedelta | None
) -> None:
    assert parse_retry_after(value, NOW) == expected
