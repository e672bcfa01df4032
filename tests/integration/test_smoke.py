"""The core path end to end: subscribe, post an event, the receiver gets it signed."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from standardwebhooks.webhooks import Webhook

from hookpost.settings import Settings
from hookpost.store import Store
from tests.integration.conftest import Keys, Receiver, make_dispatcher


async def test_event_reaches_subscriber_signed(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    created = await api.post(
        "/v1/subscriptions",
        json={"url": receiver.url(), "event_types": ["order.*"]},
        headers=keys.auth(keys.subscriber),
    )
    assert created.status == 201, await created.text()
    secret = (await created.json())["secret"]
    posted = await api.post(
        "/v1/events", json={"type": "order.created", "data": {"n": 1}},
        headers=keys.auth(keys.producer),
    )
    assert posted.status == 202
    event = await posted.json()
    assert event["deliveries"] == 1

    await make_dispatcher(store, settings).run(until_idle=True)

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    verified = Webhook(secret).verify(request.body, request.headers)
    assert verified["id"] == event["id"]
    assert request.headers["webhook-id"] == event["id"]
