"""A subscription's delivery policy: headers added to every request, a retry schedule of
its own, and which response statuses succeed, give up or are retried. The API validates a
policy and stores it as JSON on the subscription; the dispatcher reads each distinct value
once (parse_policy)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import NamedTuple

from dispatcher.schedule import Outcome
from hookpost.settings import parse_duration

MAX_HEADERS = 20
HEADER_VALUE_LIMIT = 1000
MAX_WAITS = 19  # so at most 20 attempts
SHORTEST_WAIT = timedelta(seconds=1)
LONGEST_SCHEDULE = timedelta(days=7)  # every wait added up; a rule's `for` too
MAX_STATUS_RULES = 20

# Headers hookpost sets itself, or that describe the connection or the body framing rather
# than the message: a receiver must be able to trust them.
FORBIDDEN_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "host", "content-length", "content-type", "content-encoding", "expect", "user-agent",
})
_FORBIDDEN_PREFIX = "webhook-"  # the Standard Webhooks headers: id, timestamp, signature
# Matched whole (fullmatch): `$` alone would let a name or value end in a newline.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
# Visible ASCII, with single spaces inside: no CR, LF or other control character.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+( [\x21-\x7e]+)*")
# A code (409), a range (500-599) or a class (4xx), of the codes 100 to 599.
_STATUSES = re.compile(r"(?:([1-5])xx|([1-5][0-9]{2})(?:-([1-5][0-9]{2}))?)")


def header_name_problem(name: str) -> str | None:
    """Why `name` may not be a policy's header, or None if it may."""
    if not _TOKEN.fullmatch(name):
        return ("a header name is 1 to 64 letters, digits or !#$%&'*+.^_`|~- "
                "(no spaces, colons or control characters)")
    lower = name.lower()
    if lower in FORBIDDEN_HEADERS or lower.startswith(_FORBIDDEN_PREFIX):
        return (f"{name} cannot be set: hookpost sets it, or it belongs to the connection "
                "(hop-by-hop, host, content-*, user-agent, expect and webhook-* are refused)")
    return None


def header_value_problem(value: str) -> str | None:
    """Why `value` may not be a policy header's value, or None if it may."""
    if len(value) > HEADER_VALUE_LIMIT or not _HEADER_VALUE.fullmatch(value):
        return (f"a header value is 1 to {HEADER_VALUE_LIMIT} visible ASCII characters, "
                "with single spaces between them: no CR, LF, tab or other control character, "
                "and no space at either end")
    return None


def status_range(statuses: str) -> tuple[int, int]:
    """The first and last code of '409', '500-599' or '4xx'; ValueError if it is none."""
    match = _STATUSES.fullmatch(statuses)
    if match is None:
        raise ValueError("statuses is a code (409), a range (500-599) or a class (4xx), "
                         "of the codes 100 to 599")
    klass, first, last = match.groups()
    if klass is not None:
        return int(klass) * 100, int(klass) * 100 + 99
    if last is not None and int(last) < int(first):
        raise ValueError(f"the range {statuses} ends before it begins")
    return int(first), int(last or first)


def policy_duration(value: str | int) -> timedelta:
    """A wait or a rule's time limit: `5s`, `1m`, `1h`, `1d` or whole seconds, from 1 s to
    7 days, to the millisecond."""
    try:
        wait = timedelta(seconds=value) if isinstance(value, int) else parse_duration(value)
        wait = timedelta(milliseconds=round(wait.total_seconds() * 1000))
    except (ValueError, OverflowError):
        raise ValueError("a duration is a number of seconds or a text such as 5s, 1m, 1h, "
                         "1d") from None
    if not SHORTEST_WAIT <= wait <= LONGEST_SCHEDULE:
        raise ValueError("a duration is from 1s to 7d")
    return wait


def schedule_problem(waits: Sequence[timedelta]) -> str | None:
    """Why `waits` may not be a retry schedule, or None if it may."""
    if len(waits) > MAX_WAITS:
        return f"a retry schedule has at most {MAX_WAITS} waits ({MAX_WAITS + 1} attempts)"
    if sum(waits, timedelta(0)) > LONGEST_SCHEDULE:
        return "a retry schedule's waits add up to 7d at most"
    return None


class StatusRule(NamedTuple):
    """Statuses `first` to `last` have `outcome`, while the delivery is younger than
    `within` (None: always)."""

    first: int
    last: int
    outcome: Outcome
    within: timedelta | None = None


class DeliveryPolicy(NamedTuple):
    """What a subscription changes of how its deliveries are sent and judged."""

    headers: tuple[tuple[str, str], ...] = ()
    retry_schedule: tuple[timedelta, ...] | None = None  # None: the deployment's schedule
    status_rules: tuple[StatusRule, ...] = ()


DEFAULT_POLICY = DeliveryPolicy()


@functools.lru_cache(maxsize=1024)
def parse_policy(stored: str | None) -> DeliveryPolicy:
    """The policy stored as JSON text (as the API validated it); None: the defaults.

    Cached by its text: every delivery of a subscription carries the same one.
    """
    if stored is None:
        return DEFAULT_POLICY
    fields = json.loads(stored)
    schedule = fields.get("retry_schedule")
    return DeliveryPolicy(
        headers=tuple(fields.get("headers", {}).items()),
        retry_schedule=None if schedule is None else tuple(
            parse_duration(wait) for wait in schedule),
        status_rules=tuple(
            StatusRule(*status_range(rule["statuses"]), Outcome(rule["outcome"]),
                       None if rule.get("for") is None else parse_duration(rule["for"]))
            for rule in fields.get("status_rules", [])),
    )
