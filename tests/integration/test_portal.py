"""The tenant portal: POST /v1/tenants/{id}/portal-link makes a one-time link, the link
opens a dashboard session narrowed to its tenant, and the tenants pages (admin only) list
tenants and make links with a CSRF-checked form."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.app import create_app
from api.auth import Role, create_key
from hookpost.settings import Settings
from hookpost.store import Scope, Store
from tests.conftest import FakeClock
from tests.integration.conftest import Keys, Receiver, make_dispatcher, post_event, subscribe
from tests.integration.test_ui import csrf_of, sign_in

Client = TestClient[Any, Any]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def api(settings: Settings, store: Store, clock: FakeClock,
              aiohttp_client: Callable[..., Awaitable[Client]]) -> Client:
    """The API and dashboard on a clock the test moves."""
    return await aiohttp_client(create_app(settings, store, clock=clock))


async def make_tenant(api: Client, keys: Keys, name: str, uid: str | None = None) -> str:
    body: dict[str, Any] = {"name": name} if uid is None else {"name": name, "uid": uid}
    created = await api.post("/v1/tenants", json=body, headers=Keys.auth(keys.admin))
    assert created.status == 201, await created.text()
    tenant_id: str = (await created.json())["id"]
    return tenant_id


async def bound_key(api: Client, keys: Keys, role: str, tenant_id: str) -> str:
    made = await api.post("/v1/keys", json={"role": role, "name": f"{role} of {tenant_id}",
                                            "tenant_id": tenant_id},
                          headers=Keys.auth(keys.admin))
    assert made.status == 201, await made.text()
    key: str = (await made.json())["key"]
    return key


async def portal_link(api: Client, key: str, tenant: str, **body: Any) -> dict[str, Any]:
    answer = await api.post(f"/v1/tenants/{tenant}/portal-link", json=body or None,
                            headers=Keys.auth(key))
    assert answer.status == 201, await answer.text()
    created: dict[str, Any] = await answer.json()
    return created


def path_of(url: str) -> str:
    return url[url.index("/ui/portal/"):]


async def open_link(api: Client, url: str) -> str:
    """Open a portal link in a browser of its own (no cookie of before); the page."""
    api.session.cookie_jar.clear()
    opened = await api.get(path_of(url), allow_redirects=False)
    assert opened.status == 200, await opened.text()
    page = await opened.text()
    assert '<meta http-equiv="refresh" content="0; url=/ui/">' in page
    return page


@pytest.fixture
async def two_tenants(api: Client, keys: Keys, receiver: Receiver, store: Store,
                      settings: Settings) -> dict[str, tuple[str, str]]:
    """Tenants acme (uid acme-co) and globex, each with a subscription and one delivery:
    their (tenant id, delivery id)."""
    made = {}
    for name, uid in (("acme", "acme-co"), ("globex", None)):
        tenant_id = await make_tenant(api, keys, name, uid)
        await subscribe(api, keys.admin, receiver.url(), tenant_id=tenant_id)
        event = await post_event(api, keys.admin, type=f"{name}.created", tenant_id=tenant_id)
        made[name] = (tenant_id, event["id"])
    await make_dispatcher(store, settings).run(until_idle=True)
    deliveries = {}
    for name, (tenant_id, event_id) in made.items():
        answer = await api.get(f"/v1/events/{event_id}", headers=Keys.auth(keys.admin))
        [delivery] = (await answer.json())["deliveries"]
        deliveries[name] = (tenant_id, delivery["id"])
    return deliveries


# The API


async def test_who_may_make_a_portal_link_as_in_the_rest_of_the_api(
    api: Client, keys: Keys, store: Store, pool: asyncpg.Pool, clock: FakeClock,
) -> None:
    acme = await make_tenant(api, keys, "acme", "acme-co")
    globex = await make_tenant(api, keys, "globex")
    acme_producer = await bound_key(api, keys, "producer", acme)
    acme_subscriber = await bound_key(api, keys, "subscriber", acme)

    path = f"/v1/tenants/{acme}/portal-link"
    assert (await api.post(path)).status == 401
    assert (await api.post(path, headers=Keys.auth("hp_adm_not-a-key"))).status == 401
    for key in (keys.subscriber, acme_subscriber):
        assert (await api.post(path, headers=Keys.auth(key))).status == 403
    unbound = await api.post(path, headers=Keys.auth(keys.producer))
    assert unbound.status == 403
    assert "bound to no tenant" in (await unbound.json())["error"]["message"]
    # Another tenant is not there for a key bound to one, as everywhere in the API.
    for other in (globex, "ten_none", "no-such-uid"):
        hidden = await api.post(f"/v1/tenants/{other}/portal-link",
                                headers=Keys.auth(acme_producer))
        assert hidden.status == 404, other
        assert (await hidden.json())["error"]["code"] == "not_found"
    assert (await api.post("/v1/tenants/ten_none/portal-link",
                           headers=Keys.auth(keys.admin))).status == 404
    for body in ({"expires_in_seconds": 59}, {"expires_in_seconds": 3601},
                 {"expires_in_seconds": "600"}, {"expires_in_seconds": None}, {"other": 1}):
        refused = await api.post(path, json=body, headers=Keys.auth(keys.admin))
        assert refused.status == 422, body
    assert await pool.fetchval("SELECT count(*) FROM portal_links") == 0

    by_producer = await portal_link(api, acme_producer, acme)
    assert by_producer["expires_at"] == (clock.now + timedelta(seconds=600)).isoformat().replace(
        "+00:00", "Z")
    origin = str(api.make_url("/")).rstrip("/")
    assert re.fullmatch(re.escape(origin) + r"/ui/portal/[A-Za-z0-9_-]{43}", by_producer["url"])
    by_uid = await portal_link(api, keys.admin, "acme-co", expires_in_seconds=60)
    assert by_uid["expires_at"].startswith("2026-01-01T12:01:00")
    await portal_link(api, keys.admin, globex, expires_in_seconds=3600)

    rows = await pool.fetch("SELECT token_hash, tenant_id, used_at FROM portal_links")
    assert sorted(row["tenant_id"] for row in rows) == sorted([acme, acme, globex])
    token = by_producer["url"].rsplit("/", 1)[1]
    # Only the token's hash is kept.
    assert hashlib.sha256(token.encode()).digest() in {row["token_hash"] for row in rows}
    assert all(row["used_at"] is None for row in rows)


async def test_the_link_base_is_the_public_url_when_one_is_set(
    database_url: str, store: Store, keys: Keys,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> None:
    settings = Settings(database_url=database_url, public_url="https://hooks.example.com/")
    api = await aiohttp_client(create_app(settings, store))
    link = await portal_link(api, keys.admin, "default")
    assert link["url"].startswith("https://hooks.example.com/ui/portal/")


# The portal


async def test_a_portal_link_opens_its_tenant_only_and_only_once(
    api: Client, keys: Keys, store: Store, pool: asyncpg.Pool,
    two_tenants: dict[str, tuple[str, str]],
) -> None:
    (acme, acme_delivery), (globex, globex_delivery) = two_tenants["acme"], two_tenants["globex"]
    link = await portal_link(api, keys.admin, acme)

    opening = await open_link(api, link["url"])
    assert "Webhooks of acme" in opening
    [session] = await pool.fetch("SELECT api_key_id, portal_link_id, tenant_id, created_at, "
                                 "expires_at FROM ui_sessions")
    assert session["tenant_id"] == acme and session["portal_link_id"].startswith("prt_")
    assert session["expires_at"] - session["created_at"] == timedelta(hours=1)
    [admin] = [key for key in await store.list_api_keys(10, None) if key.name == "admin"]
    assert session["api_key_id"] == admin.id  # what it writes, the key that made the link owns

    home = await api.get("/ui/")
    assert home.status == 200 and home.url.path == "/ui/"
    assert "Webhooks of <strong>acme</strong>" in await home.text()
    log = await (await api.get("/ui/deliveries")).text()
    assert acme_delivery in log and globex_delivery not in log
    assert "/ui/tenants" not in log  # no admin navigation
    assert (await api.get(f"/ui/deliveries/{acme_delivery}")).status == 200
    assert (await api.get(f"/ui/deliveries/{globex_delivery}")).status == 404
    redeliver = await api.post(f"/ui/deliveries/{globex_delivery}/redeliver",
                               data={"csrf": csrf_of(log)}, allow_redirects=False)
    assert redeliver.status == 404
    filtered = await (await api.get("/ui/deliveries?event_type=globex.created")).text()
    assert globex_delivery not in filtered
    for admin_page in ("/ui/tenants", f"/ui/tenants/{acme}", f"/ui/tenants/{globex}"):
        assert (await api.get(admin_page)).status == 403, admin_page
    made = await api.post(f"/ui/tenants/{acme}/portal-link", data={"csrf": csrf_of(log)})
    assert made.status == 403
    assert await pool.fetchval("SELECT count(*) FROM portal_links") == 1

    again = await api.get(path_of(link["url"]), allow_redirects=False)
    assert again.status == 410
    page = await again.text()
    assert "This link has expired or was already used" in page and "Ask for a new one" in page
    api.session.cookie_jar.clear()
    assert (await api.get(path_of(link["url"]))).status == 410
    for forged in ("/ui/portal/not-a-link", "/ui/portal/" + "a" * 200, "/ui/portal/%00"):
        assert (await api.get(forged)).status == 410, forged
    assert await pool.fetchval("SELECT count(*) FROM ui_sessions") == 1


async def test_a_link_opened_twice_at_the_same_moment_opens_once(
    api: Client, keys: Keys, store: Store, pool: asyncpg.Pool, clock: FakeClock,
) -> None:
    link = await portal_link(api, keys.admin, "default")
    token_hash = hashlib.sha256(link["url"].rsplit("/", 1)[1].encode()).digest()
    expires_at = clock.now + timedelta(hours=1)
    opened = await asyncio.gather(*(
        store.open_portal_link(token_hash, clock.now, n.to_bytes(32, "big"), "csrf",
                               expires_at) for n in range(8)))
    assert len([link for link in opened if link is not None]) == 1
    assert await pool.fetchval("SELECT count(*) FROM ui_sessions") == 1


async def test_a_portal_link_expires_and_so_does_its_session(
    api: Client, keys: Keys, clock: FakeClock, two_tenants: dict[str, tuple[str, str]],
) -> None:
    acme, acme_delivery = two_tenants["acme"]
    late = await portal_link(api, keys.admin, acme, expires_in_seconds=60)
    in_time = await portal_link(api, keys.admin, acme, expires_in_seconds=120)
    clock.advance(timedelta(seconds=60))
    assert (await api.get(path_of(late["url"]))).status == 410

    await open_link(api, in_time["url"])
    assert acme_delivery in await (await api.get("/ui/deliveries")).text()
    clock.advance(timedelta(hours=1))
    after = await api.get("/ui/deliveries", allow_redirects=False)
    assert after.status == 303 and after.headers["Location"] == "/ui/login"


async def test_revoking_the_key_that_made_a_link_or_deleting_its_tenant_ends_the_portal(
    api: Client, keys: Keys, two_tenants: dict[str, tuple[str, str]],
) -> None:
    acme, _ = two_tenants["acme"]
    globex, _ = two_tenants["globex"]
    producer = await bound_key(api, keys, "producer", acme)
    opened, unopened = [await portal_link(api, producer, acme) for _ in range(2)]
    await open_link(api, opened["url"])
    assert (await api.get("/ui/deliveries")).status == 200
    keys_page = await api.get("/v1/keys", headers=Keys.auth(keys.admin))
    [record] = [key for key in (await keys_page.json())["data"]
                if key["name"] == f"producer of {acme}"]
    assert (await api.delete(f"/v1/keys/{record['id']}",
                             headers=Keys.auth(keys.admin))).status == 204
    after = await api.get("/ui/deliveries", allow_redirects=False)
    assert after.status == 303 and after.headers["Location"] == "/ui/login"
    assert (await api.get(path_of(unopened["url"]))).status == 410

    to_delete, kept = [await portal_link(api, keys.admin, globex) for _ in range(2)]
    await open_link(api, to_delete["url"])
    assert (await api.get("/ui/deliveries")).status == 200
    assert (await api.delete(f"/v1/tenants/{globex}",
                             headers=Keys.auth(keys.admin))).status == 204
    after = await api.get("/ui/deliveries", allow_redirects=False)
    assert after.status == 303 and after.headers["Location"] == "/ui/login"
    assert (await api.get(path_of(kept["url"]))).status == 410


async def test_opening_a_link_ends_the_session_the_browser_had(
    api: Client, keys: Keys, pool: asyncpg.Pool,
) -> None:
    await sign_in(api, keys.admin)
    link = await portal_link(api, keys.admin, "default")
    opened = await api.get(path_of(link["url"]), allow_redirects=False)
    assert opened.status == 200
    [session] = await pool.fetch("SELECT tenant_id FROM ui_sessions")
    assert session["tenant_id"] == "ten_default"
    log = await (await api.get("/ui/deliveries")).text()
    assert "Webhooks of <strong>default</strong>" in log


# The tenants pages


async def test_the_tenants_pages_list_tenants_with_their_counts_for_admins_only(
    api: Client, keys: Keys, store: Store, clock: FakeClock,
    two_tenants: dict[str, tuple[str, str]],
) -> None:
    acme, _ = two_tenants["acme"]
    for n in range(50):
        await store.insert_tenant(f"bulk {n:02d}", None, clock.now - timedelta(days=1))
    subscriber = await bound_key(api, keys, "subscriber", acme)
    await sign_in(api, subscriber)
    assert (await api.get("/ui/tenants")).status == 403
    assert (await api.get(f"/ui/tenants/{acme}")).status == 403
    api.session.cookie_jar.clear()

    log = await sign_in(api, keys.admin)
    assert '<a href="/ui/tenants">Tenants</a>' in log
    first = await (await api.get("/ui/tenants")).text()
    assert first.count("<tr>") == 51
    assert f'<a href="/ui/tenants/{acme}">acme</a>' in first
    row = re.search(rf"<td><a href=\"/ui/tenants/{acme}\">acme</a></td>(.*?)</tr>", first,
                    re.DOTALL)
    assert row is not None
    counts = re.findall(r'<td class="count">(\d+)</td>', row.group(1))
    assert counts == ["1", "0"]  # one subscription, its one delivery already attempted
    assert "acme-co" in row.group(1)
    match = re.search(r'href="([^"]+)" rel="next"', first)
    assert match is not None
    second = await (await api.get(match.group(1).replace("&amp;", "&"))).text()
    # 2, the default and the system tenant (of operational events), and the head
    assert second.count("<tr>") == 5 and 'rel="next"' not in second

    page = await api.get("/ui/tenants/acme-co")
    assert page.status == 200
    text = await page.text()
    assert "Tenant acme" in text and "1 active · 0 paused · 0 disabled" in text
    [subscription] = await store.list_subscriptions(Scope(tenant_id=acme), 10, None)
    assert f'href="/ui/subscriptions/{subscription.id}"' in text
    assert (await api.get("/ui/tenants/ten_none")).status == 404


async def test_the_portal_link_form_needs_its_csrf_token_and_shows_the_link_once(
    api: Client, keys: Keys, pool: asyncpg.Pool, two_tenants: dict[str, tuple[str, str]],
) -> None:
    acme, acme_delivery = two_tenants["acme"]
    await sign_in(api, keys.admin)
    page = await (await api.get(f"/ui/tenants/{acme}")).text()
    action = f"/ui/tenants/{acme}/portal-link"
    assert f'action="{action}"' in page
    for form in ({}, {"csrf": "forged"}, {"csrf": csrf_of(page) + "x"}):
        refused = await api.post(action, data={**form, "expires_in_seconds": "600"})
        assert refused.status == 403
        assert "security token" in await refused.text()
    for seconds in ("59", "3601", "ten"):
        refused = await api.post(action, data={"csrf": csrf_of(page),
                                               "expires_in_seconds": seconds})
        assert refused.status == 422, seconds
    assert await pool.fetchval("SELECT count(*) FROM portal_links") == 0

    made = await api.post(action, data={"csrf": csrf_of(page), "expires_in_seconds": "300"})
    assert made.status == 201
    shown = await made.text()
    match = re.search(r'<input class="link" readonly value="([^"]+)"', shown)
    assert match is not None
    assert "until 2026-01-01 12:05:00.000 UTC" in shown
    again = await (await api.get(f"/ui/tenants/{acme}")).text()
    assert match.group(1) not in again  # shown once
    [row] = await pool.fetch("SELECT tenant_id, created_by_key_id FROM portal_links")
    assert row["tenant_id"] == acme

    await open_link(api, match.group(1))
    assert acme_delivery in await (await api.get("/ui/deliveries")).text()


async def test_a_producer_bound_to_the_tenant_signed_in_may_not_read_the_tenants_pages(
    api: Client, keys: Keys, store: Store,
) -> None:
    producer, _ = await create_key(store, Role.PRODUCER, "p", "ten_default")
    page = await sign_in_as_producer(api, producer)
    assert page.status == 403
    assert (await api.get("/ui/tenants/default")).status == 403


async def sign_in_as_producer(api: Client, key: str) -> Any:
    form = await api.get("/ui/login")
    answer = await api.post("/ui/login", data={"key": key, "csrf": csrf_of(await form.text())},
                            allow_redirects=False)
    assert answer.status == 303
    return await api.get("/ui/tenants")


async def test_the_portal_manages_its_tenants_subscriptions_in_the_name_of_the_links_maker(
    api: Client, keys: Keys, store: Store, pool: asyncpg.Pool,
    two_tenants: dict[str, tuple[str, str]],
) -> None:
    (acme, _), (globex, _) = two_tenants["acme"], two_tenants["globex"]
    ours = await pool.fetchval("SELECT id FROM subscriptions WHERE tenant_id = $1", acme)
    theirs = await pool.fetchval("SELECT id FROM subscriptions WHERE tenant_id = $1", globex)
    producer = await bound_key(api, keys, "producer", acme)
    await open_link(api, (await portal_link(api, producer, acme))["url"])
    listed = await (await api.get("/ui/subscriptions")).text()
    assert ours in listed and theirs not in listed
    page = await (await api.get(f"/ui/subscriptions/{ours}")).text()
    assert (await api.get(f"/ui/subscriptions/{theirs}")).status == 404

    paused = await api.post(f"/ui/subscriptions/{ours}/status",
                            data={"csrf": csrf_of(page), "action": "pause"},
                            allow_redirects=False)
    assert paused.status == 303
    assert await pool.fetchval("SELECT status FROM subscriptions WHERE id = $1", ours) == "paused"
    tested = await api.post(f"/ui/subscriptions/{ours}/test", data={"csrf": csrf_of(page)},
                            allow_redirects=False)
    assert tested.status == 303
    [link_maker] = [key for key in await store.list_api_keys(10, None)
                    if key.name == f"producer of {acme}"]
    producer_of_test = await pool.fetchval(
        "SELECT producer_key_id FROM events WHERE type = 'webhook.test'")
    assert producer_of_test == link_maker.id


async def test_signing_out_of_the_portal_says_where_to_come_back_not_to_paste_a_key(
    api: Client, keys: Keys, pool: asyncpg.Pool, two_tenants: dict[str, tuple[str, str]],
) -> None:
    acme, _ = two_tenants["acme"]
    await open_link(api, (await portal_link(api, keys.admin, acme))["url"])
    home = await (await api.get("/ui/")).text()
    out = await api.post("/ui/logout", data={"csrf": csrf_of(home)}, allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/ui/signed-out"
    page = await (await api.get("/ui/signed-out")).text()
    assert "You have signed out of the webhooks portal" in page and 'name="key"' not in page
    assert 'href="/ui/"' not in page
    assert await pool.fetchval("SELECT count(*) FROM ui_sessions") == 0
    after = await api.get("/ui/deliveries", allow_redirects=False)
    assert after.status == 303 and after.headers["Location"] == "/ui/login"
