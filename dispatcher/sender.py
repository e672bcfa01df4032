"""One HTTP attempt: sign, POST the stored bytes, read a capped response, name any failure
(what the receiver answered is judged by dispatcher/verdict.py, not here)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence

from dispatcher.destinations import DestinationRefused, IPNetwork
from dispatcher.http import HttpClient, MalformedResponse, ProxyFailed, UnresolvedHost
from dispatcher.signing import signature_header
from dispatcher.verdict import AttemptResult, ErrorKind
from hookpost import __version__
from hookpost.clock import Clock, utcnow

_HEADER_VALUE_LIMIT = 1024
_MESSAGE_LIMIT = 500
USER_AGENT = f"hookpost/{__version__}"


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
        proxy: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._clock = clock
        self._client = HttpClient(allowed_networks=allowed_networks,
                                  connect_timeout=connect_timeout, proxy=proxy,
                                  ssl_context=ssl_context)
        self._total_timeout = total_timeout

    async def close(self) -> None:
        await self._client.close()

    async def send(
        self, url: str, message_id: str, body: bytes, secrets_in_use: list[str],
        signing_key: str | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> AttemptResult:
        """POST `body` to `url`, signed with every secret in `secrets_in_use` (v1) and with
        `signing_key` if given (v1a), with the subscription's own `extra_headers` (which
        the API checked name none of these)."""
        started = self._clock()
        timestamp = int(started.timestamp())
        headers = (
            ("content-type", "application/json"),
            ("user-agent", USER_AGENT),
            ("webhook-id", message_id),
            ("webhook-timestamp", str(timestamp)),
            ("webhook-signature",
             signature_header(secrets_in_use, message_id, timestamp, body, signing_key)),
            *extra_headers,
        )
        began = time.monotonic()
        resent = False

        def on_resend() -> None:
            nonlocal resent
            resent = True

        def failed(kind: ErrorKind, message: str) -> AttemptResult:
            return AttemptResult(started, _ms_since(began), None, None, None, kind,
                                 message[:_MESSAGE_LIMIT], resent)

        try:
            async with asyncio.timeout(self._total_timeout):
                answer = await self._client.post(url, headers, body, on_resend=on_resend)
        except TimeoutError as error:  # the client names a connect timeout itself
            return failed(ErrorKind.TIMEOUT, str(error)
                          or f"no complete response within {self._total_timeout:g}s")
        except (OSError, MalformedResponse) as error:
            return failed(*_describe(error))
        # Postgres text cannot hold NUL.
        text = answer.body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        return AttemptResult(started, _ms_since(began), answer.status,
                             _kept_headers(answer.headers), text, None, None, resent)


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
    if isinstance(error, ProxyFailed):
        return ErrorKind.PROXY, str(error)
    if isinstance(error, DestinationRefused):
        return ErrorKind.REFUSED, str(error)
    if isinstance(error, UnresolvedHost):
        return ErrorKind.DNS, str(error)
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return ErrorKind.TLS, str(error)
    if isinstance(error, MalformedResponse):
        return ErrorKind.HTTP, str(error)
    # Refused, reset or dropped connections, whether before or during the exchange.
    return ErrorKind.CONNECT, str(error) or type(error).__name__
