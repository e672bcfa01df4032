"""Tenants: their API, events fanned out only inside their tenant (by pattern, through an
index), and keys bound to one tenant that can reach no other."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.auth import Role, create_key, hash_key
from hookpost.database import create_pool, migrate
from hookpost.ids import new_id
from hookpost.settings import Settings
from hookpost.store import DEFAULT_TENANT, SYSTEM_TENANT, NewEvent, Store, TenantGone
from tests.integration.conftest import (
    Keys,
    Receiver,
    get_json,
    make_dispatcher,
    post_event,
    start_from_schema,
    subscribe,
)


async def create_tenant(api: TestClient[Any, Any], admin: str, name: str,
                        uid: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name} if uid is None else {"name": name, "uid": uid}
    response = await api.post("/v1/tenants", json=body, headers=Keys.auth(admin))
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def count_rows(pool: asyncpg.Pool) -> dict[str, int]:
    """How many rows each tenant table holds, and how many tenants are active."""
    counts = {}
    for table in ("subscriptions", "events", "deliveries", "api_keys"):
        counts[table] = await pool.fetchval(f"SELECT count(*) FROM {table}")
    counts["active tenants"] = await pool.fetchval(
        "SELECT count(*) FROM tenants WHERE status = 'active'")
    return counts


# The tenants API


async def test_a_tenant_is_made_read_by_id_or_uid_listed_renamed_and_deleted(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver,
) -> None:
    acme = await create_tenant(api, keys.admin, "Acme", uid="customer-42")
    assert acme["id"].startswith("ten_") and acme["uid"] == "customer-42"
    await create_tenant(api, keys.admin, "Globex")

    by_uid = await get_json(api, keys.admin, "/v1/tenants/customer-42")
    assert by_uid["id"] == acme["id"]
    assert (by_uid["subscriptions"], by_uid["pending"]) == ({}, 0)

    first = await get_json(api, keys.admin, "/v1/tenants?limit=2")
    assert [t["name"] for t in first["data"]] == ["Globex", "Acme"]
    rest = await get_json(api, keys.admin, f"/v1/tenants?limit=2&cursor={first['next_cursor']}")
    # The default and the system tenant (of operational events) are there from the start.
    assert sorted(t["id"] for t in rest["data"]) == [DEFAULT_TENANT, SYSTEM_TENANT]
    assert rest["next_cursor"] is None

    renamed = await api.patch(f"/v1/tenants/{acme['id']}", json={"name": "Acme Inc", "uid": None},
                              headers=Keys.auth(keys.admin))
    assert renamed.status == 200
    assert ((await renamed.json())["name"], (await renamed.json())["uid"]) == ("Acme Inc", None)

    await subscribe(api, keys.admin, receiver.url(), tenant_id=acme["id"])
    await post_event(api, keys.admin, tenant_id=acme["id"])
    detail = await get_json(api, keys.admin, f"/v1/tenants/{acme['id']}")
    assert (detail["subscriptions"], detail["pending"]) == ({"active": 1}, 1)

    deleted = await api.delete(f"/v1/tenants/{acme['id']}", headers=Keys.auth(keys.admin))
    assert deleted.status == 204
    gone = await api.get(f"/v1/tenants/{acme['id']}", headers=Keys.auth(keys.admin))
    assert gone.status == 404
    # Its subscriptions went with it, and its pending delivery will never be sent.
    listed = await get_json(api, keys.admin, "/v1/subscriptions")
    assert listed["data"] == []
    deliveries = await get_json(api, keys.admin, "/v1/deliveries")
    assert [d["status"] for d in deliveries["data"]] == ["failed"]


async def test_deleting_a_tenant_revokes_the_keys_bound_to_it(
    api: TestClient[Any, Any], keys: Keys, store: Store,
) -> None:
    tenant = await create_tenant(api, keys.admin, "Acme")
    _, bound = await create_key(store, Role.SUBSCRIBER, "acme", tenant["id"])
    await api.delete(f"/v1/tenants/{tenant['id']}", headers=Keys.auth(keys.admin))
    revoked = await store.pool.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", bound.id)
    assert revoked is not None


@pytest.mark.parametrize(("body", "loc"), [
    ({}, ["body", "name"]),
    ({"name": ""}, ["body", "name"]),
    ({"name": "x", "uid": "ten_123"}, ["body", "uid"]),
    ({"name": "x", "uid": "has space"}, ["body", "uid"]),
    ({"name": "x", "color": "red"}, ["body", "color"]),
])
async def test_a_tenant_that_is_not_valid_is_refused_and_nothing_is_written(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, body: dict[str, Any],
    loc: list[str],
) -> None:
    before = await count_rows(pool)
    response = await api.post("/v1/tenants", json=body, headers=Keys.auth(keys.admin))
    assert response.status == 422
    assert loc in [detail["loc"] for detail in (await response.json())["error"]["details"]]
    assert await count_rows(pool) == before


async def test_a_uid_held_by_another_tenant_is_a_conflict(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool,
) -> None:
    await create_tenant(api, keys.admin, "Acme", uid="c-1")
    other = await create_tenant(api, keys.admin, "Globex")
    before = await count_rows(pool)
    taken = await api.post("/v1/tenants", json={"name": "Again", "uid": "c-1"},
                           headers=Keys.auth(keys.admin))
    moved = await api.patch(f"/v1/tenants/{other['id']}", json={"uid": "c-1"},
                            headers=Keys.auth(keys.admin))
    assert (taken.status, moved.status) == (409, 409)
    assert (await taken.json())["error"]["code"] == "uid_taken"
    assert await count_rows(pool) == before


async def test_the_default_tenant_stays(api: TestClient[Any, Any], keys: Keys) -> None:
    response = await api.delete("/v1/tenants/default", headers=Keys.auth(keys.admin))
    assert response.status == 409
    assert (await get_json(api, keys.admin, "/v1/tenants/default"))["id"] == DEFAULT_TENANT


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/tenants"), ("GET", "/v1/tenants"), ("GET", "/v1/tenants/default"),
    ("PATCH", "/v1/tenants/default"), ("DELETE", "/v1/tenants/default"),
])
async def test_only_admins_manage_tenants(
    api: TestClient[Any, Any], keys: Keys, method: str, path: str,
) -> None:
    for key in (keys.producer, keys.subscriber):
        response = await api.request(method, path, json={"name": "x"}, headers=Keys.auth(key))
        assert response.status == 403


# Fan-out inside a tenant


async def test_an_event_reaches_only_its_own_tenants_subscriptions(
    api: TestClient[Any, Any], keys: Keys, store: Store, settings: Settings,
    receiver: Receiver,
) -> None:
    acme = await create_tenant(api, keys.admin, "Acme", uid="acme")
    globex = await create_tenant(api, keys.admin, "Globex")
    await subscribe(api, keys.admin, receiver.url("/acme"), tenant_id="acme")
    await subscribe(api, keys.admin, receiver.url("/globex"), tenant_id=globex["id"])
    await subscribe(api, keys.admin, receiver.url("/default"))

    accepted = await post_event(api, keys.producer, "invoice.paid", {"amount": 12},
                                tenant_id="acme")
    assert (accepted["tenant_id"], accepted["deliveries"]) == (acme["id"], 1)
    assert (await post_event(api, keys.producer))["tenant_id"] == DEFAULT_TENANT
    await make_dispatcher(store, settings).run(until_idle=True)
    assert [r.path for r in receiver.requests].count("/acme") == 1
    assert [r.path for r in receiver.requests].count("/default") == 1
    assert receiver.to("/globex") == []


async def test_an_event_matches_by_pattern_through_the_index(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
) -> None:
    patterns = {"all": ["*"], "a": ["a.*"], "ab": ["a.b.*"], "exact": ["a.b.c"],
                "shorter": ["a.b"], "longer": ["a.b.c.*"], "other": ["x.*"],
                "twice": ["a.*", "a.b.c", "*"], "paused": ["*"]}
    made = {}
    for name, types in patterns.items():
        made[name] = await subscribe(api, keys.admin, receiver.url(f"/{name}"), types,
                                     status="paused" if name == "paused" else "active")
    accepted = await post_event(api, keys.producer, "a.b.c")
    delivered_to = {row["subscription_id"] for row in await pool.fetch(
        "SELECT subscription_id FROM deliveries WHERE event_id = $1", accepted["id"])}
    expected = {"all", "a", "ab", "exact", "twice", "paused"}
    assert delivered_to == {made[name]["id"] for name in expected}
    assert accepted["deliveries"] == len(expected)  # one each, however many patterns match


async def test_a_batch_of_many_tenants_and_types_fans_each_event_out_to_its_own_matches(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    pool: asyncpg.Pool,
) -> None:
    globex = await create_tenant(api, keys.admin, "Globex")
    made = {
        "default a.*": await subscribe(api, keys.admin, receiver.url(), ["a.*"]),
        "default a.b": await subscribe(api, keys.admin, receiver.url(), ["a.b", "x"]),
        "globex *": await subscribe(api, keys.admin, receiver.url(), ["*"],
                                    tenant_id=globex["id"]),
        "globex a.b": await subscribe(api, keys.admin, receiver.url(), ["a.b"],
                                      tenant_id=globex["id"]),
    }
    producer = await pool.fetchval("SELECT id FROM api_keys WHERE role = 'producer'")
    now = datetime.now(UTC)
    batch = [NewEvent(new_id("evt", now), type, b"{}", producer, None, now, tenant)
             for tenant, type in [(DEFAULT_TENANT, "a.b"), (globex["id"], "a.b"),
                                  (DEFAULT_TENANT, "a.c"), (DEFAULT_TENANT, "a.b"),
                                  (globex["id"], "z"), (DEFAULT_TENANT, "z")]]
    counts = await store.ingest_events(batch)  # one statement, as a busy API stores them

    def reached(event: NewEvent) -> set[str]:
        return {name for name, subscription in made.items()
                if (event.id, subscription["id"]) in delivered}

    delivered = {(row["event_id"], row["subscription_id"]) for row in await pool.fetch(
        "SELECT event_id, subscription_id FROM deliveries")}
    assert [reached(event) for event in batch] == [
        {"default a.*", "default a.b"}, {"globex *", "globex a.b"}, {"default a.*"},
        {"default a.*", "default a.b"}, {"globex *"}, set()]
    assert [counts[event.id] for event in batch] == [2, 2, 1, 2, 1, 0]


async def test_changing_or_deleting_a_subscription_changes_what_it_receives(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver,
) -> None:
    created = await subscribe(api, keys.admin, receiver.url(), ["order.*"])
    assert (await post_event(api, keys.producer, "order.created"))["deliveries"] == 1
    changed = await api.patch(f"/v1/subscriptions/{created['id']}",
                              json={"event_types": ["invoice.paid"]}, headers=Keys.auth(keys.admin))
    assert changed.status == 200
    assert (await post_event(api, keys.producer, "order.created"))["deliveries"] == 0
    assert (await post_event(api, keys.producer, "invoice.paid"))["deliveries"] == 1
    await api.delete(f"/v1/subscriptions/{created['id']}", headers=Keys.auth(keys.admin))
    assert (await post_event(api, keys.producer, "invoice.paid"))["deliveries"] == 0


async def test_posting_to_a_tenant_that_does_not_exist_is_refused(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool,
) -> None:
    before = await count_rows(pool)
    for path, body in (("/v1/events", {"type": "a", "data": {}, "tenant_id": "nobody"}),
                       ("/v1/subscriptions", {"url": "http://127.0.0.1:9/", "event_types": ["*"],
                                              "tenant_id": "ten_nobody"})):
        response = await api.post(path, json=body, headers=Keys.auth(keys.admin))
        assert response.status == 404
        assert (await response.json())["error"]["message"] == "tenant not found"
    assert await count_rows(pool) == before


# Isolation: a key bound to one tenant reaches no other


@dataclass
class OtherTenant:
    """What tenant B holds, which keys of tenant A must not reach."""

    subscription: str
    event: str
    delivery: str


@pytest.fixture
async def other_tenant(api: TestClient[Any, Any], keys: Keys, receiver: Receiver
                       ) -> OtherTenant:
    tenant = await create_tenant(api, keys.admin, "B", uid="b")
    subscription = await subscribe(api, keys.admin, receiver.url(), tenant_id="b")
    event = await post_event(api, keys.admin, tenant_id=tenant["id"])
    delivery = await get_json(api, keys.admin, f"/v1/events/{event['id']}")
    return OtherTenant(subscription["id"], event["id"], delivery["deliveries"][0]["id"])


async def bound_keys(api: TestClient[Any, Any], keys: Keys, store: Store) -> dict[str, str]:
    """Keys of tenant A, and keys bound to no tenant, by a name for each."""
    tenant = await create_tenant(api, keys.admin, "A")
    producer, _ = await create_key(store, Role.PRODUCER, "A producer", tenant["id"])
    subscriber, _ = await create_key(store, Role.SUBSCRIBER, "A subscriber", tenant["id"])
    return {"producer of A": producer, "subscriber of A": subscriber,
            "producer of none": keys.producer, "subscriber of none": keys.subscriber}


# Every endpoint that reads or changes one of tenant B's rows, with a body it would take.
REACHING = [
    ("GET", "/v1/subscriptions/{subscription}", None),
    ("PATCH", "/v1/subscriptions/{subscription}", {"description": "mine now"}),
    ("DELETE", "/v1/subscriptions/{subscription}", None),
    ("POST", "/v1/subscriptions/{subscription}/rotate-secret", {}),
    ("POST", "/v1/subscriptions/{subscription}/test", None),
    ("POST", "/v1/subscriptions/{subscription}/redeliver-failed",
     {"since": "2020-01-01T00:00:00Z"}),
    ("GET", "/v1/events/{event}", None),
    ("GET", "/v1/deliveries/{delivery}", None),
    ("POST", "/v1/deliveries/{delivery}/redeliver", None),
]


async def state_of(pool: asyncpg.Pool) -> list[Any]:
    """Every row a request could change, to tell that it changed nothing."""
    rows = []
    for table in ("subscriptions", "events", "deliveries", "tenants"):
        rows.append([dict(row) for row in await pool.fetch(f"SELECT * FROM {table} ORDER BY id")])
    return rows


async def test_no_key_of_another_tenant_reaches_a_tenants_rows(
    api: TestClient[Any, Any], keys: Keys, store: Store, other_tenant: OtherTenant,
) -> None:
    bound = await bound_keys(api, keys, store)
    names = {"subscription": other_tenant.subscription, "event": other_tenant.event,
             "delivery": other_tenant.delivery}
    before = await state_of(store.pool)
    for method, template, body in REACHING:
        path = template.format(**names)
        for who, key in bound.items():
            response = await api.request(method, path, json=body, headers=Keys.auth(key))
            if response.status == 403:  # a role this endpoint never serves
                continue
            assert response.status == 404, (method, path, who, await response.text())
        admin = await api.request("GET" if method == "GET" else "HEAD", "/v1/tenants",
                                  headers=Keys.auth(keys.admin))
        assert admin.status in (200, 405)
    assert await state_of(store.pool) == before
    # Lists leave them out.
    for who, key in bound.items():
        if "subscriber" not in who:
            continue
        for path in ("/v1/subscriptions", "/v1/deliveries",
                     f"/v1/deliveries?subscription_id={other_tenant.subscription}",
                     f"/v1/deliveries?event_id={other_tenant.event}"):
            assert (await get_json(api, key, path))["data"] == [], (who, path)


async def test_a_key_bound_to_a_tenant_writes_only_to_it(
    api: TestClient[Any, Any], keys: Keys, store: Store, receiver: Receiver,
    other_tenant: OtherTenant,
) -> None:
    bound = await bound_keys(api, keys, store)
    before = await count_rows(store.pool)
    for who, path, body in (
        ("producer of A", "/v1/events", {"type": "a", "data": {}, "tenant_id": "b"}),
        ("subscriber of A", "/v1/subscriptions",
         {"url": receiver.url(), "event_types": ["*"], "tenant_id": "b"}),
        # A subscriber key bound to no tenant (any made before tenants) stays in the default.
        ("subscriber of none", "/v1/subscriptions",
         {"url": receiver.url(), "event_types": ["*"], "tenant_id": "b"}),
    ):
        response = await api.post(path, json=body, headers=Keys.auth(bound[who]))
        assert response.status == 404, (who, await response.text())
    assert await count_rows(store.pool) == before

    # Naming no tenant, a bound key writes to its own; a producer of none may name any.
    mine = await subscribe(api, bound["subscriber of A"], receiver.url())
    own = await post_event(api, bound["producer of A"])
    anywhere = await post_event(api, keys.producer, tenant_id="b")
    assert mine["tenant_id"] == own["tenant_id"] != anywhere["tenant_id"]
    assert own["deliveries"] == 1  # to the subscription of A only, not to B's


async def test_a_subscriber_of_a_tenant_sees_every_subscription_of_it(
    api: TestClient[Any, Any], keys: Keys, store: Store, receiver: Receiver,
) -> None:
    tenant = await create_tenant(api, keys.admin, "A")
    first, _ = await create_key(store, Role.SUBSCRIBER, "first", tenant["id"])
    second, _ = await create_key(store, Role.SUBSCRIBER, "second", tenant["id"])
    made = await subscribe(api, first, receiver.url())
    event = await post_event(api, keys.admin, tenant_id=tenant["id"])
    assert [s["id"] for s in (await get_json(api, second, "/v1/subscriptions"))["data"]] == [
        made["id"]]
    seen = await get_json(api, second, f"/v1/events/{event['id']}")
    assert [d["subscription_id"] for d in seen["deliveries"]] == [made["id"]]


# Upgrade


async def test_a_database_made_before_tenants_is_brought_over_with_nothing_lost(
    database_url: str, store: Store, api: TestClient[Any, Any], receiver: Receiver,
    settings: Settings,
) -> None:
    subscriber, producer = "hp_sub_old", "hp_pro_old"
    connection = await asyncpg.connect(database_url)
    try:
        await start_from_schema(connection, "schema-before-tenants.sql")
        # What that schema held: keys, a subscription and a delivery still to be sent.
        for id, role, key in (("key_s", "subscriber", subscriber), ("key_p", "producer", producer)):
            await connection.execute(
                "INSERT INTO api_keys (id, name, role, key_hash) VALUES ($1, $1, $2, $3)",
                id, role, hash_key(key))
        await connection.execute(
            "INSERT INTO subscriptions (id, owner_key_id, url, event_types, secret) VALUES"
            " ('sub_old', 'key_s', $1, '{order.*}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')",
            receiver.url("/old"))
        await connection.execute(
            "INSERT INTO events (id, type, payload, producer_key_id, created_at) VALUES"
            " ('evt_old', 'order.created', '{}', 'key_p', now())")
        await connection.execute(
            "INSERT INTO deliveries (event_id, subscription_id, next_attempt_at, created_at,"
            " updated_at) VALUES ('evt_old', 'sub_old', now(), now(), now())")
    finally:
        await connection.close()
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await migrate(pool)
        await migrate(pool)  # and again, as every start-up does
        for table in ("subscriptions", "events", "deliveries"):
            assert await pool.fetchval(f"SELECT array_agg(DISTINCT tenant_id) FROM {table}") == [
                DEFAULT_TENANT]
        # The indexes of ingest's new shape replace the old ones; events lose their keys.
        indexes = {row["indexname"] for row in await pool.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename IN ('events', 'deliveries')")}
        assert {"deliveries_by_time", "deliveries_by_subscription_and_time",
                "deliveries_by_tenant_and_time"} <= indexes
        assert not indexes & {"deliveries_listing", "deliveries_by_subscription",
                              "events_by_time"}
        assert await pool.fetchval("SELECT count(*) FROM pg_constraint"
                                   " WHERE conrelid = 'events'::regclass AND contype = 'f'") == 0
    finally:
        await pool.close()

    # The old keys keep working, and see what they saw.
    listed = await get_json(api, subscriber, "/v1/subscriptions")
    assert [s["id"] for s in listed["data"]] == ["sub_old"]
    # The pending delivery is still sent, and the old subscription still matches new events.
    assert (await post_event(api, producer, "order.paid"))["deliveries"] == 1
    await make_dispatcher(store, settings).run(until_idle=True)
    assert len(receiver.to("/old")) == 2


# What a review found: uids that move, keys of a deleted tenant, the default's uid


async def test_a_uid_moved_to_another_tenant_names_that_tenant_at_once(
    api: TestClient[Any, Any], keys: Keys,
) -> None:
    first = await create_tenant(api, keys.admin, "First", uid="x")
    assert (await post_event(api, keys.producer, tenant_id="x"))["tenant_id"] == first["id"]
    await api.patch(f"/v1/tenants/{first['id']}", json={"uid": "y"}, headers=Keys.auth(keys.admin))
    second = await create_tenant(api, keys.admin, "Second", uid="x")
    assert (await post_event(api, keys.producer, tenant_id="x"))["tenant_id"] == second["id"]


async def test_a_tenant_made_after_a_miss_is_found_at_once(
    api: TestClient[Any, Any], keys: Keys,
) -> None:
    missing = await api.post("/v1/events", json={"type": "a", "data": {}, "tenant_id": "late"},
                             headers=Keys.auth(keys.producer))
    assert missing.status == 404
    late = await create_tenant(api, keys.admin, "Late", uid="late")
    assert (await post_event(api, keys.producer, tenant_id="late"))["tenant_id"] == late["id"]


async def test_a_key_of_a_deleted_tenant_writes_nothing_more(
    api: TestClient[Any, Any], keys: Keys, store: Store, receiver: Receiver,
) -> None:
    tenant = await create_tenant(api, keys.admin, "Gone")
    subscriber, _ = await create_key(store, Role.SUBSCRIBER, "gone", tenant["id"])
    await subscribe(api, subscriber, receiver.url())  # its key is now in the cache
    await api.delete(f"/v1/tenants/{tenant['id']}", headers=Keys.auth(keys.admin))
    before = await count_rows(store.pool)
    response = await api.post("/v1/subscriptions", json={"url": receiver.url(),
                              "event_types": ["*"]}, headers=Keys.auth(subscriber))
    assert response.status == 401
    assert await count_rows(store.pool) == before


async def test_a_subscription_is_never_made_in_a_deleted_tenant(
    store: Store, api: TestClient[Any, Any], keys: Keys,
) -> None:
    tenant = await create_tenant(api, keys.admin, "Gone")
    await api.delete(f"/v1/tenants/{tenant['id']}", headers=Keys.auth(keys.admin))
    with pytest.raises(TenantGone):
        await store.insert_subscription("key", "http://127.0.0.1:9/", ["*"], "", "active",
                                        "whsec_x", datetime.now(UTC), tenant_id=tenant["id"])


async def test_the_default_tenant_keeps_its_uid(api: TestClient[Any, Any], keys: Keys) -> None:
    for body in ({"uid": None}, {"uid": "other"}):
        response = await api.patch("/v1/tenants/default", json=body,
                                   headers=Keys.auth(keys.admin))
        assert response.status == 409
    assert (await get_json(api, keys.admin, "/v1/tenants/default"))["uid"] == "default"
    renamed = await api.patch("/v1/tenants/default", json={"name": "Everyone else"},
                              headers=Keys.auth(keys.admin))
    assert renamed.status == 200
