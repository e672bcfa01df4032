"""A delivery policy's parts: which header names and values a subscriber may set, status
specs, durations and schedules, and the stored JSON the dispatcher reads."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dispatcher.policy import (
    DEFAULT_POLICY,
    DeliveryPolicy,
    StatusRule,
    header_name_problem,
    header_value_problem,
    parse_policy,
    policy_duration,
    schedule_problem,
    status_range,
)
from dispatcher.schedule import Outcome

ALLOWED_NAMES = ["X-Team", "x-team", "Authorization", "X-Api-Key", "Cookie", "Accept",
                 "X-Request-Source", "traceparent", "a", "X" + "a" * 63,
                 "x-weird!#$%&'*+.^_`|~", "Webhook", "X-Webhook-Id", "Content", "Hosts"]
# Hop-by-hop, those hookpost sets, and the Standard Webhooks ones, in any case.
REFUSED_NAMES = ["Connection", "keep-alive", "Proxy-Authenticate", "proxy-authorization",
                 "Proxy-Connection", "TE", "te", "Trailer", "Transfer-Encoding", "Upgrade",
                 "Host", "HOST", "Content-Length", "content-type", "Content-Encoding",
                 "User-Agent", "Expect", "webhook-id", "Webhook-Timestamp",
                 "WEBHOOK-SIGNATURE", "webhook-", "webhook-anything"]
MALFORMED_NAMES = ["", "X Team", "X-Team:", "X-Team\r\n", "X-\x00", "caf\u00e9", "(x)",
                   "a/b", "x" * 65, "\"x\"", "x@y", "[x]", "{x}", "x=y", "x;y", "x,y",
                   "X-Team\n"]  # a trailing newline: `$` alone would let it through


@pytest.mark.parametrize("name", ALLOWED_NAMES)
def test_a_header_name_of_the_subscribers_own_is_allowed(name: str) -> None:
    assert header_name_problem(name) is None


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_a_header_hookpost_or_the_connection_owns_is_refused(name: str) -> None:
    problem = header_name_problem(name)
    assert problem is not None
    assert f"{name} cannot be set" in problem


@pytest.mark.parametrize("name", MALFORMED_NAMES)
def test_a_header_name_that_is_no_token_is_refused(name: str) -> None:
    problem = header_name_problem(name)
    assert problem is not None
    assert problem.startswith("a header name is")


@pytest.mark.parametrize(("value", "allowed"), [
    ("billing", True), ("Bearer abc.def", True), ("a b c", True), ("x" * 1000, True),
    ("!~", True), ("", False), (" a", False), ("a ", False), ("a  b", False),
    ("a\r\nX-Evil: 1", False), ("a\nb", False), ("a\rb", False), ("a\tb", False),
    ("a\x00b", False), ("a\x7fb", False), ("caf\u00e9", False), ("x" * 1001, False),
    ("abc\n", False), ("abc\r\n", False),
])
def test_a_header_value_is_visible_ascii_with_inner_spaces(value: str, allowed: bool) -> None:
    assert (header_value_problem(value) is None) is allowed


@pytest.mark.parametrize(("statuses", "expected"), [
    ("409", (409, 409)), ("100", (100, 100)), ("599", (599, 599)), ("4xx", (400, 499)),
    ("1xx", (100, 199)), ("500-599", (500, 599)), ("404-404", (404, 404)),
])
def test_statuses_name_a_code_a_range_or_a_class(statuses: str, expected: tuple[int, int]
                                                 ) -> None:
    assert status_range(statuses) == expected


@pytest.mark.parametrize("statuses", [
    "", "99", "600", "6xx", "0xx", "4XX", "40x", "4x", "404,410", " 404", "404 ", "500-",
    "-599", "500-600", "599-500", "4xx-5xx", "+404", "404.0", "\u0664\u0660\u0664", "404\n",
])
def test_anything_else_is_no_statuses(statuses: str) -> None:
    with pytest.raises(ValueError, match=r"statuses is|ends before it begins"):
        status_range(statuses)


@pytest.mark.parametrize(("value", "expected"), [
    ("1s", timedelta(seconds=1)), ("5s", timedelta(seconds=5)), ("1m", timedelta(minutes=1)),
    ("1h", timedelta(hours=1)), ("7d", timedelta(days=7)), ("1500ms", timedelta(seconds=1.5)),
    ("90", timedelta(seconds=90)), (1, timedelta(seconds=1)), (604800, timedelta(days=7)),
    ("1.0004s", timedelta(seconds=1)),  # to the millisecond
])
def test_a_duration_is_text_or_whole_seconds(value: str | int, expected: timedelta) -> None:
    assert policy_duration(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("0s", "from 1s to 7d"), ("999ms", "from 1s to 7d"), (0, "from 1s to 7d"),
    (-1, "from 1s to 7d"), ("7d1s", "a duration is"), ("8d", "from 1s to 7d"),
    (604801, "from 1s to 7d"), ("soon", "a duration is"), ("-5s", "a duration is"),
    ("99999999999999d", "a duration is"), (10**30, "a duration is"), ("1w", "a duration is"),
])
def test_a_duration_out_of_bounds_is_refused(value: str | int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        policy_duration(value)


@pytest.mark.parametrize(("waits", "problem"), [
    ([], None),
    ([timedelta(seconds=1)] * 19, None),
    ([timedelta(days=7)], None),
    ([timedelta(days=3), timedelta(days=4)], None),
    ([timedelta(seconds=1)] * 20, "at most 19 waits"),
    ([timedelta(days=4), timedelta(days=3), timedelta(seconds=1)], "add up to 7d"),
])
def test_a_schedule_has_at_most_19_waits_within_a_week(
    waits: list[timedelta], problem: str | None
) -> None:
    found = schedule_problem(waits)
    assert found is None if problem is None else problem in (found or "")


def test_no_stored_policy_is_the_default() -> None:
    assert parse_policy(None) is DEFAULT_POLICY
    assert DeliveryPolicy((), None, ()) == DEFAULT_POLICY


def test_a_stored_policy_is_read_into_the_dispatchers_terms() -> None:
    stored = ('{"headers": {"X-Team": "billing"}, "retry_schedule": ["5s", "1m"], '
              '"status_rules": [{"statuses": "409", "outcome": "succeeded", "for": null}, '
              '{"statuses": "4xx", "outcome": "retry", "for": "1h"}]}')
    assert parse_policy(stored) == DeliveryPolicy(
        headers=(("X-Team", "billing"),),
        retry_schedule=(timedelta(seconds=5), timedelta(minutes=1)),
        status_rules=(StatusRule(409, 409, Outcome.SUCCEEDED),
                      StatusRule(400, 499, Outcome.RETRY, timedelta(hours=1))),
    )
    # Read once per text: every delivery of the subscription shares it.
    assert parse_policy(stored) is parse_policy(stored)


def test_a_stored_policy_may_leave_parts_out() -> None:
    assert parse_policy('{"headers": {}}') == DEFAULT_POLICY
    assert parse_policy('{"retry_schedule": []}').retry_schedule == ()
