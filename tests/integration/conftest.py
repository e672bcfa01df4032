"""Fixtures for tests against a real Postgres and real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import Role, create_key
from dispatcher.worker import Dispatcher
from hookpost.database import create_pool
from hookpost.settings import Settings
from hookpost.store import Store
from tests.conftest import FakeClock

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for tests: loopback receivers allowed, fast polling."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "allowed_networks": LOOPBACK,
        "allow_http": True,
        "poll_interval": timedelta(milliseconds=50),
        "request_timeout": timedelta(seconds=5),
        "connect_timeout": timedelta(seconds=2),
        "shutdown_grace": timedelta(seconds=2),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=10)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def store(pool: asyncpg.Pool) -> Store:
    return Store(pool)


@pytest.fixture
async def api(
    settings: Settings, store: Store, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> TestClient[Any, Any]:
    """The REST API, served on 127.0.0.1."""
    return await aiohttp_client(create_app(settings, store))


@dataclass
class Keys:
    admin: str
    producer: str
    subscriber: str
    other_subscriber: str

    @staticmethod
    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def keys(store: Store) -> Keys:
    admin, _ = await create_key(store, Role.ADMIN, "admin")
    producer, _ = await create_key(store, Role.PRODUCER, "producer")
    subscriber, _ = await create_key(store, Role.SUBSCRIBER, "subscriber")
    other, _ = await create_key(store, Role.SUBSCRIBER, "other subscriber")
    return Keys(admin, producer, subscriber, other)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival


Responder = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


async def answer_ok(request: web.Request, number: int) -> web.StreamResponse:
    return web.Response(text="ok")


@dataclass
class Receiver:
    """A real aiohttp server on 127.0.0.1 that records every request it gets.

    `respond(request, n)` answers the n-th request (1-based) to arrive.
    """

    server: TestServer | None = None
    requests: list[Received] = field(default_factory=list)
    respond: Responder = answer_ok

    def url(self, path: str = "/hook") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Received(request.path, dict(request.headers), await request.read(), time.monotonic())
        )
        return await self.respond(request, len(self.requests))


@pytest.fixture
async def receiver(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Receiver:
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver._handle)
    receiver.server = await aiohttp_server(app, host="127.0.0.1")
    return receiver


async def wait_for(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 10.0,
    interval: float = 0.02,
) -> None:
    """Wait until `condition()` is true, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def make_dispatcher(store: Store, settings: Settings, clock: FakeClock | None = None
                    ) -> Dispatcher:
    if clock is None:
        return Dispatcher(store, settings)
    return Dispatcher(store, settings, clock=clock)
