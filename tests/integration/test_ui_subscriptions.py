"""The dashboard's overview and subscription pages: what they show within the caller's
reach, and their forms (pause, resume, enable, edit, test event, rotate secret, bulk
redelivery), each refused without its CSRF token or the API route's role."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from hookpost.settings import Settings
from hookpost.store import Store
from tests.integration.conftest import (
    Keys,
    Receiver,
    answer_status,
    make_dispatcher,
    post_event,
    subscribe,
)
from tests.integration.test_ui import csrf_of, sign_in


async def page_of(api: TestClient[Any, Any], path: str, status: int = 200) -> str:
    answer = await api.get(path)
    text = await answer.text()
    assert answer.status == status, text
    return text


async def post_form(api: TestClient[Any, Any], path: str, csrf: str | None,
                    **fields: str) -> Any:
    data = dict(fields)
    if csrf is not None:
        data["csrf"] = csrf
    return await api.post(path, data=data, allow_redirects=False)


async def make_tenant(api: TestClient[Any, Any], keys: Keys, name: str) -> tuple[str, str]:
    """A tenant and a subscriber key bound to it: (tenant id, key)."""
    created = await api.post("/v1/tenants", json={"name": name}, headers=Keys.auth(keys.admin))
    tenant_id: str = (await created.json())["id"]
    made = await api.post("/v1/keys", json={"role": "subscriber", "name": f"{name} key",
                                            "tenant_id": tenant_id},
                          headers=Keys.auth(keys.admin))
    key: str = (await made.json())["key"]
    return tenant_id, key


def compact(page: str) -> str:
    """The page without the white space between its tags."""
    return re.sub(r">\s+<", "><", page)


async def status_of(pool: asyncpg.Pool, id: str) -> str:
    status: str = await pool.fetchval("SELECT status FROM subscriptions WHERE id = $1", id)
    return status


async def test_the_overview_shows_the_backlog_and_what_needs_attention_in_reach(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    acme, acme_key = await make_tenant(api, keys, "acme")
    globex, _ = await make_tenant(api, keys, "globex")
    receiver.respond = answer_status(500)
    failing = await subscribe(api, keys.admin, receiver.url(), tenant_id=acme)
    paused = await subscribe(api, keys.admin, receiver.url("/paused"), tenant_id=globex,
                             status="paused")
    await subscribe(api, keys.admin, receiver.url("/fine"), tenant_id=acme,
                    event_types=["never.sent"])
    await post_event(api, keys.admin, tenant_id=acme)
    await post_event(api, keys.admin, tenant_id=globex)
    await make_dispatcher(store, settings).run(until_idle=True)

    await sign_in(api, keys.admin)
    overview = await page_of(api, "/ui/")
    assert "<title>Overview" in overview
    # Both deliveries wait: one for its retry, one for its paused subscription.
    assert re.search(r'<span class="figure">2</span> deliveries still to send', overview)
    assert f'href="/ui/subscriptions/{failing["id"]}"' in overview
    assert "every attempt has failed since" in overview
    assert f'href="/ui/subscriptions/{paused["id"]}"' in overview and "paused by hand" in overview

    api.session.cookie_jar.clear()
    await sign_in(api, acme_key)
    mine = await page_of(api, "/ui/")
    assert re.search(r'<span class="figure">1</span> delivery still to send', mine)
    assert failing["id"] in mine and paused["id"] not in mine


async def test_a_disabled_subscription_shows_why_and_enabling_it_starts_afresh(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    receiver.respond = answer_status(410)  # Gone: hookpost disables it
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    await post_event(api, keys.producer)
    await make_dispatcher(store, settings).run(until_idle=True)
    assert await status_of(pool, subscription["id"]) == "disabled"

    log = await sign_in(api, keys.subscriber)
    overview = await page_of(api, "/ui/")
    assert subscription["id"] in overview and "disabled" in overview
    page = await page_of(api, f"/ui/subscriptions/{subscription['id']}")
    assert "410" in page and 'value="enable"' in page
    enabled = await post_form(api, f"/ui/subscriptions/{subscription['id']}/status",
                              csrf_of(log), action="enable")
    assert enabled.status == 303
    assert enabled.headers["Location"] == f"/ui/subscriptions/{subscription['id']}?done=active"
    assert await status_of(pool, subscription["id"]) == "active"
    after = await page_of(api, enabled.headers["Location"])
    assert "Active: deliveries are sent again" in after and 'value="pause"' in after


async def test_a_subscription_shows_its_policy_but_not_its_header_values(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver,
) -> None:
    plain = await subscribe(api, keys.subscriber, receiver.url())
    subscription = await subscribe(api, keys.subscriber, receiver.url(), policy={
        "headers": {"Authorization": "Bearer receiver-token", "X-Team": "billing"},
        "retry_schedule": ["5s", "1m"],
        "status_rules": [{"statuses": "409", "outcome": "succeeded"},
                         {"statuses": "404", "outcome": "retry", "for": "1h"}]})

    await sign_in(api, keys.subscriber)
    page = compact(await page_of(api, f"/ui/subscriptions/{subscription['id']}"))
    assert "<dt>Headers added</dt><dd>Authorization, X-Team</dd>" in page
    assert "receiver-token" not in page and "billing" not in page
    assert "<dt>Retry schedule</dt><dd>5s, 1m</dd>" in page
    assert "<dt>Status rules</dt><dd>409: succeeded; 404: retry for 1h</dd>" in page
    defaults = compact(await page_of(api, f"/ui/subscriptions/{plain['id']}"))
    assert "<dt>Headers added</dt><dd>none</dd>" in defaults
    assert "<dt>Retry schedule</dt><dd>the deployment's</dd>" in defaults
    assert "<dt>Status rules</dt><dd>the defaults</dd>" in defaults


async def test_pause_and_resume_change_the_status_as_the_api_does(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
) -> None:
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    path = f"/ui/subscriptions/{subscription['id']}/status"
    log = await sign_in(api, keys.subscriber)
    page = await page_of(api, f"/ui/subscriptions/{subscription['id']}")
    assert receiver.url() in page and 'value="pause"' in page

    for csrf in (None, "not-the-token"):
        refused = await post_form(api, path, csrf, action="pause")
        assert refused.status == 403
        assert "security token is missing or wrong" in await refused.text()
    assert await status_of(pool, subscription["id"]) == "active"
    unknown = await post_form(api, path, csrf_of(log), action="delete")
    assert unknown.status == 400 and await status_of(pool, subscription["id"]) == "active"

    paused = await post_form(api, path, csrf_of(log), action="pause")
    assert paused.status == 303 and await status_of(pool, subscription["id"]) == "paused"
    page = await page_of(api, paused.headers["Location"])
    assert "Paused: nothing is sent" in page and 'value="resume"' in page
    resumed = await post_form(api, path, csrf_of(log), action="resume")
    assert resumed.status == 303 and await status_of(pool, subscription["id"]) == "active"


async def test_another_tenants_subscription_and_its_forms_answer_404(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
) -> None:
    _, acme_key = await make_tenant(api, keys, "acme")
    globex, _ = await make_tenant(api, keys, "globex")
    theirs = await subscribe(api, keys.admin, receiver.url(), tenant_id=globex)
    base = f"/ui/subscriptions/{theirs['id']}"
    log = await sign_in(api, acme_key)
    csrf = csrf_of(log)
    assert theirs["id"] not in await page_of(api, "/ui/subscriptions")
    await page_of(api, base, 404)
    await page_of(api, f"{base}/redeliver-failed?since=2026-01-01T00:00", 404)
    for action, fields in (("status", {"action": "pause"}), ("test", {}),
                           ("rotate-secret", {}),
                           ("edit", {"url": receiver.url("/x"), "event_types": "*"}),
                           ("redeliver-failed", {"since": "2026-01-01T00:00"})):
        answer = await post_form(api, f"{base}/{action}", csrf, **fields)
        assert answer.status == 404, action
    row = await pool.fetchrow("SELECT status, url, secret FROM subscriptions WHERE id = $1",
                              theirs["id"])
    assert row is not None
    assert (row["status"], row["url"], row["secret"]) == ("active", receiver.url(),
                                                          theirs["secret"])
    assert await pool.fetchval("SELECT count(*) FROM deliveries") == 0


async def test_a_producer_key_may_not_change_a_subscription_as_in_the_api(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
) -> None:
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    form = await api.get("/ui/login")
    await api.post("/ui/login", data={"key": keys.producer, "csrf": csrf_of(await form.text())})
    await page_of(api, f"/ui/subscriptions/{subscription['id']}", 403)
    await page_of(api, "/ui/", 403)
    # The form's token is the session's; a producer's session has one too.
    session_csrf = await pool.fetchval("SELECT csrf_token FROM ui_sessions")
    refused = await post_form(api, f"/ui/subscriptions/{subscription['id']}/status",
                              session_csrf, action="pause")
    assert refused.status == 403
    assert "this needs a key with role subscriber, admin" in await refused.text()
    assert await status_of(pool, subscription["id"]) == "active"


async def test_editing_saves_an_allowed_url_and_types_and_refuses_the_rest_writing_nothing(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
) -> None:
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    path = f"/ui/subscriptions/{subscription['id']}/edit"
    log = await sign_in(api, keys.subscriber)
    bad = [({"url": "http://10.1.2.3/hook", "event_types": "*"}, "not an allowed destination"),
           ({"url": "ftp://example.com/", "event_types": "*"}, "url"),
           ({"url": receiver.url(), "event_types": " , "}, "event_types"),
           ({"url": receiver.url(), "event_types": "bad type!"}, "event_types")]
    for fields, problem in bad:
        answer = await post_form(api, path, csrf_of(log), description="", **fields)
        text = await answer.text()
        assert answer.status == 422, text
        assert 'role="alert"' in text and problem in html.unescape(text)
        # What was typed stays in the form, to be corrected.
        assert f'value="{html.escape(fields["url"])}"' in text
    row = await pool.fetchrow("SELECT url, event_types FROM subscriptions WHERE id = $1",
                              subscription["id"])
    assert row is not None and (row["url"], row["event_types"]) == (receiver.url(), ["*"])

    saved = await post_form(api, path, csrf_of(log), url=receiver.url("/v2"),
                            event_types="order.created, invoice.*", description="billing")
    assert saved.status == 303
    row = await pool.fetchrow(
        "SELECT url, event_types, description FROM subscriptions WHERE id = $1",
        subscription["id"])
    assert row is not None
    assert dict(row) == {"url": receiver.url("/v2"),
                         "event_types": ["order.created", "invoice.*"],
                         "description": "billing"}
    assert "Saved." in await page_of(api, saved.headers["Location"])


async def test_a_test_event_goes_to_this_subscription_only(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    await subscribe(api, keys.subscriber, receiver.url("/other"))
    log = await sign_in(api, keys.subscriber)
    sent = await post_form(api, f"/ui/subscriptions/{subscription['id']}/test", csrf_of(log))
    assert sent.status == 303
    location = sent.headers["Location"]
    match = re.search(r"delivery=(dlv_\w+)", location)
    assert match is not None
    await make_dispatcher(store, settings).run(until_idle=True)
    [arrived] = receiver.requests
    assert arrived.path == "/hook" and b'"type":"webhook.test"' in arrived.body
    page = await page_of(api, location)
    assert "Test event sent" in page and f'href="/ui/deliveries/{match.group(1)}"' in page
    delivery = await page_of(api, f"/ui/deliveries/{match.group(1)}")
    assert "succeeded" in delivery


async def test_rotating_the_secret_shows_the_new_one_once(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
) -> None:
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    log = await sign_in(api, keys.subscriber)
    path = f"/ui/subscriptions/{subscription['id']}"
    assert (await post_form(api, f"{path}/rotate-secret", None)).status == 403
    rotated = await post_form(api, f"{path}/rotate-secret", csrf_of(log))
    page = await rotated.text()
    assert rotated.status == 200, page
    row = await pool.fetchrow(
        "SELECT secret, previous_secret FROM subscriptions WHERE id = $1", subscription["id"])
    assert row is not None and row["previous_secret"] == subscription["secret"]
    assert row["secret"] != subscription["secret"] and row["secret"] in page
    assert "shown only this once" in page
    assert row["secret"] not in await page_of(api, path)


async def test_bulk_redelivery_counts_first_and_queues_only_when_confirmed(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings, pool: asyncpg.Pool,
) -> None:
    receiver.respond = answer_status(400)  # a 4xx: failed at once
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    for n in range(3):
        await post_event(api, keys.producer, type=f"order.n{n}")
    await make_dispatcher(store, settings).run(until_idle=True)
    path = f"/ui/subscriptions/{subscription['id']}/redeliver-failed"
    log = await sign_in(api, keys.subscriber)
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")

    counted = await page_of(api, f"{path}?since={since}&event_type=")
    assert re.search(r"<strong>3</strong> failed\s+deliveries", counted)
    assert "Nothing has been sent yet" in counted and "Redeliver 3" in counted
    one_type = await page_of(api, f"{path}?since={since}&event_type=order.n1")
    assert re.search(r"<strong>1</strong> failed\s+delivery ", one_type)
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    none = await page_of(api, f"{path}?since={later}")
    assert "<strong>0</strong>" in none and "Redeliver 0" not in none
    for wrong in ("yesterday", ""):
        assert 'role="alert"' in await page_of(api, f"{path}?since={wrong}", 422)
    queued_before = "SELECT count(*) FROM deliveries WHERE manual_due_at IS NOT NULL"
    assert await pool.fetchval(queued_before) == 0

    confirm = re.search(r'name="since" value="([^"]+)" type="hidden"|type="hidden" '
                        r'name="since" value="([^"]+)"', counted)
    assert confirm is not None
    since_sent = html.unescape(confirm.group(1) or confirm.group(2))
    assert (await post_form(api, path, None, since=since_sent)).status == 403
    assert await pool.fetchval(queued_before) == 0
    queued = await post_form(api, path, csrf_of(log), since=since_sent, event_type="")
    assert queued.status == 303
    assert await pool.fetchval(queued_before) == 3
    assert "queued for redelivery. (3)" in await page_of(api, queued.headers["Location"])


async def test_the_delivery_log_refreshes_itself_unless_asked_not_to(
    api: TestClient[Any, Any], keys: Keys,
) -> None:
    await sign_in(api, keys.admin)
    refresh = '<meta http-equiv="refresh" content="10">'
    first = await page_of(api, "/ui/deliveries?status=failed")
    assert refresh in first and 'href="/ui/deliveries?status=failed&amp;refresh=off"' in first
    stopped = await page_of(api, "/ui/deliveries?status=failed&refresh=off")
    assert refresh not in stopped and 'name="refresh" value="off"' in stopped
    assert "Not refreshing" in stopped


async def test_the_delivery_log_filters_by_time_typed_in_utc(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver,
) -> None:
    await subscribe(api, keys.subscriber, receiver.url())
    event = await post_event(api, keys.producer)
    await sign_in(api, keys.admin)
    now = datetime.now(UTC)
    hour_ago = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    hour_on = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    within = await page_of(api, f"/ui/deliveries?since={hour_ago}&until={hour_on}")
    assert "order.created" in within and f'value="{hour_ago}"' in within
    assert event["id"] not in within  # the log names deliveries, not events
    later = await page_of(api, f"/ui/deliveries?since={hour_on}")
    assert "No deliveries match these filters" in later
    earlier = await page_of(api, f"/ui/deliveries?until={hour_ago}")
    assert "No deliveries match these filters" in earlier
    wrong = await page_of(api, "/ui/deliveries?since=soon", 422)
    assert 'role="alert"' in wrong and "since" in wrong


async def test_health_and_charts_come_from_the_stats_rollups_within_reach(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store,
    settings: Settings,
) -> None:
    acme, acme_key = await make_tenant(api, keys, "acme")
    globex, _ = await make_tenant(api, keys, "globex")

    async def respond(request: Any, number: int) -> Any:
        return await answer_status(500 if request.path == "/bad" else 200)(request, number)

    receiver.respond = respond
    ours = await subscribe(api, keys.admin, receiver.url(), tenant_id=acme,
                           event_types=["order.created"])
    await subscribe(api, keys.admin, receiver.url("/bad"), tenant_id=acme,
                    event_types=["order.failing"])
    await subscribe(api, keys.admin, receiver.url(), tenant_id=globex)
    for _ in range(2):
        await post_event(api, keys.admin, tenant_id=acme)
    await post_event(api, keys.admin, type="order.failing", tenant_id=acme)
    for _ in range(4):
        await post_event(api, keys.admin, tenant_id=globex)
    await make_dispatcher(store, settings).run(until_idle=True)

    await sign_in(api, keys.admin)
    page = await page_of(api, f"/ui/subscriptions/{ours['id']}")
    assert "100% of 2 attempts in the last 24 hours" in page
    assert page.count('<figure class="chart">') == 2
    assert re.search(r'aria-label="Attempts per hour over the last day: 2 in all', page)
    everything = compact(await page_of(api, "/ui/"))
    assert re.search(r"<th>Last hour</th><td>7</td><td>6</td><td>1</td><td>0</td>"
                     r"<td>85.7%</td>", everything)

    api.session.cookie_jar.clear()
    await sign_in(api, acme_key)
    theirs = compact(await page_of(api, "/ui/"))
    assert re.search(r"<th>Last hour</th><td>3</td><td>2</td><td>1</td><td>0</td>"
                     r"<td>66.7%</td>", theirs)

    api.session.cookie_jar.clear()
    await sign_in(api, keys.subscriber)  # sees only the subscriptions it made: no totals
    assert "<h2>Attempts</h2>" not in await page_of(api, "/ui/")


async def test_the_subscription_page_shows_its_signature_scheme_and_public_key_not_the_private(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, pool: asyncpg.Pool,
) -> None:
    subscription = await subscribe(api, keys.subscriber, receiver.url(), signature_scheme="both")
    private = await pool.fetchval("SELECT signing_key FROM subscriptions")

    await sign_in(api, keys.subscriber)
    page = await page_of(api, f"/ui/subscriptions/{subscription['id']}")

    assert "v1 and v1a, while receivers move" in page
    assert subscription["public_key"] in page
    assert private.removeprefix("whsk_") not in page
