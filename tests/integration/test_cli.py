"""The `hookpost` command as an operator runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from api.auth import hash_key
from tests.integration.conftest import Receiver, wait_for

HOOKPOST = [sys.executable, "-m", "hookpost.cli"]


def environment(database_url: str | None, **settings: str) -> dict[str, str]:
    """This process's environment without any hookpost setting, plus `settings`."""
    clean = {
        name: value for name, value in os.environ.items()
        if not name.startswith("HOOKPOST_") and name != "DATABASE_URL"
    }
    if database_url is not None:
        clean["DATABASE_URL"] = database_url
    clean.update({f"HOOKPOST_{name.upper()}": value for name, value in settings.items()})
    return clean


def hookpost(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HOOKPOST, *arguments], env=env, capture_output=True, text=True, timeout=60
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Service:
    """A running `hookpost` process and what it has printed so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def read_until(self, text: str, timeout: float = 60) -> None:
        """Read stdout until a line containing `text` appears."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while not any(text in line for line in self.lines):
                line = await self.process.stdout.readline()
                if not line:
                    raise AssertionError(f"exited before printing {text!r}: {self.lines}")
                self.lines.append(line.decode())

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        async with asyncio.timeout(30):
            return await self.process.wait()


@asynccontextmanager
async def service(
    command: str, env: dict[str, str], log: Path | None = None
) -> AsyncIterator[Service]:
    """`hookpost COMMAND` running until the block ends; its logs go to `log` if given."""
    with open(log or os.devnull, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *HOOKPOST, command, env=env, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )
    running = Service(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_help_lists_every_setting_with_its_default() -> None:
    shown = hookpost("serve", "--help", env=environment(None))
    assert shown.returncode == 0
    for name in ("HOOKPOST_HOST", "HOOKPOST_PORT", "HOOKPOST_REQUEST_TIMEOUT",
                 "HOOKPOST_ALLOWED_NETWORKS", "HOOKPOST_MAX_PAYLOAD_BYTES", "DATABASE_URL"):
        assert name in shown.stdout
    assert "5s,25s,2m,10m,1h" in shown.stdout


def test_bad_settings_are_refused_before_anything_starts() -> None:
    refused = hookpost("migrate", env=environment(None, retry_schedule="soon"))
    assert refused.returncode == 2
    assert "retry_schedule" in refused.stderr


async def test_migrate_is_safe_to_repeat_and_keys_create_prints_only_the_key(
    database_url: str,
) -> None:
    env = environment(database_url)
    assert hookpost("migrate", env=env).returncode == 0
    assert hookpost("migrate", env=env).returncode == 0

    made = hookpost("keys", "create", "--role", "producer", "--name", "billing", env=env)

    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == key + "\n"
    assert key.startswith("hp_pro_")
    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow("SELECT name, role, key_hash FROM api_keys")
    finally:
        await connection.close()
    assert row is not None
    assert (row["name"], row["role"]) == ("billing", "producer")
    assert row["key_hash"] == hash_key(key)  # only the hash is stored


def test_keys_create_refuses_an_unknown_role(database_url: str) -> None:
    refused = hookpost("keys", "create", "--role", "root", "--name", "x",
                       env=environment(database_url))
    assert refused.returncode == 2
    assert refused.stdout == ""


async def deliver_through(base: str, admin_key: str, receiver: Receiver) -> str:
    """Subscribe `receiver`, post an event through the API at `base`; the event id."""
    auth = {"Authorization": f"Bearer {admin_key}"}
    async with aiohttp.ClientSession(base) as client:
        async with client.post("/v1/subscriptions", headers=auth,
                               json={"url": receiver.url(), "event_types": ["*"]}) as created:
            assert created.status == 201, await created.text()
        async with client.post("/v1/events", headers=auth,
                               json={"type": "order.created", "data": {}}) as posted:
            assert posted.status == 202, await posted.text()
            body: dict[str, Any] = await posted.json()
    await wait_for(lambda: len(receiver.requests) == 1, timeout=20)
    assert receiver.requests[0].headers["webhook-id"] == body["id"]
    return str(body["id"])


def admin_key(lines: list[str]) -> str:
    [line] = [line for line in lines if "admin API key" in line]
    return line.rsplit(" ", 1)[1].strip()


async def test_serve_prints_an_admin_key_once_delivers_and_stops_cleanly_on_sigterm(
    database_url: str, receiver: Receiver,
) -> None:
    port = free_port()
    env = environment(database_url, port=str(port), allowed_networks="127.0.0.0/8",
                      allow_http="true")
    async with service("serve", env) as first:
        await first.read_until("listening on")
        assert f"http://127.0.0.1:{port}" in "".join(first.lines)
        key = admin_key(first.lines)
        assert key.startswith("hp_adm_")
        await deliver_through(f"http://127.0.0.1:{port}", key, receiver)
        assert await first.stop(signal.SIGTERM) == 0

    async with service("serve", env) as second:
        await second.read_until("listening on")
        assert "shown on first start" in "".join(second.lines)
        assert key not in "".join(second.lines)
        assert await second.stop(signal.SIGINT) == 0


async def test_api_and_dispatcher_run_as_separate_processes_with_json_logs(
    database_url: str, receiver: Receiver, tmp_path: Path,
) -> None:
    port = free_port()
    env = environment(database_url, port=str(port), allowed_networks="127.0.0.0/8",
                      allow_http="true", log_format="json")
    key = hookpost("keys", "create", "--role", "admin", "--name", "ops", env=env).stdout.strip()
    log = tmp_path / "dispatcher.log"
    async with service("api", env) as api, service("dispatcher", env, log) as dispatcher:
        await api.read_until("listening on")
        event_id = await deliver_through(f"http://127.0.0.1:{port}", key, receiver)
        assert await dispatcher.stop() == 0
        assert await api.stop() == 0

    entries = [json.loads(line) for line in log.read_text().splitlines()]
    [attempt] = [entry for entry in entries if "delivery_id" in entry]
    assert attempt["event_id"] == event_id
    assert attempt["attempt"] == 1
    assert attempt["outcome"] == "succeeded"


async def test_serve_without_database_url_runs_an_embedded_postgres_that_survives_restarts(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    env = environment(None, port=str(port), data_dir=str(data_dir))
    async with service("serve", env) as first:
        await first.read_until("listening on")
        key = admin_key(first.lines)
        assert await first.stop(signal.SIGINT) == 0
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "Postgres left running"

    async with service("serve", env) as second:
        await second.read_until("listening on")
        async with aiohttp.ClientSession() as client, client.get(
            f"http://127.0.0.1:{port}/v1/subscriptions",
            headers={"Authorization": f"Bearer {key}"},
        ) as listed:
            assert listed.status == 200  # the key made on the first start still works
        assert await second.stop(signal.SIGTERM) == 0
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "Postgres left running"
