"""Statistics from rollups: latency buckets, percentiles, periods and series, the query's
checks, as tables."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from api.models import Stats, StatsQuery
from api.routes import stats_answer
from hookpost.stats import (
    LATENCY_BOUNDS,
    LATENCY_DIGITS,
    Counts,
    Grain,
    StatsRow,
    Summary,
    Window,
    fill,
    foldable_before,
    latency_bucket,
    percentile,
    periods,
    report,
    series_problem,
    success_rate,
    unfold,
)

NOW = datetime(2026, 1, 1, 12, 30, 45, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
SCHEMA = Path(__file__).parents[2] / "schema.sql"


def test_schema_sql_buckets_latencies_by_the_same_bounds() -> None:
    function = SCHEMA.read_text().split("FUNCTION latency_bucket(", 1)[1].split("$$;", 1)[0]
    bounds = re.search(r"ARRAY\[([\d,\s]+)\]", function)
    assert bounds is not None
    assert tuple(int(bound) for bound in bounds.group(1).split(",")) == LATENCY_BOUNDS


def test_bounds_rise_from_zero() -> None:
    assert LATENCY_BOUNDS[0] == 0
    assert all(a < b for a, b in itertools.pairwise(LATENCY_BOUNDS))


@pytest.mark.parametrize(("duration_ms", "bucket"), [
    (-5, 0), (0, 0), (1, 1), (4, 4), (5, 5), (6, 5), (7, 6), (99, 13), (100, 14),
    (149, 14), (150, 15), (9_999, 27), (10_000, 28), (70_000, 34), (10**9, 34),
])
def test_latency_bucket(duration_ms: int, bucket: int) -> None:
    assert latency_bucket(duration_ms) == bucket


def histogram(*durations: int) -> tuple[int, ...]:
    counts = [0] * (max(latency_bucket(d) for d in durations) + 1)
    for duration in durations:
        counts[latency_bucket(duration)] += 1
    return tuple(counts)


@pytest.mark.parametrize(("latency", "q", "expected"), [
    ((), 0.5, None),
    ((0, 0, 0), 0.99, None),
    # All in [100, 150): read linearly by rank inside the bucket.
    (histogram(120, 120, 120, 120), 0.5, 125.0),
    (histogram(120, 120, 120, 120), 1.0, 150.0),
    (histogram(120, 120, 120, 120), 0.25, 112.5),
    # One in [1, 2), one in [100, 150): the median is the end of the first bucket.
    (histogram(1, 120), 0.5, 2.0),
    (histogram(1, 120), 0.99, 100 + 50 * 0.98),
    # 99 fast and one slow: p99 still fast, p99.5 in the slow one's bucket.
    (histogram(*[3] * 99, 400), 0.99, 4.0),
    (histogram(*[3] * 99, 400), 0.995, 350 + 150 * 0.5),
    # Empty buckets between are passed over.
    (histogram(0, 0, 5000), 0.9, 5000 + 2000 * 0.7),
    # The last bucket has no end: its lower bound.
    (histogram(80_000, 90_000), 0.5, 70_000.0),
])
def test_percentile(latency: tuple[int, ...], q: float, expected: float | None) -> None:
    assert percentile(latency, q) == pytest.approx(expected)


def test_counts_add_outcomes_and_buckets_of_any_length() -> None:
    assert Counts(1, 2, 3, (1, 0, 2)) + Counts(1, 0, 0, (0, 5)) == Counts(2, 2, 3, (1, 5, 2))


@pytest.mark.parametrize(("window", "grain", "count", "first", "last"), [
    ("hour", "minute", 60, datetime(2026, 1, 1, 11, 31, tzinfo=UTC),
     datetime(2026, 1, 1, 12, 30, tzinfo=UTC)),
    ("day", "minute", 1440, datetime(2025, 12, 31, 12, 31, tzinfo=UTC),
     datetime(2026, 1, 1, 12, 30, tzinfo=UTC)),
    ("hour", "hour", 1, datetime(2026, 1, 1, 12, tzinfo=UTC), datetime(2026, 1, 1, 12, tzinfo=UTC)),
    ("day", "hour", 24, datetime(2025, 12, 31, 13, tzinfo=UTC),
     datetime(2026, 1, 1, 12, tzinfo=UTC)),
    ("week", "hour", 168, datetime(2025, 12, 25, 13, tzinfo=UTC),
     datetime(2026, 1, 1, 12, tzinfo=UTC)),
])
def test_periods_end_with_the_current_one(window: str, grain: str, count: int,
                                          first: datetime, last: datetime) -> None:
    starts = periods(NOW, window, grain)  # type: ignore[arg-type]
    assert (len(starts), starts[0], starts[-1]) == (count, first, last)
    assert len(set(starts)) == count


def test_a_series_has_every_period_empty_ones_as_zeros() -> None:
    starts = periods(NOW, "hour", "minute")
    counted = {starts[10]: Counts(2, 1, 0, histogram(10, 10, 10))}
    points = fill(counted, starts)
    assert tuple(point.start for point in points) == starts
    assert [point.summary.attempts for point in points] == [0] * 10 + [3] + [0] * 49
    empty = points[0].summary
    assert (empty.succeeded, empty.retried, empty.failed, empty.success_rate,
            empty.latency_ms.p50) == (0, 0, 0, None, None)
    assert points[10].summary.success_rate == 0.666666  # rounded down


def test_a_report_sums_writers_and_keeps_to_each_window() -> None:
    this_minute = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    this_hour = datetime(2026, 1, 1, 12, tzinfo=UTC)
    rows = [
        # Two writers in this minute (and hour), in every window.
        StatsRow("minute", this_minute, Counts(3, 0, 0, histogram(1, 1, 1))),
        StatsRow("minute", this_minute, Counts(0, 1, 1, histogram(200, 200))),
        StatsRow("hour", this_hour, Counts(3, 1, 1, histogram(1, 1, 1, 200, 200))),
        # Two hours ago: the day and the week, not the hour.
        StatsRow("minute", this_minute - 2 * HOUR, Counts(5, 0, 0, histogram(*[20] * 5))),
        StatsRow("hour", this_hour - 2 * HOUR, Counts(5, 0, 0, histogram(*[20] * 5))),
        # 1,440 minutes ago: out of the day. Three days ago: the week only.
        StatsRow("minute", this_minute - 1440 * MINUTE, Counts(7, 0, 0, (7,))),
        StatsRow("hour", this_hour - 72 * HOUR, Counts(0, 0, 9, (9,))),
        # 168 hours ago: out of the week.
        StatsRow("hour", this_hour - 168 * HOUR, Counts(11, 0, 0, (11,))),
    ]
    stats = report(rows, NOW, "day", "hour")
    assert [(span, total.succeeded, total.retried, total.failed)
            for span, total in stats.totals.items()] == [
        ("hour", 3, 1, 1), ("day", 8, 1, 1), ("week", 8, 1, 10)]
    assert stats.totals["hour"].success_rate == pytest.approx(0.6)
    assert stats.totals["hour"].latency_ms.p50 == round(
        percentile(histogram(1, 1, 1, 200, 200), 0.5) or 0, LATENCY_DIGITS)
    assert (stats.window, stats.interval, len(stats.series)) == ("day", "hour", 24)
    assert [point.summary.attempts for point in stats.series][-3:] == [5, 0, 5]


def test_a_report_per_minute_over_the_week_is_refused() -> None:
    with pytest.raises(ValueError, match="at most a day"):
        report([], NOW, "week", "minute")


@pytest.mark.parametrize(("window", "interval", "problem"), [
    ("hour", "minute", False), ("day", "minute", False), ("week", "minute", True),
    ("hour", "hour", False), ("day", "hour", False), ("week", "hour", False),
])
def test_which_series_can_be_drawn(window: str, interval: str, problem: bool) -> None:
    assert (series_problem(window, interval) is not None) == problem  # type: ignore[arg-type]


@pytest.mark.parametrize(("query", "window", "interval"), [
    ({}, "day", "hour"),
    ({"window": "hour"}, "hour", "minute"),
    ({"window": "week"}, "week", "hour"),
    ({"window": "day", "interval": "minute"}, "day", "minute"),
])
def test_the_query_defaults(query: dict[str, str], window: str, interval: str) -> None:
    parsed = StatsQuery.model_validate(query)
    assert (parsed.window, parsed.series_interval) == (window, interval)


@pytest.mark.parametrize("query", [
    {"window": "month"}, {"interval": "second"}, {"window": "week", "interval": "minute"},
    {"since": "2026-01-01T00:00:00Z"},
])
def test_the_query_refuses(query: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        StatsQuery.model_validate(query)


def test_a_folded_hour_unfolds_into_its_minutes() -> None:
    hour = datetime(2026, 1, 1, 10, tzinfo=UTC)
    rows = unfold(hour, [0, 7, 59], [1, 0, 2], [0, 1, 0], [0, 0, 1], [2, 2, 5],
                  [0, 1, 3, 0, 1])
    assert rows == [
        StatsRow("minute", hour, Counts(1, 0, 0, (0, 1))),
        StatsRow("minute", hour + 7 * MINUTE, Counts(0, 1, 0, ())),
        StatsRow("minute", hour + 59 * MINUTE, Counts(2, 0, 1, (3, 0, 1))),
    ]


@pytest.mark.parametrize(("now", "before"), [
    ("12:04:59", "11:00"), ("12:05:00", "12:00"), ("12:59:59", "12:00"),
])
def test_an_hour_is_folded_five_minutes_after_it_ends(now: str, before: str) -> None:
    at = datetime.fromisoformat(f"2026-01-01T{now}+00:00")
    assert foldable_before(at) == datetime.fromisoformat(f"2026-01-01T{before}:00+00:00")


@pytest.mark.parametrize(("window", "interval"), [("hour", "minute"), ("day", "minute"),
                                                  ("week", "hour")])
def test_the_answer_written_from_a_report_is_what_the_model_would_write(
    window: Window, interval: Grain,
) -> None:
    rows = [StatsRow("minute", datetime(2026, 1, 1, 12, 30, tzinfo=UTC),
                     Counts(3, 1, 1, histogram(1, 1, 1, 200, 2000))),
            StatsRow("hour", datetime(2026, 1, 1, 12, tzinfo=UTC),
                     Counts(3, 1, 1, histogram(1, 1, 1, 200, 2000))),
            StatsRow("minute", datetime(2026, 1, 1, 11, 59, tzinfo=UTC), Counts(0, 0, 2, (2,))),
            StatsRow("hour", datetime(2026, 1, 1, 11, tzinfo=UTC), Counts(0, 0, 2, (2,)))]
    made = report(rows, NOW, window, interval)
    scope = 'a "quoted" \\ scope'
    as_of = NOW.replace(microsecond=1500)
    written = json.loads(stats_answer(scope, as_of, made))
    model = Stats.model_validate({
        "scope": scope, "as_of": as_of,
        "totals": {span: summary_fields(summary) for span, summary in made.totals.items()},
        "series": {"window": window, "interval": interval,
                   "points": [{"start": point.start, **summary_fields(point.summary)}
                              for point in made.series]}})
    assert written == json.loads(model.model_dump_json())
    assert written["as_of"] == "2026-01-01T12:30:45.001500Z"


def summary_fields(summary: Summary) -> dict[str, Any]:
    return {"attempts": summary.attempts, "succeeded": summary.succeeded,
            "retried": summary.retried, "failed": summary.failed,
            "success_rate": summary.success_rate,
            "latency_ms": dataclasses.asdict(summary.latency_ms)}


@pytest.mark.parametrize(("succeeded", "attempts", "rate"), [
    (0, 0, None), (0, 3, 0.0), (2, 3, 0.666666), (3, 3, 1.0), (9_999_999, 10_000_000, 0.999999),
])
def test_a_success_rate_is_rounded_down_so_a_failure_never_reads_as_none(
    succeeded: int, attempts: int, rate: float | None,
) -> None:
    assert success_rate(succeeded, attempts) == rate
