"""Start-up waits out a Postgres that is down, and nothing else."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from hookpost import database


@pytest.mark.parametrize(
    "outage",
    [
        ConnectionRefusedError(111, "Connection refused"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_start_up_waits_out_an_outage(
    monkeypatch: pytest.MonkeyPatch, outage: Exception
) -> None:
    tries: list[str] = []
    pool = object()

    async def create_pool(url: str, **_: Any) -> object:
        tries.append(url)
        if len(tries) == 1:
            raise outage
        return pool

    monkeypatch.setattr(asyncpg, "create_pool", create_pool)

    assert await database.create_pool("postgresql://db/x", wait_seconds=5) is pool
    assert len(tries) == 2


async def test_start_up_raises_a_wrong_password_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    tries = 0

    async def create_pool(url: str, **_: Any) -> object:
        nonlocal tries
        tries += 1
        raise asyncpg.InvalidPasswordError("password authentication failed")

    monkeypatch.setattr(asyncpg, "create_pool", create_pool)

    with pytest.raises(asyncpg.InvalidPasswordError):
        await database.create_pool("postgresql://db/x", wait_seconds=5)
    assert tries == 1
