"""Charts of attempts by outcome, drawn on the server as SVG: stacked bars, one per minute
or hour, with no script, so they show with JavaScript off and under the pages' CSP. Pure:
the pages hand in the counts, this decides the geometry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hookpost import stats

# The drawing's own units; the page stretches it to its width.
WIDTH = 960.0
HEIGHT = 160.0
OUTCOMES = ("succeeded", "retried", "failed")  # stacked from the bottom in this order
TICKS = 5  # time labels under a chart, first and last included


@dataclass(frozen=True, slots=True)
class Period:
    """What one minute or hour counted."""

    start: datetime
    succeeded: int
    retried: int
    failed: int


@dataclass(frozen=True, slots=True)
class Segment:
    outcome: str  # one of OUTCOMES, also the CSS class that colours it
    y: float
    height: float


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    segments: tuple[Segment, ...]
    title: str  # shown by the browser on hover


@dataclass(frozen=True, slots=True)
class Chart:
    bars: tuple[Bar, ...]
    peak: int  # the tallest bar's count, the top of the scale
    total: int
    ticks: tuple[str, ...]  # times under the chart, evenly spaced from first to last
    label: str  # what a screen reader says of it
    width: float = WIDTH
    height: float = HEIGHT


def _time(moment: datetime, interval: timedelta) -> str:
    moment = moment.astimezone(UTC)
    if interval >= timedelta(hours=1):
        return moment.strftime("%b %d %H:00")
    return moment.strftime("%H:%M")


def outcome_chart(periods: Sequence[Period], interval: timedelta, what: str) -> Chart:
    """Stacked bars of `periods` (oldest first, each `interval` long) by outcome; `what`
    names the chart, e.g. "attempts per minute over the last hour"."""
    peak = max((p.succeeded + p.retried + p.failed for p in periods), default=0)
    total = sum(p.succeeded + p.retried + p.failed for p in periods)
    slot = WIDTH / max(len(periods), 1)
    gap = slot * 0.15 if slot >= 4 else 0.0
    bars = []
    for index, period in enumerate(periods):
        counts = (period.succeeded, period.retried, period.failed)
        if not any(counts):
            continue
        segments = []
        top = HEIGHT
        for outcome, count in zip(OUTCOMES, counts, strict=True):
            if count:
                height = HEIGHT * count / peak
                top -= height
                segments.append(Segment(outcome, round(top, 2), round(height, 2)))
        start = _time(period.start, interval)
        title = (f"{start}: {period.succeeded} succeeded, {period.retried} to retry, "
                 f"{period.failed} failed")
        bars.append(Bar(round(index * slot + gap / 2, 2), round(slot - gap, 2),
                        tuple(segments), title))
    ticks: tuple[str, ...] = ()
    if periods:
        step = (len(periods) - 1) / (TICKS - 1)
        ticks = tuple(_time(periods[round(n * step)].start, interval) for n in range(TICKS))
    label = f"{what}: {total} in all, at most {peak} in one"
    return Chart(tuple(bars), peak, total, ticks, label)


def series_chart(report: stats.Report) -> Chart:
    """The chart of a statistics report's series (see stats.report)."""
    periods = [Period(point.start, point.summary.succeeded, point.summary.retried,
                      point.summary.failed) for point in report.series]
    return outcome_chart(periods, stats.GRAINS[report.interval],
                         f"Attempts per {report.interval} over the last {report.window}")
