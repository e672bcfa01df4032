"""Ingest details beyond the happy path: idempotency conflicts."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.integration.conftest import Keys, Receiver, post_event, subscribe


async def test_reusing_an_idempotency_key_for_another_event_is_a_conflict(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    await subscribe(api, keys.subscriber, receiver.url())
    first = await post_event(api, keys.producer, "order.created", {"n": 1}, "k-1")

    for changed in ({"type": "order.created", "data": {"n": 2}},
                    {"type": "order.paid", "data": {"n": 1}}):
        response = await api.post("/v1/events", json=changed, headers={
            **keys.auth(keys.producer), "Idempotency-Key": "k-1"})
        assert response.status == 409
        assert (await response.json())["error"]["code"] == "idempotency_conflict"

    replayed = await api.post("/v1/events", json={"type": "order.created", "data": {"n": 1}},
                              headers={**keys.auth(keys.producer), "Idempotency-Key": "k-1"})
    assert replayed.status == 202
    assert (await replayed.json())["id"] == first["id"]
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert await pool.fetchval("SELECT count(*) FROM events") == 1
    assert await pool.fetchval("SELECT count(*) FROM deliveries") == 1
