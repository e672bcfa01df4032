"""How the dashboard reads what a person typed in its forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from api import models
from ui.forms import as_body, as_local_field, event_types_of, instant_of, problems_of


@pytest.mark.parametrize(("typed", "types"), [
    ("order.created", ["order.created"]),
    ("order.created, invoice.*", ["order.created", "invoice.*"]),
    ("  a.b\n c.d,,e.f ", ["a.b", "c.d", "e.f"]),
    (" , ", []),
])
def test_event_types_are_split_on_commas_spaces_and_new_lines(typed: str,
                                                              types: list[str]) -> None:
    assert event_types_of(typed) == types


@pytest.mark.parametrize(("typed", "read"), [
    ("2026-12-01T17:05", "2026-12-01T17:05:00+00:00"),  # a datetime-local field: UTC
    ("2026-12-01T17:05:30", "2026-12-01T17:05:30+00:00"),
    ("2026-12-01T17:05:00+02:00", "2026-12-01T17:05:00+02:00"),  # a zone given is kept
    ("yesterday", "yesterday"),  # left for the model to refuse
    ("", ""),
])
def test_a_time_without_a_zone_is_read_as_utc(typed: str, read: str) -> None:
    assert instant_of(typed) == read


def test_a_field_shows_a_time_in_utc_to_the_minute() -> None:
    moment = datetime(2026, 12, 1, 19, 5, 42, tzinfo=timezone(timedelta(hours=2)))
    assert as_local_field(moment) == "2026-12-01T17:05"
    assert instant_of(as_local_field(moment)) == datetime(2026, 12, 1, 17, 5,
                                                          tzinfo=UTC).isoformat()


def test_a_form_is_read_as_the_api_reads_a_body_and_its_problems_are_words() -> None:
    choice = as_body(models.RedeliverFailed, {"since": "2026-12-01T17:05:00+00:00"})
    assert choice.since == datetime(2026, 12, 1, 17, 5, tzinfo=UTC) and not choice.dry_run
    with pytest.raises(ValidationError) as refused:
        as_body(models.SubscriptionUpdate, {"event_types": [], "unknown": 1})
    problems = problems_of(refused.value)
    assert any(problem.startswith("event_types: ") for problem in problems)
    assert any(problem.startswith("unknown: ") for problem in problems)
