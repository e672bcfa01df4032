"""Delivery statistics from the attempt rollups (table attempt_stats): counts by outcome and
latency histograms per minute and per hour, summed into totals and chart series. Pure: the
store reads the rows, this decides what they say."""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

# Lower bounds in ms of the latency buckets; a bucket ends where the next begins, the last
# never. About 1.4 apart, so a percentile read inside one is off by a fifth at most. The
# same list is in schema.sql's latency_bucket(), which tests hold to this one.
LATENCY_BOUNDS = (
    0, 1, 2, 3, 4, 5, 7, 10, 15, 20, 25, 35, 50, 70, 100, 150, 200, 250, 350, 500, 700,
    1000, 1500, 2000, 2500, 3500, 5000, 7000, 10000, 15000, 20000, 25000, 35000, 50000, 70000,
)

EVERYTHING = "*"  # the scope of every attempt; the others are a subscription's or tenant's id

Grain = Literal["minute", "hour"]
Window = Literal["hour", "day", "week"]
GRAINS: dict[Grain, timedelta] = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}
WINDOWS: dict[Window, timedelta] = {
    "hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7),
}
# How long rollups are kept: a little more than the longest window read at each grain.
KEPT: dict[Grain, timedelta] = {"minute": timedelta(days=2), "hour": timedelta(days=8)}
# The totals of each window are read at this grain: a day's from 24 hour rows (this one so
# far) instead of 1,440 minute rows, so an answer reads few rows but for a series per minute.
TOTALS_GRAIN: dict[Window, Grain] = {"hour": "minute", "day": "hour", "week": "hour"}
PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


def latency_bucket(duration_ms: int) -> int:
    """The index (from 0) of the latency bucket that counts an attempt of `duration_ms`."""
    return bisect.bisect_right(LATENCY_BOUNDS, max(duration_ms, 0)) - 1


def percentile(latency: Sequence[int], q: float) -> float | None:
    """The duration (ms) below which a share `q` (0 < q <= 1) of the attempts counted in
    `latency` (per bucket) fell, read linearly inside its bucket; the last bucket, which has
    no end, answers its lower bound. None if nothing was counted."""
    return percentiles(latency, (q,))[0]


def percentiles(latency: Sequence[int], shares: Sequence[float]) -> tuple[float | None, ...]:
    """`percentile` of each of `shares` (in rising order), in one pass over the buckets."""
    total = sum(latency)
    if not total:
        return (None,) * len(shares)
    ranks = iter([q * total for q in shares])
    rank = next(ranks)
    found: list[float | None] = []
    before = 0
    for index, count in enumerate(latency):
        if not count:
            continue
        after = before + count
        # The first bucket whose running count reaches a rank holds that percentile.
        while after >= rank:
            lower = LATENCY_BOUNDS[index]
            if index + 1 == len(LATENCY_BOUNDS):
                found.append(float(lower))
            else:
                found.append(lower + (LATENCY_BOUNDS[index + 1] - lower) * (rank - before)
                             / count)
            next_rank = next(ranks, None)
            if next_rank is None:
                return tuple(found)
            rank = next_rank
        before = after
    return (*found, *(None,) * (len(shares) - len(found)))


@dataclass(frozen=True, slots=True)
class Counts:
    """Attempts by outcome and by latency bucket (trailing empty buckets left out)."""

    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    latency: tuple[int, ...] = ()

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.succeeded + other.succeeded, self.retried + other.retried,
            self.failed + other.failed,
            tuple(a + b for a, b in itertools.zip_longest(self.latency, other.latency,
                                                          fillvalue=0)),
        )


NOTHING = Counts()


def add_up(many: Iterable[Counts]) -> Counts:
    """The sum of `many` counts."""
    items = list(many)
    return Counts(
        sum(counts.succeeded for counts in items), sum(counts.retried for counts in items),
        sum(counts.failed for counts in items),
        tuple(map(sum, itertools.zip_longest(*(counts.latency for counts in items),
                                             fillvalue=0))),
    )


@dataclass(frozen=True, slots=True)
class StatsRow:
    """One rollup row: what one writer counted for a scope in one minute or hour."""

    grain: Grain
    period_start: datetime
    counts: Counts


def unfold(hour_start: datetime, minutes: Sequence[int], succeeded: Sequence[int],
           retried: Sequence[int], failed: Sequence[int], latency_ends: Sequence[int],
           latency: Sequence[int]) -> list[StatsRow]:
    """The minute rows of a folded hour (a row of attempt_stats_folded, which lays its
    minutes out as parallel arrays and their histograms end to end), oldest first."""
    rows = []
    begin = 0
    for minute, good, again, bad, end in zip(minutes, succeeded, retried, failed,
                                             latency_ends, strict=True):
        rows.append(StatsRow("minute", hour_start + timedelta(minutes=minute),
                             Counts(good, again, bad, tuple(latency[begin:end]))))
        begin = end
    return rows


# How long after an hour ends maintenance folds its minutes (fold_attempt_stats): by then
# the attempts that began in it have been recorded but for a few strays, which are folded
# later on their own.
FOLD_AFTER = timedelta(minutes=5)


def foldable_before(now: datetime) -> datetime:
    """The hour whose minutes maintenance does not fold yet at `now`, nor any after it."""
    return period_start(now - FOLD_AFTER, "hour")


@dataclass(frozen=True, slots=True)
class Latency:
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class Summary:
    """What a span of time's attempts say: how many of each outcome, the share that
    succeeded (None without attempts) and the latency percentiles in ms."""

    attempts: int
    succeeded: int
    retried: int
    failed: int
    success_rate: float | None
    latency_ms: Latency


@dataclass(frozen=True, slots=True)
class Point:
    """One period of a chart series: it begins at `start` and lasts one interval."""

    start: datetime
    summary: Summary


@dataclass(frozen=True, slots=True)
class Report:
    """Totals of the last hour, day and week, and a series of `window` per `interval`."""

    totals: dict[Window, Summary]
    window: Window
    interval: Grain
    series: list[Point]


_SHARES = tuple(PERCENTILES.values())
# Digits kept after the point: a percentile read inside a bucket is off by up to a fifth,
# so a tenth of a millisecond says all it knows. (A day per minute is 1,440 summaries.)
LATENCY_DIGITS = 1
RATE_DIGITS = 6


def success_rate(succeeded: int, attempts: int) -> float | None:
    """The share of `attempts` that succeeded to RATE_DIGITS places, rounded down: one
    failure in ten million still reads below 1. None without attempts."""
    if not attempts:
        return None
    scale: int = 10**RATE_DIGITS
    return (succeeded * scale // attempts) / scale


# A summary is a pure function of its counts, and a period that has ended keeps its counts:
# a dashboard that reloads a day's per-minute series (1,440 summaries) finds most of them
# here. About 1 KB an entry at most.
@functools.lru_cache(maxsize=8192)
def summarize(counts: Counts) -> Summary:
    attempts = counts.succeeded + counts.retried + counts.failed
    return Summary(
        attempts=attempts, succeeded=counts.succeeded, retried=counts.retried,
        failed=counts.failed,
        success_rate=success_rate(counts.succeeded, attempts),
        latency_ms=Latency(*(None if ms is None else round(ms, LATENCY_DIGITS)
                             for ms in percentiles(counts.latency, _SHARES))),
    )


def default_interval(window: Window) -> Grain:
    """The interval a window's series is drawn at unless another is asked for."""
    return "minute" if window == "hour" else "hour"


def series_problem(window: Window, interval: Grain) -> str | None:
    """Why a series of `window` per `interval` cannot be drawn, or None if it can."""
    if WINDOWS[window] > KEPT[interval]:
        return f"a series per {interval} covers at most a day; ask for interval=hour"
    return None


def period_start(at: datetime, grain: Grain) -> datetime:
    """The start of the minute or hour (UTC) holding `at`."""
    if grain == "minute":
        return at.replace(second=0, microsecond=0)
    return at.replace(minute=0, second=0, microsecond=0)


def periods(now: datetime, window: Window, grain: Grain) -> tuple[datetime, ...]:
    """The starts of the periods of `grain` that make up the last `window`, oldest first:
    the current one (so far) and as many before it as fill the window."""
    return _periods_to(period_start(now, grain), window, grain)


# The same starts serve every report of the same minute, which then looks its counts up by
# datetimes whose hashes are known (making and hashing 1,440 of them took 4 ms a report).
@functools.lru_cache(maxsize=64)
def _periods_to(last: datetime, window: Window, grain: Grain) -> tuple[datetime, ...]:
    step = GRAINS[grain]
    count = WINDOWS[window] // step
    return tuple(last - step * back for back in range(count - 1, -1, -1))


def oldest_periods(now: datetime, window: Window, interval: Grain | None = None
                   ) -> tuple[datetime, datetime]:
    """The first minute and the first hour a report at `now` of `window` per `interval`
    reads: of its totals and of its series."""
    interval = interval or default_interval(window)
    first_minute = periods(now, "hour", "minute")[0]
    if interval == "minute":
        first_minute = min(first_minute, periods(now, window, "minute")[0])
    return first_minute, periods(now, "week", "hour")[0]


def by_period(rows: Iterable[StatsRow], grain: Grain) -> dict[datetime, Counts]:
    """The counts of every period of `grain`, summed over the writers of its rows."""
    counted: dict[datetime, Counts] = {}
    for row in rows:
        if row.grain == grain:
            earlier = counted.get(row.period_start)
            counted[row.period_start] = row.counts if earlier is None else earlier + row.counts
    return counted


def fill(counted: dict[datetime, Counts], starts: Sequence[datetime]) -> list[Point]:
    """A point for every period in `starts`, empty where nothing was counted, so a chart
    has a continuous axis."""
    return [Point(start, summarize(counted.get(start, NOTHING))) for start in starts]


def report(rows: Sequence[StatsRow], now: datetime, window: Window,
           interval: Grain | None = None) -> Report:
    """The totals of the last hour, day and week at `now`, and the series of `window` per
    `interval` (the window's default if None), from rollup rows (Store.attempt_stats)."""
    interval = interval or default_interval(window)
    problem = series_problem(window, interval)
    if problem is not None:
        raise ValueError(problem)
    counted = {grain: by_period(rows, grain) for grain in GRAINS}
    totals: dict[Window, Summary] = {}
    for span, grain in TOTALS_GRAIN.items():
        first = periods(now, span, grain)[0]
        last = period_start(now, grain)
        totals[span] = summarize(add_up(
            counts for start, counts in counted[grain].items() if first <= start <= last))
    return Report(totals, window, interval, fill(counted[interval],
                                                 periods(now, window, interval)))
