"""Ed25519 (v1a) signatures: a receiver verifies them with the public key the API shows, and
while a subscription moves between schemes it gets both signatures."""

from __future__ import annotations

import base64
from typing import Any

import svix.webhooks
from aiohttp.test_utils import TestClient
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hookpost.settings import Settings
from hookpost.store import Store
from tests.integration.conftest import (
    Keys,
    Received,
    Receiver,
    get_json,
    make_dispatcher,
    post_event,
    subscribe,
)


def versions(request: Received) -> list[str]:
    """The scheme of each signature in the request's webhook-signature, in order."""
    return [part.partition(",")[0] for part in request.headers["webhook-signature"].split(" ")]


def verifies_v1a(public_key: str, request: Received) -> bool:
    """What a receiver on v1a does: some v1a signature verifies with the public key."""
    assert public_key.startswith("whpk_")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    signed = (f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}."
              .encode() + request.body)
    for part in request.headers["webhook-signature"].split(" "):
        version, _, signature = part.partition(",")
        if version == "v1a":
            try:
                key.verify(base64.b64decode(signature), signed)
            except InvalidSignature:
                continue
            return True
    return False


async def change_scheme(api: TestClient[Any, Any], keys: Keys, id: str, scheme: str
                        ) -> dict[str, Any]:
    response = await api.patch(f"/v1/subscriptions/{id}", json={"signature_scheme": scheme},
                               headers=keys.auth(keys.subscriber))
    assert response.status == 200, await response.text()
    changed: dict[str, Any] = await response.json()
    return changed


async def test_a_v1a_subscription_is_signed_with_ed25519_only_and_verifies_with_its_public_key(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    created = await subscribe(api, keys.subscriber, receiver.url(), signature_scheme="v1a")
    read = await get_json(api, keys.subscriber, f"/v1/subscriptions/{created['id']}")
    assert created["signature_scheme"] == read["signature_scheme"] == "v1a"
    assert created["public_key"] == read["public_key"]
    await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    [request] = receiver.requests
    assert versions(request) == ["v1a"]
    assert verifies_v1a(read["public_key"], request)
    other = await subscribe(api, keys.subscriber, receiver.url("/other"), signature_scheme="v1a")
    assert other["public_key"] != read["public_key"]
    assert not verifies_v1a(other["public_key"], request)


async def test_moving_from_v1_through_both_to_v1a_keeps_one_key_pair(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    created = await subscribe(api, keys.subscriber, receiver.url())
    # The public key is there from the start, for receivers to install before the move.
    assert created["signature_scheme"] == "v1"
    public_key = created["public_key"]
    dispatcher = make_dispatcher(store, settings)
    seen: dict[str, Received] = {}
    for scheme in ("v1", "both", "v1a", "both", "v1"):
        changed = await change_scheme(api, keys, created["id"], scheme)
        assert (changed["signature_scheme"], changed["public_key"]) == (scheme, public_key)
        await post_event(api, keys.producer)
        await dispatcher.run(until_idle=True)
        seen[scheme] = receiver.requests[-1]

    assert len(receiver.requests) == 5
    assert versions(seen["v1"]) == ["v1"]
    assert versions(seen["both"]) == ["v1", "v1a"]
    assert versions(seen["v1a"]) == ["v1a"]
    # During the move a receiver still on v1 verifies unchanged; one moved to v1a does too.
    svix.webhooks.Webhook(created["secret"]).verify(seen["both"].body, seen["both"].headers)
    assert verifies_v1a(public_key, seen["both"])
    assert verifies_v1a(public_key, seen["v1a"])


async def test_a_secret_rotation_during_both_sends_each_secrets_signature_and_the_v1a_one(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    created = await subscribe(api, keys.subscriber, receiver.url(), signature_scheme="both")
    rotated = await api.post(f"/v1/subscriptions/{created['id']}/rotate-secret",
                             headers=keys.auth(keys.subscriber))
    assert rotated.status == 200, await rotated.text()
    new_secret = (await rotated.json())["secret"]
    await post_event(api, keys.producer)

    await make_dispatcher(store, settings).run(until_idle=True)

    [request] = receiver.requests
    assert versions(request) == ["v1", "v1", "v1a"]
    for secret in (created["secret"], new_secret):
        svix.webhooks.Webhook(secret).verify(request.body, request.headers)
    assert verifies_v1a(created["public_key"], request)


async def test_the_private_key_is_never_shown(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store
) -> None:
    created = await subscribe(api, keys.subscriber, receiver.url(), signature_scheme="both")
    [stored] = await store.pool.fetch("SELECT signing_key FROM subscriptions")
    assert stored["signing_key"].startswith("whsk_")
    private = stored["signing_key"].removeprefix("whsk_")
    answers = [
        await api.get(path, headers=keys.auth(keys.subscriber))
        for path in (f"/v1/subscriptions/{created['id']}", "/v1/subscriptions")
    ]
    answers.append(await api.patch(f"/v1/subscriptions/{created['id']}",
                                   json={"signature_scheme": "v1a"},
                                   headers=keys.auth(keys.subscriber)))
    texts = [str(created)] + [await answer.text() for answer in answers]
    assert all(answer.status == 200 for answer in answers)
    for text in texts:
        assert private not in text and "whsk_" not in text and "signing_key" not in text
        assert created["public_key"] in text


async def test_a_subscription_made_before_v1a_gets_its_key_pair_as_it_leaves_v1(
    api: TestClient[Any, Any], keys: Keys, receiver: Receiver, store: Store, settings: Settings
) -> None:
    created = await subscribe(api, keys.subscriber, receiver.url())
    # As the upgrade leaves it: no key pair.
    await store.pool.execute("UPDATE subscriptions SET signing_key = NULL, public_key = NULL")
    read = await get_json(api, keys.subscriber, f"/v1/subscriptions/{created['id']}")
    assert (read["signature_scheme"], read["public_key"]) == ("v1", None)
    assert (await change_scheme(api, keys, created["id"], "v1"))["public_key"] is None

    changed = await change_scheme(api, keys, created["id"], "v1a")
    await post_event(api, keys.producer)
    await make_dispatcher(store, settings).run(until_idle=True)

    assert changed["public_key"].startswith("whpk_")
    assert verifies_v1a(changed["public_key"], receiver.requests[0])
    again = await change_scheme(api, keys, created["id"], "both")
    assert again["public_key"] == changed["public_key"]
