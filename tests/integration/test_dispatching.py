"""How dispatchers find work and share it: NOTIFY, polling, SKIP LOCKED, leases, bounds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient
from asyncpg.pool import PoolConnectionProxy

from dispatcher.worker import Dispatcher
from hookpost.clock import utcnow
from hookpost.database import create_pool
from hookpost.ids import new_id
from hookpost.settings import Settings
from hookpost.store import QUERIES, AttemptRecord, Store
from tests.conftest import FakeClock
from tests.integration.conftest import (
    Keys,
    Receiver,
    answer_after,
    make_dispatcher,
    make_settings,
    post_event,
    subscribe,
    wait_for,
)


async def backlog(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, count: int
) -> list[dict[str, Any]]:
    """A subscription to the receiver and `count` events for it, in order; the events."""
    await subscribe(api, keys.subscriber, receiver.url())
    return [await post_event(api, keys.producer, data={"n": n}) for n in range(count)]


@asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    """The dispatcher running in the background until the block ends."""
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await task


async def listening(pool: asyncpg.Pool) -> bool:
    """True once a connection of this database waits on LISTEN."""
    count: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
    )
    return count > 0


async def test_notify_wakes_an_idle_dispatcher_at_once(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, pool: asyncpg.Pool,
    database_url: str,
) -> None:
    settings = make_settings(database_url, poll_interval=timedelta(seconds=60))
    await subscribe(api, keys.subscriber, receiver.url())
    async with running(make_dispatcher(store, settings)):
        await wait_for(lambda: listening(pool))
        await asyncio.sleep(0.2)  # let the loop settle into its minute-long wait
        event = await post_event(api, keys.producer)
        await wait_for(lambda: len(receiver.requests) == 1, timeout=5)
    assert receiver.requests[0].headers["webhook-id"] == event["id"]


async def test_polling_delivers_when_no_notification_arrives(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, database_url: str,
) -> None:
    settings = make_settings(database_url, listen_notify=False,
                             poll_interval=timedelta(milliseconds=200))
    await subscribe(api, keys.subscriber, receiver.url())
    async with running(make_dispatcher(store, settings)):
        await asyncio.sleep(0.3)  # the dispatcher is idle before the event exists
        event = await post_event(api, keys.producer)
        await wait_for(lambda: len(receiver.requests) == 1, timeout=5)
    assert receiver.requests[0].headers["webhook-id"] == event["id"]


async def test_two_dispatchers_never_send_the_same_delivery(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, pool: asyncpg.Pool,
    database_url: str,
) -> None:
    receiver.respond = answer_after(0.01)
    events = await backlog(api, keys, receiver, 80)
    settings = make_settings(database_url, max_in_flight=8, claim_batch=4)
    other_pool = await create_pool(database_url, min_size=1, max_size=4)
    dispatchers = [make_dispatcher(store, settings), make_dispatcher(Store(other_pool), settings)]
    busiest = [0, 0]

    async def watch() -> None:
        while True:
            for place, dispatcher in enumerate(dispatchers):
                busiest[place] = max(busiest[place], dispatcher.in_flight)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*(d.run(until_idle=True) for d in dispatchers))
    finally:
        watcher.cancel()
        await other_pool.close()

    sent = [r.headers["webhook-id"] for r in receiver.requests]
    assert sorted(sent) == sorted(e["id"] for e in events)  # each once, none missing
    assert all(busy > 0 for busy in busiest), busiest  # both took part
    attempts = await pool.fetchval("SELECT count(*) FROM attempts")
    assert attempts == len(events)


def dispatcher_process(database_url: str) -> subprocess.Popen[bytes]:
    """A real `hookpost dispatcher` process on the test database."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HOOKPOST_")},
        "DATABASE_URL": database_url,
        "HOOKPOST_ALLOWED_NETWORKS": "127.0.0.0/8",
        "HOOKPOST_ALLOW_HTTP": "true",
        "HOOKPOST_LEASE": "2m",
        "HOOKPOST_METRICS_PORT": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "hookpost.cli", "dispatcher"], env=environment,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def test_leases_of_a_killed_dispatcher_are_taken_over_once_they_expire(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, pool: asyncpg.Pool,
    settings: Settings, database_url: str,
) -> None:
    async def hang_then_answer(request: web.Request, number: int) -> web.StreamResponse:
        if number <= 1:
            await receiver.released.wait()
        return web.Response(text="ok")

    receiver.respond = hang_then_answer
    [event] = await backlog(api, keys, receiver, 1)

    process = dispatcher_process(database_url)
    try:
        await wait_for(lambda: len(receiver.requests) == 1, timeout=30)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    leased = await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE status = 'pending' AND lease_token IS NOT NULL"
    )
    assert leased == 1

    clock = FakeClock(utcnow())
    survivor = make_dispatcher(store, settings, clock)
    clock.advance(timedelta(minutes=1))
    await survivor.run(until_idle=True)
    assert len(receiver.requests) == 1, "a lease was taken before it expired"

    clock.advance(timedelta(minutes=1, seconds=1))
    await survivor.run(until_idle=True)

    assert [r.headers["webhook-id"] for r in receiver.requests] == [event["id"]] * 2
    statuses = await pool.fetch("SELECT status, attempt_count FROM deliveries")
    assert [(row["status"], row["attempt_count"]) for row in statuses] == [("succeeded", 2)]
    # The killed dispatcher's send reached the receiver unrecorded: the log says so.
    attempts = await pool.fetch(
        "SELECT attempt_number, error_kind, outcome FROM attempts ORDER BY attempt_number"
    )
    assert [tuple(row) for row in attempts] == [(1, "unknown", "retry"), (2, None, "succeeded")]
    # Logged as of when the killed dispatcher took its lease, not when it was taken over.
    unknown, taken_over = await pool.fetch(
        "SELECT started_at FROM attempts ORDER BY attempt_number")
    assert taken_over["started_at"] - unknown["started_at"] > timedelta(minutes=2)


async def test_sends_are_bounded_per_subscription_and_in_all(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, database_url: str,
) -> None:
    receiver.respond = answer_after(0.05)
    await subscribe(api, keys.subscriber, receiver.url("/a"), ["a.*"])
    await subscribe(api, keys.subscriber, receiver.url("/b"), ["b.*"])
    for n in range(6):
        await post_event(api, keys.producer, "a.created", {"n": n})
        await post_event(api, keys.producer, "b.created", {"n": n})
    settings = make_settings(database_url, max_in_flight=3, max_per_subscription=2)

    await make_dispatcher(store, settings).run(until_idle=True)

    assert len(receiver.requests) == 12
    assert receiver.most_busy["/a"] == 2
    assert receiver.most_busy["/b"] == 2
    assert receiver.most_busy_in_all == 3


class GatedStore(Store):
    """A store whose attempt records wait until the gate opens."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.gate = asyncio.Event()

    async def record_attempts(
        self, records: Sequence[AttemptRecord], now: datetime
    ) -> dict[str, str]:
        await self.gate.wait()
        return await super().record_attempts(records, now)


class DeadlockingStore(Store):
    """A store whose first attempt record loses a deadlock, as Postgres reports it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.refused = 0

    async def record_attempts(
        self, records: Sequence[AttemptRecord], now: datetime
    ) -> dict[str, str]:
        if self.refused == 0:
            self.refused += 1
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return await super().record_attempts(records, now)


async def test_a_record_that_loses_a_deadlock_is_written_again(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
    database_url: str,
) -> None:
    await backlog(api, keys, receiver, 3)
    store = DeadlockingStore(pool)

    await make_dispatcher(store, make_settings(database_url)).run(until_idle=True)

    assert store.refused == 1
    assert len(receiver.requests) == 3
    assert await pool.fetchval("SELECT count(*) FROM attempts") == 3
    assert await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE status = 'succeeded'") == 3


class WatchedStore(Store):
    """A store that notes how many deliveries the receiver had whenever the dispatcher
    asks when the next one falls due."""

    def __init__(self, pool: asyncpg.Pool, receiver: Receiver) -> None:
        super().__init__(pool)
        self.receiver = receiver
        self.asked_at: list[int] = []

    async def next_due_at(self, now: datetime) -> datetime | None:
        self.asked_at.append(len(self.receiver.requests))
        return await super().next_due_at(now)


async def test_a_dispatcher_with_every_slot_taken_does_not_ask_when_work_falls_due(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
    database_url: str,
) -> None:
    await backlog(api, keys, receiver, 1)
    warm_up = WatchedStore(pool, receiver)
    settings = make_settings(database_url, max_in_flight=4)
    dispatcher = make_dispatcher(warm_up, settings)
    await dispatcher.run(until_idle=True)  # one success: the subscription may have more out
    for n in range(24):
        await post_event(api, keys.producer, data={"n": n})
    store = WatchedStore(pool, receiver)
    dispatcher.store = store

    async with running(dispatcher):
        await wait_for(lambda: pool.fetchval(
            "SELECT count(*) = 25 FROM deliveries WHERE status = 'succeeded'"))

    # Asked only once the backlog was smaller than the slots, never while they were full.
    assert all(sent >= 25 - 4 for sent in store.asked_at), store.asked_at


async def test_attempts_not_yet_recorded_count_against_the_in_flight_bound(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
    database_url: str,
) -> None:
    await backlog(api, keys, receiver, 12)
    store = GatedStore(pool)
    settings = make_settings(database_url, max_in_flight=4, poll_interval=timedelta(seconds=1))

    async with running(make_dispatcher(store, settings)):
        try:
            await wait_for(lambda: len(receiver.requests) == 4)
            # While no record can be written, nothing more is sent, however long it waits.
            await asyncio.sleep(0.5)
            sent_while_held = len(receiver.requests)
        finally:
            store.gate.set()
        assert sent_while_held == 4
        await wait_for(lambda: len(receiver.requests) == 12)
        await wait_for(lambda: pool.fetchval(
            "SELECT count(*) = 12 FROM deliveries WHERE status = 'succeeded'"))


async def test_a_busy_subscription_has_its_next_attempts_claimed_ahead_of_its_sends(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, database_url: str,
) -> None:
    receiver.respond = answer_after(0.1)
    await backlog(api, keys, receiver, 8)
    dispatcher = make_dispatcher(store, make_settings(database_url, max_per_subscription=2))
    most_held = 0

    async def watch() -> None:
        nonlocal most_held
        while True:
            most_held = max(most_held, dispatcher.in_flight)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        await dispatcher.run(until_idle=True)
    finally:
        watcher.cancel()

    assert len(receiver.requests) == 8
    assert receiver.most_busy_in_all == 2  # the sends keep to the bound
    assert most_held == 4  # while the next two wait here, already claimed


async def claim_on(connection: PoolConnectionProxy[Any], limit: int, lease: str,
                   per_subscription: int = 100) -> list[asyncpg.Record]:
    """The claim statement, run on `connection` inside whatever transaction it has open."""
    now = utcnow()
    return await connection.fetch(QUERIES["claim_due"], now, limit, now + timedelta(minutes=2),
                                  lease, [], per_subscription, [])


async def test_a_claim_locks_only_the_deliveries_it_takes(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
) -> None:
    await backlog(api, keys, receiver, 10)
    async with pool.acquire() as first, pool.acquire() as second, first.transaction():
        assert len(await claim_on(first, 2, "lease_first")) == 2
        # The first claim is not committed yet; every row it did not take is free.
        async with second.transaction():
            assert len(await claim_on(second, 10, "lease_second")) == 8


async def test_a_claim_rewrites_each_row_in_place_without_touching_an_index(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
) -> None:
    await backlog(api, keys, receiver, 1)
    # Enough rows to fill several pages, claimed in the order they were written.
    await pool.execute(
        "INSERT INTO deliveries (tenant_id, event_id, subscription_id, next_attempt_at,"
        " created_at, updated_at) SELECT tenant_id, event_id, subscription_id,"
        " next_attempt_at, created_at, updated_at FROM deliveries, generate_series(1, 399)")
    async with pool.acquire() as connection, connection.transaction():
        rows = await claim_on(connection, 200, new_id("lease"), per_subscription=1000)
        updated = await connection.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables"
            " WHERE relname = 'deliveries'")
    assert len(rows) == 200
    assert updated is not None
    assert (updated["n_tup_upd"], updated["n_tup_hot_upd"]) == (200, 200)


async def test_a_claim_alone_commits_without_waiting_for_the_disk(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
) -> None:
    await backlog(api, keys, receiver, 2)
    async with pool.acquire() as connection:
        async with connection.transaction():
            assert await connection.fetchval("SHOW synchronous_commit") == "on"
            assert len(await claim_on(connection, 1, "lease_x")) == 1
            assert await connection.fetchval("SHOW synchronous_commit") == "off"
        # The next transaction on this connection, a record say, waits for the disk again.
        assert await connection.fetchval("SHOW synchronous_commit") == "on"


async def test_deliveries_being_sent_are_not_due_until_their_lease_expires(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, pool: asyncpg.Pool,
) -> None:
    await backlog(api, keys, receiver, 2)
    now = utcnow()
    lease = now + timedelta(minutes=2)
    first = await store.claim_due(now, 1, lease, "lease_x", {}, 10)
    assert await store.next_due_at(now) == await pool.fetchval(
        "SELECT next_attempt_at FROM deliveries WHERE id <> $1", first[0].id)
    await store.claim_due(now, 1, lease, "lease_x", {}, 10)
    assert await store.next_due_at(now) is None
    assert await store.claim_due(now, 10, lease, "lease_y", {}, 10) == []

    later = lease + timedelta(seconds=1)
    assert await store.next_due_at(later) == first[0].next_attempt_at
    taken = await store.claim_due(later, 10, later + timedelta(minutes=2), "lease_y", {}, 10)
    assert len(taken) == 2 and all(delivery.taken_over for delivery in taken)


async def test_a_claim_takes_from_every_subscription_with_due_work_in_turn(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
) -> None:
    busy = await subscribe(api, keys.subscriber, receiver.url("/busy"), ["busy.event"])
    quiet = await subscribe(api, keys.subscriber, receiver.url("/quiet"), ["quiet.event"])
    for _ in range(30):  # due first
        await post_event(api, keys.producer, type="busy.event")
    await post_event(api, keys.producer, type="quiet.event")
    now = utcnow()
    lease = now + timedelta(minutes=2)

    first = await store.claim_due(now, 4, lease, "lease_x", {}, 10)

    # The quiet subscription's one fresh event does not wait behind the busy backlog.
    taken = Counter(d.subscription_id for d in first)
    assert taken == {busy["id"]: 2, quiet["id"]: 1}  # an equal share each, at most
    # What a subscription may still take bounds it; the others' room is untouched.
    room = {busy["id"]: 2, quiet["id"]: 0}
    second = await store.claim_due(now, 10, lease, "lease_x", room, 10)
    assert Counter(d.subscription_id for d in second) == {busy["id"]: 2}
    assert await store.claim_due(now, 10, lease, "lease_x", {busy["id"]: 0}, 10) == []


async def test_the_claim_is_round_robin_across_many_subscriptions(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
) -> None:
    subscriptions = [
        await subscribe(api, keys.subscriber, receiver.url(f"/s{n}"), [f"s{n}.event"])
        for n in range(5)
    ]
    for n in range(5):
        for _ in range(4 if n < 4 else 1):
            await post_event(api, keys.producer, type=f"s{n}.event")
    now = utcnow()

    claimed = await store.claim_due(now, 5, now + timedelta(minutes=2), "lease_x", {}, 10)

    assert {d.subscription_id for d in claimed} == {s["id"] for s in subscriptions}
