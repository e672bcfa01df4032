"""Ingest in batches: events that arrive while a batch is being stored go together in the
next one, so a busy API commits once per batch instead of once per event. An idle API
stores each event at once; nothing ever waits for a timer. A batch the database refuses
for any reason but being away is stored again one event at a time, so each request still
stands or falls alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hookpost.database import DATABASE_DOWN
from hookpost.store import NewEvent, Store

BATCH_LIMIT = 500


class IngestBatcher:
    def __init__(self, store: Store, limit: int = BATCH_LIMIT) -> None:
        self._store = store
        self._limit = limit
        self._waiting: list[tuple[NewEvent, asyncio.Future[int | None]]] = []
        self._storing: asyncio.Task[None] | None = None

    async def ingest(self, event: NewEvent) -> int | None:
        """Store `event` and fan it out; its delivery count, or None when its producer had
        used its idempotency key before (nothing was stored)."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        if self._storing is None:
            self._storing = asyncio.create_task(self._store_waiting())
        return await future

    async def _store_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._limit]
                del self._waiting[: self._limit]
                await self._store_batch(batch)
        finally:
            self._storing = None

    async def _store_batch(
        self, batch: Sequence[tuple[NewEvent, asyncio.Future[int | None]]]
    ) -> None:
        try:
            counts = await self._store.ingest_events([event for event, _ in batch])
        except DATABASE_DOWN as error:  # no event could be stored: each answers 503
            _fail(batch, error)
            return
        except Exception as error:
            if len(batch) == 1:
                _fail(batch, error)
                return
            # One event the database refuses must not fail the others: store each alone.
            await asyncio.gather(*(self._store_batch([waiting]) for waiting in batch))
            return
        for event, future in batch:
            if not future.done():
                future.set_result(counts.get(event.id))


def _fail(batch: Sequence[tuple[NewEvent, asyncio.Future[int | None]]],
          error: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
