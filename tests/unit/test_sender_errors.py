"""How a failed attempt is named (error kind and message), and reading response headers."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

import pytest

from dispatcher.destinations import DestinationRefused
from dispatcher.http import MalformedResponse, ProxyFailed, StaleConnection, UnresolvedHost
from dispatcher.sender import _describe, _kept_headers
from dispatcher.verdict import AttemptResult, ErrorKind


@pytest.mark.parametrize(
    ("error", "kind", "message_part"),
    [
        (
            UnresolvedHost("cannot resolve hooks.example.com: Name or service not known"),
            ErrorKind.DNS,
            "cannot resolve hooks.example.com: Name or service not known",
        ),
        (
            DestinationRefused("hooks.example.com resolves only to private addresses"),
            ErrorKind.REFUSED,
            "resolves only to private addresses",
        ),
        (ConnectionRefusedError(111, "Connection refused"), ErrorKind.CONNECT, "refused"),
        (
            ssl.SSLCertVerificationError(1, "certificate verify failed"),
            ErrorKind.TLS,
            "certificate verify failed",
        ),
        (ssl.SSLError(1, "wrong version number"), ErrorKind.TLS, "wrong version number"),
        (ConnectionResetError(104, "Connection reset by peer"), ErrorKind.CONNECT, "reset"),
        (StaleConnection("the connection closed before any response"), ErrorKind.CONNECT,
         "closed before any response"),
        (OSError(), ErrorKind.CONNECT, "OSError"),
        (ProxyFailed("the proxy answered CONNECT with HTTP/1.1 403 Forbidden"),
         ErrorKind.PROXY, "403 Forbidden"),
        (MalformedResponse("malformed HTTP response: bad status"), ErrorKind.HTTP,
         "malformed"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_describe_names_the_error_kind(
    error: OSError | MalformedResponse, kind: ErrorKind, message_part: str
) -> None:
    described_kind, message = _describe(error)
    assert described_kind is kind
    assert message_part in message


def response(headers: dict[str, str] | None) -> AttemptResult:
    return AttemptResult(
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        duration_ms=3,
        status=None if headers is None else 429,
        headers=headers,
        body=None,
        error_kind=None,
        error_message=None,
    )


def received(*headers: tuple[str, str]) -> list[tuple[str, str]]:
    return list(headers)


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        ([("Retry-After", "120")], {"retry-after": "120"}),
        ([("X-A", "1"), ("x-a", "2")], {"x-a": "1, 2"}),
        ([("X-Long", "v" * 5000)], {"x-long": "v" * 1024}),
    ],
    ids=["lower-cased", "repeats joined", "value capped"],
)
def test_kept_headers(headers: list[tuple[str, str]], kept: dict[str, str]) -> None:
    assert _kept_headers(received(*headers)) == kept


@pytest.mark.parametrize(
    ("sent", "name", "value"),
    [
        (("Retry-After", "120"), "retry-after", "120"),
        (("retry-after", "120"), "Retry-After", "120"),
        (("RETRY-AFTER", "120"), "Retry-after", "120"),
        (("Content-Type", "text/plain"), "retry-after", None),
    ],
)
def test_response_header_is_case_insensitive(
    sent: tuple[str, str], name: str, value: str | None
) -> None:
    assert response(_kept_headers(received(sent))).header(name) == value


def test_no_response_has_no_headers() -> None:
    assert response(None).header("retry-after") is None
