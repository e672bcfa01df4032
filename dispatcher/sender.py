"""One HTTP attempt: sign, POST the stored bytes, read a capped response, name any failure."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from dispatcher.destinations import DestinationRefused, IPNetwork
from dispatcher.http import HttpClient, MalformedResponse, UnresolvedHost
from dispatcher.schedule import ErrorKind
from dispatcher.signing import signature_header
from hookpost import __version__
from hookpost.clock import Clock, utcnow

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
    """Sends attempts over one pool of kept-alive connections; create it inside the running
    loop."""

    def __init__(
        self,
        *,
        allowed_networks: Sequence[IPNetwork],
        total_timeout: float,
        connect_timeout: float,
        clock: Clock = utcnow,
    ) -> None:
        self._clock = clock
        self._client = HttpClient(allowed_networks=allowed_networks,
                                  connect_timeout=connect_timeout)
        self._total_timeout = total_timeout

    async def close(self) -> None:
        await self._client.close()

    async def send(
        self, url: str, message_id: str, body: bytes, secrets_in_use: list[str]
    ) -> Response:
        """POST `body` to `url`, signed with every secret in `secrets_in_use`."""
        started = self._clock()
        timestamp = int(started.timestamp())
        headers = (
            ("content-type", "application/json"),
            ("user-agent", USER_AGENT),
            ("webhook-id", message_id),
            ("webhook-timestamp", str(timestamp)),
            ("webhook-signature", signature_header(secrets_in_use, message_id, timestamp, body)),
        )
        began = time.monotonic()

        def failed(kind: ErrorKind, message: str) -> Response:
            return Response(started, _ms_since(began), None, None, None, kind,
                            message[:_MESSAGE_LIMIT])

        try:
            async with asyncio.timeout(self._total_timeout):
                answer = await self._client.post(url, headers, body)
        except TimeoutError as error:  # the client names a connect timeout itself
            return failed(ErrorKind.TIMEOUT, str(error)
                          or f"no complete response within {self._total_timeout:g}s")
        except (OSError, MalformedResponse) as error:
            return failed(*_describe(error))
        status = answer.status
        # Postgres text cannot hold NUL.
        text = answer.body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        kept = _kept_headers(answer.headers)
        if 200 <= status < 300:
            return Response(started, _ms_since(began), status, kept, text, None, None)
        return Response(started, _ms_since(began), status, kept, text, ErrorKind.HTTP,
                        f"HTTP {status}")


def _ms_since(began: float) -> int:
    return round((time.monotonic() - began) * 1000)


def _kept_headers(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Response headers with lower-case names, repeats joined by commas, values capped."""
    kept: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        kept[key] = f"{kept[key]}, {value}" if key in kept else value
    return {name: value[:_HEADER_VALUE_LIMIT] for name, value in kept.items()}


def _describe(error: OSError | MalformedResponse) -> tuple[ErrorKind, str]:
    if isinstance(error, DestinationRefused | UnresolvedHost):
        return ErrorKind.DNS, str(error)
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return ErrorKind.TLS, str(error)
    if isinstance(error, MalformedResponse):
        return ErrorKind.HTTP, str(error)
    # Refused, reset or dropped connections, whether before or during the exchange.
    return ErrorKind.CONNECT, str(error) or type(error).__name__
