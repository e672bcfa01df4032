"""How a failed attempt is named (error kind and message), and reading response headers."""

from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict

from dispatcher.destinations import DestinationRefused
from dispatcher.schedule import ErrorKind
from dispatcher.sender import Response, _describe, _kept_headers

KEY = ConnectionKey(
    host="hooks.example.com",
    port=443,
    is_ssl=True,
    ssl=True,
    proxy=None,
    proxy_auth=None,
    proxy_headers_hash=None,
)


@pytest.mark.parametrize(
    ("error", "kind", "message_part"),
    [
        (
            aiohttp.ClientConnectorDNSError(KEY, socket.gaierror(-2, "Name or service not known")),
            ErrorKind.DNS,
            "cannot resolve hooks.example.com: Name or service not known",
        ),
        (
            aiohttp.ClientConnectorDNSError(
                KEY, DestinationRefused("hooks.example.com resolves only to private addresses")
            ),
            ErrorKind.DNS,
            "resolves only to private addresses",
        ),
        (
            aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "Connection refused")),
            ErrorKind.CONNECT,
            "Connection refused",
        ),
        (
            aiohttp.ClientConnectorCertificateError(
                KEY, ssl.SSLCertVerificationError(1, "certificate verify failed")
            ),
            ErrorKind.TLS,
            "certificate verify failed",
        ),
        (
            aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError(1, "wrong version number")),
            ErrorKind.TLS,
            "wrong version number",
        ),
        (aiohttp.ServerDisconnectedError(), ErrorKind.CONNECT, "Server disconnected"),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), ErrorKind.CONNECT, "reset"),
        (aiohttp.ClientOSError(), ErrorKind.CONNECT, "ClientOSError"),
        (
            aiohttp.ClientPayloadError("Response payload is not completed"),
            ErrorKind.HTTP,
            "not completed",
        ),
        pytest.param(
            aiohttp.ClientConnectionResetError("Cannot write to closing transport"),
            ErrorKind.CONNECT,
            "closing transport",
            id="connection reset",
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_describe_names_the_error_kind(
    error: aiohttp.ClientError, kind: ErrorKind, message_part: str
) -> None:
    described_kind, message = _describe(error)
    assert described_kind is kind
    assert message_part in message


def response(headers: dict[str, str] | None) -> Response:
    return Response(
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        duration_ms=3,
        status=None if headers is None else 429,
        headers=headers,
        body=None,
        error_kind=None,
        error_message=None,
    )


def received(*headers: tuple[str, str]) -> aiohttp.ClientResponse:
    """A stand-in for a client response: only its headers are read."""
    return cast(aiohttp.ClientResponse, SimpleNamespace(headers=CIMultiDict(headers)))


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
