"""What a receiver gets, and what hookpost records of each attempt."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import svix.webhooks
from aiohttp import web
from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook

from hookpost import __version__
from hookpost.settings import Settings
from hookpost.store import Store
from tests.integration.conftest import (
    Keys,
    Receiver,
    answer_status,
    delivery_of,
    make_dispatcher,
    make_settings,
    post_event,
    subscribe,
)


async def test_every_request_verifies_with_standardwebhooks_and_svix(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    subscription = await subscribe(api, keys.subscriber, receiver.url(), ["order.*"])
    posted = [
        await post_event(api, keys.producer, "order.created", {"order": n, "note": "ünïcode"})
        for n in range(3)
    ]

    await make_dispatcher(store, settings).run(until_idle=True)

    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(
        event["id"] for event in posted
    )
    for request in receiver.requests:
        standard = Webhook(subscription["secret"]).verify(request.body, request.headers)
        svix.webhooks.Webhook(subscription["secret"]).verify(request.body, request.headers)
        assert standard["id"] == request.headers["webhook-id"]
        assert standard["type"] == "order.created"
        assert standard["timestamp"].endswith("Z")
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == f"hookpost/{__version__}"
        assert request.headers["webhook-signature"].startswith("v1,")


async def test_the_stored_bytes_are_sent_unchanged(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    await subscribe(api, keys.subscriber, receiver.url())
    event = await post_event(api, keys.producer, "order.created", {"b": 1, "a": [1.5, None]})

    await make_dispatcher(store, settings).run(until_idle=True)

    stored = await store.get_event(event["id"], None)
    assert stored is not None
    assert receiver.requests[0].body == stored.payload


async def test_fan_out_reaches_each_matching_subscription_with_its_own_secret(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    filters = {"/all": ["*"], "/orders": ["order.*"], "/exact": ["order.created"],
               "/invoices": ["invoice.*"], "/deeper": ["order.created.*"]}
    secrets = {
        path: (await subscribe(api, keys.subscriber, receiver.url(path), types))["secret"]
        for path, types in filters.items()
    }
    accepted = await post_event(api, keys.producer, "order.created")
    assert accepted["deliveries"] == 3

    await make_dispatcher(store, settings).run(until_idle=True)

    assert sorted(r.path for r in receiver.requests) == ["/all", "/exact", "/orders"]
    for request in receiver.requests:
        Webhook(secrets[request.path]).verify(request.body, request.headers)
        with pytest.raises(Exception, match="signature"):
            Webhook(secrets["/invoices"]).verify(request.body, request.headers)


async def test_an_idempotent_retry_of_ingest_sends_once(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    await subscribe(api, keys.subscriber, receiver.url())
    first = await post_event(api, keys.producer, idempotency_key="order-7")
    again = await post_event(api, keys.producer, idempotency_key="order-7")
    assert again["id"] == first["id"]

    await make_dispatcher(store, settings).run(until_idle=True)

    assert [r.headers["webhook-id"] for r in receiver.requests] == [first["id"]]


async def test_success_is_recorded_with_the_response(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    receiver.respond = answer_status(204, {"X-Receiver": "yes"})
    await subscribe(api, keys.subscriber, receiver.url())
    event = await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    delivery = await delivery_of(api, keys, event["id"])
    assert delivery["status"] == "succeeded"
    assert delivery["attempt_count"] == 1
    assert delivery["next_attempt_at"] is None
    [attempt] = delivery["attempts"]
    assert attempt["attempt_number"] == 1
    assert attempt["trigger"] == "scheduled"
    assert attempt["outcome"] == "succeeded"
    assert attempt["response_status"] == 204
    assert attempt["response_headers"]["x-receiver"] == "yes"
    assert attempt["error_kind"] is None
    assert attempt["duration_ms"] >= 0


async def test_a_4xx_fails_at_once_after_one_attempt(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    receiver.respond = answer_status(404)
    await subscribe(api, keys.subscriber, receiver.url())
    event = await post_event(api, keys.producer)

    dispatcher = make_dispatcher(store, settings)
    await dispatcher.run(until_idle=True)
    await dispatcher.run(until_idle=True)

    assert len(receiver.requests) == 1
    delivery = await delivery_of(api, keys, event["id"])
    assert delivery["status"] == "failed"
    assert delivery["next_attempt_at"] is None
    assert delivery["last_response_status"] == 404
    [attempt] = delivery["attempts"]
    assert attempt["outcome"] == "failed"
    assert attempt["error_kind"] == "http"
    assert attempt["response_body"] == "answer 404"


@pytest.mark.parametrize(("status", "retried"), [(429, True), (500, True), (302, True),
                                                 (410, False), (400, False)])
async def test_which_statuses_are_retried(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings,
    status: int, retried: bool,
) -> None:
    receiver.respond = answer_status(status, {"Location": "/elsewhere"} if status == 302 else None)
    await subscribe(api, keys.subscriber, receiver.url())
    event = await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    assert [r.path for r in receiver.requests] == ["/hook"]  # a redirect is not followed
    delivery = await delivery_of(api, keys, event["id"])
    assert delivery["status"] == ("pending" if retried else "failed")
    assert (delivery["next_attempt_at"] is not None) == retried
    assert delivery["attempts"][0]["outcome"] == ("retry" if retried else "failed")


async def test_a_hanging_receiver_is_recorded_as_a_timeout(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, database_url: str
) -> None:
    async def hang(request: web.Request, number: int) -> web.StreamResponse:
        await receiver.released.wait()
        return web.Response(text="too late")

    receiver.respond = hang
    await subscribe(api, keys.subscriber, receiver.url())
    event = await post_event(api, keys.producer)
    settings = make_settings(database_url, request_timeout="300ms")

    await make_dispatcher(store, settings).run(until_idle=True)

    delivery = await delivery_of(api, keys, event["id"])
    assert delivery["status"] == "pending"
    [attempt] = delivery["attempts"]
    assert attempt["error_kind"] == "timeout"
    assert attempt["outcome"] == "retry"
    assert attempt["response_status"] is None
    assert 250 <= attempt["duration_ms"] < 5000


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_refused_connection_is_recorded_as_a_connect_error(
    api: TestClient[Any, Any], keys: Keys, store: Store, settings: Settings
) -> None:
    await subscribe(api, keys.subscriber, f"http://127.0.0.1:{closed_port()}/hook")
    event = await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    [attempt] = (await delivery_of(api, keys, event["id"]))["attempts"]
    assert attempt["error_kind"] == "connect"
    assert attempt["outcome"] == "retry"
    assert attempt["error_message"]


async def test_a_failed_tls_handshake_is_recorded_as_a_tls_error(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    plain_http = receiver.url().replace("http://", "https://")
    await subscribe(api, keys.subscriber, plain_http)
    event = await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    [attempt] = (await delivery_of(api, keys, event["id"]))["attempts"]
    assert attempt["error_kind"] == "tls"
    assert attempt["outcome"] == "retry"


async def test_a_huge_response_is_read_only_up_to_4_kib(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    async def flood(request: web.Request, number: int) -> web.StreamResponse:
        response = web.StreamResponse(status=500)
        await response.prepare(request)
        chunk = b"x" * 65536
        for _ in range(160):  # 10 MiB
            try:
                await response.write(chunk)
            except ConnectionError:
                break  # the sender hung up, as it should
        return response

    receiver.respond = flood
    await subscribe(api, keys.subscriber, receiver.url())
    event = await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    [attempt] = (await delivery_of(api, keys, event["id"]))["attempts"]
    assert attempt["response_status"] == 500
    assert attempt["response_body"] == "x" * 4096


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_destination_no_longer_allowed_is_refused_at_send_time(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, database_url: str,
    host: str,
) -> None:
    assert receiver.server is not None
    await subscribe(api, keys.subscriber, f"http://{host}:{receiver.server.port}/hook")
    event = await post_event(api, keys.producer)
    strict = make_settings(database_url, allowed_networks=[])

    await make_dispatcher(store, strict).run(until_idle=True)

    assert receiver.requests == []
    [attempt] = (await delivery_of(api, keys, event["id"]))["attempts"]
    assert attempt["error_kind"] == "refused"
    assert "not" in attempt["error_message"]


async def test_a_paused_subscription_keeps_its_deliveries_until_resumed(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    subscription = await subscribe(api, keys.subscriber, receiver.url(), status="paused")
    event = await post_event(api, keys.producer)
    dispatcher = make_dispatcher(store, settings)

    await dispatcher.run(until_idle=True)
    assert receiver.requests == []
    assert (await delivery_of(api, keys, event["id"]))["status"] == "pending"

    resumed = await api.patch(f"/v1/subscriptions/{subscription['id']}", json={"status": "active"},
                              headers=keys.auth(keys.subscriber))
    assert resumed.status == 200
    await dispatcher.run(until_idle=True)

    assert [r.headers["webhook-id"] for r in receiver.requests] == [event["id"]]
    assert (await delivery_of(api, keys, event["id"]))["status"] == "succeeded"
