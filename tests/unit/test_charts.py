"""The geometry of the dashboard's outcome charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ui.charts import HEIGHT, TICKS, WIDTH, Period, outcome_chart

START = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def minutes(*counts: tuple[int, int, int]) -> list[Period]:
    return [Period(START + n * MINUTE, *count) for n, count in enumerate(counts)]


def test_bars_stack_by_outcome_scaled_to_the_tallest() -> None:
    chart = outcome_chart(minutes((6, 2, 2), (0, 0, 0), (5, 0, 0), (0, 0, 1)), MINUTE,
                          "attempts per minute")
    assert (chart.peak, chart.total) == (10, 16)
    assert len(chart.bars) == 3  # the empty minute draws nothing
    first = chart.bars[0]
    assert [s.outcome for s in first.segments] == ["succeeded", "retried", "failed"]
    assert [s.height for s in first.segments] == [HEIGHT * 0.6, HEIGHT * 0.2, HEIGHT * 0.2]
    # Succeeded at the bottom, the rest stacked on it, the whole bar to the top.
    assert first.segments[0].y + first.segments[0].height == HEIGHT
    assert first.segments[-1].y == 0
    assert first.title == "17:00: 6 succeeded, 2 to retry, 2 failed"
    slot = WIDTH / 4
    assert chart.bars[1].x > 2 * slot - 1 and chart.bars[1].width < slot
    assert chart.bars[2].segments[0].outcome == "failed"
    assert chart.bars[2].segments[0].height == HEIGHT / 10
    assert chart.label == "attempts per minute: 16 in all, at most 10 in one"


def test_time_labels_span_the_chart_and_hours_show_their_day() -> None:
    chart = outcome_chart(minutes(*[(1, 0, 0)] * 60), MINUTE, "x")
    assert len(chart.ticks) == TICKS and chart.ticks[0] == "17:00" and chart.ticks[-1] == "17:59"
    hour = timedelta(hours=1)
    hours = [Period(START + n * hour, 1, 0, 0) for n in range(24)]
    assert outcome_chart(hours, hour, "x").ticks[0] == "Dec 01 17:00"


def test_an_empty_chart_has_no_bars_and_no_scale() -> None:
    chart = outcome_chart(minutes(*[(0, 0, 0)] * 60), MINUTE, "x")
    assert chart.bars == () and chart.peak == 0 and chart.total == 0
    assert outcome_chart([], MINUTE, "x").ticks == ()
