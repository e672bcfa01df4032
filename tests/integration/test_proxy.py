"""HOOKPOST_PROXY: every attempt goes out through an HTTP proxy (a real one on 127.0.0.1,
written for these tests), after hookpost's own destination checks; the proxy's failures are
attempts of their own error kind, retried."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dispatcher.sender import Sender
from dispatcher.worker import Dispatcher
from hookpost.settings import Settings
from hookpost.store import Store
from tests.egress_proxy import EgressProxy
from tests.integration.conftest import (
    Keys,
    Receiver,
    delivery_of,
    make_dispatcher,
    make_settings,
    post_event,
    subscribe,
)


def through(settings: Settings, proxy_url: str, **overrides: Any) -> Settings:
    return make_settings(settings.database_url or "", proxy=proxy_url, **overrides)


async def test_every_attempt_goes_through_the_proxy_and_is_recorded_as_usual(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings,
    egress_proxy: EgressProxy,
) -> None:
    egress_proxy.credentials = ("hookpost", "pa55")
    subscription = await subscribe(api, keys.subscriber, receiver.url())
    events = [await post_event(api, keys.producer) for _ in range(2)]

    await make_dispatcher(store, through(settings, egress_proxy.url(("hookpost", "pa55")))
                          ).run(until_idle=True)

    assert sorted(egress_proxy.forwarded) == [receiver.url()] * 2
    assert sorted(request.headers["webhook-id"] for request in receiver.requests) == sorted(
        event["id"] for event in events)
    assert all("proxy-authorization" not in request.headers for request in receiver.requests)
    delivery = await delivery_of(api, keys, events[0]["id"])
    assert delivery["status"] == "succeeded"
    assert delivery["attempts"][0]["response_status"] == 200
    assert subscription["id"] == delivery["subscription_id"]


async def test_a_proxy_that_cannot_be_reached_is_a_proxy_error_and_the_delivery_retries(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings,
    egress_proxy: EgressProxy,
) -> None:
    await subscribe(api, keys.subscriber, receiver.url())
    event = await post_event(api, keys.producer)
    await egress_proxy.close()  # nothing listens on its port now

    await make_dispatcher(store, through(settings, egress_proxy.url(("hookpost", "hunter2")))
                          ).run(until_idle=True)

    assert receiver.requests == []
    delivery = await delivery_of(api, keys, event["id"])
    assert (delivery["status"], delivery["last_error_kind"]) == ("pending", "proxy")
    [attempt] = delivery["attempts"]
    assert (attempt["outcome"], attempt["error_kind"]) == ("retry", "proxy")
    assert attempt["error_message"].startswith(
        f"could not connect to the proxy 127.0.0.1:{egress_proxy.port}")
    assert "hunter2" not in attempt["error_message"]


async def test_a_destination_hookpost_refuses_never_reaches_the_proxy(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings,
    egress_proxy: EgressProxy,
) -> None:
    await subscribe(api, keys.subscriber, receiver.url())
    event = await post_event(api, keys.producer)

    # The same dispatcher, but loopback no longer allowed: the check runs before the proxy.
    await make_dispatcher(store, through(settings, egress_proxy.url(), allowed_networks=[])
                          ).run(until_idle=True)

    assert egress_proxy.authorizations == [] and receiver.requests == []
    delivery = await delivery_of(api, keys, event["id"])
    assert delivery["attempts"][0]["error_kind"] == "refused"


@pytest.fixture
async def https_receiver(
    aiohttp_server: Callable[..., Awaitable[TestServer]], certificate: tuple[Path, Path],
) -> Receiver:
    """A receiver on https://127.0.0.1 with the self-signed certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver._handle)
    receiver.server = await aiohttp_server(app, host="127.0.0.1", ssl=context)
    return receiver


def trusting_sender(settings: Settings, certificate: tuple[Path, Path]) -> Sender:
    """A sender through settings' proxy that trusts the receivers' certificate."""
    assert settings.proxy is not None
    return Sender(
        allowed_networks=settings.allowed_networks,
        total_timeout=settings.request_timeout.total_seconds(),
        connect_timeout=settings.connect_timeout.total_seconds(),
        proxy=settings.proxy.get_secret_value(),
        ssl_context=ssl.create_default_context(cafile=str(certificate[0])),
    )


async def dispatch(store: Store, settings: Settings, certificate: tuple[Path, Path]) -> None:
    sender = trusting_sender(settings, certificate)
    try:
        await Dispatcher(store, settings, sender=sender).run(until_idle=True)
    finally:
        await sender.close()


async def test_an_https_receiver_is_reached_through_a_connect_tunnel(
    api: TestClient[Any, Any], keys: Keys, https_receiver: Receiver, store: Store,
    settings: Settings, egress_proxy: EgressProxy, certificate: tuple[Path, Path],
) -> None:
    assert https_receiver.server is not None
    port = https_receiver.server.port
    await subscribe(api, keys.subscriber, f"https://127.0.0.1:{port}/hook")
    event = await post_event(api, keys.producer)

    await dispatch(store, through(settings, egress_proxy.url()), certificate)

    assert egress_proxy.tunnels == [f"127.0.0.1:{port}"]
    [request] = https_receiver.requests
    assert request.headers["webhook-id"] == event["id"]
    assert request.headers["host"] == f"127.0.0.1:{port}"
    delivery = await delivery_of(api, keys, event["id"])
    assert delivery["status"] == "succeeded"


async def test_a_proxy_that_refuses_the_tunnel_is_a_proxy_error_and_the_delivery_retries(
    api: TestClient[Any, Any], keys: Keys, https_receiver: Receiver, store: Store,
    settings: Settings, egress_proxy: EgressProxy, certificate: tuple[Path, Path],
) -> None:
    assert https_receiver.server is not None
    await subscribe(api, keys.subscriber, f"https://127.0.0.1:{https_receiver.server.port}/")
    event = await post_event(api, keys.producer)
    egress_proxy.refuse = True

    await dispatch(store, through(settings, egress_proxy.url()), certificate)

    assert https_receiver.requests == []
    delivery = await delivery_of(api, keys, event["id"])
    assert delivery["status"] == "pending"
    [attempt] = delivery["attempts"]
    assert (attempt["outcome"], attempt["error_kind"], attempt["response_status"]) == (
        "retry", "proxy", None)
    assert attempt["error_message"] == "the proxy answered CONNECT with HTTP/1.1 403 Forbidden"
