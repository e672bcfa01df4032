"""Pure decisions about an attempt's outcome and when the next one is due."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

RETRY_AFTER_CAP = timedelta(hours=1)
_RETRY_AFTER_LIMIT_SECONDS = 365 * 86400


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"


class ErrorKind(enum.StrEnum):
    TIMEOUT = "timeout"
    CONNECT = "connect"
    DNS = "dns"
    TLS = "tls"
    HTTP = "http"


def classify(status: int | None) -> Outcome:
    """What a response status (None: no response at all) means for the delivery."""
    if status is None:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.SUCCEEDED
    if 400 <= status < 500 and status != 429:
        return Outcome.FAILED
    return Outcome.RETRY


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A `Retry-After` header (delta-seconds or HTTP date) as a wait from `now`."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        # Anything past the cap is the cap; clamping first keeps timedelta in range.
        return timedelta(seconds=min(int(text), _RETRY_AFTER_LIMIT_SECONDS))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(when - now, timedelta(0))


def next_attempt_at(
    attempt_number: int,
    outcome: Outcome,
    now: datetime,
    schedule: list[timedelta],
    retry_after: timedelta | None = None,
) -> datetime | None:
    """When attempt `attempt_number + 1` is due, or None when the delivery is finished.

    `Retry-After` may only push the next attempt later, and never past an hour.
    """
    if outcome is not Outcome.RETRY or attempt_number > len(schedule):
        return None
    wait = schedule[attempt_number - 1]
    if retry_after is not None:
        wait = max(wait, min(retry_after, RETRY_AFTER_CAP))
    return now + wait


@dataclass(frozen=True, slots=True)
class NextState:
    """Where a delivery goes after an attempt, and the outcome the attempt is recorded with."""

    status: str  # pending, succeeded or failed
    next_attempt_at: datetime | None
    outcome: Outcome
    scheduled_attempts: int


def after_attempt(
    *,
    manual: bool,
    prior_status: str,
    scheduled_attempts: int,
    next_attempt_before: datetime | None,
    outcome: Outcome,
    now: datetime,
    schedule: list[timedelta],
    retry_after: timedelta | None = None,
) -> NextState:
    """The delivery's state after an attempt.

    A scheduled attempt follows the retry schedule. A manual redelivery is one extra try:
    success ends the delivery, failure leaves the automatic schedule as it was (a pending
    delivery keeps its next attempt; a finished one stays failed).
    """
    if manual:
        if outcome is Outcome.SUCCEEDED:
            return NextState("succeeded", None, outcome, scheduled_attempts)
        if prior_status == "pending":
            return NextState("pending", next_attempt_before, Outcome.FAILED, scheduled_attempts)
        return NextState("failed", None, Outcome.FAILED, scheduled_attempts)
    number = scheduled_attempts + 1
    next_at = next_attempt_at(number, outcome, now, schedule, retry_after)
    if outcome is Outcome.SUCCEEDED:
        return NextState("succeeded", None, outcome, number)
    if next_at is None:
        return NextState("failed", None, Outcome.FAILED, number)
    return NextState("pending", next_at, outcome, number)
