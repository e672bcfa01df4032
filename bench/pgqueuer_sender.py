"""The sender a Python team would build on pgqueuer: jobs in Postgres, POSTed with aiohttp.

    DATABASE_URL=... python -m bench.pgqueuer_sender

runs what `pgq run bench.pgqueuer_sender:main --batch-size 100 --max-concurrent-tasks 256`
would (pgqueuer's own `run()`, on uvloop as its CLI does); the CLI of pgqueuer 1.6.0 fails
on its --log-level option under typer 0.29.

One job is one message to one endpoint: its payload is the body, its headers name the
endpoint (webhook_endpoints, read once at start) and the message id. Each attempt is signed
when it is sent (Standard Webhooks, dispatcher/signing.py) and INSERTed into
webhook_attempts; a failed one is retried by pgqueuer's DatabaseRetryEntrypointExecutor on
hookpost's schedule (5 s, 25 s, about 2 m, 10 m, 1 h).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pgqueuer
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.executors import DatabaseRetryEntrypointExecutor, EntrypointExecutorParameters
from pgqueuer.models import Job

from dispatcher.schedule import Outcome
from dispatcher.signing import signature_header
from dispatcher.verdict import classify
from hookpost.store import load_queries

QUERIES = load_queries(Path(__file__).with_name("bench.sql"))
ENTRYPOINT = "webhook"
BATCH_SIZE = 100  # jobs per dequeue: raised from 10 for short jobs, as pgqueuer's docs advise
MAX_CONCURRENT_TASKS = 256  # jobs in flight, as hookpost's HOOKPOST_MAX_IN_FLIGHT
_ERROR_LIMIT = 500


class DeliveryFailed(Exception):
    """The attempt is to be made again; pgqueuer retries the job."""


def retrying(parameters: EntrypointExecutorParameters) -> DatabaseRetryEntrypointExecutor:
    """Five retries after 5 s, 25 s, 125 s, 625 s and 1 h: hookpost's six attempts."""
    return DatabaseRetryEntrypointExecutor(
        parameters=parameters, max_attempts=5, initial_delay=timedelta(seconds=5),
        max_delay=timedelta(hours=1), backoff_multiplier=5.0)


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    url = os.environ["DATABASE_URL"]
    # pgqueuer's advice: the QueueManager on a connection of its own (it LISTENs), a pool
    # for the rest.
    connection = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=4, max_size=16)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=MAX_CONCURRENT_TASKS),
        timeout=aiohttp.ClientTimeout(total=10, connect=5))
    endpoints = {row["id"]: (row["url"], row["secret"])
                 for row in await pool.fetch(QUERIES["pgqueuer_endpoints"])}
    pgq = PgQueuer.from_asyncpg_connection(connection)

    @pgq.entrypoint(ENTRYPOINT, executor_factory=retrying)
    async def deliver(job: Job) -> None:
        assert job.headers is not None and job.payload is not None
        endpoint_id, message_id = str(job.headers["endpoint"]), str(job.headers["message"])
        endpoint_url, secret = endpoints[endpoint_id]
        timestamp = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": message_id,
                   "webhook-timestamp": str(timestamp),
                   "webhook-signature": signature_header([secret], message_id, timestamp,
                                                         job.payload)}
        status: int | None = None
        error: str | None = None
        began = time.monotonic()
        try:
            async with session.post(endpoint_url, data=job.payload, headers=headers) as answer:
                await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as failure:
            error = (str(failure) or type(failure).__name__)[:_ERROR_LIMIT]
        duration_ms = round((time.monotonic() - began) * 1000)
        await pool.execute(QUERIES["pgqueuer_record_attempt"], message_id, endpoint_id,
                           job.attempts + 1, status, error, duration_ms)
        if classify(status) is Outcome.RETRY:  # a 4xx other than 429 is final, as in hookpost
            raise DeliveryFailed(error or f"HTTP {status}")

    try:
        yield pgq
    finally:
        await session.close()
        await pool.close()
        await connection.close()


if __name__ == "__main__":
    uvloop.run(pgqueuer.run(main, batch_size=BATCH_SIZE,
                            max_concurrent_tasks=MAX_CONCURRENT_TASKS))
