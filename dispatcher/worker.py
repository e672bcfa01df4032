"""The dispatcher loop: claim due deliveries, send them, record every attempt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from datetime import UTC, datetime

import asyncpg

from dispatcher.concurrency import START, Concurrency
from dispatcher.policy import DeliveryPolicy, parse_policy
from dispatcher.schedule import Outcome
from dispatcher.sender import Sender
from dispatcher.verdict import GONE_REASON, AttemptResult, cut_off, decide, unknown_outcome
from hookpost import metrics
from hookpost.clock import Clock, utcnow
from hookpost.database import DATABASE_DOWN, QUERY_TIMEOUT, connect
from hookpost.ids import new_id
from hookpost.queries import QUERIES
from hookpost.settings import Settings
from hookpost.store import AttemptRecord, ClaimedDelivery, Store

NOTIFY_CHANNEL = "hookpost_deliveries"
# While the database is away, waits between tries grow from the first to the last: soon
# enough that delivery resumes within a few seconds of its return, rare enough not to spin.
_RETRY_FIRST, _RETRY_LAST = 0.1, 2.0
# After the shutdown grace, how long recording what was sent and handing back the rest
# may take before the process gives up on the database and exits anyway.
_FINAL_WRITE_SECONDS = 3.0
_LISTEN_CHECK_SECONDS = 10.0  # how often a quiet LISTEN connection is asked if it lives
# A loop that has not come round for this long is stuck: every wait in it is shorter, and
# every statement it runs gives up after QUERY_TIMEOUT.
_STUCK_SECONDS = 2 * QUERY_TIMEOUT + 10

log = logging.getLogger("hookpost.dispatcher")


class _Backoff:
    """Waits between tries of something that keeps failing: _RETRY_FIRST, then twice as
    long each time, up to _RETRY_LAST; back to the first once it works."""

    def __init__(self) -> None:
        self._next = _RETRY_FIRST

    def next(self) -> float:
        wait, self._next = self._next, min(self._next * 2, _RETRY_LAST)
        return wait

    def reset(self) -> None:
        self._next = _RETRY_FIRST


class Dispatcher:
    """Claims due deliveries with SKIP LOCKED and a lease, fairly across subscriptions,
    sends them concurrently (bounded globally, and per subscription by how it answers and
    by its own limits) and records each attempt in batches."""

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
        self.name = new_id("dsp")  # for the logs; each claim's leases get a token of their own
        self._sender = sender
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._sending: dict[str, asyncio.Task[None]] = {}
        # Deliveries whose request has gone out (or is going), with when it began: what a
        # shutdown cuts off is recorded as cut off, not handed back as unsent.
        self._sent_at: dict[str, datetime] = {}
        self._recorded: set[str] = set()  # answered, the record buffered, the task not ended
        self._claimed: dict[str, ClaimedDelivery] = {}  # every delivery held, by id
        self._per_subscription: Counter[str] = Counter()  # deliveries held, by subscription
        self._sending_to: Counter[str] = Counter()  # of which being sent now
        self._gates: dict[str, asyncio.Condition] = {}
        self._waiting: Counter[str] = Counter()  # deliveries waiting at each gate
        self._concurrency = Concurrency(ceiling=settings.max_per_subscription,
                                        max_in_flight=settings.max_in_flight)
        self._records: list[AttemptRecord] = []
        self._unrecorded = 0  # attempts sent whose record is not yet in the database
        self._records_ready = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._last_tick: float | None = None
        self._database_down_since: float | None = None
        self._claim_backoff = _Backoff()
        self._failed = False
        self._claimed_at = datetime.min.replace(tzinfo=UTC)  # the time the last claim saw

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
                proxy=None if self.settings.proxy is None
                else self.settings.proxy.get_secret_value(),
            )
        side_tasks = [asyncio.create_task(self._write_records_forever(), name="records")]
        if self.settings.listen_notify and not until_idle and self.store.url is not None:
            side_tasks.append(asyncio.create_task(self._listen_forever(), name="listener"))
        try:
            await self._loop(until_idle, side_tasks)
        except BaseException:
            self._failed = True
            raise
        finally:
            await self._shut_down(side_tasks)
            if own_sender:
                await self._sender.close()
                self._sender = None

    @property
    def alive(self) -> bool:
        """False once the loop has died or stopped coming round (for /health): a process
        whose dispatcher cannot go on must not look healthy. A database that is away does
        not make it so: the loop keeps coming round while it waits."""
        if self._failed:
            return False
        if self._last_tick is None:
            return True  # starting
        return time.monotonic() - self._last_tick < _STUCK_SECONDS

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
                await self._wait(self._database_down(error), side_tasks)
                continue
            except asyncpg.TransactionRollbackError as error:
                # Lost a deadlock with another writer of the same rows: nothing was taken.
                log.warning("claiming again: %s", error)
                await self._wait(0.05, side_tasks)
                continue
            if self._database_down_since is not None:
                log.warning("database back after %.1fs; delivering again",
                            time.monotonic() - self._database_down_since)
                self._database_down_since = None
                self._claim_backoff.reset()
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

    def _database_down(self, error: BaseException) -> float:
        """Note that the database is away; how long to wait before trying again."""
        if self._database_down_since is None:
            self._database_down_since = time.monotonic()
            log.warning("database unavailable, retrying: %s", error)
        return self._claim_backoff.next()

    def _free_slots(self) -> int:
        # An attempt holds its place until it is recorded, so a slow database slows the
        # sending instead of piling up records in memory.
        return self.settings.max_in_flight - len(self._sending) - self._unrecorded

    async def _claim(self) -> int:
        free = self._free_slots()
        if free <= 0:
            return 0
        # Each subscription's room comes from how it has answered (dispatcher/concurrency.py);
        # the gate in _deliver keeps the sends themselves within its current limit.
        now = self._claimed_at = self.clock()
        self._concurrency.forget_idle(self._per_subscription)
        claimed = await self.store.claim_due(
            now,
            min(free, self.settings.claim_batch),
            now + self.settings.lease,
            # A token per claim, so a late record of a lease this dispatcher lost and
            # claimed again can never move the delivery under the new lease.
            new_id("lease"),
            self._concurrency.room(self._per_subscription),
            START,
        )
        taken_over = 0
        for delivery in claimed:
            if delivery.taken_over:
                delivery = self._take_over(delivery)
                taken_over += 1
            self._per_subscription[delivery.subscription_id] += 1
            self._claimed[delivery.id] = delivery
            task = asyncio.create_task(self._deliver(delivery), name=delivery.id)
            self._sending[delivery.id] = task
            metrics.IN_FLIGHT.inc()
        if taken_over:
            log.warning("took over %d deliveries whose lease expired", taken_over)
        return len(claimed)

    def _take_over(self, delivery: ClaimedDelivery) -> ClaimedDelivery:
        """Log that an earlier lease on `delivery` ended unrecorded, as an attempt of unknown
        outcome; the delivery as this dispatcher now sends it, one attempt further on."""
        # The earlier lease was taken one lease's length before it expired (as near as this
        # dispatcher can tell, all dispatchers sharing the setting).
        expired = delivery.expired_lease or delivery.lease_expires_at
        leased_at = expired - self.settings.lease
        self._add_record(decide(delivery, unknown_outcome(leased_at), self.clock(),
                                self.settings.retry_schedule))
        return delivery._replace(attempt_count=delivery.attempt_count + 1)

    def _add_record(self, record: AttemptRecord) -> None:
        self._records.append(record)
        self._unrecorded += 1
        self._records_ready.set()

    async def _seconds_until_due(self, until_idle: bool) -> float:
        poll = self.settings.poll_interval.total_seconds()
        if until_idle:
            return poll
        try:
            due = await self.store.next_due_at(self.clock())
        except DATABASE_DOWN:
            return poll
        if due is None or due <= self._claimed_at:
            # Nothing due, or work the last claim saw and could not take (each subscription
            # with some is at its limit): only a freed slot, new work or the poll lets it in.
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
        subscription = delivery.subscription_id
        gate = self._gates.get(subscription)
        if gate is None:
            gate = self._gates[subscription] = asyncio.Condition()
        try:
            if delivery.send_at is not None:  # paced by the subscription's rate_limit
                await asyncio.sleep(max((delivery.send_at - self.clock()).total_seconds(), 0))
            await self._enter_gate(gate, delivery)
            try:
                now = self.clock()
                if self._lease_too_short(delivery, now):
                    await self._hand_back(delivery)
                    return
                self._sent_at[delivery.id] = now
                policy = parse_policy(delivery.policy)
                result = await self._sender.send(
                    delivery.url, delivery.event_id, delivery.payload, delivery.signing_secrets,
                    delivery.ed25519_key,
                    policy.headers,
                )
                record = self._record(delivery, result, policy)
                self._concurrency.answered(subscription, succeeded=record.outcome == "succeeded",
                                           error_kind=record.error_kind)
                self._add_record(record)
                self._recorded.add(delivery.id)
                del self._sent_at[delivery.id]
            finally:
                self._sending_to[subscription] -= 1
        except Exception:
            # A bug must not take the other deliveries down; this one goes out again once
            # its lease expires.
            log.exception("sending %s failed unexpectedly", delivery.id,
                          extra={"delivery_id": delivery.id})
        finally:
            self._sent_at.pop(delivery.id, None)
            self._recorded.discard(delivery.id)
            del self._sending[delivery.id]
            del self._claimed[delivery.id]
            metrics.IN_FLIGHT.dec()
            self._per_subscription[subscription] -= 1
            if self._per_subscription[subscription] <= 0:
                del self._per_subscription[subscription]
                del self._sending_to[subscription]
                self._gates.pop(subscription, None)
            elif self._waiting[subscription]:
                # As many as may go now: the slot this one freed, and one more if its
                # success raised the limit.
                async with gate:
                    gate.notify(self._concurrency.limit(subscription, delivery.max_concurrency)
                                - self._sending_to[subscription])
            self._slot_freed.set()

    async def _enter_gate(self, gate: asyncio.Condition, delivery: ClaimedDelivery) -> None:
        """Wait until the subscription may have one more send out, and count it."""
        subscription = delivery.subscription_id

        def may_send() -> bool:
            return self._sending_to[subscription] < self._concurrency.limit(
                subscription, delivery.max_concurrency)

        if may_send():  # the common case: no lock, no wait
            self._sending_to[subscription] += 1
            return
        self._waiting[subscription] += 1
        try:
            async with gate:
                await gate.wait_for(may_send)
                self._sending_to[subscription] += 1
        finally:
            self._waiting[subscription] -= 1
            if self._waiting[subscription] <= 0:
                del self._waiting[subscription]

    def _lease_too_short(self, delivery: ClaimedDelivery, now: datetime) -> bool:
        """Whether the lease could run out before a send started `now` ends: after a long
        wait at its subscription's gate, another dispatcher might take it over mid-send."""
        return now + self.settings.request_timeout >= delivery.lease_expires_at

    async def _hand_back(self, delivery: ClaimedDelivery) -> None:
        with contextlib.suppress(*DATABASE_DOWN):  # else the lease just runs out
            await self.store.release_leases({delivery.id: delivery.lease_token}, self.clock())

    def _record(self, delivery: ClaimedDelivery, result: AttemptResult,
                policy: DeliveryPolicy) -> AttemptRecord:
        """The verdict on one attempt, under its subscription's policy, counted and logged."""
        record = decide(delivery, result, self.clock(), self.settings.retry_schedule, policy)
        metrics.attempts_counter(
            record.outcome, metrics.response_class(result.status, record.error_kind)).inc()
        metrics.ATTEMPT_SECONDS.observe(result.duration_ms / 1000)
        # Successes are many and all in the database and the metrics; the rest is news.
        level = logging.DEBUG if record.outcome == Outcome.SUCCEEDED else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level, "attempt %d of %s (subscription %s, event %s, %s): %s",
                record.attempt_number, delivery.id, delivery.subscription_id,
                delivery.event_id, delivery.event_type, result.status or record.error_kind,
                extra={"delivery_id": delivery.id, "subscription_id": delivery.subscription_id,
                       "event_id": delivery.event_id, "event_type": delivery.event_type,
                       "attempt": record.attempt_number, "outcome": record.outcome,
                       "status": result.status, "error_kind": record.error_kind},
            )
        return record

    async def _write_records_forever(self) -> None:
        while True:
            await self._records_ready.wait()
            self._records_ready.clear()
            await self._write_records()

    async def _write_records(self) -> None:
        """Write every buffered attempt; keep them and retry while the database is down."""
        backoff = _Backoff()
        async with self._write_lock:
            while self._records:
                batch, self._records = self._records, []
                try:
                    disabled = await self.store.record_attempts(batch, self.clock())
                except DATABASE_DOWN as error:
                    self._records[:0] = batch
                    log.warning("cannot record %d attempts yet: %s", len(batch), error)
                    await asyncio.sleep(backoff.next())
                    continue
                except asyncpg.TransactionRollbackError as error:
                    # A deadlock with another writer of the same subscriptions' health (a
                    # second dispatcher, upkeep, the API): none of the batch was written,
                    # so it is written again.
                    self._records[:0] = batch
                    log.warning("recording %d attempts again: %s", len(batch), error)
                    await asyncio.sleep(0.05)
                    continue
                except BaseException:
                    self._records[:0] = batch  # cancelled (or a bug): kept for a last try
                    raise
                backoff.reset()
                self._unrecorded -= len(batch)
                self._slot_freed.set()
                for subscription_id, reason in disabled.items():
                    metrics.DISABLED.labels("gone" if reason == GONE_REASON else "policy").inc()
                    log.warning("disabled subscription %s: %s", subscription_id, reason,
                                extra={"subscription_id": subscription_id})

    async def _listen_forever(self) -> None:
        """Hold a LISTEN connection of its own, outside the pools, reconnecting whenever it
        drops; polling covers whatever is sent while it is away."""
        assert self.store.url is not None

        def on_notify(*_: object) -> None:
            self._wake.set()

        backoff = _Backoff()
        lost = asyncio.Event()
        while True:
            lost.clear()
            try:
                connection = await connect(self.store.url)
            except DATABASE_DOWN as error:
                log.debug("LISTEN connection not made yet: %s", error)
                await asyncio.sleep(backoff.next())
                continue
            try:
                connection.add_termination_listener(lambda _: lost.set())
                await connection.add_listener(NOTIFY_CHANNEL, on_notify)
                backoff.reset()
                self._wake.set()  # anything sent while we were not listening
                while not lost.is_set() and not connection.is_closed():
                    # A server that vanishes without closing the socket is found by asking.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), _LISTEN_CHECK_SECONDS)
                    if not lost.is_set():
                        await connection.execute(QUERIES["ping"], timeout=5)
            except DATABASE_DOWN as error:
                log.warning("LISTEN connection lost, reconnecting: %s", error)
            finally:
                connection.terminate()
            await asyncio.sleep(backoff.next())

    async def _shut_down(self, side_tasks: list[asyncio.Task[None]]) -> None:
        """Let attempts in flight finish within the grace period; record them, and those
        cut off as cut off; hand back the leases of anything not sent. Bounded in time:
        a database that is away then does not keep the process from exiting."""
        if self._sending:
            grace = self.settings.shutdown_grace.total_seconds()
            log.info("stopping: waiting up to %gs for %d attempts in flight", grace,
                     len(self._sending))
            _, pending = await asyncio.wait(list(self._sending.values()), timeout=grace)
            sent, recorded = dict(self._sent_at), set(self._recorded)
            held = {task.get_name(): self._claimed[task.get_name()] for task in pending}
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            now = self.clock()
            unsent: dict[str, str] = {}
            for id, delivery in held.items():
                if id in sent:
                    self._add_record(decide(delivery, cut_off(sent[id], now), now,
                                            self.settings.retry_schedule))
                elif id not in recorded:  # its answer is in the buffer already
                    unsent[id] = delivery.lease_token
            if pending:
                log.warning("cut off %d sends at the end of the grace period; %d deliveries "
                            "were not sent", len(pending) - len(unsent), len(unsent))
            if unsent:
                with contextlib.suppress(*DATABASE_DOWN, TimeoutError):
                    await asyncio.wait_for(self.store.release_leases(unsent, self.clock()),
                                           _FINAL_WRITE_SECONDS)
                    log.info("handed back %d unsent deliveries", len(unsent))
        try:
            await asyncio.wait_for(self._write_records(), _FINAL_WRITE_SECONDS)
        except TimeoutError:
            log.error("could not record %d attempts before stopping: the database is away; "
                      "their deliveries go out again when their leases expire",
                      len(self._records))
        for task in side_tasks:
            task.cancel()
        await asyncio.gather(*side_tasks, return_exceptions=True)
