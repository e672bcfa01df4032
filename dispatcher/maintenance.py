"""Maintenance jobs of the dispatcher process: attempt partitions and retention, statistics
folding and retention, disabling subscriptions that keep failing, and the backlog gauges.
Each is safe to run in several dispatcher processes at once."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from hookpost import metrics, stats
from hookpost.clock import Clock, utcnow
from hookpost.database import DATABASE_DOWN
from hookpost.settings import Settings, format_duration
from hookpost.store import Store

log = logging.getLogger("hookpost.maintenance")

PARTITION_DAYS_AHEAD = 3
DELETE_BATCH = 1000
BACKLOG_TOP = 10


class Maintenance:
    """The jobs, callable one by one (tests do) or scheduled together with `start()`."""

    def __init__(self, store: Store, settings: Settings, *, clock: Clock = utcnow) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._scheduler: AsyncIOScheduler | None = None

    async def keep_partitions(self) -> None:
        """Make the coming days' attempt partitions; drop those past retention."""
        now = self.clock()
        today = now.date()
        await self.store.ensure_attempts_partitions(
            today - timedelta(days=1), today + timedelta(days=PARTITION_DAYS_AHEAD)
        )
        cutoff = now - self.settings.retention
        dropped = await self.store.drop_attempts_partitions(cutoff)
        await _in_batches(functools.partial(self.store.delete_old_default_attempts, cutoff,
                                            DELETE_BATCH))
        if dropped:
            log.info("dropped %d attempt partitions older than %s", dropped, cutoff.isoformat())

    async def prune_stats(self) -> int:
        """Delete statistics rollups past what any window reads (stats.KEPT); folded
        minutes go with their hour's start, up to 59 minutes before the minutes would."""
        now = self.clock()
        total = 0
        for grain, kept in stats.KEPT.items():
            total += await _in_batches(functools.partial(
                self.store.delete_old_attempt_stats, grain, now - kept, DELETE_BATCH))
        total += await _in_batches(functools.partial(
            self.store.delete_old_folded_attempt_stats, now - stats.KEPT["minute"],
            DELETE_BATCH))
        return total

    async def fold_stats(self) -> int:
        """Fold the minute rollups of every hour that has ended (stats.foldable_before),
        oldest first, each hour once a run; how many minute rows it folded. (Dispatchers
        folding at once split an hour's rows between their folds, which readers add up.)"""
        before = stats.foldable_before(self.clock())
        folded = 0
        minute = await self.store.next_loose_minute(datetime.min.replace(tzinfo=UTC))
        while minute is not None and minute < before:
            hour = stats.period_start(minute, "hour")
            folded += await self.store.fold_attempt_stats(hour)
            minute = await self.store.next_loose_minute(hour + stats.GRAINS["hour"])
        return folded

    async def forget_expired_sends(self) -> None:
        """Drop the in-flight counts of sends whose lease expired (a dispatcher died)."""
        await self.store.forget_expired_sends(self.clock())

    async def prune_events(self) -> int:
        """Delete finished events past retention, with their deliveries, in small batches."""
        cutoff = self.clock() - self.settings.retention
        total = await _in_batches(functools.partial(self.store.delete_old_events, cutoff,
                                                    DELETE_BATCH))
        if total:
            log.info("deleted %d events older than %s", total, cutoff.isoformat())
        return total

    async def disable_failing(self) -> list[str]:
        """Disable active subscriptions that have failed continuously for too long."""
        now = self.clock()
        limit = format_duration(self.settings.disable_after)
        reason = f"failing continuously for more than {limit}"
        disabled = await self.store.disable_failing_subscriptions(
            now, now - self.settings.disable_after, reason
        )
        for subscription_id in disabled:
            metrics.DISABLED.labels("failing").inc()
            log.warning("disabled subscription %s: %s", subscription_id, reason,
                        extra={"subscription_id": subscription_id})
        return disabled

    async def refresh_gauges(self) -> None:
        gauges = await self.store.delivery_gauges(self.clock())
        metrics.DELIVERIES_PENDING.set(gauges.pending)
        metrics.DELIVERIES_DUE.set(gauges.due)
        metrics.OLDEST_DUE_SECONDS.set(gauges.oldest_due_seconds)
        by_status = await self.store.subscriptions_by_status()
        for status in ("active", "paused", "disabled", "deleted"):
            metrics.SUBSCRIPTIONS.labels(status).set(by_status.get(status, 0))
        backlogs = await self.store.largest_backlogs(BACKLOG_TOP)
        metrics.BACKLOG.clear()
        for subscription_id, backlog in backlogs.items():
            metrics.BACKLOG.labels(subscription_id).set(backlog)

    async def run_all(self) -> None:
        await self.keep_partitions()
        await self.prune_events()
        await self.prune_stats()
        await self.fold_stats()
        await self.forget_expired_sends()
        await self.disable_failing()
        await self.refresh_gauges()

    def start(self) -> None:
        """Schedule every job in the running event loop, the first runs at once."""
        scheduler = AsyncIOScheduler(timezone="UTC")
        every = self.settings.maintenance_interval.total_seconds()
        jobs = [
            (self.keep_partitions, every),
            (self.prune_events, every),
            (self.prune_stats, every),
            (self.fold_stats, every),
            (self.forget_expired_sends, every),
            (self.disable_failing, every),
            (self.refresh_gauges, self.settings.gauges_interval.total_seconds()),
        ]
        now = utcnow()
        for job, seconds in jobs:
            scheduler.add_job(_waiting_out_the_database(job), "interval", seconds=seconds,
                              next_run_time=now, max_instances=1, coalesce=True,
                              name=job.__name__)
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None


async def _in_batches(delete: Callable[[], Awaitable[int]]) -> int:
    """Run `delete` (of at most DELETE_BATCH rows) until it deletes fewer; how many in all."""
    total = 0
    while True:
        deleted = await delete()
        total += deleted
        if deleted < DELETE_BATCH:
            return total


def _waiting_out_the_database(job: Callable[[], Awaitable[object]]
                              ) -> Callable[[], Awaitable[None]]:
    """`job`, which skips its run with one line while the database is away (the next run
    tries again) instead of logging a traceback every time."""

    async def run() -> None:
        try:
            await job()
        except DATABASE_DOWN as error:
            log.warning("%s skipped: the database is unavailable (%s)", job.__name__, error)

    return run
