"""The ingest batcher: events arriving together are stored together, each answered alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from api.ingest import IngestBatcher
from hookpost.store import NewEvent, Store


class FakeStore:
    """Counts the batches it is asked to store; events named 'dup-*' were made before."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    async def ingest_events(self, events: Sequence[NewEvent]) -> dict[str, int]:
        self.batches.append([event.id for event in events])
        await asyncio.sleep(0.01)  # a round trip to the database
        if self.fail:
            raise ConnectionResetError("the database went away")
        return {event.id: 2 for event in events if not event.id.startswith("dup-")}


def event(id: str) -> NewEvent:
    return NewEvent(id, "order.created", b"{}", "key_1", None, datetime(2026, 1, 1, tzinfo=UTC))


def batcher(store: FakeStore, limit: int = 500) -> IngestBatcher:
    return IngestBatcher(cast(Store, store), limit)


async def test_a_lone_event_is_stored_at_once() -> None:
    store = FakeStore()
    assert await batcher(store).ingest(event("evt_1")) == 2
    assert store.batches == [["evt_1"]]


async def test_events_arriving_while_a_batch_is_stored_go_together_in_the_next() -> None:
    store = FakeStore()
    ingest = batcher(store)
    first = asyncio.create_task(ingest.ingest(event("evt_first")))
    await asyncio.sleep(0.001)  # its batch is being stored
    ids = [f"evt_{n}" for n in range(20)] + ["dup-1"]
    answers = await asyncio.gather(*(ingest.ingest(event(id)) for id in ids))
    assert answers == [2] * 20 + [None]  # None: not stored, its key was used before
    assert await first == 2
    assert store.batches == [["evt_first"], ids]


async def test_batches_are_bounded() -> None:
    store = FakeStore()
    ingest = batcher(store, limit=4)
    await asyncio.gather(*(ingest.ingest(event(f"evt_{n}")) for n in range(10)))
    assert [len(batch) for batch in store.batches] == [4, 4, 2]


async def test_a_failed_batch_fails_each_of_its_requests_and_the_next_starts_afresh() -> None:
    store = FakeStore(fail=True)
    ingest = batcher(store)
    results: list[Any] = await asyncio.gather(
        *(ingest.ingest(event(f"evt_{n}")) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, ConnectionResetError) for result in results)
    store.fail = False
    assert await ingest.ingest(event("evt_later")) == 2


@pytest.mark.parametrize("count", [1, 7])
async def test_every_request_gets_its_own_answer(count: int) -> None:
    store = FakeStore()
    ingest = batcher(store)
    ids = [f"evt_{n}" if n % 2 else f"dup-{n}" for n in range(count)]
    answers = await asyncio.gather(*(ingest.ingest(event(id)) for id in ids))
    assert answers == [None if id.startswith("dup-") else 2 for id in ids]
