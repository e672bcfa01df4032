"""Standard Webhooks signatures and secrets."""

from __future__ import annotations

import base64
import functools
import hmac
import secrets

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh endpoint secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


@functools.lru_cache(maxsize=4096)  # every send signs: decode each subscription's key once
def secret_key(secret: str) -> bytes:
    """The HMAC key a secret stands for: its base64 part, decoded."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of `{id}.{timestamp}.{body}`."""
    return _signature(secret, _signed_content(message_id, timestamp, body))


def _signed_content(message_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{message_id}.{timestamp}.".encode() + body


def _signature(secret: str, signed: bytes) -> str:
    return "v1," + base64.b64encode(hmac.digest(secret_key(secret), signed, "sha256")).decode()


def signature_header(secrets_in_use: list[str], message_id: str, timestamp: int,
                     body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated."""
    signed = _signed_content(message_id, timestamp, body)
    return " ".join([_signature(secret, signed) for secret in secrets_in_use])
