"""The dashboard at /ui/: signing in and out with an API key, its pages behind the API's
own role and tenant checks, CSRF tokens on every form, and receivers' answers shown only
as text."""

from __future__ import annotations

import html
import re
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from hookpost.settings import Settings
from hookpost.store import EVERYTHING, Store
from tests.integration.conftest import (
    Keys,
    Receiver,
    make_dispatcher,
    post_event,
    subscribe,
)

HOSTILE_BODY = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _CSRF.search(page)
    assert match is not None, page
    return match.group(1)


async def sign_in(api: TestClient[Any, Any], key: str) -> str:
    """Sign in through the login form; the delivery log's HTML."""
    form = await api.get("/ui/login")
    assert form.status == 200
    answer = await api.post("/ui/login", data={"key": key, "csrf": csrf_of(await form.text())},
                            allow_redirects=False)
    assert answer.status == 303, await answer.text()
    assert answer.headers["Location"] == "/ui/"
    log = await api.get("/ui/deliveries")
    assert log.status == 200, await log.text()
    return await log.text()


async def sessions(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM ui_sessions")
    return count


async def failed_delivery(api: TestClient[Any, Any], keys: Keys, receiver: Receiver,
                          store: Store, settings: Settings, key: str | None = None) -> str:
    """A delivery whose first attempt the receiver answered 500; its id."""
    await subscribe(api, key or keys.subscriber, receiver.url())
    event = await post_event(api, keys.producer)
    await make_dispatcher(store, settings).run(until_idle=True)
    response = await api.get(f"/v1/events/{event['id']}", headers=Keys.auth(keys.admin))
    [delivery] = (await response.json())["deliveries"]
    delivery_id: str = delivery["id"]
    return delivery_id


def hostile_receiver(receiver: Receiver) -> None:
    async def respond(request: web.Request, number: int) -> web.StreamResponse:
        return web.Response(status=500, text=HOSTILE_BODY, content_type="text/html",
                            headers={"X-Evil": '"><script>window.pwned=3</script>'})

    receiver.respond = respond


async def test_signing_in_starts_a_session_cookie_and_signing_out_ends_it(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool,
) -> None:
    form = await api.get("/ui/login")
    token = csrf_of(await form.text())
    answer = await api.post("/ui/login", data={"key": keys.admin, "csrf": token},
                            allow_redirects=False)
    assert answer.status == 303
    cookie = next(value for value in answer.headers.getall("Set-Cookie")
                  if value.startswith("hookpost_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "Max-Age=28800" in cookie
    assert "Secure" not in cookie  # plain http here; behind https it is set
    assert await sessions(pool) == 1

    log = await (await api.get("/ui/deliveries")).text()
    assert "Signed in as <strong>admin</strong>" in log and "every tenant" in log
    assert (await api.get("/ui/login", allow_redirects=False)).status == 303

    out = await api.post("/ui/logout", data={"csrf": csrf_of(log)}, allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/ui/login"
    assert await sessions(pool) == 0
    after = await api.get("/ui/deliveries", allow_redirects=False)
    assert after.status == 303 and after.headers["Location"] == "/ui/login"


async def test_a_wrong_key_gets_the_login_page_again_with_401_and_writes_nothing(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool,
) -> None:
    form = await api.get("/ui/login")
    for key in ("hp_adm_not-a-key", "", "x" * 10_000):
        answer = await api.post("/ui/login", data={"key": key, "csrf": csrf_of(await form.text())},
                                allow_redirects=False)
        assert answer.status == 401
        page = await answer.text()
        assert "That API key is not valid" in page and 'name="key"' in page
    assert await sessions(pool) == 0
    assert (await api.get("/ui/deliveries", allow_redirects=False)).status == 303


async def test_a_revoked_keys_session_stops_working_at_once(
    api: TestClient[Any, Any], keys: Keys, store: Store,
) -> None:
    await sign_in(api, keys.subscriber)
    [subscriber] = [key for key in await store.list_api_keys(10, None)
                    if key.name == "subscriber"]
    revoked = await api.delete(f"/v1/keys/{subscriber.id}", headers=Keys.auth(keys.admin))
    assert revoked.status == 204
    after = await api.get("/ui/deliveries", allow_redirects=False)
    assert after.status == 303 and after.headers["Location"] == "/ui/login"


async def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    receiver.respond = lambda request, number: _answer(500)
    delivery_id = await failed_delivery(api, keys, receiver, store, settings)
    await api.get("/ui/login")  # sets the login form's cookie; the forms below lack its token
    for form in ({"key": keys.admin}, {"key": keys.admin, "csrf": "forged"}):
        refused = await api.post("/ui/login", data=form, allow_redirects=False)
        assert refused.status == 403 and await sessions(pool) == 0

    page = await sign_in(api, keys.admin)
    for form in ({}, {"csrf": "forged"}, {"csrf": csrf_of(page) + "x"}):
        redeliver = await api.post(f"/ui/deliveries/{delivery_id}/redeliver", data=form,
                                   allow_redirects=False)
        assert redeliver.status == 403
        assert "security token" in await redeliver.text()
        logout = await api.post("/ui/logout", data=form, allow_redirects=False)
        assert logout.status == 403
    assert await sessions(pool) == 1
    assert await pool.fetchval("SELECT manual_due_at FROM deliveries WHERE id = $1",
                               delivery_id) is None
    await make_dispatcher(store, settings).run(until_idle=True)
    assert len(receiver.requests) == 1


async def _answer(status: int) -> web.StreamResponse:
    return web.Response(status=status, text=f"answer {status}")


async def test_redeliver_makes_one_more_attempt(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    receiver.respond = lambda request, number: _answer(500 if number == 1 else 200)
    delivery_id = await failed_delivery(api, keys, receiver, store, settings)
    await sign_in(api, keys.subscriber)
    page = await (await api.get(f"/ui/deliveries/{delivery_id}")).text()
    answer = await api.post(f"/ui/deliveries/{delivery_id}/redeliver",
                            data={"csrf": csrf_of(page)}, allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"] == f"/ui/deliveries/{delivery_id}?redelivered=1"
    await make_dispatcher(store, settings).run(until_idle=True)
    after = await (await api.get(answer.headers["Location"])).text()
    assert "Redelivery asked for" in after
    assert "Attempt 2" in after and "manual" in after
    assert '<span class="status succeeded">succeeded</span>' in after


async def test_every_dashboard_answer_carries_a_csp_without_unsafe_inline(
    api: TestClient[Any, Any], keys: Keys,
) -> None:
    answers = [await api.get("/ui/login"), await api.get("/ui/static/hookpost.css"),
               await api.get("/ui/no-such-page"),
               await api.get("/ui/deliveries", allow_redirects=False)]
    await sign_in(api, keys.admin)
    answers += [await api.get("/ui/deliveries"), await api.get("/ui/deliveries/dlv_none"),
                await api.get("/ui/deliveries?status=bogus")]
    assert [answer.status for answer in answers] == [200, 200, 404, 303, 200, 404, 422]
    for answer in answers:
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "script-src" not in policy
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "same-origin"
    assert "text/html" in answers[2].headers["Content-Type"]  # a page, not the API's JSON
    root = await api.get("/", allow_redirects=False)
    assert root.status == 302 and root.headers["Location"] == "/ui/"
    typed = await api.get("/ui", allow_redirects=False)
    assert typed.status == 308 and typed.headers["Location"] == "/ui/"
    assert "Content-Security-Policy" in typed.headers


async def test_another_tenants_delivery_answers_404_and_is_not_listed(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    tenants = {}
    for name in ("acme", "globex"):
        created = await api.post("/v1/tenants", json={"name": name},
                                 headers=Keys.auth(keys.admin))
        tenants[name] = (await created.json())["id"]
    made = await api.post("/v1/keys", json={"role": "subscriber", "name": "acme reader",
                                            "tenant_id": tenants["acme"]},
                          headers=Keys.auth(keys.admin))
    acme_key = (await made.json())["key"]
    await subscribe(api, keys.admin, receiver.url(), tenant_id=tenants["globex"])
    event = await post_event(api, keys.admin, tenant_id=tenants["globex"])
    await make_dispatcher(store, settings).run(until_idle=True)
    response = await api.get(f"/v1/events/{event['id']}", headers=Keys.auth(keys.admin))
    [delivery] = (await response.json())["deliveries"]

    log = await sign_in(api, acme_key)
    assert "tenant acme" in log and delivery["id"] not in log
    page = await api.get(f"/ui/deliveries/{delivery['id']}")
    assert page.status == 404
    redeliver = await api.post(f"/ui/deliveries/{delivery['id']}/redeliver",
                               data={"csrf": csrf_of(log)}, allow_redirects=False)
    assert redeliver.status == 404
    assert await store.get_delivery(delivery["id"], EVERYTHING) is not None

    api.session.cookie_jar.clear()
    admin_log = await sign_in(api, keys.admin)
    assert delivery["id"] in admin_log
    assert (await api.get(f"/ui/deliveries/{delivery['id']}")).status == 200


async def test_a_producer_key_signs_in_but_may_not_read_the_log_as_in_the_api(
    api: TestClient[Any, Any], keys: Keys,
) -> None:
    form = await api.get("/ui/login")
    answer = await api.post("/ui/login",
                            data={"key": keys.producer, "csrf": csrf_of(await form.text())},
                            allow_redirects=False)
    assert answer.status == 303
    refused = await api.get("/ui/deliveries")
    assert refused.status == 403
    assert "this needs a key with role subscriber, admin" in await refused.text()
    assert (await api.get("/v1/deliveries", headers=Keys.auth(keys.producer))).status == 403


async def test_a_hostile_receivers_body_and_headers_are_shown_as_escaped_text(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    hostile_receiver(receiver)
    delivery_id = await failed_delivery(api, keys, receiver, store, settings)
    await sign_in(api, keys.admin)
    page = await (await api.get(f"/ui/deliveries/{delivery_id}")).text()
    assert "<script>window.pwned" not in page and "<img src=x" not in page
    body = re.search(r'<pre class="body">(.*?)</pre>', page, re.DOTALL)
    assert body is not None and html.unescape(body.group(1)) == HOSTILE_BODY
    assert "&lt;script&gt;window.pwned=3&lt;/script&gt;" in page
    assert "HTTP 500" in page and "not with 2xx" in page
    assert "<script" not in page


async def test_the_log_filters_by_status_and_pages_with_a_cursor(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    await subscribe(api, keys.subscriber, receiver.url())
    for n in range(55):
        await post_event(api, keys.producer, type=f"order.n{n}")
    await make_dispatcher(store, settings).run(until_idle=True)
    await sign_in(api, keys.admin)
    first = await (await api.get("/ui/deliveries")).text()
    assert first.count('<tr>') == 51  # the head and a page of 50
    match = re.search(r'href="([^"]+)" rel="next"', first)
    assert match is not None
    second = await (await api.get(html.unescape(match.group(1)))).text()
    assert second.count('<tr>') == 6 and 'rel="next"' not in second
    assert "order.n0<" in second and "order.n54<" in first
    typed = await (await api.get("/ui/deliveries?event_type=order.n7&status=&subscription_id="
                                 )).text()
    assert typed.count('<tr>') == 2
    failed = await (await api.get("/ui/deliveries?status=failed")).text()
    assert "No deliveries match these filters" in failed
