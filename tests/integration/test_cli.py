"""The `hookpost` command as an operator runs it: real processes, real signals."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from api.auth import hash_key
from tests.integration.conftest import Receiver
from tests.integration.processes import (
    admin_key,
    deliver_through,
    environment,
    free_port,
    hookpost,
    service,
)


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


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_serve_prints_an_admin_key_once_delivers_and_stops_cleanly_on_sigterm(
    database_url: str, receiver: Receiver, event_loop: str,
) -> None:
    port = free_port()
    env = environment(database_url, port=str(port), allowed_networks="127.0.0.0/8",
                      allow_http="true", event_loop=event_loop)
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
                      allow_http="true", log_format="json", log_level="DEBUG")
    key = hookpost("keys", "create", "--role", "admin", "--name", "ops", env=env).stdout.strip()
    log = tmp_path / "dispatcher.log"
    api_log = tmp_path / "api.log"
    async with service("api", env, api_log) as api, service("dispatcher", env, log) as dispatcher:
        try:
            await api.read_until("listening on")
        except AssertionError:
            raise AssertionError(api_log.read_text()) from None
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
