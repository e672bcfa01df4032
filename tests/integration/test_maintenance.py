"""Maintenance jobs: attempt partitions and retention, auto-disable, gauges."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from dispatcher.maintenance import Maintenance
from hookpost import metrics
from hookpost.database import create_pool
from hookpost.settings import Settings
from hookpost.store import Store
from tests.conftest import FakeClock
from tests.integration.conftest import (
    Keys,
    Receiver,
    answer_status,
    get_json,
    make_dispatcher,
    post_event,
    subscribe,
)


async def attempt_partitions(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch(
        "SELECT inhrelid::regclass::text AS relname FROM pg_inherits"
        " WHERE inhparent = 'attempts'::regclass ORDER BY 1"
    )
    return [row["relname"] for row in rows]


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_partitions_are_made_ahead_and_take_in_waiting_attempts(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock, pool: asyncpg.Pool,
) -> None:
    await subscribe(clocked_api, keys.subscriber, receiver.url())
    await post_event(clocked_api, keys.producer)
    await make_dispatcher(store, settings, clock).run(until_idle=True)
    assert await pool.fetchval("SELECT count(*) FROM attempts_default") == 1

    maintenance = Maintenance(store, settings, clock=clock)
    other_pool = await create_pool(settings.database_url or "", min_size=1, max_size=2)
    try:  # two dispatcher processes doing upkeep at once
        await asyncio.gather(maintenance.keep_partitions(),
                             Maintenance(Store(other_pool), settings, clock=clock)
                             .keep_partitions())
    finally:
        await other_pool.close()

    assert await attempt_partitions(pool) == [
        "attempts_20251231", "attempts_20260101", "attempts_20260102", "attempts_20260103",
        "attempts_20260104", "attempts_default"]
    assert await pool.fetchval("SELECT count(*) FROM attempts_default") == 0
    assert await pool.fetchval("SELECT count(*) FROM attempts_20260101") == 1


async def test_retention_drops_old_attempts_and_finished_events_but_keeps_unsent_ones(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock, pool: asyncpg.Pool,
) -> None:
    maintenance = Maintenance(store, settings, clock=clock)
    await maintenance.keep_partitions()
    await subscribe(clocked_api, keys.subscriber, receiver.url(), ["order.*"])
    await subscribe(clocked_api, keys.subscriber, receiver.url("/paused"), ["kept.*"],
                    status="paused")
    old = await post_event(clocked_api, keys.producer, "order.created")
    waiting = await post_event(clocked_api, keys.producer, "kept.created")
    await make_dispatcher(store, settings, clock).run(until_idle=True)

    clock.advance(timedelta(days=29))
    recent = await post_event(clocked_api, keys.producer, "order.created")
    await make_dispatcher(store, settings, clock).run(until_idle=True)
    clock.advance(timedelta(days=2))  # the first day is now past the 30-day retention
    await maintenance.keep_partitions()
    await maintenance.prune_events()

    partitions = await attempt_partitions(pool)
    assert "attempts_20260101" not in partitions
    assert "attempts_20260102" in partitions  # ends after the cutoff: kept whole
    events = {row["id"] for row in await pool.fetch("SELECT id FROM events")}
    assert events == {waiting["id"], recent["id"]}, "old finished event kept or unsent dropped"
    assert old["id"] not in {row["event_id"] for row in await pool.fetch(
        "SELECT event_id FROM deliveries")}
    assert await pool.fetchval("SELECT count(*) FROM attempts") == 1


async def test_a_subscription_failing_for_days_is_disabled_and_a_patch_enables_it(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    receiver.respond = answer_status(500)
    subscription = await subscribe(clocked_api, keys.subscriber, receiver.url())
    path = f"/v1/subscriptions/{subscription['id']}"
    await post_event(clocked_api, keys.producer)
    dispatcher = make_dispatcher(store, settings, clock)
    maintenance = Maintenance(store, settings, clock=clock)
    for wait in (0, 5, 25, 120, 600, 3600):
        clock.advance(timedelta(seconds=wait))
        await dispatcher.run(until_idle=True)

    clock.advance(timedelta(days=4))
    assert await maintenance.disable_failing() == []
    clock.advance(timedelta(days=1))
    before = sample("hookpost_subscriptions_disabled_total", reason="failing")
    assert await maintenance.disable_failing() == [subscription["id"]]
    assert sample("hookpost_subscriptions_disabled_total", reason="failing") == before + 1

    disabled = await get_json(clocked_api, keys.subscriber, path)
    assert disabled["status"] == "disabled"
    assert "failing continuously" in disabled["disabled_reason"]
    assert (await post_event(clocked_api, keys.producer))["deliveries"] == 0

    enabled = await clocked_api.patch(path, json={"status": "active"},
                                      headers=keys.auth(keys.subscriber))
    assert enabled.status == 200
    body = await get_json(clocked_api, keys.subscriber, path)
    assert (body["status"], body["disabled_reason"]) == ("active", None)
    assert body["health"]["failing_since"] is None
    assert await maintenance.disable_failing() == []  # its failing streak starts afresh
    assert (await post_event(clocked_api, keys.producer))["deliveries"] == 1


async def test_410_gone_disables_the_subscription_at_once(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings,
) -> None:
    receiver.respond = answer_status(410)
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    await post_event(api, keys.producer)
    before = sample("hookpost_subscriptions_disabled_total", reason="gone")

    await make_dispatcher(store, settings).run(until_idle=True)

    body = await get_json(api, keys.subscriber, f"/v1/subscriptions/{subscription['id']}")
    assert body["status"] == "disabled"
    assert body["disabled_reason"] == "the endpoint answered 410 Gone"
    assert sample("hookpost_subscriptions_disabled_total", reason="gone") == before + 1
    assert (await post_event(api, keys.producer))["deliveries"] == 0


async def test_a_burst_of_410s_disables_and_counts_the_subscription_once(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings,
) -> None:
    receiver.respond = answer_status(410)
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    for n in range(4):
        await post_event(api, keys.producer, data={"n": n})
    # Proven by successes, so its attempts go out together: all four are sent before the
    # first is recorded.
    dispatcher = make_dispatcher(store, settings)
    for _ in range(4):
        dispatcher._concurrency.answered(subscription["id"], succeeded=True, error_kind=None)
    before = sample("hookpost_subscriptions_disabled_total", reason="gone")

    await dispatcher.run(until_idle=True)

    assert len(receiver.requests) == 4
    assert sample("hookpost_subscriptions_disabled_total", reason="gone") == before + 1


async def test_the_gauges_show_backlog_due_work_and_subscriptions(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock,
) -> None:
    busy = await subscribe(clocked_api, keys.subscriber, receiver.url(), ["order.*"])
    await subscribe(clocked_api, keys.subscriber, receiver.url(), ["none.*"], status="paused")
    for n in range(3):
        await post_event(clocked_api, keys.producer, data={"n": n})
    clock.advance(timedelta(seconds=90))

    await Maintenance(store, settings, clock=clock).refresh_gauges()

    assert sample("hookpost_deliveries_pending") == 3
    assert sample("hookpost_deliveries_due") == 3
    assert sample("hookpost_oldest_due_delivery_age_seconds") == 90
    assert sample("hookpost_subscriptions", status="active") == 1
    assert sample("hookpost_subscriptions", status="paused") == 1
    assert sample("hookpost_subscription_backlog", subscription_id=busy["id"]) == 3
