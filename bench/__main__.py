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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import psutil

from api.auth import Role, create_key
from dispatcher.signing import new_secret, signature_header
from hookpost.database import create_pool, migrate, start_embedded
from hookpost.store import QUERIES as HOOKPOST_QUERIES
from hookpost.store import Store, load_queries

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
QUERIES = load_queries(HERE / "bench.sql")
SUBSCRIPTIONS = 16  # spread so the per-subscription bound (16) is not the limit
E2E_PER_SUBSCRIPTION = 64  # the end-to-end run's one receiver takes this many at once
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


FULL = Plan(False, 2, 10, 30_000, 10, 20, 1000, 10, (10_000, 1_000_000), (10_000, 10_000_000))
QUICK = Plan(True, 1, 3, 3_000, 3, 5, 1000, 0, (1_000, 20_000), (1_000, 100_000))
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

    async def fresh(self) -> str:
        """A new empty hookpost database, just after a checkpoint; its URL.

        A checkpoint inside a measured run makes the first change of every page after it
        write the whole page to the WAL; where it falls depends on how much WAL the runs
        before wrote, so it would load one round and not another. Every scenario starts
        with one instead (see also make_room_for_wal)."""
        name = "hookpost_bench"
        connection = await asyncpg.connect(self.url)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await connection.execute(f'CREATE DATABASE "{name}"')
            await connection.execute("CHECKPOINT")
        finally:
            await connection.close()
        url = with_database(self.url, name)
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            await migrate(pool)
        finally:
            await pool.close()
        return url

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

    async def call(self, method: str, path: str) -> Any:
        async with aiohttp.ClientSession() as client, client.request(
                method, self.base + path) as answer:
            return await answer.json()

    async def count(self) -> int:
        stats = await self.call("GET", "/stats")
        return int(stats["count"])

    async def arrivals(self) -> list[tuple[str, float]]:
        return [(id, at) for id, at in await self.call("GET", "/arrivals")]

    async def reset(self) -> None:
        await self.call("POST", "/reset")

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
    pool = await create_pool(url, min_size=1, max_size=4)
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
                        timeout: float) -> float:
    """Wait until no delivery is unfinished; the unix time it was seen so.

    Counting unfinished rows scans the table, which would take CPU from the dispatchers
    being measured, so the table is only asked once the receiver has every delivery."""
    deadline = time.monotonic() + timeout
    await receiver.wait_for(deliveries, timeout)
    while await store.pool.fetchval(QUERIES["unfinished_deliveries"]) > 0:
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


async def hookpost_dispatchers(deliveries: int, postgres: Postgres, receiver: Receiver,
                               processes: int) -> dict[str, float]:
    url = await postgres.fresh()
    async with store_of(url) as store:
        await preload(store, receiver, deliveries, deliveries, SUBSCRIPTIONS)
        await receiver.reset()
        running = [python("-m", "hookpost.cli", "dispatcher", env=hookpost_env(url))
                   for _ in range(processes)]
        try:
            await receiver.wait_for(1, timeout=60)  # past the processes' start-up
            before, began = psutil.cpu_times(), time.time()
            drained_at = await until_drained(store, receiver, deliveries, timeout=600)
            busy = busy_seconds(psutil.cpu_times()) - busy_seconds(before)
        finally:
            for process in running:
                stop(process)
        recorded = await store.pool.fetchval(QUERIES["attempts_recorded"])
    arrivals = await receiver.arrivals()
    first = min(at for _, at in arrivals)
    took = drained_at - first
    return {"per_second": deliveries / took, "seconds": took,
            "deliveries": deliveries, "attempts_recorded": recorded,
            "received": len(arrivals),
            # Of all the cores, from the first arrival to the drain: how busy the machine
            # was, and the CPU each delivery cost every process together.
            "machine_busy": busy / ((drained_at - began) * (os.cpu_count() or 1)),
            "cpu_ms_per_delivery": busy * 1000 / deliveries}


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
    body = json.dumps({"type": "bench.event", "data": {"pad": "x" * 1000}})
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
    port = free_port()
    api = await api_process(url, port)
    try:
        if shutil.which("wrk"):  # light on the CPU the API shares with it
            return wrk(f"http://127.0.0.1:{port}/v1/events", key, plan.ingest_seconds)
        load = python("-m", "bench.loadgen", f"http://127.0.0.1:{port}", key,
                      str(plan.ingest_seconds), "64", stdout=subprocess.PIPE)
        output, _ = load.communicate()
    finally:
        stop(api)
    measured = json.loads(output)
    return {"per_second": measured["events"] / measured["seconds"], "load": "loadgen",
            **measured}


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, key: str, seconds: float) -> dict[str, Any]:
    """POST events with wrk (one thread, 64 connections); events/s and latency."""
    body = json.dumps({"type": "bench.event", "data": {"pad": "x" * 1000}})
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(f"wrk.method = 'POST'\nwrk.body = '{body}'\n"
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


# Report


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def mean(runs: list[dict[str, float]], key: str) -> float:
    return statistics.mean(run[key] for run in runs)


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    limit_rate = mean(raw["limit"], "per_second")
    one = mean(raw["hookpost_1"], "per_second")
    two = mean(raw["hookpost_2"], "per_second")
    celery_rate = mean(raw["celery"], "per_second") if raw["celery"] else None
    e2e = raw["end_to_end"]
    small, large = raw["memory"]
    rows_small, rows_large = raw["claim"]
    checks = [
        ("dispatcher ÷ limit", ratio(one, limit_rate), ">= 0.60", 0.60),
        ("hookpost ÷ Celery", ratio(one, celery_rate), ">= 5", 5.0),
        ("2 dispatchers ÷ 1", ratio(two, one), ">= 1.3", 1.3),
        ("ingest events/s, fan-out 1", raw["ingest_1"]["per_second"], ">= 5000", 5000.0),
        ("end-to-end p50 ms", e2e["p50_ms"], "< 5", -5.0),
        ("end-to-end p99 ms", e2e["p99_ms"], "< 25", -25.0),
        ("RSS 1M ÷ 10k backlog", ratio(large["peak_rss_mb"], small["peak_rss_mb"]), "<= 1.2",
         -1.2),
        ("claim latency 10M ÷ 10k rows", ratio(rows_large["median_ms"],
                                               rows_small["median_ms"]), "<= 2", -2.0),
    ]
    table = []
    for name, value, target, bound in checks:
        met = None if value is None else (value >= bound if bound > 0 else value <= -bound)
        table.append({"measure": name, "value": value, "target": target, "met": met})
    busy_one = mean(raw["hookpost_1"], "machine_busy")
    return {"limit_per_second": limit_rate, "hookpost_1_per_second": one,
            "hookpost_2_per_second": two, "celery_per_second": celery_rate,
            "machine_busy_1": busy_one, "machine_busy_2": mean(raw["hookpost_2"],
                                                               "machine_busy"),
            "cpu_ms_per_delivery_1": mean(raw["hookpost_1"], "cpu_ms_per_delivery"),
            "cpu_ms_per_delivery_2": mean(raw["hookpost_2"], "cpu_ms_per_delivery"),
            # What two dispatchers could reach if every core worked the whole time and
            # each delivery cost no more CPU than with one.
            "two_dispatchers_ceiling": 1 / busy_one,
            "targets": table}


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    kind = "quick" if report["quick"] else "full"
    lines = [f"hookpost benchmark, {report['finished_at']} ({kind} run) on "
             f"{machine['cpus']} CPUs, {machine['memory_gb']:.0f} GB, "
             f"{machine['python']}, Postgres {machine['postgres']}", "",
             "| measure | value | target | met |", "|---|---|---|---|"]
    for row in report["summary"]["targets"]:
        value = "n/a" if row["value"] is None else f"{row['value']:.2f}"
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
              f"| ingest, fan-out 1 (p99 {raw['ingest_1']['p99_ms']:.1f} ms) | "
              f"{raw['ingest_1']['per_second']:.0f} |",
              f"| ingest, fan-out 10 (p99 {raw['ingest_10']['p99_ms']:.1f} ms) | "
              f"{raw['ingest_10']['per_second']:.0f} |"]
    delivered = raw["hookpost_1"][0]["deliveries"]
    lines += ["", f"Each dispatcher and Celery run delivered {delivered:,} messages of 1 KB to "
              f"{SUBSCRIPTIONS} subscriptions."]
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
    for run in raw["memory"]:
        lines.append(f"Dispatcher peak RSS with a {run['backlog']:,} backlog: "
                     f"{run['peak_rss_mb']:.0f} MB.")
    for run in raw["claim"]:
        lines.append(f"Claim of 100 with {run['rows']:,} rows: median {run['median_ms']:.2f} ms.")
    return "\n".join(lines) + "\n"


SCENARIOS = ("limit", "hookpost_1", "celery", "hookpost_2", "ingest", "end_to_end",
             "memory", "claim")


async def run(plan: Plan, only: set[str]) -> dict[str, Any]:
    postgres = Postgres()
    receiver = Receiver()
    raw: dict[str, Any] = {"limit": [], "hookpost_1": [], "hookpost_2": [], "celery": []}
    # Set from the first limit run, before any contender that reads it runs.
    deliveries = plan.deliveries
    try:
        await postgres.make_room_for_wal()
        contenders: list[tuple[str, Callable[[], Any]]] = [
            ("limit", lambda: limit(plan, receiver)),
            ("hookpost_1", lambda: hookpost_dispatchers(deliveries, postgres, receiver, 1)),
            ("celery", lambda: celery(deliveries, receiver)),
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
                    say(f"{deliveries:,} deliveries for each dispatcher and Celery run")
        for fan_out in (1, 10) if "ingest" in only else ():
            say(f"ingest, fan-out {fan_out} ...")
            raw[f"ingest_{fan_out}"] = await ingest(plan, postgres, receiver, fan_out)
            say(f"ingest, fan-out {fan_out}: {raw[f'ingest_{fan_out}']}")
        if "end_to_end" in only:
            say("end to end ...")
            raw["end_to_end"] = await end_to_end(plan, postgres, receiver)
            say(f"end to end: {raw['end_to_end']}")
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
