"""Standard Webhooks signatures: the published test vector, rotation, and real verifiers."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pytest
import standardwebhooks.webhooks as standardwebhooks
import svix.webhooks as svix

from dispatcher.signing import new_secret, secret_key, sign, signature_header

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

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
