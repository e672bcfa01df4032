"""When the next attempt of a delivery is due: the retry schedule and Retry-After."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

RETRY_AFTER_CAP = timedelta(hours=1)
_RETRY_AFTER_LIMIT_SECONDS = 365 * 86400


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"


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
    schedule: Sequence[timedelta],
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
