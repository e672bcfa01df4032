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
    """Counts the batches it is asked to store; events named 'dup-*' were made before, and
    a batch holding one named 'bad-*' is refused, as Postgres refuses a value it cannot
    take."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    async def ingest_events(self, events: Sequence[NewEvent]) -> dict[str, int]:
        self.batches.append([event.id for event in events])
        await asyncio.sleep(0.01)  # a round trip to the database
        if self.fail:
            raise ConnectionResetError("the database went away")
        if any(event.id.startswith("bad-") for event in events):
            raise ValueError("invalid input for query argument $5")
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
    assert store.batches == [["evt_0", "evt_1", "evt_2"]]  # not tried again one by one
    store.fail = False
    assert await ingest.ingest(event("evt_later")) == 2


@pytest.mark.parametrize("count", [1, 7])
async def test_every_request_gets_its_own_answer(count: int) -> None:
    store = FakeStore()
    ingest = batcher(store)
    ids = [f"evt_{n}" if n % 2 else f"dup-{n}" for n in range(count)]
    answers = await asyncio.gather(*(ingest.ingest(event(id)) for id in ids))
    assert answers == [None if id.startswith("dup-") else 2 for id in ids]


async def test_an_event_the_database_refuses_fails_alone_and_the_rest_are_stored() -> None:
    store = FakeStore()
    ingest = batcher(store)
    first = asyncio.create_task(ingest.ingest(event("evt_first")))
    await asyncio.sleep(0.001)  # its batch is being stored; the rest wait together
    ids = ["evt_0", "dup-1", "bad-2", "evt_3"]
    results: list[Any] = await asyncio.gather(
        *(ingest.ingest(event(id)) for id in ids), return_exceptions=True
    )
    assert await first == 2
    assert results[0] == 2
    assert results[1] is None
    assert isinstance(results[2], ValueError)
    assert results[3] == 2
    # The batch once, then each of its events alone.
    assert store.batches == [["evt_first"], ids, *([id] for id in ids)]


async def test_a_batch_that_fails_alone_is_not_tried_again() -> None:
    store = FakeStore()
    with pytest.raises(ValueError, match="invalid input"):
        await batcher(store).ingest(event("bad-1"))
    assert store.batches == [["bad-1"]]

