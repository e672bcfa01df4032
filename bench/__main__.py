"""The benchmark harness: `python -m bench [--quick]` (or `make bench`).

Every scenario starts its own processes on 127.0.0.1: Postgres (DATABASE_URL or an embedded
one), the shared receiver (bench/receiver.py) and the contender. Contenders alternate
across rounds so drift on a noisy machine hits each alike. Results go to
bench/results/latest.json and bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import psutil
from pgqueuer import Queries

from api.auth import Role, create_key
from bench import pgqueuer_sender
from bench.loadgen import event_body, percentile
from dispatcher.maintenance import Maintenance
from dispatcher.signing import new_secret, signature_header
from hookpost.database import create_pool, migrate, start_embedded
from hookpost.settings import Settings
from hookpost.store import QUERIES as HOOKPOST_QUERIES
from hookpost.store import Store, load_queries

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
QUERIES = load_queries(HERE / "bench.sql")
SUBSCRIPTIONS = 16  # spread so the per-subscription bound (16) is not the limit
E2E_PER_SUBSCRIPTION = 64  # the end-to-end run's one receiver takes this many at once
NOISY_RATE = 5  # events/s posted for the noisy run's one healthy subscription
NOISY_BACKLOG = 300  # due deliveries each hanging endpoint starts with
STORM_DOWN_SECONDS = 4.0  # at most; shorter than the first retry wait (5 s)
STORM_DELAY_MS = 20  # what each request takes the recovered endpoint
STORM_LIMITS = {"max_concurrency": 4, "rate_limit": 50}
STATS_TENANTS, STATS_SUBSCRIPTIONS = 50, 1000
STATS_CHUNK = 100_000  # attempts per record statement while loading
STATS_QUERIES = ("window=hour", "window=day", "window=day&interval=minute", "window=week")
STARTED = time.monotonic()


@dataclass(frozen=True)
class Plan:
    quick: bool
    rounds: int
    limit_seconds: float
    deliveries: int
    ingest_seconds: float
    e2e_seconds: float
    e2e_rate: int
    work_seconds: float  # the dispatcher runs get at least this long at the limit's rate
    backlogs: tuple[int, int]
    table_rows: tuple[int, int]
    noisy_runs: tuple[tuple[int, int], ...]  # (hanging endpoints, dispatchers)
    noisy_seconds: float  # how long events are posted to the healthy subscription
    noisy_grace: float  # how long its missing events may still arrive after that
    storm_runs: tuple[tuple[int, bool], ...]  # (dispatchers, with the subscription's limits)
    storm_backlog: int
    tenant_cases: tuple[tuple[str, int, int], ...]  # (case, tenants, subscriptions of each)
    stats_attempts: int  # attempts stored before the stats endpoints are timed
    stats_calls: int  # timed calls of each endpoint and window


FULL = Plan(False, 2, 10, 30_000, 10, 20, 1000, 10, (10_000, 1_000_000), (10_000, 10_000_000),
            ((0, 1), (10, 1), (40, 1), (200, 1), (200, 2)), 30, 10,
            ((1, False), (2, False), (2, True)), 3_000,
            (("alone", 1, 1), ("many_tenants", 10_000, 10), ("many_types", 1, 10_000)),
            10_000_000, 200)
QUICK = Plan(True, 1, 3, 3_000, 3, 5, 1000, 0, (1_000, 20_000), (1_000, 100_000),
             ((0, 1), (10, 1)), 6, 3, ((1, False), (2, True)), 300,
             (("alone", 1, 1), ("many_tenants", 1_000, 10), ("many_types", 1, 1_000)),
             100_000, 20)
MOST_DELIVERIES = 120_000  # keeps the Celery rounds, at a seventh of the speed, in time


def say(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def python(*arguments: str, env: dict[str, str] | None = None,
           stdout: Any = subprocess.DEVNULL) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *arguments], env=env, stdout=stdout,
                            stderr=subprocess.DEVNULL, text=True, cwd=HERE.parent)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


class Postgres:
    """The server every scenario makes a fresh database on."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.server: Any = None
        url = os.environ.get("DATABASE_URL")
        if url is None:
            self.folder = Path(tempfile.mkdtemp(prefix="hookpost-bench-", dir="/tmp"))
            self.server = start_embedded(self.folder)
            url = self.server.get_uri()
        self.url = url

    async def make_room_for_wal(self) -> None:
        """Let the embedded server write a scenario's WAL (about 500 MB for the largest)
        before it asks for a checkpoint; a configured server is left as it is."""
        if self.server is None:
            return
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute("ALTER SYSTEM SET max_wal_size = '4GB'")
            await connection.execute("SELECT pg_reload_conf()")
        finally:
            await connection.close()

    async def fresh(self, name: str = "hookpost_bench") -> str:
        """A new empty hookpost database, just after a checkpoint; its URL.

        A checkpoint inside a measured run makes the first change of every page after it
        write the whole page to the WAL; where it falls depends on how much WAL the runs
        before wrote, so it would load one round and not another. Every scenario starts
        with one instead (see also make_room_for_wal)."""
        url = await self.empty(name)
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            await migrate(pool)
        finally:
            await pool.close()
        return url

    async def empty(self, name: str) -> str:
        """A new database with no schema yet, just after a checkpoint; its URL."""
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await connection.execute(f'CREATE DATABASE "{name}"')
            await connection.execute("CHECKPOINT")
        finally:
            await connection.close()
        return with_database(self.url, name)

    def close(self) -> None:
        if self.server is not None:
            self.server.cleanup()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = python("-m", "bench.receiver", str(self.port), stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"
        self.base = f"http://127.0.0.1:{self.port}"

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with aiohttp.ClientSession() as client, client.request(
                method, self.base + path, json=body) as answer:
            return await answer.json()

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self.call("GET", "/stats")
        return stats

    async def count(self) -> int:
        return int((await self.stats())["count"])

    async def arrivals(self) -> list[tuple[str, float]]:
        return [(id, at) for id, at in await self.call("GET", "/arrivals")]

    async def reset(self) -> None:
        """Forget every arrival and every endpoint's configuration."""
        await self.call("POST", "/reset")

    async def configure(self, endpoint: str, status: int = 200, delay_ms: float = 0) -> None:
        """Answer requests to /ENDPOINT/... with `status` after `delay_ms`, and count them."""
        await self.call("POST", f"/endpoints/{endpoint}", {"status": status,
                                                           "delay_ms": delay_ms})

    async def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while await self.count() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the receiver got {await self.count()} of {count}")
            await asyncio.sleep(0.05)


def hookpost_env(url: str, **settings: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("HOOKPOST_")}
    env.update({"DATABASE_URL": url, "HOOKPOST_ALLOWED_NETWORKS": "127.0.0.0/8",
                "HOOKPOST_ALLOW_HTTP": "true", "HOOKPOST_METRICS_PORT": "0"})
    env.update({f"HOOKPOST_{name.upper()}": value for name, value in settings.items()})
    return env


@contextlib.asynccontextmanager
async def store_of(url: str) -> AsyncIterator[Store]:
    # Loading millions of rows takes longer than the service lets one statement run.
    pool = await create_pool(url, min_size=1, max_size=4, query_timeout=None)
    dispatch_pool = await create_pool(url, min_size=1, max_size=1, generic_plans=True)
    try:
        yield Store(pool, dispatch_pool)
    finally:
        await dispatch_pool.close()
        await pool.close()


async def subscriptions(store: Store, receiver: Receiver, count: int) -> tuple[str, list[str]]:
    """An admin key id and `count` subscriptions to the receiver, as admin."""
    _, admin = await create_key(store, Role.ADMIN, "bench")
    ids = []
    for number in range(count):
        created = await store.insert_subscription(
            admin.id, f"{receiver.base}/s{number}", ["*"], "", "active", new_secret(),
            datetime.now(UTC))
        ids.append(created.id)
    return admin.id, ids


async def preload(store: Store, receiver: Receiver, deliveries: int, events: int,
                  subscription_count: int) -> None:
    key_id, ids = await subscriptions(store, receiver, subscription_count)
    await store.pool.execute(QUERIES["preload_events"], events, key_id)
    await store.pool.execute(QUERIES["preload_deliveries"], deliveries, events, ids)
    await store.pool.execute("ANALYZE")


def deliveries_for(plan: Plan, limit_per_second: float) -> int:
    """How many deliveries the dispatcher runs get: enough for `plan.work_seconds` at the
    limit's rate, in whole tens of thousands."""
    enough = -(-int(limit_per_second * plan.work_seconds) // 10_000) * 10_000
    return min(max(plan.deliveries, enough), MOST_DELIVERIES)


async def until_drained(store: Store, receiver: Receiver, deliveries: int,
                        timeout: float, unfinished: str = "unfinished_deliveries") -> float:
    """Wait until no delivery is unfinished (by query `unfinished`); the unix time it was
    seen so.

    Counting unfinished rows scans the table, which would take CPU from the senders
    being measured, so the table is only asked once the receiver has every delivery."""
    deadline = time.monotonic() + timeout
    await receiver.wait_for(deliveries, timeout)
    while await store.pool.fetchval(QUERIES[unfinished]) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the backlog did not drain")
        await asyncio.sleep(0.01)
    return time.time()


# Scenarios


async def limit(plan: Plan, receiver: Receiver) -> dict[str, float]:
    await receiver.reset()
    process = python("-m", "bench.limit", f"{receiver.base}/limit", str(plan.limit_seconds),
                     "64", stdout=subprocess.PIPE)
    output, _ = process.communicate()
    measured = json.loads(output)
    return {"per_second": measured["requests"] / measured["seconds"], **measured}


def busy_seconds(times: Any) -> float:
    """CPU time the whole machine spent working (every core, every process)."""
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


async def first_arrival(receiver: Receiver, running: list[subprocess.Popen[str]]) -> None:
    """Wait past the `running` senders' start-up: until something arrives."""
    deadline = time.monotonic() + 60
    while await receiver.count() < 1:
        ended = [process.args for process in running if process.poll() is not None]
        if ended:
            raise RuntimeError(f"ended before sending anything: {ended}")
        if time.monotonic() > deadline:
            raise TimeoutError("nothing arrived within 60 s")
        await asyncio.sleep(0.05)


async def drain(store: Store, receiver: Receiver, deliveries: int,
                running: list[subprocess.Popen[str]], unfinished: str,
                recorded: str) -> dict[str, float]:
    """Let the `running` senders deliver the preloaded `deliveries`, then stop them; the
    rate from the first arrival until the query `unfinished` counts none."""
    try:
        await first_arrival(receiver, running)
        before, began = psutil.cpu_times(), time.time()
        drained_at = await until_drained(store, receiver, deliveries, 600, unfinished)
        busy = busy_seconds(psutil.cpu_times()) - busy_seconds(before)
    finally:
        for process in running:
            stop(process)
    attempts = await store.pool.fetchval(QUERIES[recorded])
    arrivals = await receiver.arrivals()
    first = min(at for _, at in arrivals)
    took = drained_at - first
    return {"per_second": deliveries / took, "seconds": took,
            "deliveries": deliveries, "attempts_recorded": attempts,
            "received": len(arrivals),
            # Of all the cores, from the first arrival to the drain: how busy the machine
            # was, and the CPU each delivery cost every process together.
            "machine_busy": busy / ((drained_at - began) * (os.cpu_count() or 1)),
            "cpu_ms_per_delivery": busy * 1000 / deliveries}


async def hookpost_dispatchers(deliveries: int, postgres: Postgres, receiver: Receiver,
                               processes: int) -> dict[str, float]:
    url = await postgres.fresh()
    async with store_of(url) as store:
        await preload(store, receiver, deliveries, deliveries, SUBSCRIPTIONS)
        await receiver.reset()
        running = [python("-m", "hookpost.cli", "dispatcher", env=hookpost_env(url))
                   for _ in range(processes)]
        return await drain(store, receiver, deliveries, running, "unfinished_deliveries",
                           "attempts_recorded")


async def pgqueuer(deliveries: int, postgres: Postgres, receiver: Receiver) -> dict[str, float]:
    """The same messages as jobs of bench/pgqueuer_sender.py, run by one `pgq run`."""
    url = await postgres.fresh()
    connection = await asyncpg.connect(url)
    try:
        queries = Queries.from_asyncpg_connection(connection)
        await queries.install()
        await queries.optimize_autovacuum()  # `pgq autovac`, as its docs ask
        await connection.execute(QUERIES["pgqueuer_tables"])
        endpoints = [f"ep_{number}" for number in range(SUBSCRIPTIONS)]
        for number, endpoint in enumerate(endpoints):
            await connection.execute(QUERIES["pgqueuer_add_endpoint"], endpoint,
                                     f"{receiver.base}/pgqueuer/s{number}", new_secret())
        body = event_body()
        for start in range(0, deliveries, 10_000):  # bounded statements
            size = min(10_000, deliveries - start)
            await queries.enqueue(
                [pgqueuer_sender.ENTRYPOINT] * size, [body] * size, [0] * size,
                headers=[{"endpoint": endpoints[number % SUBSCRIPTIONS],
                          "message": f"evt_pgq_{number}"}
                         for number in range(start, start + size)])
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    async with store_of(url) as store:
        await receiver.reset()
        consumer = python("-m", "bench.pgqueuer_sender", env=hookpost_env(url))
        return await drain(store, receiver, deliveries, [consumer], "pgqueuer_unfinished",
                           "pgqueuer_attempts_recorded")


async def celery(deliveries: int, receiver: Receiver) -> dict[str, float] | None:
    try:
        import redis

        from bench.celery_sender import deliver
        redis.Redis(host="127.0.0.1", port=6379, db=15).flushdb()
    except Exception as error:  # no Redis here: say so and go on
        say(f"celery skipped: {error}")
        return None
    await receiver.reset()
    secret = new_secret()
    body = event_body().decode()
    for number in range(deliveries):
        id = f"evt_celery_{number}"
        timestamp = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": id,
                   "webhook-timestamp": str(timestamp),
                   "webhook-signature": signature_header([secret], id, timestamp,
                                                         body.encode())}
        deliver.apply_async((f"{receiver.base}/celery", body, headers))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.celery_sender", "worker", "-c", "2",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "WARNING"],
        cwd=HERE.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await receiver.wait_for(deliveries, timeout=900)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    arrivals = [at for _, at in await receiver.arrivals()]
    took = max(arrivals) - min(arrivals)
    return {"per_second": deliveries / took, "seconds": took,
            "deliveries": deliveries}


async def api_process(url: str, port: int) -> subprocess.Popen[str]:
    process = python("-m", "hookpost.cli", "api", env=hookpost_env(url, port=str(port)))
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError):
            async with aiohttp.ClientSession() as client, client.get(
                    f"http://127.0.0.1:{port}/health") as answer:
                if answer.status == 200:
                    return process
        if time.monotonic() > deadline:
            raise TimeoutError("the API did not start")
        await asyncio.sleep(0.2)


async def ingest(plan: Plan, postgres: Postgres, receiver: Receiver,
                 fan_out: int) -> dict[str, float]:
    url = await postgres.fresh()
    async with store_of(url) as store:
        await subscriptions(store, receiver, fan_out)
        key, _ = await create_key(store, Role.PRODUCER, "bench")
    return await post_events(plan, url, key)


async def post_events(plan: Plan, url: str, key: str) -> dict[str, Any]:
    """Events posted as fast as one `hookpost api` process takes them, for
    `plan.ingest_seconds`: events/s and response times."""
    port = free_port()
    api = await api_process(url, port)
    try:
        if shutil.which("wrk"):  # light on the CPU the API shares with it
            return wrk(f"http://127.0.0.1:{port}/v1/events", key, plan.ingest_seconds,
                       event_body())
        load = python("-m", "bench.loadgen", f"http://127.0.0.1:{port}", key,
                      str(plan.ingest_seconds), "64", stdout=subprocess.PIPE)
        output, _ = load.communicate()
    finally:
        stop(api)
    measured = json.loads(output)
    return {"per_second": measured["events"] / measured["seconds"], "load": "loadgen",
            **measured}


async def tenant_case(postgres: Postgres, receiver: Receiver, case: str, tenants: int,
                      each: int) -> tuple[str, str]:
    """A fresh database of `case`: `tenants` tenants of `each` subscriptions, loaded by
    SQL, of which exactly one, in the first tenant, matches events of type bench.event.
    Its URL and a producer key."""
    url = await postgres.fresh(f"hookpost_bench_{case}")
    async with store_of(url) as store:
        _, admin = await create_key(store, Role.ADMIN, "bench")
        key, _ = await create_key(store, Role.PRODUCER, "bench")
        await store.pool.execute(QUERIES["bench_tenants"], tenants)
        await store.pool.execute(QUERIES["bench_tenant_subscriptions"], tenants, each,
                                 admin.id, receiver.base, new_secret())
        # Vacuumed and checkpointed too, so neither autovacuum nor the writing out of the
        # load runs beside the timed posts, and only beside the large cases'. Only the
        # tables loaded: vacuumed while empty, events would look empty to the planner, and
        # the check of each delivery's foreign key, planned once per connection, would
        # scan the whole of events as it grew (it made one case of three run at a quarter
        # of the speed of the others, by chance of which connection planned it when).
        await store.pool.execute("VACUUM ANALYZE tenants, subscriptions, subscription_patterns")
        await store.pool.execute("CHECKPOINT")
        # The trigger on subscriptions, not the load, fills the fan-out's index.
        loaded = tuple(await store.pool.fetchrow(QUERIES["bench_tenant_loaded"]) or ())
        assert loaded == (tenants * each, tenants * each), f"subscriptions, patterns: {loaded}"
    return url, key


async def tenant_round(plan: Plan, postgres: Postgres, receiver: Receiver
                       ) -> list[dict[str, Any]]:
    """Every case of the tenants scenario at once: an API each, each posted to by its own
    load generator over the same window, events of type bench.event to the tenant
    `ten_bench_0`. Whatever else the machine does then slows every case alike, so their
    ratios hold where runs one after another swung between about 1,500 and 6,000 events/s
    for the same case."""
    cases = plan.tenant_cases
    prepared = [await tenant_case(postgres, receiver, case, tenants, each)
                for case, tenants, each in cases]
    apis: list[subprocess.Popen[str]] = []
    try:
        ports = []
        for url, _ in prepared:
            ports.append(free_port())
            apis.append(await api_process(url, ports[-1]))
        connections = str(64 // len(cases))  # together, as many as the ingest scenario's
        loads = [python("-m", "bench.loadgen", f"http://127.0.0.1:{port}", key,
                        str(plan.ingest_seconds), connections, "--tenant", "ten_bench_0",
                        stdout=subprocess.PIPE)
                 for port, (_, key) in zip(ports, prepared, strict=True)]
        outputs = [json.loads(load.communicate()[0]) for load in loads]
    finally:
        for api in apis:
            stop(api)
    runs = []
    for (case, tenants, each), (url, _), measured in zip(cases, prepared, outputs, strict=True):
        async with store_of(url) as store:
            events, deliveries = (await store.pool.fetchrow(QUERIES["bench_tenant_fan_out"])
                                  or (0, 0))
        assert 0 < events == deliveries, f"{case}: {events} events stored, {deliveries} deliveries"
        runs.append({"case": case, "tenants": tenants, "subscriptions": tenants * each,
                     "events_stored": events, "deliveries": deliveries, "load": "loadgen",
                     "per_second": measured["events"] / measured["seconds"], **measured})
    return runs


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, key: str, seconds: float, body: bytes) -> dict[str, Any]:
    """POST `body` with wrk (one thread, 64 connections); events/s and latency."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(f"wrk.method = 'POST'\nwrk.body = '{body.decode()}'\n"
                      "wrk.headers['Content-Type'] = 'application/json'\n"
                      f"wrk.headers['Authorization'] = 'Bearer {key}'\n")
    try:
        done = subprocess.run(["wrk", "-t1", "-c64", f"-d{int(seconds)}s", "--latency",
                               "-s", str(script), url], capture_output=True, text=True,
                              check=True)
    finally:
        script.unlink()
    result: dict[str, Any] = {"load": "wrk", "errors": 0}
    for line in done.stdout.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            result["per_second"] = float(parts[1])
        elif parts and parts[0] in ("50%", "99%"):
            number = parts[1].rstrip("umsec")
            unit = parts[1][len(number):]
            result[f"p{parts[0][:-1]}_ms"] = float(number) * _UNITS_MS[unit]
        elif line.strip().startswith("Non-2xx"):
            result["errors"] = int(parts[-1])
    return result


async def end_to_end(plan: Plan, postgres: Postgres, receiver: Receiver) -> dict[str, float]:
    url = await postgres.fresh()
    async with store_of(url) as store:
        await subscriptions(store, receiver, 1)
        key, _ = await create_key(store, Role.PRODUCER, "bench")
    await receiver.reset()
    port = free_port()
    api = await api_process(url, port)
    # All 1,000 events/s go to one receiver. At the default bound of 16 sends at a time per
    # subscription, that bound, not the dispatcher, sets the latency on this machine.
    dispatcher = python("-m", "hookpost.cli", "dispatcher",
                        env=hookpost_env(url, max_per_subscription=str(E2E_PER_SUBSCRIPTION)))
    accepted_file = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        await asyncio.sleep(2)  # the dispatcher is listening
        load = python("-m", "bench.loadgen", f"http://127.0.0.1:{port}", key,
                      str(plan.e2e_seconds), str(plan.e2e_rate), "--rate", str(accepted_file),
                      stdout=subprocess.PIPE)
        output, _ = load.communicate()
        measured = json.loads(output)
        await receiver.wait_for(int(measured["events"]), timeout=120)
    finally:
        stop(dispatcher)
        stop(api)
    accepted = dict(json.loads(accepted_file.read_text()))
    accepted_file.unlink()
    latencies = sorted((at - accepted[id]) * 1000 for id, at in await receiver.arrivals()
                       if id in accepted)
    return {"events": len(latencies), "offered_per_second": plan.e2e_rate,
            "max_per_subscription": E2E_PER_SUBSCRIPTION,
            "p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "max_ms": latencies[-1], "ingest_errors": measured["errors"],
            "ingest_p50_ms": measured["p50_ms"], "ingest_p99_ms": measured["p99_ms"]}


async def noisy(plan: Plan, postgres: Postgres, receiver: Receiver, hangers: int,
                processes: int) -> dict[str, float]:
    """One healthy subscription offered NOISY_RATE events/s through the API, beside
    `hangers` endpoints that never answer, each with NOISY_BACKLOG deliveries due."""
    url = await postgres.fresh()
    async with store_of(url) as store:
        _, admin = await create_key(store, Role.ADMIN, "bench")
        now = datetime.now(UTC)
        # The posted events match only the healthy subscription; the hanging ones get
        # theirs from the preload.
        await store.insert_subscription(admin.id, f"{receiver.base}/healthy/s0",
                                        ["bench.event"], "", "active", new_secret(), now)
        hanging = [(await store.insert_subscription(
            admin.id, f"{receiver.base}/hang/h{number}", ["noise.event"], "", "active",
            new_secret(), now)).id for number in range(hangers)]
        if hanging:
            await store.pool.execute(QUERIES["preload_events"], NOISY_BACKLOG, admin.id)
            await store.pool.execute(QUERIES["preload_deliveries_each"], NOISY_BACKLOG,
                                     hanging)
            await store.pool.execute("ANALYZE")
        key, _ = await create_key(store, Role.PRODUCER, "bench")
    await receiver.reset()
    await receiver.configure("healthy")
    port = free_port()
    api = await api_process(url, port)
    # A short grace: on stop, the attempts still held open are not worth waiting for.
    running = [python("-m", "hookpost.cli", "dispatcher",
                      env=hookpost_env(url, shutdown_grace="1s")) for _ in range(processes)]
    accepted_file = Path(tempfile.mkstemp(suffix=".json")[1])
    try:
        await asyncio.sleep(2)  # the dispatchers listen, and the hanging endpoints hold on
        load = python("-m", "bench.loadgen", f"http://127.0.0.1:{port}", key,
                      str(plan.noisy_seconds), str(NOISY_RATE), "--rate", str(accepted_file),
                      stdout=subprocess.PIPE)
        output, _ = load.communicate()
        measured = json.loads(output)
        deadline = time.monotonic() + plan.noisy_grace
        while time.monotonic() < deadline:
            stats = await receiver.stats()
            if stats["endpoints"]["healthy"]["count"] >= measured["events"]:
                break
            await asyncio.sleep(0.1)
        ended = time.time()
        stats = await receiver.stats()
    finally:
        for process in running:
            stop(process)
        stop(api)
    accepted = dict(json.loads(accepted_file.read_text()))
    accepted_file.unlink()
    arrived: dict[str, float] = {}
    for id, at in await receiver.arrivals():
        if id in accepted:
            arrived.setdefault(id, at)
    # A missing event counts as having waited until the end: its latency is a lower bound.
    latencies = [(arrived.get(id, ended) - at) * 1000 for id, at in accepted.items()]
    return {"hangers": hangers, "dispatchers": processes, "events": len(accepted),
            "missing": len(accepted) - len(arrived),
            "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99),
            "max_ms": max(latencies, default=0.0), "held_at_once": stats["held_peak"],
            "ingest_errors": measured["errors"]}


async def api_request(port: int, key: str, method: str, path: str,
                      body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client, client.request(
            method, f"http://127.0.0.1:{port}{path}", json=body,
            headers={"authorization": f"Bearer {key}"}) as answer:
        return answer.status, await answer.json()


async def storm(plan: Plan, postgres: Postgres, receiver: Receiver, processes: int,
                limited: bool) -> dict[str, Any]:
    """A backlog fails against a down endpoint (503), which then recovers, taking
    STORM_DELAY_MS a request: how hard the retries hit it, and how soon they drain."""
    backlog = plan.storm_backlog
    url = await postgres.fresh()
    async with store_of(url) as store:
        key, admin = await create_key(store, Role.ADMIN, "bench")
    run: dict[str, Any] = {"dispatchers": processes, "limited": limited, "backlog": backlog}
    port = free_port()
    api = await api_process(url, port)
    try:
        status, created = await api_request(port, key, "POST", "/v1/subscriptions", {
            "url": f"{receiver.base}/storm/s0", "event_types": ["*"]})
        assert status == 201, created
        if limited:
            status, answer = await api_request(port, key, "PATCH",
                                               f"/v1/subscriptions/{created['id']}",
                                               STORM_LIMITS)
            if status == 422:
                return {**run, "limits": "not supported"}
            assert status == 200, answer
    finally:
        stop(api)
    async with store_of(url) as store:
        await store.pool.execute(QUERIES["preload_events"], backlog, admin.id)
        await store.pool.execute(QUERIES["preload_deliveries"], backlog, backlog,
                                 [created["id"]])
        await store.pool.execute("ANALYZE")
        await receiver.reset()
        await receiver.configure("storm", status=503)
        running = [python("-m", "hookpost.cli", "dispatcher", env=hookpost_env(url))
                   for _ in range(processes)]
        try:
            await first_arrival(receiver, running)
            down_until = time.monotonic() + STORM_DOWN_SECONDS
            while time.monotonic() < down_until and await receiver.count() < backlog:
                await asyncio.sleep(0.05)
            run["failed_while_down"] = await receiver.count()
            await receiver.reset()
            await receiver.configure("storm", delay_ms=STORM_DELAY_MS)
            recovered = time.time()
            drained_at = await until_drained(store, receiver, backlog, timeout=600)
            stats = await receiver.stats()
        finally:
            for process in running:
                stop(process)
    arrivals = sorted(at for _, at in await receiver.arrivals())
    windows = Counter(int(at - arrivals[0]) for at in arrivals)
    return {**run, "limits": "set" if limited else "none",
            "first_after_s": arrivals[0] - recovered, "drained_after_s": drained_at - recovered,
            "peak_per_second": max(windows.values()),
            "peak_per_second_after_first": max(
                (count for window, count in windows.items() if window > 0), default=0),
            "peak_in_flight": stats["endpoints"]["storm"]["peak"]}


async def memory(plan: Plan, postgres: Postgres, receiver: Receiver,
                 backlog: int) -> dict[str, float]:
    url = await postgres.fresh()
    async with store_of(url) as store:
        await preload(store, receiver, backlog, max(1, backlog // 100), 100)
    await receiver.reset()
    process = python("-m", "hookpost.cli", "dispatcher", env=hookpost_env(url))
    peak = 0
    try:
        watched = psutil.Process(process.pid)
        deadline = time.monotonic() + (5 if plan.quick else 15)
        while time.monotonic() < deadline and process.poll() is None:
            peak = max(peak, watched.memory_info().rss)
            await asyncio.sleep(0.05)
    finally:
        stop(process)
    return {"backlog": backlog, "peak_rss_mb": peak / 2**20,
            "sent_while_watched": await receiver.count()}


async def claim_latency(plan: Plan, postgres: Postgres, receiver: Receiver,
                        rows: int) -> dict[str, float]:
    url = await postgres.fresh()
    async with store_of(url) as store:
        key_id, ids = await subscriptions(store, receiver, 10)
        await store.pool.execute(QUERIES["preload_events"], 1000, key_id)
        await store.pool.execute(QUERIES["preload_finished_deliveries"], rows - 1000, ids[0])
        await store.pool.execute(QUERIES["preload_deliveries"], 1000, 1000, ids)
        await store.pool.execute("VACUUM ANALYZE")
        # Loading 10M rows leaves gigabytes to write out; the checkpoint that does it would
        # otherwise run beside the timed claims, and only beside the large table's.
        await store.pool.execute("CHECKPOINT")
        timings = []
        async with store.dispatch_pool.acquire() as connection:  # planned as a dispatcher's
            for _ in range(30):
                now = datetime.now(UTC)
                transaction = connection.transaction()
                await transaction.start()
                began = time.perf_counter()
                await connection.fetch(HOOKPOST_QUERIES["claim_due"], now, 100,
                                       now + timedelta(minutes=2), "lease_bench", [], 32, [])
                timings.append((time.perf_counter() - began) * 1000)
                await transaction.rollback()
    return {"rows": rows, "median_ms": statistics.median(timings), "p90_ms":
            sorted(timings)[int(0.9 * len(timings))]}


async def stats_latency(plan: Plan, postgres: Postgres, receiver: Receiver) -> dict[str, Any]:
    """`plan.stats_attempts` attempts spread over the last week, across 1,000 subscriptions
    in 50 tenants, recorded through hookpost's own record statement (so its rollups are
    built as the dispatcher builds them), the rollups past retention pruned; then the
    three stats endpoints, each window, timed over HTTP against one `hookpost api`."""
    url = await postgres.fresh()
    attempts = plan.stats_attempts
    deliveries = max(1, attempts // STATS_SUBSCRIPTIONS // 10)  # ten attempts each
    week_end = datetime.now(UTC)
    async with store_of(url) as store:
        key, admin = await create_key(store, Role.ADMIN, "bench")
        await store.ensure_attempts_partitions((week_end - timedelta(days=8)).date(),
                                               (week_end + timedelta(days=1)).date())
        await store.pool.execute(QUERIES["stats_tenants_and_subscriptions"], STATS_TENANTS,
                                 STATS_SUBSCRIPTIONS, admin.id, receiver.base, deliveries)
        await store.pool.execute(QUERIES["stats_record_function"])
        began = time.monotonic()
        for first in range(0, attempts, STATS_CHUNK):
            await store.pool.execute(
                QUERIES["stats_record_attempts"], HOOKPOST_QUERIES["record_attempts"], first,
                min(STATS_CHUNK, attempts - first), attempts, STATS_SUBSCRIPTIONS, deliveries,
                week_end)
        load_seconds = time.monotonic() - began
        say(f"stats: {attempts:,} attempts recorded in {load_seconds:.0f} s")
        began = time.monotonic()
        maintenance = Maintenance(store, Settings(database_url=url))
        pruned = await maintenance.prune_stats()
        prune_seconds = time.monotonic() - began
        # What maintenance does every minute: the minutes of the hours that ended are
        # folded, here two days of them at once.
        began = time.monotonic()
        folded = await maintenance.fold_stats()
        fold_seconds = time.monotonic() - began
        say(f"stats: {folded:,} minute rollups folded in {fold_seconds:.0f} s")
        # Every table the load wrote, attempts too: autovacuum, which 10 million rows
        # written at once would set off, is not to run during the timed calls (a week of
        # recording would have spread its work out).
        await store.pool.execute("VACUUM ANALYZE")
        await store.pool.execute("CHECKPOINT")
        stored, rollups, row_bytes, rollup_bytes = tuple(
            await store.pool.fetchrow(QUERIES["stats_loaded"]) or (0, 0, 0, 0))
    assert stored == attempts, f"{stored} attempts stored of {attempts}"
    port = free_port()
    api = await api_process(url, port)
    paths = {"subscription": "/v1/subscriptions/sub_stats_0/stats",
             "tenant": "/v1/tenants/ten_stats_0/stats", "everything": "/v1/stats"}
    timings: dict[str, list[float]] = {f"{scope} {query}": [] for scope in paths
                                       for query in STATS_QUERIES}
    cold: dict[str, float] = {}  # the warm-up round's: nothing read or summed before
    vacuuming_rounds = 0  # timed rounds that began while autovacuum was at work
    watcher = None
    try:
        watcher = await asyncpg.connect(url)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as client:
            for number in range(plan.stats_calls + 1):  # the first round warms up
                if number:
                    vacuuming_rounds += bool(
                        await watcher.fetchval(QUERIES["autovacuum_workers"]))
                for scope, path in paths.items():
                    for query in STATS_QUERIES:
                        # Timed to the answer's last byte: how long the client then takes
                        # to parse it (7 ms for a day per minute) is the client's.
                        began = time.perf_counter()
                        async with client.get(f"http://127.0.0.1:{port}{path}?{query}") as answer:
                            raw = await answer.read()
                        took = (time.perf_counter() - began) * 1000
                        body = json.loads(raw)
                        assert answer.status == 200, body
                        if number:
                            timings[f"{scope} {query}"].append(took)
                        else:
                            cold[f"{scope} {query}"] = took
                        if scope == "everything" and query == "window=week" and not number:
                            week = body["totals"]["week"]["attempts"]
                            assert 0.9 * attempts <= week <= attempts, week
    finally:
        if watcher is not None:
            await watcher.close()
        stop(api)
    calls = {name: {"p50_ms": percentile(times, 0.5),
                    "p99_ms": percentile(times, 0.99), "max_ms": max(times),
                    "first_ms": cold[name]}
             for name, times in timings.items()}
    return {"attempts": attempts, "subscriptions": STATS_SUBSCRIPTIONS,
            "tenants": STATS_TENANTS, "load_seconds": load_seconds,
            "rollups_pruned": pruned, "prune_seconds": prune_seconds,
            "minutes_folded": folded, "fold_seconds": fold_seconds, "rollups": rollups,
            # On disk, with the space of the rows pruned (not yet reused), and per row.
            "rollup_mb": rollup_bytes / 2**20, "rollup_row_bytes": float(row_bytes),
            "calls_each": plan.stats_calls, "rounds_with_autovacuum": vacuuming_rounds,
            "worst_p99_ms": max(call["p99_ms"] for call in calls.values()), "calls": calls}


# Report


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def mean(runs: list[dict[str, float]], key: str) -> float:
    return statistics.mean(run[key] for run in runs)


def noisy_run(raw: dict[str, Any], hangers: int, processes: int) -> dict[str, Any]:
    """The noisy run with `hangers` hanging endpoints and `processes` dispatchers, or {}."""
    return next((run for run in raw["noisy"]
                 if run["hangers"] == hangers and run["dispatchers"] == processes), {})


def storm_limited(raw: dict[str, Any], key: str) -> float | str | None:
    """`key` of the storm run with limits and two dispatchers; a note if the API refused
    the limits, None if it did not run."""
    run = next((run for run in raw["storm"] if run["limited"] and run["dispatchers"] == 2),
               None)
    if run is None:
        return None
    if run["limits"] == "not supported":
        return "limits not supported"
    value: float = run[key]
    return value


def tenant_runs(raw: dict[str, Any], case: str) -> list[dict[str, Any]]:
    return [run for run in raw["tenants"] if run["case"] == case]


def tenant_rate(raw: dict[str, Any], case: str) -> float | None:
    """Mean events/s of the tenants scenario's `case` over its rounds; None if it did
    not run."""
    runs = tenant_runs(raw, case)
    return mean(runs, "per_second") if runs else None


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    limit_rate = mean(raw["limit"], "per_second")
    one = mean(raw["hookpost_1"], "per_second")
    two = mean(raw["hookpost_2"], "per_second")
    celery_rate = mean(raw["celery"], "per_second") if raw["celery"] else None
    pgqueuer_rate = mean(raw["pgqueuer"], "per_second") if raw["pgqueuer"] else None
    e2e = raw["end_to_end"]
    small, large = raw["memory"]
    rows_small, rows_large = raw["claim"]
    noisy_40, noisy_200_2 = noisy_run(raw, 40, 1), noisy_run(raw, 200, 2)
    alone = tenant_rate(raw, "alone")
    checks: list[tuple[str, float | str | None, str, float]] = [
        ("dispatcher ÷ limit", ratio(one, limit_rate), ">= 0.60", 0.60),
        ("hookpost ÷ Celery", ratio(one, celery_rate), ">= 5", 5.0),
        ("hookpost ÷ pgqueuer sender", ratio(one, pgqueuer_rate), ">= 2", 2.0),
        ("2 dispatchers ÷ 1", ratio(two, one), ">= 1.3", 1.3),
        ("ingest events/s, fan-out 1", raw["ingest_1"]["per_second"], ">= 5000", 5000.0),
        ("ingest, 1 tenant of many ÷ alone", ratio(tenant_rate(raw, "many_tenants"), alone),
         ">= 0.9", 0.9),
        ("ingest, 1 type of many ÷ alone", ratio(tenant_rate(raw, "many_types"), alone),
         ">= 0.8", 0.8),
        ("end-to-end p50 ms", e2e["p50_ms"], "< 5", -5.0),
        ("end-to-end p99 ms", e2e["p99_ms"], "< 25", -25.0),
        ("RSS 1M ÷ 10k backlog", ratio(large["peak_rss_mb"], small["peak_rss_mb"]), "<= 1.2",
         -1.2),
        ("claim latency 10M ÷ 10k rows", ratio(rows_large["median_ms"],
                                               rows_small["median_ms"]), "<= 2", -2.0),
        ("noisy, 40 hanging: healthy p50 ms", noisy_40.get("p50_ms"), "< 20", -20.0),
        ("noisy, 40 hanging: healthy p99 ms", noisy_40.get("p99_ms"), "< 100", -100.0),
        ("noisy, 40 hanging: healthy events missing", noisy_40.get("missing"), "none", 0.0),
        ("noisy, 200 hanging, 2 dispatchers: healthy p99 ms", noisy_200_2.get("p99_ms"),
         "< 250", -250.0),
        ("storm with limits, 2 dispatchers: peak in flight",
         storm_limited(raw, "peak_in_flight"), "<= 4", -4.0),
        ("storm with limits, 2 dispatchers: peak req/s after the first second",
         storm_limited(raw, "peak_per_second_after_first"), "<= 55", -55.0),
        (f"stats at {raw['stats']['attempts']:,} attempts: slowest p99 ms",
         raw["stats"]["worst_p99_ms"], "< 50", -50.0),
    ]
    table = []
    for name, value, target, bound in checks:
        met: bool | None
        if value is None:
            met = None
        elif isinstance(value, str):  # what was to be measured is missing
            met = False
        else:
            met = value >= bound if bound > 0 else value <= -bound
        table.append({"measure": name, "value": value, "target": target, "met": met})
    busy_one = mean(raw["hookpost_1"], "machine_busy")
    return {"limit_per_second": limit_rate, "hookpost_1_per_second": one,
            "hookpost_2_per_second": two, "celery_per_second": celery_rate,
            "pgqueuer_per_second": pgqueuer_rate,
            "machine_busy_1": busy_one, "machine_busy_2": mean(raw["hookpost_2"],
                                                               "machine_busy"),
            "cpu_ms_per_delivery_1": mean(raw["hookpost_1"], "cpu_ms_per_delivery"),
            "cpu_ms_per_delivery_2": mean(raw["hookpost_2"], "cpu_ms_per_delivery"),
            # What two dispatchers could reach if every core worked the whole time and
            # each delivery cost no more CPU than with one.
            "two_dispatchers_ceiling": 1 / busy_one,
            "tenants_per_second": {case: tenant_rate(raw, case) for case in TENANT_CASES},
            "targets": table}


TENANT_CASES = {
    "alone": "one tenant with one subscription",
    "many_tenants": "to one of {tenants:,} tenants holding {subscriptions:,} subscriptions",
    "many_types": "one tenant with {subscriptions:,} subscriptions on distinct types",
}


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    kind = "quick" if report["quick"] else "full"
    lines = [f"hookpost benchmark, {report['finished_at']} ({kind} run) on "
             f"{machine['cpus']} CPUs, {machine['memory_gb']:.0f} GB, "
             f"{machine['python']}, Postgres {machine['postgres']}", "",
             "| measure | value | target | met |", "|---|---|---|---|"]
    for row in report["summary"]["targets"]:
        value = row["value"]
        value = "n/a" if value is None else value if isinstance(value, str) else f"{value:.2f}"
        met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
        lines.append(f"| {row['measure']} | {value} | {row['target']} | {met} |")
    summary = report["summary"]
    raw = report["raw"]
    lines += ["", "| throughput | per second |", "|---|---|",
              f"| raw aiohttp limit (concurrency 64) | {summary['limit_per_second']:.0f} |",
              f"| hookpost, 1 dispatcher | {summary['hookpost_1_per_second']:.0f} |",
              f"| hookpost, 2 dispatchers | {summary['hookpost_2_per_second']:.0f} |",
              "| Celery + requests, 2 workers | "
              + ("skipped" if summary["celery_per_second"] is None
                 else f"{summary['celery_per_second']:.0f}") + " |",
              f"| pgqueuer + aiohttp, 1 process (batch {pgqueuer_sender.BATCH_SIZE}, "
              f"{pgqueuer_sender.MAX_CONCURRENT_TASKS} tasks) | "
              f"{summary['pgqueuer_per_second']:.0f} |",
              f"| ingest, fan-out 1 (p99 {raw['ingest_1']['p99_ms']:.1f} ms) | "
              f"{raw['ingest_1']['per_second']:.0f} |",
              f"| ingest, fan-out 10 (p99 {raw['ingest_10']['p99_ms']:.1f} ms) | "
              f"{raw['ingest_10']['per_second']:.0f} |"]
    delivered = raw["hookpost_1"][0]["deliveries"]
    lines += ["", f"Each dispatcher, Celery and pgqueuer run delivered {delivered:,} messages "
              f"of 1 KB to {SUBSCRIPTIONS} subscriptions."]
    lines += ["", f"The whole machine, every process together: with 1 dispatcher "
              f"{summary['machine_busy_1']:.0%} busy and "
              f"{summary['cpu_ms_per_delivery_1']:.3f} ms of CPU per delivery; with 2, "
              f"{summary['machine_busy_2']:.0%} busy and "
              f"{summary['cpu_ms_per_delivery_2']:.3f} ms. So 2 dispatchers could reach at "
              f"most {summary['two_dispatchers_ceiling']:.2f} times one here, with every core "
              "busy and no delivery costing more."]
    e2e = raw["end_to_end"]
    lines += ["", f"End to end at {e2e['offered_per_second']} events/s to one subscription "
              f"(HOOKPOST_MAX_PER_SUBSCRIPTION={e2e['max_per_subscription']}): p50 "
              f"{e2e['p50_ms']:.1f} ms, p99 {e2e['p99_ms']:.1f} ms, max {e2e['max_ms']:.1f} ms."]
    lines.append("")
    for case, described in TENANT_CASES.items():
        runs = tenant_runs(raw, case)
        if runs:
            each = ", ".join(f"{run['per_second']:.0f}" for run in runs)
            lines.append(f"Ingest at fan-out 1, {described.format(**runs[0])}: "
                         f"{mean(runs, 'per_second'):.0f} events/s (rounds in order: "
                         f"{each}; p99 {max(run['p99_ms'] for run in runs):.1f} ms at most).")
    lines.append("")
    for run in raw["noisy"]:
        lines.append(f"Noisy neighbours, {run['hangers']} endpoints hanging, "
                     f"{run['dispatchers']} dispatcher(s): the healthy subscription's p50 "
                     f"{run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, max "
                     f"{run['max_ms']:.0f} ms, {run['missing']} of {run['events']} events "
                     f"missing; {run['held_at_once']} requests held open at once.")
    lines.append("")
    for run in raw["storm"]:
        limits = ("max_concurrency 4, rate_limit 50" if run["limited"] else "no limits")
        head = (f"Recovery storm of {run['backlog']:,}, {limits}, {run['dispatchers']} "
                "dispatcher(s): ")
        if run["limits"] == "not supported":
            lines.append(head + "limits not supported (the API answered 422).")
            continue
        lines.append(head + f"peak {run['peak_per_second']} requests in a second "
                     f"({run['peak_per_second_after_first']} after the first), "
                     f"{run['peak_in_flight']} in flight at once, drained "
                     f"{run['drained_after_s']:.1f} s after the recovery.")
    lines.append("")
    for run in raw["memory"]:
        lines.append(f"Dispatcher peak RSS with a {run['backlog']:,} backlog: "
                     f"{run['peak_rss_mb']:.0f} MB.")
    for run in raw["claim"]:
        lines.append(f"Claim of 100 with {run['rows']:,} rows: median {run['median_ms']:.2f} ms.")
    run = raw["stats"]
    lines += ["", f"Statistics with {run['attempts']:,} attempts over a week ("
              f"{run['subscriptions']:,} subscriptions in {run['tenants']} tenants; recorded "
              f"in {run['load_seconds']:.0f} s; two days of minutes, "
              f"{run['minutes_folded']:,} rows, folded in {run['fold_seconds']:.0f} s; "
              f"{run['rollups']:,} rollup rows kept, {run['rollup_mb']:.0f} MB): "
              f"{run['calls_each']} calls of each, autovacuum at work in "
              f"{run['rounds_with_autovacuum']} of the rounds; p50 / p99 ms:", ""]
    lines += [f"- {name}: {call['p50_ms']:.1f} / {call['p99_ms']:.1f} "
              f"(the first, cold: {call['first_ms']:.1f})"
              for name, call in run["calls"].items()]
    return "\n".join(lines) + "\n"


SCENARIOS = ("limit", "hookpost_1", "celery", "pgqueuer", "hookpost_2", "ingest", "tenants",
             "end_to_end", "noisy", "storm", "memory", "claim", "stats")


async def run(plan: Plan, only: set[str]) -> dict[str, Any]:
    postgres = Postgres()
    receiver = Receiver()
    raw: dict[str, Any] = {"limit": [], "hookpost_1": [], "hookpost_2": [], "celery": [],
                           "pgqueuer": [], "noisy": [], "storm": []}
    # Set from the first limit run, before any contender that reads it runs.
    deliveries = plan.deliveries
    try:
        await postgres.make_room_for_wal()
        contenders: list[tuple[str, Callable[[], Any]]] = [
            ("limit", lambda: limit(plan, receiver)),
            ("hookpost_1", lambda: hookpost_dispatchers(deliveries, postgres, receiver, 1)),
            ("celery", lambda: celery(deliveries, receiver)),
            ("pgqueuer", lambda: pgqueuer(deliveries, postgres, receiver)),
            ("hookpost_2", lambda: hookpost_dispatchers(deliveries, postgres, receiver, 2)),
        ]
        contenders = [(name, scenario) for name, scenario in contenders if name in only]
        for number in range(plan.rounds):
            order = contenders if number % 2 == 0 else contenders[::-1]
            for name, scenario in order:
                say(f"round {number + 1}: {name} ...")
                result = await scenario()
                if result is not None:
                    raw[name].append(result)
                    say(f"round {number + 1}: {name}: {result}")
                if name == "limit" and number == 0:
                    deliveries = deliveries_for(plan, result["per_second"])
                    say(f"{deliveries:,} deliveries for each dispatcher, Celery and "
                        "pgqueuer run")
        for fan_out in (1, 10) if "ingest" in only else ():
            say(f"ingest, fan-out {fan_out} ...")
            raw[f"ingest_{fan_out}"] = await ingest(plan, postgres, receiver, fan_out)
            say(f"ingest, fan-out {fan_out}: {raw[f'ingest_{fan_out}']}")
        raw["tenants"] = []
        for number in range(plan.rounds if "tenants" in only else 0):
            say(f"round {number + 1}: tenants, every case at once ...")
            for run in await tenant_round(plan, postgres, receiver):
                raw["tenants"].append({"round": number + 1, **run})
                say(f"round {number + 1}: tenants, {run['case']}: {run}")
        if "end_to_end" in only:
            say("end to end ...")
            raw["end_to_end"] = await end_to_end(plan, postgres, receiver)
            say(f"end to end: {raw['end_to_end']}")
        for hangers, processes in plan.noisy_runs if "noisy" in only else ():
            say(f"noisy, {hangers} hanging, {processes} dispatcher(s) ...")
            raw["noisy"].append(await noisy(plan, postgres, receiver, hangers, processes))
            say(f"noisy: {raw['noisy'][-1]}")
        for processes, limited in plan.storm_runs if "storm" in only else ():
            say(f"storm, {processes} dispatcher(s), limits {limited} ...")
            raw["storm"].append(await storm(plan, postgres, receiver, processes, limited))
            say(f"storm: {raw['storm'][-1]}")
        raw["memory"] = []
        for backlog in plan.backlogs if "memory" in only else ():
            say(f"memory with a backlog of {backlog:,} ...")
            raw["memory"].append(await memory(plan, postgres, receiver, backlog))
            say(f"memory: {raw['memory'][-1]}")
        raw["claim"] = []
        for rows in plan.table_rows if "claim" in only else ():
            say(f"claim latency with {rows:,} rows ...")
            raw["claim"].append(await claim_latency(plan, postgres, receiver, rows))
            say(f"claim latency: {raw['claim'][-1]}")
        if "stats" in only:
            say("stats latency ...")
            raw["stats"] = await stats_latency(plan, postgres, receiver)
            say(f"stats: {raw['stats']}")
        version = await _postgres_version(postgres.url)
    finally:
        stop(receiver.process)
        postgres.close()
    return {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": plan.quick,
        "machine": {"cpus": os.cpu_count(), "memory_gb": psutil.virtual_memory().total / 2**30,
                    "python": platform.python_version(), "postgres": version,
                    "platform": platform.platform()},
        "raw": raw,
        "summary": summarize(raw) if only == set(SCENARIOS) else None,
    }


async def _postgres_version(url: str) -> str:
    connection = await asyncpg.connect(url)
    try:
        version: str = await connection.fetchval("SHOW server_version")
        return version
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run of under 2 minutes")
    parser.add_argument("--only", help=f"comma-separated scenarios of {', '.join(SCENARIOS)}"
                        " (a partial run writes no results)")
    arguments = parser.parse_args()
    plan = QUICK if arguments.quick else FULL
    only = set(arguments.only.split(",")) if arguments.only else set(SCENARIOS)
    report = asyncio.run(run(plan, only))
    if report["summary"] is None:
        print(json.dumps(report["raw"], indent=2))
        return
    RESULTS.mkdir(exist_ok=True)
    name = "quick" if plan.quick else "latest"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (RESULTS / f"{name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
