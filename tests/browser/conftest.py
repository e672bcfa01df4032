"""Fixtures for the dashboard in a real browser: Debian's Chromium driven by Playwright,
against `hookpost serve` running as a process of its own on a fresh database, and a real
receiver that answers every request with a hostile body."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from tests.conftest import with_database

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).with_name("screenshots")
# How long the hookpost fixture waits for an answer before it calls the attempt a timeout.
REQUEST_TIMEOUT_SECONDS = 1
HOSTILE_BODY = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium, not one Playwright downloads (`playwright install` is never run)."""
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "headless": True}


@pytest.fixture(scope="session")
def base_url() -> str | None:
    """None: each test knows its own hookpost's address. (pytest-base-url's fixture of this
    name trips a pytest deprecation warning, which this suite makes an error.)"""
    return None


@pytest.fixture
def screenshot_folder() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS


@dataclass
class HostileReceiver:
    """A real aiohttp server on 127.0.0.1, in a thread of its own (the test drives the
    browser synchronously). At /hook it answers 500 with markup and script; at /ok, 200;
    at /bad, 400 (which fails a delivery at once); at /slow, nothing for longer than the
    hookpost fixture waits."""

    port: int = 0
    requests: int = 0
    # Requests by path, the ones to /hook included.
    arrived: Counter[str] = field(default_factory=Counter)
    _ready: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return self.at("/hook")

    def at(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _answer(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived[request.path] += 1
        if request.path == "/ok":
            return web.Response(text="ok")
        if request.path == "/bad":
            return web.Response(status=400, text="no such order")
        if request.path == "/slow":
            await asyncio.sleep(REQUEST_TIMEOUT_SECONDS * 3)
            return web.Response(text="too late")
        self.requests += 1
        return web.Response(status=500, text=HOSTILE_BODY, content_type="text/html",
                            headers={"X-Receiver": "<b>bold?</b>"})

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{path}", self._answer)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        thread.start()
        assert self._ready.wait(10), "the receiver did not start"
        return thread

    def stop(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)


@pytest.fixture
def receiver() -> Iterator[HostileReceiver]:
    receiver = HostileReceiver()
    thread = receiver.start()
    yield receiver
    receiver.stop()
    thread.join(10)


@pytest.fixture(scope="session", autouse=True)
def _template_before_playwright(template_database: str) -> str:
    """The template database, made before Playwright starts: its sync API keeps an event
    loop running in the main thread, where asyncio.run cannot run any more."""
    return template_database


async def _execute_async(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _execute(url: str, statement: str) -> None:
    """Run `statement`, in a thread of its own (see _template_before_playwright)."""
    with ThreadPoolExecutor(1) as worker:
        worker.submit(asyncio.run, _execute_async(url, statement)).result()


@pytest.fixture
def fresh_database(postgres_url: str, template_database: str) -> Iterator[str]:
    """A database of this test's own (a copy of the template), dropped after it."""
    name = f"hookpost_browser_{uuid.uuid4().hex[:12]}"
    _execute(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    try:
        yield with_database(postgres_url, name)
    finally:
        _execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Hookpost:
    """`hookpost serve` (API, dashboard and dispatcher in one process) as an operator
    runs it, and what it printed."""

    address: str  # http://127.0.0.1:PORT
    dashboard: str  # the address it printed for the dashboard
    admin_key: str  # printed once on first start

    def call(self, method: str, path: str, body: dict[str, Any] | None = None
             ) -> dict[str, Any]:
        """The REST API with the admin key; the JSON answer."""
        request = urllib.request.Request(
            self.address + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.admin_key}",
                     "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            parsed: dict[str, Any] = json.loads(answer.read())
            return parsed


def _environment(database_url: str) -> dict[str, str]:
    clean = {name: value for name, value in os.environ.items()
             if not name.startswith("HOOKPOST_") and name != "DATABASE_URL"}
    return {
        **clean, "DATABASE_URL": database_url, "HOOKPOST_HOST": "127.0.0.1",
        "HOOKPOST_PORT": "0", "HOOKPOST_METRICS_PORT": "0",
        "HOOKPOST_ALLOWED_NETWORKS": "127.0.0.0/8", "HOOKPOST_ALLOW_HTTP": "true",
        "HOOKPOST_POLL_INTERVAL": "100ms",
        "HOOKPOST_REQUEST_TIMEOUT": f"{REQUEST_TIMEOUT_SECONDS}s",
        # One scheduled retry, an hour on: every attempt the test sees is one it made.
        "HOOKPOST_RETRY_SCHEDULE": "1h",
    }


@pytest.fixture
def hookpost(fresh_database: str) -> Iterator[Hookpost]:
    process = subprocess.Popen(
        [sys.executable, "-m", "hookpost.cli", "serve"], env=_environment(fresh_database),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert process.stdout is not None
        printed: dict[str, str] = {}
        while "dashboard" not in printed:
            line = process.stdout.readline()
            assert line, f"hookpost serve exited before it listened: {printed}"
            if "admin API key" in line:
                printed["key"] = line.rsplit(" ", 1)[1].strip()
            elif "listening on" in line:
                printed["address"] = line.rsplit(" ", 1)[1].strip()
            elif "dashboard on" in line:
                printed["dashboard"] = line.rsplit(" ", 1)[1].strip()
        yield Hookpost(printed["address"], printed["dashboard"], printed["key"])
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def wait_until(condition: Any, timeout: float = 15.0) -> None:
    """Wait until `condition()` is true, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)
