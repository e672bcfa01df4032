"""Fixtures for tests against a real Postgres and real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
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
from tests.egress_proxy import EgressProxy

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
async def dispatch_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The dispatcher's own pool, as `hookpost dispatcher` makes it: generic plans."""
    pool = await create_pool(database_url, min_size=1, max_size=2, generic_plans=True)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def store(pool: asyncpg.Pool, dispatch_pool: asyncpg.Pool, database_url: str) -> Store:
    return Store(pool, dispatch_pool, url=database_url)


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
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic() on arrival


Responder = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


async def answer_ok(request: web.Request, number: int) -> web.StreamResponse:
    return web.Response(text="ok")


@dataclass
class Receiver:
    """A real aiohttp server on 127.0.0.1 that records every request it gets.

    `respond(request, n)` answers the n-th request (1-based) to arrive. It also tracks how
    many requests it is answering at once, in all and per path.
    """

    server: TestServer | None = None
    requests: list[Received] = field(default_factory=list)
    respond: Responder = answer_ok
    busy: Counter[str] = field(default_factory=Counter)
    most_busy: Counter[str] = field(default_factory=Counter)
    most_busy_in_all: int = 0
    # Set to free every request a responder holds back (see `answer_when_released`).
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/hook") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    def to(self, path: str) -> list[Received]:
        return [request for request in self.requests if request.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Received(
                request.path,
                {name.lower(): value for name, value in request.headers.items()},
                await request.read(),
                time.monotonic(),
            )
        )
        self.busy[request.path] += 1
        self.most_busy[request.path] = max(self.most_busy[request.path], self.busy[request.path])
        self.most_busy_in_all = max(self.most_busy_in_all, self.busy.total())
        try:
            return await self.respond(request, len(self.requests))
        finally:
            self.busy[request.path] -= 1


def answer_status(status: int, headers: dict[str, str] | None = None) -> Responder:
    """A responder that always answers `status`."""

    async def respond(request: web.Request, number: int) -> web.StreamResponse:
        return web.Response(status=status, headers=headers, text=f"answer {status}")

    return respond


def answer_after(seconds: float) -> Responder:
    """A responder that answers 200 after `seconds`, so requests overlap."""

    async def respond(request: web.Request, number: int) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(text="ok")

    return respond


def answer_when_released(receiver: Receiver) -> Responder:
    """A responder that holds every request until `receiver.released` is set (or 30 s)."""

    async def respond(request: web.Request, number: int) -> web.StreamResponse:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.released.wait(), 30)
        return web.Response(text="released")

    return respond


@pytest.fixture
async def receiver(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver._handle)
    receiver.server = await aiohttp_server(app, host="127.0.0.1")
    yield receiver
    receiver.released.set()  # let held requests end so the server closes at once


@pytest.fixture
async def egress_proxy() -> AsyncIterator[EgressProxy]:
    """An HTTP proxy on 127.0.0.1 that counts what goes through it."""
    proxy = EgressProxy()
    await proxy.start()
    yield proxy
    await proxy.close()


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


async def subscribe(
    api: TestClient[Any, Any], key: str, url: str, event_types: list[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Create a subscription over the API; its JSON, secret included."""
    response = await api.post(
        "/v1/subscriptions",
        json={"url": url, "event_types": event_types or ["*"], **fields},
        headers=Keys.auth(key),
    )
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def post_event(
    api: TestClient[Any, Any], key: str, type: str = "order.created",
    data: dict[str, Any] | None = None, idempotency_key: str | None = None,
    tenant_id: str | None = None,
) -> dict[str, Any]:
    """Post an event over the API; the 202 body (id, deliveries)."""
    headers = Keys.auth(key)
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    body: dict[str, Any] = {"type": type, "data": data or {"n": 1}}
    if tenant_id is not None:
        body["tenant_id"] = tenant_id
    response = await api.post("/v1/events", json=body, headers=headers)
    assert response.status == 202, await response.text()
    accepted: dict[str, Any] = await response.json()
    return accepted


async def start_from_schema(connection: asyncpg.Connection, fixture: str) -> None:
    """Empty the database and apply an older schema.sql, kept in tests/fixtures."""
    await connection.execute(
        "DROP SCHEMA public CASCADE; CREATE SCHEMA public; GRANT ALL ON SCHEMA public TO public")
    await connection.execute((Path(__file__).parent.parent / "fixtures" / fixture).read_text())


async def get_json(api: TestClient[Any, Any], key: str, path: str) -> dict[str, Any]:
    response = await api.get(path, headers=Keys.auth(key))
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def delivery_of(api: TestClient[Any, Any], keys: Keys, event_id: str) -> dict[str, Any]:
    """The only delivery of an event, with its attempts, as the admin sees it."""
    event = await get_json(api, keys.admin, f"/v1/events/{event_id}")
    [summary] = event["deliveries"]
    return await get_json(api, keys.admin, f"/v1/deliveries/{summary['id']}")


@pytest.fixture
async def clocked_api(
    settings: Settings, store: Store, clock: FakeClock,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> TestClient[Any, Any]:
    """The REST API reading the test's controllable clock."""
    return await aiohttp_client(create_app(settings, store, clock=clock))


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


async def raw_request(
    api: TestClient[Any, Any], method: str, path: str,
    headers: Sequence[tuple[str, bytes]] = (), body: bytes = b"",
) -> RawResponse:
    """Send a request over a plain socket with header values exactly as given: aiohttp's
    client refuses to send bytes that are not UTF-8 text."""
    reader, writer = await asyncio.open_connection(api.host, api.port)
    lines = [f"{method} {path} HTTP/1.1".encode(), f"Host: {api.host}:{api.port}".encode(),
             b"Connection: close", f"Content-Length: {len(body)}".encode()]
    lines += [name.encode() + b": " + value for name, value in headers]
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        answer = await reader.read()  # the server closes the connection after answering
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, content = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(":", 1) for line in header_lines)
    return RawResponse(
        int(status_line.split()[1]),
        {name.lower(): value.strip() for name, value in fields.items()},
        content,
    )


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key
