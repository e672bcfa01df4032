"""The connection pool: sessions in UTC, and nothing sent to Postgres on a release."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import asyncpg

from hookpost.database import create_pool


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
