"""The dispatcher loop: claim due deliveries, send them, record every attempt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

import asyncpg

from dispatcher.schedule import Outcome, after_attempt, classify, parse_retry_after
from dispatcher.sender import Response, Sender
from hookpost import metrics
from hookpost.clock import Clock, utcnow
from hookpost.database import DATABASE_DOWN
from hookpost.ids import new_id
from hookpost.settings import Settings
from hookpost.store import AttemptRecord, ClaimedDelivery, Store

NOTIFY_CHANNEL = "hookpost_deliveries"
_RETRY_AFTER_STATUSES = (429, 503)
_CLAIM_AHEAD = 2  # deliveries held per subscription, in multiples of its send bound

log = logging.getLogger("hookpost.dispatcher")


class Dispatcher:
    """Claims due deliveries with SKIP LOCKED and a lease, sends them concurrently (bounded
    globally and per subscription) and records each attempt in batches."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        clock: Clock = utcnow,
        sender: Sender | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.lease_token = new_id("lease")
        self._sender = sender
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._per_subscription: Counter[str] = Counter()
        self._subscription_slots: dict[str, asyncio.Semaphore] = {}
        self._records: list[AttemptRecord] = []
        self._unrecorded = 0  # attempts sent whose record is not yet in the database
        self._records_ready = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._last_tick: float | None = None

    def stop(self) -> None:
        """Ask the loop to stop: claim nothing new, finish or hand back what is in flight."""
        self._stop.set()

    def wake(self) -> None:
        """New work may be due (NOTIFY arrived)."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._sending)

    async def run(self, *, until_idle: bool = False) -> None:
        """Deliver until stopped; with `until_idle`, return once nothing is due or in flight."""
        own_sender = self._sender is None
        if self._sender is None:
            self._sender = Sender(
                allowed_networks=self.settings.allowed_networks,
                total_timeout=self.settings.request_timeout.total_seconds(),
                connect_timeout=self.settings.connect_timeout.total_seconds(),
                clock=self.clock,
            )
        side_tasks = [asyncio.create_task(self._write_records_forever(), name="records")]
        if self.settings.listen_notify and not until_idle:
            side_tasks.append(asyncio.create_task(self._listen_forever(), name="listener"))
        try:
            await self._loop(until_idle, side_tasks)
        finally:
            await self._shut_down(side_tasks)
            if own_sender:
                await self._sender.close()
                self._sender = None

    @property
    def ticking(self) -> bool:
        """Whether the loop has come round lately (for /ready)."""
        if self._last_tick is None:
            return False
        limit = max(3 * self.settings.poll_interval.total_seconds(), 5.0)
        return time.monotonic() - self._last_tick < limit

    async def _loop(self, until_idle: bool, side_tasks: list[asyncio.Task[None]]) -> None:
        while not self._stop.is_set():
            self._last_tick = time.monotonic()
            for task in side_tasks:
                if task.done():
                    task.result()  # a side task that died stops the dispatcher loudly
                    raise RuntimeError(f"dispatcher task {task.get_name()} ended")
            try:
                claimed = await self._claim()
            except DATABASE_DOWN as error:
                log.warning("database unavailable, retrying: %s", error)
                await self._wait(self.settings.poll_interval.total_seconds(), side_tasks)
                continue
            if claimed:
                continue
            if until_idle and not self._sending and not self._unrecorded:
                return
            if self._free_slots() <= 0:
                # Only a freed slot (or a stop) can let more work in: no need to ask
                # Postgres when the next delivery falls due.
                await self._wait(self.settings.poll_interval.total_seconds(), side_tasks)
                continue
            await self._wait(await self._seconds_until_due(until_idle), side_tasks)

    def _free_slots(self) -> int:
        # An attempt holds its place until it is recorded, so a slow database slows the
        # sending instead of piling up records in memory.
        return self.settings.max_in_flight - len(self._sending) - self._unrecorded

    async def _claim(self) -> int:
        free = self._free_slots()
        if free <= 0:
            return 0
        # Up to twice the per-subscription bound is claimed, so the next attempt to a busy
        # subscription is already here when a send finishes; the semaphore in _deliver
        # keeps the sends themselves within the bound.
        now = self.clock()
        claimed = await self.store.claim_due(
            now,
            min(free, self.settings.claim_batch),
            now + self.settings.lease,
            self.lease_token,
            self._per_subscription,
            _CLAIM_AHEAD * self.settings.max_per_subscription,
        )
        taken_over = 0
        for delivery in claimed:
            taken_over += delivery.taken_over
            self._per_subscription[delivery.subscription_id] += 1
            task = asyncio.create_task(self._deliver(delivery), name=delivery.id)
            self._sending[delivery.id] = task
            metrics.IN_FLIGHT.inc()
        if taken_over:
            log.warning("took over %d deliveries whose lease expired", taken_over)
        return len(claimed)

    async def _seconds_until_due(self, until_idle: bool) -> float:
        poll = self.settings.poll_interval.total_seconds()
        if until_idle:
            return poll
        try:
            due = await self.store.next_due_at(self.clock())
        except DATABASE_DOWN:
            return poll
        if due is None:
            return poll
        return min(poll, max((due - self.clock()).total_seconds(), 0.0))

    async def _wait(self, seconds: float, side_tasks: list[asyncio.Task[None]]) -> None:
        """Wait for new work, a free slot, a stop, a dead side task, or `seconds`."""
        waits = [
            asyncio.create_task(self._wake.wait()),
            asyncio.create_task(self._slot_freed.wait()),
            asyncio.create_task(self._stop.wait()),
        ]
        try:
            await asyncio.wait([*waits, *side_tasks], timeout=seconds,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        self._wake.clear()
        self._slot_freed.clear()

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        assert self._sender is not None
        slot = self._subscription_slots.setdefault(
            delivery.subscription_id, asyncio.Semaphore(self.settings.max_per_subscription)
        )
        try:
            async with slot:
                response = await self._sender.send(
                    delivery.url, delivery.event_id, delivery.payload, delivery.signing_secrets
                )
            self._records.append(self._record(delivery, response))
            self._unrecorded += 1
            self._records_ready.set()
        except Exception:
            # A bug must not take the other deliveries down; this one goes out again once
            # its lease expires.
            log.exception("sending %s failed unexpectedly", delivery.id,
                          extra={"delivery_id": delivery.id})
        finally:
            del self._sending[delivery.id]
            metrics.IN_FLIGHT.dec()
            self._per_subscription[delivery.subscription_id] -= 1
            if self._per_subscription[delivery.subscription_id] <= 0:
                del self._per_subscription[delivery.subscription_id]
                self._subscription_slots.pop(delivery.subscription_id, None)
            self._slot_freed.set()

    def _record(self, delivery: ClaimedDelivery, response: Response) -> AttemptRecord:
        attempt_number = delivery.attempt_count + 1
        now = self.clock()
        retry_after = None
        if response.status in _RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(response.header("retry-after"), now)
        state = after_attempt(
            manual=delivery.manual,
            prior_status=delivery.status,
            scheduled_attempts=delivery.scheduled_attempts,
            next_attempt_before=delivery.next_attempt_at,
            outcome=classify(response.status),
            now=now,
            schedule=self.settings.retry_schedule,
            retry_after=retry_after,
        )
        outcome = state.outcome
        error_kind = None if response.error_kind is None else response.error_kind.value
        metrics.ATTEMPTS.labels(outcome.value,
                                metrics.response_class(response.status, error_kind)).inc()
        metrics.ATTEMPT_SECONDS.observe(response.duration_ms / 1000)
        # Successes are many and all in the database and the metrics; the rest is news.
        log.log(
            logging.DEBUG if outcome is Outcome.SUCCEEDED else logging.INFO,
            "attempt %d of %s (subscription %s, event %s, %s): %s",
            attempt_number, delivery.id, delivery.subscription_id, delivery.event_id,
            delivery.event_type, response.status or response.error_kind,
            extra={"delivery_id": delivery.id, "subscription_id": delivery.subscription_id,
                   "event_id": delivery.event_id, "event_type": delivery.event_type,
                   "attempt": attempt_number, "outcome": outcome.value,
                   "status": response.status, "error_kind": response.error_kind},
        )
        return AttemptRecord(
            delivery_id=delivery.id,
            lease_token=self.lease_token,
            attempt_number=attempt_number,
            trigger=delivery.trigger,
            started_at=response.started_at,
            duration_ms=response.duration_ms,
            response_status=response.status,
            response_headers=response.headers_json,
            response_body=response.body,
            error_kind=error_kind,
            error_message=response.error_message,
            outcome=outcome.value,
            next_attempt_at=state.next_attempt_at,
            status=state.status,
            scheduled_attempts=state.scheduled_attempts,
        )

    async def _write_records_forever(self) -> None:
        while True:
            await self._records_ready.wait()
            self._records_ready.clear()
            await self._write_records()

    async def _write_records(self) -> None:
        """Write every buffered attempt; keep them and retry while the database is down."""
        async with self._write_lock:
            while self._records:
                batch, self._records = self._records, []
                try:
                    disabled = await self.store.record_attempts(batch, self.clock())
                except DATABASE_DOWN as error:
                    self._records[:0] = batch
                    log.warning("cannot record %d attempts yet: %s", len(batch), error)
                    await asyncio.sleep(0.5)
                    continue
                except asyncpg.TransactionRollbackError as error:
                    # A deadlock with another writer of the same subscriptions' health (a
                    # second dispatcher, upkeep, the API): none of the batch was written,
                    # so it is written again.
                    self._records[:0] = batch
                    log.warning("recording %d attempts again: %s", len(batch), error)
                    await asyncio.sleep(0.05)
                    continue
                self._unrecorded -= len(batch)
                self._slot_freed.set()
                for subscription_id in disabled:
                    metrics.DISABLED.labels("gone").inc()
                    log.warning("disabled subscription %s: its endpoint answered 410 Gone",
                                subscription_id, extra={"subscription_id": subscription_id})

    async def _listen_forever(self) -> None:
        """Hold a LISTEN connection, reconnecting whenever it drops."""
        def on_notify(*_: object) -> None:
            self._wake.set()

        while True:
            try:
                async with self.store.pool.acquire() as connection:
                    await connection.add_listener(NOTIFY_CHANNEL, on_notify)
                    self._wake.set()  # anything sent while we were not listening
                    try:
                        while not connection.is_closed():
                            await asyncio.sleep(self.settings.poll_interval.total_seconds())
                    finally:
                        if not connection.is_closed():
                            await connection.remove_listener(NOTIFY_CHANNEL, on_notify)
            except DATABASE_DOWN as error:
                log.warning("LISTEN connection lost, reconnecting: %s", error)
                await asyncio.sleep(1.0)

    async def _shut_down(self, side_tasks: list[asyncio.Task[None]]) -> None:
        """Let in-flight attempts finish within the grace period, record them, and hand
        back the leases of anything not sent."""
        if self._sending:
            grace = self.settings.shutdown_grace.total_seconds()
            log.info("waiting up to %gs for %d attempts in flight", grace, len(self._sending))
            _, pending = await asyncio.wait(list(self._sending.values()), timeout=grace)
            unsent = [task.get_name() for task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if unsent:
                with contextlib.suppress(*DATABASE_DOWN):
                    await self.store.release_leases(self.lease_token, unsent, self.clock())
                log.info("handed back %d unsent deliveries", len(unsent))
        await self._write_records()
        for task in side_tasks:
            task.cancel()
        await asyncio.gather(*side_tasks, return_exceptions=True)

