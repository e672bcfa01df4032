"""Standard Webhooks signatures: the published test vectors (v1 and v1a), rotation, moving
between schemes, and real verifiers."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pytest
import standardwebhooks.webhooks as standardwebhooks
import svix.webhooks as svix
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dispatcher.signing import (
    new_secret,
    new_signing_key,
    public_key,
    secret_key,
    sign,
    sign_v1a,
    signature_header,
)

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# The spec's Ed25519 example: the private key in libsodium's form (seed, then public key).
VECTOR_SIGNING_KEY = ("whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4"
                      "AJ6p9lMicMFs6Kvg==")
VECTOR_SIGNATURE_V1A = ("v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVL"
                        "Po3mNl8EM+m7TBAg==")

BODY = b'{"id":"evt_1","type":"order.created","data":{"total":12}}'

# Each verifier raises its library's WebhookVerificationError unless the message is genuine.
Verifier = Callable[[str, bytes, dict[str, str]], None]


def verify_standardwebhooks(secret: str, body: bytes, headers: dict[str, str]) -> None:
    standardwebhooks.Webhook(secret).verify(body, headers)


def verify_svix(secret: str, body: bytes, headers: dict[str, str]) -> None:
    svix.Webhook(secret).verify(body, headers)


VERIFIERS = pytest.mark.parametrize(
    ("verify", "rejection"),
    [
        (verify_standardwebhooks, standardwebhooks.WebhookVerificationError),
        (verify_svix, svix.WebhookVerificationError),
    ],
    ids=["standardwebhooks", "svix"],
)


def webhook_headers(message_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_standard_webhooks_test_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_standard_webhooks_ed25519_test_vector() -> None:
    signature = sign_v1a(VECTOR_SIGNING_KEY, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    assert signature == VECTOR_SIGNATURE_V1A


def test_the_public_key_is_the_second_half_of_the_libsodium_private_key() -> None:
    raw = base64.b64decode(VECTOR_SIGNING_KEY.removeprefix("whsk_"))
    assert public_key(VECTOR_SIGNING_KEY) == "whpk_" + base64.b64encode(raw[32:]).decode()


def verify_v1a(public: str, message_id: str, timestamp: int, body: bytes, value: str) -> bool:
    """What a receiver does: any v1a signature in the header verifies with the public key."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
    for signature in value.split(" "):
        version, _, encoded = signature.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(encoded), f"{message_id}.{timestamp}.".encode() + body)
        except InvalidSignature:
            continue
        return True
    return False


def test_a_new_signing_key_pair_signs_what_its_public_key_verifies() -> None:
    private, public = new_signing_key()
    assert private.startswith("whsk_") and public.startswith("whpk_")
    assert len(base64.b64decode(private.removeprefix("whsk_"), validate=True)) == 64
    assert len(base64.b64decode(public.removeprefix("whpk_"), validate=True)) == 32
    assert public_key(private) == public
    value = signature_header([], "msg_1", 1700000000, BODY, private)
    assert value.startswith("v1a,")
    assert verify_v1a(public, "msg_1", 1700000000, BODY, value)
    assert not verify_v1a(public, "msg_1", 1700000000, BODY + b" ", value)
    assert not verify_v1a(new_signing_key()[1], "msg_1", 1700000000, BODY, value)
    assert new_signing_key() != new_signing_key()


@VERIFIERS
def test_while_moving_between_schemes_both_signatures_verify(
    verify: Verifier, rejection: type[Exception]
) -> None:
    secret = new_secret()
    private, public = new_signing_key()
    now = int(time.time())
    value = signature_header([secret], "msg_1", now, BODY, private)
    assert [part.split(",")[0] for part in value.split(" ")] == ["v1", "v1a"]
    # A receiver still on v1 skips the v1a signature; one moved to v1a checks it.
    verify(secret, BODY, webhook_headers("msg_1", now, value))
    assert verify_v1a(public, "msg_1", now, BODY, value)


@pytest.mark.parametrize(
    ("message_id", "timestamp", "body"),
    [
        ("msg_other", VECTOR_TIMESTAMP, VECTOR_BODY),
        (VECTOR_ID, VECTOR_TIMESTAMP + 1, VECTOR_BODY),
        (VECTOR_ID, VECTOR_TIMESTAMP, b'{"test": 2432232315}'),
    ],
    ids=["id", "timestamp", "body"],
)
def test_any_signed_part_changes_the_signature(
    message_id: str, timestamp: int, body: bytes
) -> None:
    assert sign(VECTOR_SECRET, message_id, timestamp, body) != VECTOR_SIGNATURE


def test_rotation_sends_one_signature_per_secret_space_separated() -> None:
    old, new = new_secret(), new_secret()
    value = signature_header([old, new], "msg_1", 1700000000, BODY)
    assert value.split(" ") == [
        sign(old, "msg_1", 1700000000, BODY),
        sign(new, "msg_1", 1700000000, BODY),
    ]


@VERIFIERS
@pytest.mark.parametrize("which", [0, 1], ids=["old secret", "new secret"])
def test_during_rotation_either_secret_verifies(
    verify: Verifier, rejection: type[Exception], which: int
) -> None:
    secrets_in_use = [new_secret(), new_secret()]
    now = int(time.time())
    value = signature_header(secrets_in_use, "msg_1", now, BODY)
    verify(secrets_in_use[which], BODY, webhook_headers("msg_1", now, value))


@VERIFIERS
def test_a_secret_not_in_use_does_not_verify(verify: Verifier, rejection: type[Exception]) -> None:
    now = int(time.time())
    value = signature_header([new_secret(), new_secret()], "msg_1", now, BODY)
    with pytest.raises(rejection):
        verify(new_secret(), BODY, webhook_headers("msg_1", now, value))


def test_new_secret_is_prefixed_32_random_bytes() -> None:
    secrets_made = [new_secret() for _ in range(3)]
    for secret in secrets_made:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
        assert len(secret_key(secret)) == 32
    assert len(set(secrets_made)) == 3


@VERIFIERS
def test_our_signature_verifies_with_receiver_libraries(
    verify: Verifier, rejection: type[Exception]
) -> None:
    secret = new_secret()
    now = int(time.time())
    signature = signature_header([secret], "msg_1", now, BODY)
    verify(secret, BODY, webhook_headers("msg_1", now, signature))


@VERIFIERS
@pytest.mark.parametrize(
    ("received_body", "timestamp_shift"),
    [(BODY.replace(b"12", b"13"), 0), (BODY, 1)],
    ids=["changed body", "changed timestamp"],
)
def test_tampered_message_fails_verification(
    verify: Verifier, rejection: type[Exception], received_body: bytes, timestamp_shift: int
) -> None:
    secret = new_secret()
    now = int(time.time())
    signature = sign(secret, "msg_1", now, BODY)
    with pytest.raises(rejection):
        verify(secret, received_body, webhook_headers("msg_1", now + timestamp_shift, signature))
