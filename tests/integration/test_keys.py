"""The API key lifecycle: made (bound to a tenant or not) and shown once, listed without
the key, revoked (refused by every API process within the cache's lifetime), over HTTP and
from the command line; and every refusal, which writes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api import auth
from api.app import create_app
from api.auth import KEY_CACHE_SECONDS, Role, create_key, hash_key
from hookpost.clock import utcnow
from hookpost.settings import Settings
from hookpost.store import Store
from tests.integration.conftest import Keys, get_json, wait_for
from tests.integration.processes import environment, free_port, hookpost, service

# Every role may read an event, so this answers 404 to any valid key and 401 to any other.
ANY_ROLE_PATH = "/v1/events/evt_none"


async def make_key(api: TestClient[Any, Any], admin: str, **fields: Any) -> dict[str, Any]:
    response = await api.post("/v1/keys", json=fields, headers=Keys.auth(admin))
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def key_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every api_keys row as stored, hash and revocation included."""
    rows: list[asyncpg.Record] = await pool.fetch("SELECT * FROM api_keys ORDER BY id")
    return rows


async def is_valid(api: TestClient[Any, Any], key: str) -> bool:
    response = await api.get(ANY_ROLE_PATH, headers=Keys.auth(key))
    assert response.status in (401, 404), await response.text()
    return response.status == 404


async def is_refused(api: TestClient[Any, Any], key: str) -> bool:
    return not await is_valid(api, key)


async def walk_keys(api: TestClient[Any, Any], admin: str, limit: int
                    ) -> list[list[dict[str, Any]]]:
    """Every page of GET /v1/keys, following next_cursor to the end."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = await get_json(api, admin, f"/v1/keys?{query}")
        pages.append(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) <= 20, "the cursor never ends"


@pytest.fixture
async def tenant(store: Store) -> str:
    """A tenant with the uid 'acme'; its id."""
    record = await store.insert_tenant("Acme", "acme", utcnow())
    return record.id


# Creating


@pytest.mark.parametrize("role", ["admin", "producer", "subscriber"])
async def test_admin_creates_a_key_of_each_role_shown_only_in_the_answer(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, role: str,
) -> None:
    created = await make_key(api, keys.admin, role=role, name=f"the {role}")

    assert set(created) == {"id", "name", "role", "tenant_id", "created_at", "key"}
    assert created["id"].startswith("key_")
    assert (created["name"], created["role"], created["tenant_id"]) == (f"the {role}", role, None)
    assert created["key"].startswith(f"hp_{role[:3]}_")
    assert await is_valid(api, created["key"])
    # Only the hash is kept, and no listing shows the key again.
    row = await pool.fetchrow("SELECT key_hash FROM api_keys WHERE id = $1", created["id"])
    assert row is not None and row["key_hash"] == hash_key(created["key"])
    listing = await api.get("/v1/keys", headers=Keys.auth(keys.admin))
    text = await listing.text()
    assert created["key"] not in text
    [listed] = [key for key in (await listing.json())["data"] if key["id"] == created["id"]]
    assert listed == {**{name: created[name] for name in created if name != "key"},
                      "revoked_at": None}


@pytest.mark.parametrize("role", ["producer", "subscriber"])
@pytest.mark.parametrize("named_by", ["id", "uid"])
async def test_a_key_bound_to_a_tenant_reaches_that_tenant_alone(
    api: TestClient[Any, Any], keys: Keys, tenant: str, role: str, named_by: str,
) -> None:
    elsewhere = await api.post("/v1/subscriptions", headers=Keys.auth(keys.admin),
                               json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]})
    assert elsewhere.status == 201

    created = await make_key(api, keys.admin, role=role, name="acme's",
                             tenant_id=tenant if named_by == "id" else "acme")

    assert created["tenant_id"] == tenant
    bound = Keys.auth(created["key"])
    if role == "subscriber":
        made = await api.post("/v1/subscriptions", headers=bound,
                              json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]})
        assert made.status == 201
        assert (await made.json())["tenant_id"] == tenant
        listed = await get_json(api, created["key"], "/v1/subscriptions")
        assert [s["tenant_id"] for s in listed["data"]] == [tenant]
    else:
        posted = await api.post("/v1/events", headers=bound, json={"type": "a.b", "data": {}})
        assert posted.status == 202
        assert (await posted.json())["tenant_id"] == tenant
        other = await api.post("/v1/events", headers=bound,
                               json={"tenant_id": "default", "type": "a.b", "data": {}})
        assert other.status == 404


# Listing


@pytest.mark.parametrize(("made", "sizes"), [(2, [3, 3]), (3, [3, 3, 1])])
async def test_cursor_pages_list_every_key_once_newest_first_with_revocations(
    api: TestClient[Any, Any], keys: Keys, made: int, sizes: list[int],
) -> None:
    created = [(await make_key(api, keys.admin, role="producer", name=f"p{n}"))["id"]
               for n in range(made)]
    revoked = await api.delete(f"/v1/keys/{created[1]}", headers=Keys.auth(keys.admin))
    assert revoked.status == 204

    pages = await walk_keys(api, keys.admin, limit=3)

    # The fixture's 4 keys are older, so they come last; a full last page says there is no
    # more rather than promising an empty one.
    assert [len(page) for page in pages] == sizes
    listed = [key for page in pages for key in page]
    assert [key["id"] for key in listed][:made] == created[::-1]
    assert len({key["id"] for key in listed}) == made + 4
    for key in listed:
        assert set(key) == {"id", "name", "role", "tenant_id", "created_at", "revoked_at"}
        assert (key["revoked_at"] is not None) == (key["id"] == created[1])


# Revoking


async def test_a_revoked_key_is_refused_at_once_by_the_api_that_revoked_it(
    api: TestClient[Any, Any], keys: Keys,
) -> None:
    producer = await make_key(api, keys.admin, role="producer", name="leaving")
    assert await is_valid(api, producer["key"])  # now in this process's cache

    response = await api.delete(f"/v1/keys/{producer['id']}", headers=Keys.auth(keys.admin))

    assert response.status == 204
    assert not await is_valid(api, producer["key"])
    again = await api.delete(f"/v1/keys/{producer['id']}", headers=Keys.auth(keys.admin))
    assert again.status == 404
    assert (await again.json())["error"]["message"] == "API key not found"


async def test_another_api_refuses_a_revoked_key_once_its_cache_expires(
    api: TestClient[Any, Any], keys: Keys, settings: Settings, store: Store,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "KEY_CACHE_SECONDS", 0.5)
    other = await aiohttp_client(create_app(settings, store))
    producer = await make_key(api, keys.admin, role="producer", name="leaving")
    assert await is_valid(other, producer["key"])  # cached by the other API

    response = await api.delete(f"/v1/keys/{producer['id']}", headers=Keys.auth(keys.admin))

    assert response.status == 204
    started = time.monotonic()
    await wait_for(lambda: is_refused(other, producer["key"]), timeout=5)
    assert time.monotonic() - started < 0.5 + 1


async def test_a_key_revoked_through_one_api_process_is_refused_by_another_within_5s(
    database_url: str, store: Store,
) -> None:
    admin, _ = await create_key(store, Role.ADMIN, "ops")
    producer, record = await create_key(store, Role.PRODUCER, "billing")
    ports = [free_port(), free_port()]
    envs = [environment(database_url, port=str(port)) for port in ports]
    async with service("api", envs[0]) as first, service("api", envs[1]) as second:
        await first.read_until("listening on")
        await second.read_until("listening on")
        revoker, checker = (f"http://127.0.0.1:{port}" for port in ports)
        async with aiohttp.ClientSession() as client:

            async def status_on_second() -> int:
                async with client.get(checker + ANY_ROLE_PATH,
                                      headers=Keys.auth(producer)) as answer:
                    return answer.status

            assert await status_on_second() == 404  # valid, and now cached there
            async with client.delete(f"{revoker}/v1/keys/{record.id}",
                                     headers=Keys.auth(admin)) as revoked:
                assert revoked.status == 204
            started = time.monotonic()

            async def refused() -> bool:
                return await status_on_second() == 401

            await wait_for(refused, timeout=KEY_CACHE_SECONDS + 5, interval=0.1)
            assert time.monotonic() - started < KEY_CACHE_SECONDS + 1
        assert await first.stop() == 0
        assert await second.stop() == 0


async def test_the_last_valid_admin_key_cannot_be_revoked(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, store: Store,
) -> None:
    [first] = [key for key in await store.list_api_keys(10, None) if key.role == "admin"]
    before = await key_rows(pool)

    refused = await api.delete(f"/v1/keys/{first.id}", headers=Keys.auth(keys.admin))

    assert refused.status == 409
    error = (await refused.json())["error"]
    assert error["code"] == "last_admin_key"
    assert "last valid admin key" in error["message"]
    assert await key_rows(pool) == before
    # With a second admin key the first may go, and then the second is the last.
    second = await make_key(api, keys.admin, role="admin", name="successor")
    assert (await api.delete(f"/v1/keys/{first.id}", headers=Keys.auth(keys.admin))).status == 204
    last = await api.delete(f"/v1/keys/{second['id']}", headers=Keys.auth(second["key"]))
    assert last.status == 409
    assert await is_valid(api, second["key"])


async def test_two_admin_keys_revoked_at_once_leave_one(
    keys: Keys, store: Store, pool: asyncpg.Pool,
) -> None:
    [first] = [key for key in await store.list_api_keys(10, None) if key.role == "admin"]
    _, second = await create_key(store, Role.ADMIN, "rival")

    # Both revocations take their snapshot while a third transaction holds the admin keys,
    # so each began seeing two valid admin keys.
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM api_keys WHERE role = 'admin' FOR UPDATE")
        both = asyncio.gather(store.revoke_api_key(first.id, utcnow()),
                              store.revoke_api_key(second.id, utcnow()))
        await wait_for(lambda: _waiting_for_locks(pool, 2))
    outcomes = await both

    assert sorted(outcomes) == ["last_admin", "revoked"]
    assert await store.count_admin_keys() == 1


async def _waiting_for_locks(pool: asyncpg.Pool, count: int) -> bool:
    waiting: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'")
    return waiting == count


# Refusals: each writes nothing


async def test_only_admins_may_create_list_or_revoke_keys(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, store: Store,
) -> None:
    [target] = [key for key in await store.list_api_keys(10, None) if key.role == "producer"]
    before = await key_rows(pool)

    for key in (keys.producer, keys.subscriber):
        for method, path, body in [
            ("POST", "/v1/keys", {"role": "admin", "name": "mine now"}),
            ("GET", "/v1/keys", None),
            ("DELETE", f"/v1/keys/{target.id}", None),
        ]:
            response = await api.request(method, path, json=body, headers=Keys.auth(key))
            assert response.status == 403, (method, path)
            assert (await response.json())["error"]["code"] == "forbidden"
    unauthorized = await api.post("/v1/keys", json={"role": "admin", "name": "x"})
    assert unauthorized.status == 401

    assert await key_rows(pool) == before


@pytest.mark.parametrize(("body", "loc"), [
    ({"role": "root", "name": "x"}, ["body", "role"]),
    ({"name": "x"}, ["body", "role"]),
    ({"role": "producer"}, ["body", "name"]),
    ({"role": "producer", "name": ""}, ["body", "name"]),
    ({"role": "producer", "name": "x" * 256}, ["body", "name"]),
    ({"role": "producer", "name": "a\x00b"}, ["body", "name"]),
    ({"role": "producer", "name": 7}, ["body", "name"]),
    ({"role": "producer", "name": "x", "key": "hp_pro_chosen"}, ["body", "key"]),
    ({"role": "producer", "name": "x", "tenant_id": 1}, ["body", "tenant_id"]),
    ({"role": "admin", "name": "x", "tenant_id": "acme"}, ["body", "tenant_id"]),
    ({"role": "admin", "name": "x", "tenant_id": "ten_none"}, ["body", "tenant_id"]),
], ids=["bad-role", "no-role", "no-name", "empty-name", "long-name", "nul-in-name",
        "name-not-text", "unknown-field", "tenant-not-text", "admin-bound", "admin-bound-nowhere"])
async def test_a_key_that_does_not_validate_is_refused(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, tenant: str,
    body: dict[str, Any], loc: list[str],
) -> None:
    before = await key_rows(pool)

    response = await api.post("/v1/keys", json=body, headers=Keys.auth(keys.admin))

    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "validation_error"
    assert loc in [detail["loc"] for detail in error["details"]], error
    if loc == ["body", "tenant_id"] and body["role"] == "admin":
        assert "admin key cannot be bound to a tenant" in error["message"]
    assert await key_rows(pool) == before


@pytest.mark.parametrize("named", ["ten_none", "nobody", "acme"])
async def test_a_key_for_a_tenant_that_is_not_there_is_refused(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, store: Store, tenant: str,
    named: str,
) -> None:
    assert await store.delete_tenant(tenant, utcnow()) is not None  # "acme" is deleted now
    before = await key_rows(pool)

    response = await api.post("/v1/keys", headers=Keys.auth(keys.admin),
                              json={"role": "subscriber", "name": "x", "tenant_id": named})

    assert response.status == 404, await response.text()
    assert (await response.json())["error"]["message"] == "tenant not found"
    assert await key_rows(pool) == before


@pytest.mark.parametrize("id", ["key_none", "%00", "sub_none"])
async def test_revoking_a_key_that_is_not_there_is_refused(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, id: str,
) -> None:
    before = await key_rows(pool)

    response = await api.delete(f"/v1/keys/{id}", headers=Keys.auth(keys.admin))

    assert response.status == 404, await response.text()
    assert (await response.json())["error"]["message"] == "API key not found"
    assert await key_rows(pool) == before


async def test_a_cursor_the_api_did_not_give_is_refused(
    api: TestClient[Any, Any], keys: Keys,
) -> None:
    response = await api.get("/v1/keys?cursor=not-a-cursor", headers=Keys.auth(keys.admin))

    assert response.status == 422
    assert ["query", "cursor"] in [d["loc"] for d in (await response.json())["error"]["details"]]


# The command line


async def test_keys_create_binds_a_key_to_a_tenant_named_by_uid(
    database_url: str, pool: asyncpg.Pool, tenant: str,
) -> None:
    made = hookpost("keys", "create", "--role", "subscriber", "--name", "acme portal",
                    "--tenant", "acme", env=environment(database_url))

    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == key + "\n"  # only the key
    row = await pool.fetchrow("SELECT name, role, tenant_id FROM api_keys WHERE key_hash = $1",
                              hash_key(key))
    assert row is not None
    assert (row["name"], row["role"], row["tenant_id"]) == ("acme portal", "subscriber", tenant)


@pytest.mark.parametrize(("role", "tenant_named", "message"), [
    ("admin", "acme", "admin key cannot be bound to a tenant"),
    ("producer", "nobody", "no tenant has the id or uid 'nobody'"),
])
async def test_keys_create_refuses_a_tenant_it_cannot_bind(
    database_url: str, pool: asyncpg.Pool, tenant: str, role: str, tenant_named: str,
    message: str,
) -> None:
    env = environment(database_url)
    refused = hookpost("keys", "create", "--role", role, "--name", "x", "--tenant",
                       tenant_named, env=env)

    assert refused.returncode == 1
    assert refused.stdout == ""
    assert message in refused.stderr
    assert await key_rows(pool) == []


async def test_keys_list_shows_a_table_without_the_keys_and_revoke_revokes(
    database_url: str, store: Store, pool: asyncpg.Pool, tenant: str,
) -> None:
    admin, admin_record = await create_key(store, Role.ADMIN, "ops")
    bound, bound_record = await create_key(store, Role.SUBSCRIBER, "acme\nportal", tenant)
    env = environment(database_url)

    revoked = hookpost("keys", "revoke", bound_record.id, env=env)
    listed = hookpost("keys", "list", env=env)

    assert revoked.returncode == 0, revoked.stderr
    assert bound_record.id in revoked.stdout
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["ID", "ROLE", "NAME", "TENANT", "CREATED", "(UTC)", "REVOKED",
                              "(UTC)"]
    assert len(lines) == 2  # newest first; the name's line break does not break the table
    assert lines[0].startswith(bound_record.id)
    assert "acme portal" in lines[0] and tenant in lines[0]
    assert lines[1].split()[:3] == [admin_record.id, "admin", "ops"]
    assert lines[1].endswith(" -")  # not revoked
    assert not lines[0].endswith(" -")
    assert admin not in listed.stdout and bound not in listed.stdout
    [row] = await pool.fetch("SELECT revoked_at FROM api_keys WHERE id = $1", bound_record.id)
    assert row["revoked_at"] is not None


@pytest.mark.parametrize("which", ["unknown", "revoked", "last admin"])
async def test_keys_revoke_refuses_what_it_cannot_revoke(
    database_url: str, store: Store, pool: asyncpg.Pool, which: str,
) -> None:
    _, admin = await create_key(store, Role.ADMIN, "ops")
    _, producer = await create_key(store, Role.PRODUCER, "gone")
    assert await store.revoke_api_key(producer.id, utcnow()) == "revoked"
    id = {"unknown": "key_none", "revoked": producer.id, "last admin": admin.id}[which]
    before = await key_rows(pool)

    refused = hookpost("keys", "revoke", id, env=environment(database_url))

    assert refused.returncode == 1
    assert refused.stdout == ""
    expected = "last valid admin key" if which == "last admin" else "no valid API key"
    assert expected in refused.stderr and id in refused.stderr
    assert await key_rows(pool) == before
