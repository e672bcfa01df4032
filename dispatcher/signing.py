"""Standard Webhooks signatures and keys: `v1` (HMAC-SHA256 with a shared secret) and `v1a`
(Ed25519 with a private key hookpost keeps; receivers verify with its public key)."""

from __future__ import annotations

import base64
import functools
import hmac
import secrets

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SECRET_PREFIX = "whsec_"
SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"


def new_secret() -> str:
    """A fresh endpoint secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


@functools.lru_cache(maxsize=4096)  # every send signs: decode each subscription's key once
def secret_key(secret: str) -> bytes:
    """The HMAC key a secret stands for: its base64 part, decoded."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def new_signing_key() -> tuple[str, str]:
    """A fresh Ed25519 key pair: the private key, `whsk_` + base64 of the 32-byte seed and
    the 32-byte public key (libsodium's form), and its public key (see `public_key`)."""
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes_raw() + private.public_key().public_bytes_raw()
    signing_key = SIGNING_KEY_PREFIX + base64.b64encode(raw).decode()
    return signing_key, public_key(signing_key)


@functools.lru_cache(maxsize=4096)
def _private_key(signing_key: str) -> Ed25519PrivateKey:
    raw = base64.b64decode(signing_key.removeprefix(SIGNING_KEY_PREFIX))
    return Ed25519PrivateKey.from_private_bytes(raw[:32])  # the seed; the rest is public


def public_key(signing_key: str) -> str:
    """The public key of a private signing key: `whpk_` + base64 of its 32 bytes."""
    public = _private_key(signing_key).public_key().public_bytes_raw()
    return PUBLIC_KEY_PREFIX + base64.b64encode(public).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of `{id}.{timestamp}.{body}`."""
    return _signature(secret, _signed_content(message_id, timestamp, body))


def sign_v1a(signing_key: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `v1a,<base64>` Ed25519 signature of `{id}.{timestamp}.{body}`."""
    return _signature_v1a(signing_key, _signed_content(message_id, timestamp, body))


def _signed_content(message_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{message_id}.{timestamp}.".encode() + body


def _signature(secret: str, signed: bytes) -> str:
    return "v1," + base64.b64encode(hmac.digest(secret_key(secret), signed, "sha256")).decode()


def _signature_v1a(signing_key: str, signed: bytes) -> str:
    return "v1a," + base64.b64encode(_private_key(signing_key).sign(signed)).decode()


def signature_header(secrets_in_use: list[str], message_id: str, timestamp: int,
                     body: bytes, signing_key: str | None = None) -> str:
    """The `webhook-signature` value: one `v1` signature per secret, and a `v1a` one with
    `signing_key` if given, space-separated."""
    signed = _signed_content(message_id, timestamp, body)
    signatures = [_signature(secret, signed) for secret in secrets_in_use]
    if signing_key is not None:
        signatures.append(_signature_v1a(signing_key, signed))
    return " ".join(signatures)
