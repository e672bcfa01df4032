"""One HTTP attempt: sign, POST the stored bytes, read a capped response, name any failure."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import aiohttp

from dispatcher.destinations import (
    DestinationRefused,
    GuardedResolver,
    IPNetwork,
    is_address_allowed,
    literal_address,
)
from dispatcher.schedule import ErrorKind
from dispatcher.signing import signature_header
from hookpost import __version__
from hookpost.clock import Clock, utcnow

RESPONSE_BODY_LIMIT = 4096
_HEADER_VALUE_LIMIT = 1024
_MESSAGE_LIMIT = 500
USER_AGENT = f"hookpost/{__version__}"


@dataclass(frozen=True, slots=True)
class Response:
    """What came back from one attempt, or why nothing did."""

    started_at: datetime
    duration_ms: int
    status: int | None
    headers: dict[str, str] | None
    body: str | None
    error_kind: ErrorKind | None
    error_message: str | None

    @property
    def headers_json(self) -> str | None:
        return None if self.headers is None else json.dumps(self.headers)

    def header(self, name: str) -> str | None:
        return None if self.headers is None else self.headers.get(name.lower())


class Sender:
    """Sends attempts over one shared client session; create it inside the running loop."""

    def __init__(
        self,
        *,
        allowed_networks: Sequence[IPNetwork],
        total_timeout: float,
        connect_timeout: float,
        max_connections: int,
        clock: Clock = utcnow,
    ) -> None:
        self._allowed = list(allowed_networks)
        self._clock = clock
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._allowed),
            limit=max_connections,
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=total_timeout, connect=connect_timeout),
            headers={"user-agent": USER_AGENT},
            auto_decompress=False,
        )
        self._total_timeout = total_timeout

    async def close(self) -> None:
        await self._session.close()

    async def send(
        self, url: str, message_id: str, body: bytes, secrets_in_use: list[str]
    ) -> Response:
        """POST `body` to `url`, signed with every secret in `secrets_in_use`."""
        started = self._clock()
        timestamp = int(started.timestamp())
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets_in_use, message_id, timestamp, body),
        }
        began = time.monotonic()

        def finished(
            status: int | None = None,
            response_headers: dict[str, str] | None = None,
            text: str | None = None,
            kind: ErrorKind | None = None,
            message: str | None = None,
        ) -> Response:
            return Response(
                started_at=started,
                duration_ms=round((time.monotonic() - began) * 1000),
                status=status,
                headers=response_headers,
                body=text,
                error_kind=kind,
                error_message=None if message is None else message[:_MESSAGE_LIMIT],
            )

        refusal = self._refuse_literal(url)
        if refusal is not None:
            return finished(kind=ErrorKind.DNS, message=refusal)
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                text = await _read_capped(response)
                kept = _kept_headers(response)
                status = response.status
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return finished(
                kind=ErrorKind.TIMEOUT,
                message=f"no complete response within {self._total_timeout:g}s",
            )
        except aiohttp.ClientError as error:
            kind, message = _describe(error)
            return finished(kind=kind, message=message)
        if 200 <= status < 300:
            return finished(status, kept, text)
        return finished(status, kept, text, ErrorKind.HTTP, f"HTTP {status}")

    def _refuse_literal(self, url: str) -> str | None:
        # aiohttp does not ask the resolver about literal addresses, so check them here.
        host = urlsplit(url).hostname or ""
        address = literal_address(host)
        if address is None or is_address_allowed(address, self._allowed):
            return None
        return f"{address} is not a public address"


async def _read_capped(response: aiohttp.ClientResponse) -> str:
    """The first RESPONSE_BODY_LIMIT bytes of the body; the rest is never read."""
    kept = bytearray()
    while len(kept) < RESPONSE_BODY_LIMIT:
        chunk = await response.content.read(RESPONSE_BODY_LIMIT - len(kept))
        if not chunk:
            break
        kept += chunk
    # Postgres text cannot hold NUL.
    return kept.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _kept_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    """Response headers with lower-case names, repeats joined by commas, values capped."""
    kept: dict[str, str] = {}
    for name, value in response.headers.items():
        key = name.lower()
        kept[key] = f"{kept[key]}, {value}" if key in kept else value
    return {name: value[:_HEADER_VALUE_LIMIT] for name, value in kept.items()}


def _describe(error: aiohttp.ClientError) -> tuple[ErrorKind, str]:
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        cause = error.os_error
        if isinstance(cause, DestinationRefused):
            return ErrorKind.DNS, str(cause)
        return ErrorKind.DNS, f"cannot resolve {error.host}: {cause.strerror or cause}"
    if isinstance(error, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return ErrorKind.TLS, str(error)
    # Refused, reset or dropped connections, whether before or during the exchange.
    if isinstance(error, aiohttp.ClientConnectionError):
        return ErrorKind.CONNECT, str(error) or type(error).__name__
    return ErrorKind.HTTP, str(error) or type(error).__name__

