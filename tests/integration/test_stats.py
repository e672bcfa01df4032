"""Delivery statistics: every attempt the dispatcher records counts in its subscription's,
its tenant's and everyone's rollups, which the stats routes read, within what each key may
see; retention keeps them to what the windows read."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from api import models
from api.auth import Role, create_key
from dispatcher.maintenance import Maintenance
from hookpost import stats
from hookpost.settings import Settings
from hookpost.stats import LATENCY_DIGITS, latency_bucket, percentile, success_rate
from hookpost.store import DEFAULT_TENANT, Store
from tests.conftest import FakeClock
from tests.integration.conftest import Keys, Receiver, get_json, make_dispatcher, subscribe

SLOW_SECONDS = 0.3


async def answer_by_path(request: web.Request, number: int) -> web.StreamResponse:
    """/ok answers 200, /bad 400 (failed for good), /down 500 (retried), /slow 200 late."""
    if request.path == "/slow":
        await asyncio.sleep(SLOW_SECONDS)
    status = {"/bad": 400, "/down": 500}.get(request.path, 200)
    return web.Response(status=status, text="answer")


async def post(api: TestClient[Any, Any], key: str, path: str,
               body: dict[str, Any] | None = None, status: int = 202) -> dict[str, Any]:
    response = await api.post(path, json=body or {}, headers=Keys.auth(key))
    assert response.status == status, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def direct_counts(pool: asyncpg.Pool) -> dict[str, dict[str, Any]]:
    """Each scope's attempts by outcome and latency bucket, read from attempts itself."""
    rows = await pool.fetch(
        "SELECT d.subscription_id, a.tenant_id, a.outcome, a.duration_ms"
        " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id")
    counts: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"succeeded": 0, "retry": 0, "failed": 0, "latency": [0] * 35})
    for row in rows:
        for scope in (row["subscription_id"], row["tenant_id"], "*"):
            counts[scope][row["outcome"]] += 1
            counts[scope]["latency"][latency_bucket(row["duration_ms"])] += 1
    return counts


def trimmed(latency: list[int]) -> list[int]:
    while latency and latency[-1] == 0:
        latency = latency[:-1]
    return latency


async def rollups(pool: asyncpg.Pool, grain: str) -> dict[str, dict[str, Any]]:
    """Each scope's rollup rows of `grain`, summed over periods and writers."""
    sums: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"succeeded": 0, "retry": 0, "failed": 0, "latency": [0] * 35})
    for row in await pool.fetch("SELECT * FROM attempt_stats WHERE grain = $1", grain):
        into = sums[row["scope"]]
        into["succeeded"] += row["succeeded"]
        into["retry"] += row["retried"]
        into["failed"] += row["failed"]
        for index, count in enumerate(row["latency"]):
            into["latency"][index] += count
    return sums


def expected_summary(counts: dict[str, Any]) -> dict[str, Any]:
    attempts = counts["succeeded"] + counts["retry"] + counts["failed"]
    return {"attempts": attempts, "succeeded": counts["succeeded"], "retried": counts["retry"],
            "failed": counts["failed"],
            "success_rate": success_rate(counts["succeeded"], attempts),
            "latency_ms": {name: rounded(percentile(counts["latency"], q))
                           for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}}


def rounded(ms: float | None) -> float | None:
    return None if ms is None else round(ms, LATENCY_DIGITS)


async def test_every_attempt_counts_in_its_subscription_tenant_and_everything(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock, pool: asyncpg.Pool,
) -> None:
    api = clocked_api
    receiver.respond = answer_by_path
    acme = await post(api, keys.admin, "/v1/tenants", {"name": "Acme", "uid": "acme"}, 201)
    ok = await subscribe(api, keys.subscriber, receiver.url("/ok"))
    bad = await subscribe(api, keys.subscriber, receiver.url("/bad"))
    slow = await subscribe(api, keys.admin, receiver.url("/slow"), tenant_id=acme["id"])
    down = await subscribe(api, keys.admin, receiver.url("/down"), tenant_id=acme["id"])
    for _ in range(3):
        await post(api, keys.producer, "/v1/events", {"type": "order.created", "data": {}})
    for _ in range(2):
        await post(api, keys.producer, "/v1/events",
                   {"type": "order.created", "data": {}, "tenant_id": acme["id"]})
    dispatcher = make_dispatcher(store, settings, clock)
    await dispatcher.run(until_idle=True)
    # A manual redelivery and a test send count as well.
    page = await get_json(api, keys.subscriber, f"/v1/deliveries?subscription_id={ok['id']}")
    await post(api, keys.subscriber, f"/v1/deliveries/{page['data'][0]['id']}/redeliver")
    await post(api, keys.admin, f"/v1/subscriptions/{slow['id']}/test")
    await dispatcher.run(until_idle=True)

    outcomes = {row["scope"]: (row["succeeded"], row["retried"], row["failed"])
                for row in await pool.fetch(
                    "SELECT scope, sum(succeeded) AS succeeded, sum(retried) AS retried,"
                    " sum(failed) AS failed FROM attempt_stats WHERE grain = 'hour'"
                    " GROUP BY scope")}
    assert outcomes == {ok["id"]: (4, 0, 0), bad["id"]: (0, 0, 3), slow["id"]: (3, 0, 0),
                        down["id"]: (0, 2, 0), DEFAULT_TENANT: (4, 0, 3),
                        acme["id"]: (3, 2, 0), "*": (7, 2, 3)}
    direct = await direct_counts(pool)
    for grain in ("minute", "hour"):
        rolled = await rollups(pool, grain)
        assert rolled.keys() == direct.keys()
        for scope, counts in direct.items():
            assert rolled[scope] == counts, (grain, scope)

    for path, scope in [(f"/v1/subscriptions/{ok['id']}/stats", ok["id"]),
                        (f"/v1/subscriptions/{slow['id']}/stats", slow["id"]),
                        (f"/v1/tenants/{acme['id']}/stats", acme["id"]),
                        ("/v1/tenants/acme/stats", acme["id"]),
                        (f"/v1/tenants/{DEFAULT_TENANT}/stats", DEFAULT_TENANT),
                        ("/v1/stats", "*")]:
        answer = await get_json(api, keys.admin, path)
        models.Stats.model_validate(answer)  # written without the model, held to it here
        assert (answer["scope"], answer["as_of"]) == (scope, clock.now.isoformat().replace(
            "+00:00", "Z"))
        expected = expected_summary(direct[scope])
        assert answer["totals"] == {"hour": expected, "day": expected, "week": expected}
        points = answer["series"]["points"]
        assert (answer["series"]["window"], answer["series"]["interval"], len(points)) == (
            "day", "hour", 24)
        assert points[-1] == {"start": "2026-01-01T12:00:00Z", **expected}
        assert all(point["attempts"] == 0 for point in points[:-1])

    slow_answer = await get_json(api, keys.admin,
                                 f"/v1/subscriptions/{slow['id']}/stats?window=hour")
    latency = slow_answer["totals"]["hour"]["latency_ms"]
    assert 250 <= latency["p50"] <= latency["p99"] <= 350  # every answer took 300 ms or so
    assert slow_answer["totals"]["hour"]["success_rate"] == 1.0
    minutes = slow_answer["series"]["points"]
    assert (len(minutes), minutes[0]["start"], minutes[-1]["start"]) == (
        60, "2026-01-01T11:01:00Z", "2026-01-01T12:00:00Z")
    assert [point["attempts"] for point in minutes] == [0] * 59 + [3]
    assert minutes[0]["success_rate"] is None and minutes[0]["latency_ms"]["p50"] is None

    # Time moves on: out of the hour, then of the day, then of the week.
    nothing = {"succeeded": 0, "retry": 0, "failed": 0, "latency": []}
    moved = timedelta()
    for later, in_hour, in_day, in_week in [(timedelta(minutes=59), True, True, True),
                                            (timedelta(minutes=60), False, True, True),
                                            (timedelta(days=1), False, False, True),
                                            (timedelta(days=7), False, False, False)]:
        clock.advance(later - moved)
        moved = later
        totals = (await get_json(api, keys.admin, "/v1/stats?window=week"))["totals"]
        assert [totals[span]["attempts"] for span in ("hour", "day", "week")] == [
            12 if counted else 0 for counted in (in_hour, in_day, in_week)], later
        assert totals["week"] == expected_summary(direct["*"] if in_week else nothing)


async def test_retention_keeps_minutes_two_days_and_hours_eight(
    clocked_api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, clock: FakeClock, pool: asyncpg.Pool,
) -> None:
    await subscribe(clocked_api, keys.subscriber, receiver.url())
    await post(clocked_api, keys.producer, "/v1/events", {"type": "order.created", "data": {}})
    await make_dispatcher(store, settings, clock).run(until_idle=True)

    async def grains_kept(after: timedelta) -> list[str]:
        await Maintenance(store, settings, clock=FakeClock(clock.now + after)).prune_stats()
        rows = await pool.fetch("SELECT DISTINCT grain FROM attempt_stats ORDER BY grain")
        return [row["grain"] for row in rows]

    assert await grains_kept(timedelta(days=2)) == ["hour", "minute"]
    assert await grains_kept(timedelta(days=2, minutes=1)) == ["hour"]
    assert await grains_kept(timedelta(days=8)) == ["hour"]
    assert await grains_kept(timedelta(days=8, hours=1)) == []


async def test_the_database_buckets_latencies_as_python_does(pool: asyncpg.Pool) -> None:
    durations = [*range(-2, 1200), *range(1200, 100_000, 7)]
    buckets = await pool.fetch(
        "SELECT latency_bucket(ms) AS bucket FROM unnest($1::integer[]) AS ms", durations)
    assert [row["bucket"] - 1 for row in buckets] == [latency_bucket(ms) for ms in durations]


async def test_only_keys_that_see_the_rows_read_their_statistics(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
) -> None:
    acme = await post(api, keys.admin, "/v1/tenants", {"name": "Acme", "uid": "acme"}, 201)
    globex = await post(api, keys.admin, "/v1/tenants", {"name": "Globex"}, 201)
    acme_key, _ = await create_key(store, Role.SUBSCRIBER, "acme", acme["id"])
    acme_producer, _ = await create_key(store, Role.PRODUCER, "acme producer", acme["id"])
    mine = await subscribe(api, keys.subscriber, receiver.url())
    acmes = await subscribe(api, acme_key, receiver.url())

    async def status(key: str | None, path: str) -> int:
        headers = {} if key is None else Keys.auth(key)
        response = await api.get(path, headers=headers)
        if response.status != 200:
            assert set((await response.json())["error"]) == {"code", "message", "details"}
        return response.status

    of_mine = f"/v1/subscriptions/{mine['id']}/stats"
    of_acmes = f"/v1/subscriptions/{acmes['id']}/stats"
    cases = [
        (None, of_mine, 401), ("hp_sub_not_a_key", of_mine, 401),
        (keys.subscriber, of_mine, 200), (keys.admin, of_mine, 200),
        (keys.other_subscriber, of_mine, 404), (keys.producer, of_mine, 403),
        (acme_key, of_mine, 404), (acme_key, of_acmes, 200), (keys.subscriber, of_acmes, 404),
        (keys.admin, "/v1/subscriptions/sub_missing/stats", 404),
        (keys.admin, f"/v1/tenants/{acme['id']}/stats", 200),
        (keys.admin, "/v1/tenants/acme/stats", 200),
        (acme_key, f"/v1/tenants/{acme['id']}/stats", 200),
        (acme_key, "/v1/tenants/acme/stats", 200),
        (acme_key, f"/v1/tenants/{globex['id']}/stats", 404),
        (acme_key, f"/v1/tenants/{DEFAULT_TENANT}/stats", 404),
        # A key unbound to a tenant sees only its own subscriptions: not a tenant's totals.
        (keys.subscriber, f"/v1/tenants/{DEFAULT_TENANT}/stats", 404),
        (acme_producer, f"/v1/tenants/{acme['id']}/stats", 403),
        (keys.admin, "/v1/tenants/ten_missing/stats", 404),
        (None, "/v1/stats", 401), (keys.admin, "/v1/stats", 200),
        (keys.subscriber, "/v1/stats", 403), (acme_key, "/v1/stats", 403),
        (keys.producer, "/v1/stats", 403),
    ]
    for key, path, expected in cases:
        assert await status(key, path) == expected, (path, expected)


@pytest.mark.parametrize(("query", "loc"), [
    ("window=month", ["query", "window"]),
    ("interval=second", ["query", "interval"]),
    ("window=week&interval=minute", ["query"]),
    ("since=2026-01-01", ["query", "since"]),
])
async def test_a_bad_query_is_refused(api: TestClient[Any, Any], keys: Keys, receiver: Receiver,
                                      query: str, loc: list[str]) -> None:
    mine = await subscribe(api, keys.subscriber, receiver.url())
    for path, key in [(f"/v1/subscriptions/{mine['id']}/stats", keys.subscriber),
                      (f"/v1/tenants/{DEFAULT_TENANT}/stats", keys.admin),
                      ("/v1/stats", keys.admin)]:
        response = await api.get(f"{path}?{query}", headers=Keys.auth(key))
        assert response.status == 422
        error = (await response.json())["error"]
        assert error["code"] == "validation_error"
        assert [detail["loc"] for detail in error["details"]] == [loc]


FOLD_NOW = datetime(2026, 1, 1, 12, 4, 30, tzinfo=UTC)  # 12:00's minutes are not folded yet


async def rollup(pool: asyncpg.Pool, scope: str, at: str, writer: int, succeeded: int,
                 retried: int, failed: int, latency: list[int]) -> None:
    """A minute row of one writer, and its counts in the hour's row (but not its latency,
    which no test here reads from an hour)."""
    minute = datetime.fromisoformat(at)
    for grain, start in (("minute", minute), ("hour", minute.replace(minute=0))):
        await pool.execute(
            "INSERT INTO attempt_stats AS s (scope, grain, period_start, writer, succeeded,"
            " retried, failed, latency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (scope, grain, period_start, writer) DO UPDATE"
            " SET succeeded = s.succeeded + excluded.succeeded,"
            " retried = s.retried + excluded.retried, failed = s.failed + excluded.failed",
            scope, grain, start, writer, succeeded, retried, failed, latency)


async def reports(store: Store, now: datetime) -> dict[tuple[str, str, str], stats.Report]:
    read = {}
    for scope in ("sub_a", "sub_b"):
        for window, interval in (("hour", "minute"), ("day", "minute"), ("day", "hour")):
            rows = await store.attempt_stats(scope, now, window, interval)  # type: ignore[arg-type]
            read[scope, window, interval] = stats.report(
                rows, now, window, interval)  # type: ignore[arg-type]
    return read


async def test_folding_an_hours_minutes_changes_no_report(
    store: Store, settings: Settings, pool: asyncpg.Pool,
) -> None:
    # Two writers count in the same minute, with histograms of different lengths; one
    # minute of the hour has nothing; the current hour and one that ended four minutes ago
    # are not folded yet.
    await rollup(pool, "sub_a", "2026-01-01T10:00:00+00:00", 1, 2, 0, 0, [1, 1])
    await rollup(pool, "sub_a", "2026-01-01T10:00:00+00:00", 2, 1, 1, 1, [0, 0, 0, 0, 3])
    await rollup(pool, "sub_a", "2026-01-01T10:59:00+00:00", 1, 0, 0, 1, [0, 0, 0, 1])
    await rollup(pool, "sub_b", "2026-01-01T10:30:00+00:00", 1, 5, 0, 0, [0, 5])
    await rollup(pool, "sub_a", "2026-01-01T11:58:00+00:00", 1, 1, 0, 0, [1])
    await rollup(pool, "sub_a", "2026-01-01T12:03:00+00:00", 2, 1, 0, 0, [0, 1])
    before = await reports(Store(pool), FOLD_NOW)
    assert before["sub_a", "day", "minute"].totals["day"].attempts == 8
    # At 11:30 the last hour began at 10:31: of the 10:00 hour, only 10:59 is in it.
    half_past = datetime(2026, 1, 1, 11, 30, tzinfo=UTC)
    before_half_past = await reports(Store(pool), half_past)
    assert before_half_past["sub_a", "hour", "minute"].totals["hour"].attempts == 1

    maintenance = Maintenance(store, settings, clock=FakeClock(FOLD_NOW))
    assert await maintenance.fold_stats() == 4
    assert await maintenance.fold_stats() == 0
    folded = await pool.fetch("SELECT * FROM attempt_stats_folded ORDER BY scope")
    assert [(row["scope"], row["hour_start"].hour, row["minutes"], row["succeeded"],
             row["retried"], row["failed"], row["latency_ends"], row["latency"])
            for row in folded] == [
        ("sub_a", 10, [0, 59], [3, 0], [1, 0], [1, 1], [5, 9], [1, 1, 0, 0, 3, 0, 0, 0, 1]),
        ("sub_b", 10, [30], [5], [0], [0], [2], [0, 5])]
    loose = await pool.fetch("SELECT period_start FROM attempt_stats WHERE grain = 'minute'"
                             " ORDER BY period_start")
    assert [row["period_start"].strftime("%H:%M") for row in loose] == ["11:58", "12:03"]
    assert await reports(store, FOLD_NOW) == before
    assert await reports(Store(pool), FOLD_NOW) == before  # read without remembered folds
    assert await reports(store, half_past) == before_half_past

    # An attempt of 10:30 recorded late counts at once, and is folded on its own later.
    await rollup(pool, "sub_a", "2026-01-01T10:30:00+00:00", 3, 1, 0, 0, [1])
    with_late = await reports(store, FOLD_NOW)
    assert with_late["sub_a", "day", "minute"].totals["day"].attempts == 9
    assert await maintenance.fold_stats() == 1
    assert await pool.fetchval("SELECT count(*) FROM attempt_stats_folded") == 3
    assert await reports(store, FOLD_NOW) == with_late

    # Minutes are kept two days, folded or not.
    later = Maintenance(store, settings, clock=FakeClock(
        datetime(2026, 1, 3, 11, 0, tzinfo=UTC)))
    await later.prune_stats()
    assert await pool.fetchval("SELECT count(*) FROM attempt_stats_folded") == 0


async def test_folding_leaves_the_rows_a_recording_holds_for_the_next_fold(
    store: Store, settings: Settings, pool: asyncpg.Pool,
) -> None:
    await rollup(pool, "sub_a", "2026-01-01T10:00:00+00:00", 1, 1, 0, 0, [1])
    await rollup(pool, "sub_a", "2026-01-01T10:01:00+00:00", 1, 1, 0, 0, [1])
    maintenance = Maintenance(store, settings, clock=FakeClock(FOLD_NOW))
    async with pool.acquire() as recording, recording.transaction():
        await recording.execute(
            "SELECT 1 FROM attempt_stats WHERE grain = 'minute' AND period_start = $1"
            " FOR UPDATE", datetime(2026, 1, 1, 10, 1, tzinfo=UTC))
        assert await asyncio.wait_for(maintenance.fold_stats(), timeout=10) == 1
    assert await maintenance.fold_stats() == 1
    assert [row["minutes"] for row in await pool.fetch(
        "SELECT minutes FROM attempt_stats_folded ORDER BY fold")] == [[0], [1]]
    assert (await reports(store, FOLD_NOW))["sub_a", "day", "minute"].totals[
        "day"].attempts == 2


async def test_a_fold_forgotten_to_make_room_is_read_again(
    store: Store, settings: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("hookpost.store.FOLDED_HOURS_KEPT", 1)
    await rollup(pool, "sub_a", "2026-01-01T09:10:00+00:00", 1, 1, 0, 0, [1])
    await rollup(pool, "sub_a", "2026-01-01T10:10:00+00:00", 1, 2, 0, 0, [1])
    await rollup(pool, "sub_b", "2026-01-01T10:10:00+00:00", 1, 4, 0, 0, [1])
    await Maintenance(store, settings, clock=FakeClock(FOLD_NOW)).fold_stats()
    for _ in range(2):  # the second time, from what one fold kept, and reading the rest
        read = await reports(store, FOLD_NOW)
        series = read["sub_a", "day", "minute"].series
        assert [point.summary.attempts for point in series if point.summary.attempts] == [1, 2]
        assert read["sub_b", "day", "minute"].totals["day"].attempts == 4
