"""The connection pools (sessions in UTC, nothing sent to Postgres on a release, the
dispatcher's hot statements planned once) and bringing an older schema over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.app import create_app
from api.auth import Role, create_key
from hookpost.database import DATABASE_DOWN, create_pool, migrate
from hookpost.settings import Settings
from hookpost.store import QUERIES, Store
from hookpost.store import _connection as store_connection
from tests.integration.conftest import (
    Keys,
    Receiver,
    make_dispatcher,
    post_event,
    start_from_schema,
    subscribe,
)


async def test_sessions_stay_in_utc_after_going_back_to_the_pool(database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'America/New_York'")
    finally:
        await connection.close()

    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        for _ in range(3):  # the one connection, released and taken again
            assert await pool.fetchval("SHOW timezone") == "UTC"
    finally:
        await pool.close()


async def test_releasing_a_connection_sends_no_query(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    sent: list[str] = []

    def log(record: Any) -> None:
        sent.append(record.query)

    try:
        async with pool.acquire() as connection:
            connection.add_query_logger(log)
        await pool.fetchval("SELECT 1")
        await pool.fetchval("SELECT 2")
    finally:
        await pool.close()
    assert sent == ["SELECT 1", "SELECT 2"]


async def _plans_made(pool: asyncpg.Pool, query: str) -> tuple[int, int]:
    async with pool.acquire() as connection:
        row = await connection.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement = $1", QUERIES[query])
    return (0, 0) if row is None else (row["generic_plans"], row["custom_plans"])


async def test_the_dispatch_pool_plans_the_claim_and_the_record_once(database_url: str) -> None:
    """On the dispatcher's pool, the claim and the record reuse one generic plan from the
    first call; on the ordinary pool, Postgres plans at least the first five calls anew."""
    ordinary = await create_pool(database_url, min_size=1, max_size=1)
    generic = await create_pool(database_url, min_size=1, max_size=1, generic_plans=True)
    try:
        for store in (Store(ordinary), Store(ordinary, generic)):
            for _ in range(8):
                now = datetime.now(UTC)
                await store.claim_due(now, 10, now + timedelta(minutes=1), "lease_test", {}, 4)
                await store.record_attempts([], now)
        for query in ("claim_due", "record_attempts"):
            assert (await _plans_made(ordinary, query))[1] >= 5
            assert await _plans_made(generic, query) == (8, 0)
    finally:
        await generic.close()
        await ordinary.close()


async def test_a_database_whose_claims_set_in_flight_is_brought_over(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, pool: asyncpg.Pool,
    settings: Settings,
) -> None:
    """Deliveries an older dispatcher left 'in_flight' get their status back and stay
    leased until the lease expires; then a dispatcher takes the pending one over."""
    await subscribe(api, keys.subscriber, receiver.url())
    sending = await post_event(api, keys.producer)
    redelivering = await post_event(api, keys.producer)
    await pool.execute("""
        ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
        ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
            CHECK (status IN ('pending', 'in_flight', 'succeeded', 'failed'));
        ALTER TABLE deliveries ADD COLUMN prior_status text;
        ALTER TABLE deliveries SET (fillfactor = 100);
        CREATE INDEX deliveries_leases ON deliveries (lease_expires_at)
            WHERE status = 'in_flight';
        UPDATE deliveries SET status = 'in_flight', lease_token = 'lease_gone',
            lease_expires_at = now() - interval '1 minute';
    """)
    await pool.execute("UPDATE deliveries SET prior_status = 'pending' WHERE event_id = $1",
                       sending["id"])
    await pool.execute("UPDATE deliveries SET prior_status = 'failed' WHERE event_id = $1",
                       redelivering["id"])

    await migrate(pool)

    rows = await pool.fetch("SELECT event_id, status, lease_token FROM deliveries")
    assert {(row["event_id"], row["status"], row["lease_token"]) for row in rows} == {
        (sending["id"], "pending", "lease_gone"), (redelivering["id"], "failed", "lease_gone")}
    assert await pool.fetchval("SELECT to_regclass('deliveries_leases')") is None
    assert await pool.fetchval(
        "SELECT reloptions FROM pg_class WHERE relname = 'deliveries'") == ["fillfactor=40"]
    await migrate(pool)  # and again, as every start does: nothing more changes

    await make_dispatcher(store, settings).run(until_idle=True)
    assert [request.headers["webhook-id"] for request in receiver.requests] == [sending["id"]]


async def test_a_connection_that_failed_unusably_is_not_given_to_the_next_caller(
    database_url: str,
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        first = await pool.fetchval("SELECT pg_backend_pid()")
        try:
            async with store_connection(pool):
                # What asyncpg raises when a connection broke under an operation.
                raise asyncpg.InternalClientError("cannot switch to state 12")
        except asyncpg.InternalClientError:
            pass
        assert await pool.fetchval("SELECT pg_backend_pid()") != first
        # A refusal that is not about the connection keeps it.
        second = await pool.fetchval("SELECT pg_backend_pid()")
        try:
            async with store_connection(pool) as connection:
                await connection.execute("SELECT 1/0")
        except asyncpg.DivisionByZeroError:
            pass
        assert await pool.fetchval("SELECT pg_backend_pid()") == second
    finally:
        await pool.close()


async def test_every_store_call_recovers_after_its_backends_are_terminated(
    store: Store, pool: asyncpg.Pool, database_url: str,
) -> None:
    await store.count_admin_keys()
    name = urlsplit(database_url).path.lstrip("/")
    killer = await asyncpg.connect(database_url)
    try:
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    finally:
        await killer.close()
    for _ in range(3):  # each dead connection fails one caller at most, as DATABASE_DOWN
        try:
            await store.count_admin_keys()
            break
        except DATABASE_DOWN:
            continue
    assert await store.count_admin_keys() == 0


class BrokenStore(Store):
    """A store whose claim has a bug: the dispatcher cannot go on."""

    async def claim_due(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the claim")


async def test_health_answers_503_once_the_dispatcher_has_died(
    pool: asyncpg.Pool, settings: Settings, aiohttp_client: Any,
) -> None:
    store = BrokenStore(pool)
    engine = make_dispatcher(store, settings)
    api = await aiohttp_client(create_app(settings, store, dispatcher=engine))
    alive = await api.get("/health")
    assert (alive.status, (await alive.json())["dispatcher_alive"]) == (200, True)

    with pytest.raises(RuntimeError):
        await engine.run()

    dead = await api.get("/health")
    assert dead.status == 503
    assert await dead.json() == {"status": "failing", "dispatcher_alive": False}


async def test_a_database_made_before_fair_dispatch_is_brought_over_and_delivers(
    database_url: str, store: Store, api: TestClient[Any, Any], receiver: Receiver,
    settings: Settings,
) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        # Start from the older schema alone, with a day partition of attempts made by it.
        await start_from_schema(connection, "schema-before-fair-dispatch.sql")
        await connection.execute("SELECT ensure_attempts_partition(current_date)")
    finally:
        await connection.close()
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await migrate(pool)
        await migrate(pool)  # and again, as every start-up does
        indexes = {row["indexname"] for row in await pool.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'deliveries'")}
        assert "deliveries_pending_by_subscription" in indexes
        assert "deliveries_due" not in indexes
    finally:
        await pool.close()

    admin, _ = await create_key(store, Role.ADMIN, "admin")
    await subscribe(api, admin, receiver.url())
    await post_event(api, admin)
    await make_dispatcher(store, settings).run(until_idle=True)
    assert len(receiver.requests) == 1
    # Its attempts count in the statistics it did not have.
    assert await store.pool.fetchval(
        "SELECT sum(succeeded) FROM attempt_stats WHERE scope = '*' AND grain = 'hour'") == 1
    # The older day partition takes the new error kinds.
    for number, kind in enumerate(("cut_off", "proxy"), start=9):
        await store.pool.execute(
            "INSERT INTO attempts (tenant_id, delivery_id, attempt_number, trigger, started_at,"
            " duration_ms, error_kind, outcome) SELECT tenant_id, id, $1, 'scheduled', now(),"
            " 0, $2, 'retry' FROM deliveries", number, kind)
