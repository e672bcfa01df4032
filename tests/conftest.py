"""Shared fixtures: a Postgres (DATABASE_URL or embedded), a fresh database per test built
from a template, and a controllable clock."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import uvloop

from hookpost.database import create_pool, migrate, start_embedded

# Read before the HOOKPOST_ variables are cleared; the developer's shell must not leak in.
_DATABASE_URL = os.environ.pop("DATABASE_URL", None)
for _name in list(os.environ):
    if _name.startswith("HOOKPOST_"):
        del os.environ[_name]


_BROWSER_TESTS = Path(__file__).with_name("browser")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: from the first of them to the session's end, Playwright's
    sync API keeps an event loop running in the main thread, where no async test can run
    its own."""
    items.sort(key=lambda item: item.path.is_relative_to(_BROWSER_TESTS))


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on uvloop, the service's default loop; those marked `every_loop` run on the
    standard asyncio loop as well (HOOKPOST_EVENT_LOOP=asyncio)."""
    if item.get_closest_marker("every_loop") is not None:
        return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A server to make test databases on: DATABASE_URL, or an embedded one."""
    if _DATABASE_URL:
        yield _DATABASE_URL
        return
    folder = Path(tempfile.mkdtemp(prefix="hookpost-tests-", dir="/tmp"))
    server = start_embedded(folder)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


async def _admin_execute(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _build_template(url: str, name: str) -> None:
    await _admin_execute(url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    pool = await create_pool(with_database(url, name), min_size=1, max_size=1)
    try:
        await migrate(pool)
    finally:
        await pool.close()


@pytest.fixture(scope="session")
def template_database(postgres_url: str) -> Iterator[str]:
    """A database with schema.sql applied, copied for each test."""
    name = f"hookpost_template_{os.getpid()}"
    asyncio.run(_build_template(postgres_url, name))
    try:
        yield name
    finally:
        asyncio.run(_admin_execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}"'))


@pytest.fixture
async def database_url(postgres_url: str, template_database: str) -> AsyncIterator[str]:
    """A fresh database of this test's own, dropped after it."""
    name = f"hookpost_test_{uuid.uuid4().hex[:12]}"
    await _admin_execute(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    try:
        yield with_database(postgres_url, name)
    finally:
        await _admin_execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
