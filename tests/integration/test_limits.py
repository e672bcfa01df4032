"""A receiver's own limits (max_concurrency, rate_limit): set through the API, honoured by
every dispatcher together, refused with 422 when out of range."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from dispatcher.worker import Dispatcher
from hookpost.database import create_pool
from hookpost.settings import Settings
from hookpost.store import Store
from tests.integration.conftest import (
    Keys,
    Receiver,
    answer_after,
    make_dispatcher,
    post_event,
    subscribe,
    wait_for,
)
from tests.integration.test_api_rejections import assert_error, writes_nothing


@contextlib.asynccontextmanager
async def two_dispatchers(store: Store, database_url: str, settings: Settings
                          ) -> AsyncIterator[list[Dispatcher]]:
    """Two dispatchers on pools of their own, as two processes would have, running."""
    other_pool = await create_pool(database_url, min_size=1, max_size=4)
    dispatchers = [make_dispatcher(store, settings), make_dispatcher(Store(other_pool), settings)]
    tasks = [asyncio.create_task(dispatcher.run()) for dispatcher in dispatchers]
    try:
        yield dispatchers
    finally:
        for dispatcher in dispatchers:
            dispatcher.stop()
        await asyncio.gather(*tasks)
        await other_pool.close()


async def proven(dispatchers: list[Dispatcher], subscription_id: str) -> None:
    """Both dispatchers have seen the subscription answer well: each alone would send it
    up to its ceiling at once, so only the limit holds them back."""
    for dispatcher in dispatchers:
        for _ in range(32):
            dispatcher._concurrency.answered(subscription_id, succeeded=True, error_kind=None)


async def test_two_dispatchers_together_keep_to_max_concurrency(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, database_url: str, pool: asyncpg.Pool,
) -> None:
    receiver.respond = answer_after(0.05)
    subscription = await subscribe(api, keys.subscriber, receiver.url(), max_concurrency=4)
    assert subscription["max_concurrency"] == 4
    events = [await post_event(api, keys.producer, data={"n": n}) for n in range(60)]

    async with two_dispatchers(store, database_url, settings) as dispatchers:
        await proven(dispatchers, subscription["id"])
        await wait_for(lambda: len({r.headers["webhook-id"] for r in receiver.requests})
                       == len(events), timeout=30)

    assert receiver.most_busy_in_all <= 4
    assert receiver.most_busy_in_all >= 3, "the limit, not something else, held it back"
    assert await pool.fetchval("SELECT count(*) FROM sends_in_flight") == 0


async def test_two_dispatchers_together_keep_to_rate_limit(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, database_url: str,
) -> None:
    rate = 20
    subscription = await subscribe(api, keys.subscriber, receiver.url(), rate_limit=rate)
    for n in range(50):
        await post_event(api, keys.producer, data={"n": n})

    async with two_dispatchers(store, database_url, settings) as dispatchers:
        await proven(dispatchers, subscription["id"])
        await wait_for(lambda: len(receiver.requests) == 50, timeout=30)

    arrivals = sorted(request.at for request in receiver.requests)
    # Paced one every 1/rate seconds: no second-long window holds more than the rate, give
    # or take a tenth for timers that fire late and then catch up.
    for first, start in enumerate(arrivals):
        within = sum(1 for at in arrivals[first:] if at < start + 1.0)
        assert within <= rate * 1.1, (first, within)
    assert arrivals[-1] - arrivals[0] >= (50 - 1) / rate * 0.9


async def test_a_limit_is_set_changed_and_removed_with_patch(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver,
) -> None:
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    assert (subscription["max_concurrency"], subscription["rate_limit"]) == (None, None)
    path = f"/v1/subscriptions/{subscription['id']}"
    auth = keys.auth(keys.subscriber)

    changed = await (await api.patch(path, json={"max_concurrency": 2, "rate_limit": 12.5},
                                     headers=auth)).json()
    assert (changed["max_concurrency"], changed["rate_limit"]) == (2, 12.5)
    kept = await (await api.patch(path, json={"description": "x"}, headers=auth)).json()
    assert (kept["max_concurrency"], kept["rate_limit"]) == (2, 12.5)
    removed = await (await api.patch(path, json={"rate_limit": None}, headers=auth)).json()
    assert (removed["max_concurrency"], removed["rate_limit"]) == (2, None)


@pytest.mark.parametrize(
    "limits",
    [
        {"max_concurrency": 0}, {"max_concurrency": 1001}, {"max_concurrency": "4"},
        {"max_concurrency": 2.5}, {"rate_limit": 0}, {"rate_limit": -1},
        {"rate_limit": 10001}, {"rate_limit": "50"},
    ],
    ids=str,
)
async def test_a_limit_out_of_range_is_refused_and_writes_nothing(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
    limits: dict[str, Any],
) -> None:
    existing = await subscribe(api, keys.subscriber, receiver.url(), max_concurrency=3)
    auth = keys.auth(keys.subscriber)
    async with writes_nothing(pool):
        created = await api.post("/v1/subscriptions", headers=auth,
                                 json={"url": receiver.url(), "event_types": ["*"], **limits})
        details = (await assert_error(created, 422, "validation_error"))["details"]
        assert details[0]["loc"][:2] == ["body", next(iter(limits))]
        changed = await api.patch(f"/v1/subscriptions/{existing['id']}", headers=auth,
                                  json=limits)
        await assert_error(changed, 422, "validation_error")
