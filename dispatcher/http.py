"""The HTTP/1.1 client the dispatcher POSTs with: pooled keep-alive connections, addresses
checked at connect time, a capped response, no redirects.

A webhook attempt needs one thing from HTTP: send a small POST and learn the status, the
headers and the start of the body. Doing only that, over connections kept per destination,
costs about half the CPU of a general-purpose client, and the sender is the dispatcher's
hot path. The response is parsed by llhttp (through httptools).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast
from urllib.parse import quote, unquote, urlsplit

import httptools

from dispatcher.destinations import DestinationRefused, IPAddress, IPNetwork, is_address_allowed
from dispatcher.destinations import resolve as resolve_host

RESPONSE_BODY_LIMIT = 4096
HEAD_LIMIT = 64 * 1024  # status line and headers
IDLE_SECONDS = 15.0  # an idle connection older than this is closed, not reused
DNS_SECONDS = 10.0  # how long a checked DNS answer is kept

PoolKey = tuple[str, str, int]
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


class MalformedResponse(Exception):
    """The destination answered with something that is not a usable HTTP response."""


class UnresolvedHost(OSError):
    """The destination's host name does not resolve."""


class StaleConnection(ConnectionError):
    """A kept-alive connection closed before any of the response arrived."""


class ProxyFailed(OSError):
    """The egress proxy could not be reached, or did not open the tunnel asked of it."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy every request goes through: https ones in a CONNECT tunnel, http ones
    as absolute-form requests."""

    host: str
    port: int
    authorization: str | None  # the proxy-authorization value the URL's user info makes

    @property
    def shown(self) -> str:
        """Where it is, for messages: never its credentials."""
        return f"{_bracketed(self.host)}:{self.port}"


def proxy_of(url: str) -> Proxy:
    """The proxy `http://[user:password@]host:port` names; ValueError if it names none."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ValueError("the proxy must be given as http://[user:password@]host:port")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
    return Proxy(parts.hostname, parts.port, authorization)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a URL sends to and the parts of the request that do not change."""

    tls: bool
    host: str  # ASCII (IDNA) host name or address, without brackets
    port: int
    target: str  # path and query
    host_header: str

    @property
    def key(self) -> PoolKey:
        return ("https" if self.tls else "http", self.host, self.port)


@functools.lru_cache(maxsize=4096)
def destination_of(url: str) -> Destination:
    """The parts of `url` a request needs; ValueError if it cannot be sent to."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"cannot send to {url!r}")
    tls = parts.scheme == "https"
    host = parts.hostname.encode("idna").decode("ascii")
    port = parts.port or (443 if tls else 80)
    # What may stand unescaped in a request target (RFC 3986); anything else, spaces and
    # non-ASCII included, is sent percent-encoded as UTF-8. Existing escapes are kept.
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_PATH_SAFE + "?")
    shown = _bracketed(host)
    default_port = 443 if tls else 80
    host_header = shown if port == default_port else f"{shown}:{port}"
    return Destination(tls, host, port, target, host_header)


class HttpResponse(NamedTuple):
    status: int
    headers: list[tuple[str, str]]  # names in lower case, in the order received
    body: bytes  # at most RESPONSE_BODY_LIMIT bytes


class _Connection(asyncio.Protocol):
    """One connection: write a request, collect one response, tell whether it can be reused."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.complete = False
        self.keep_alive = False
        self._head_bytes = 0  # raw bytes received while the head is unfinished
        self._header_bytes = 0  # bytes of the header lines parsed so far
        self._headers_done = False
        self._ends_at_close = False
        self._received = False

    # Requests.

    async def exchange(self, request: bytes) -> HttpResponse:
        assert self.transport is not None
        self._reset()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        response = await self._waiter
        self._waiter = None
        return response

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self, error: BaseException | None = None) -> None:
        """Answer the exchange with the response as it stands now, or with `error`."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if error is None:
            waiter.set_result(HttpResponse(self.status, list(self.headers), bytes(self.body)))
        else:
            waiter.set_exception(error)

    def _fail(self, error: BaseException) -> None:
        self.close()
        self._finish(error)

    # asyncio.Protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: this connection cannot be trusted again
            return
        self._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(MalformedResponse("the server switched protocols"))
            return
        except httptools.HttpParserError as error:
            self._fail(MalformedResponse(f"malformed HTTP response: {error}"))
            return
        if not self._headers_done:
            # A head that has not ended yet; on_header counts the ones that have.
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_LIMIT:
                self._fail(MalformedResponse("the response headers exceed 64 KiB"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._headers_done and self._ends_at_close:
            self._finish()
        elif not self._received:
            self._finish(StaleConnection("the connection closed before any response"))
        else:
            self._finish(ConnectionResetError("the connection closed during the response"))

    # httptools callbacks.

    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # a second response to one request: this connection is confused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > HEAD_LIMIT:
            self._fail(MalformedResponse("the response headers exceed 64 KiB"))
            return
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self._headers_done = self.status >= 200
        # Without a length or chunking, the body is whatever comes before the close.
        framed = {"content-length", "transfer-encoding"}
        self._ends_at_close = not any(name in framed for name, _ in self.headers)

    def on_body(self, chunk: bytes) -> None:
        room = RESPONSE_BODY_LIMIT - len(self.body)
        self.body += chunk[:room]
        if len(chunk) >= room and self._headers_done:
            # Enough is kept; the rest is never read and the connection is not reused.
            self.close()
            self._finish()

    def on_message_complete(self) -> None:
        if not self._headers_done:  # 1xx: the real response follows
            self._reset()
            self._received = True
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it after this call
        self._finish()


class _Tunnel(asyncio.Protocol):
    """A connection to a proxy that has been asked to CONNECT: waits for its answer."""

    def __init__(self) -> None:
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head = bytearray()

    def _fail(self, message: str) -> None:
        if not self.answered.done():
            self.answered.set_exception(ProxyFailed(message))

    def data_received(self, data: bytes) -> None:
        if self.answered.done():
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > HEAD_LIMIT:
                self._fail("the proxy's answer to CONNECT exceeds 64 KiB")
            return
        status_line = bytes(self._head[:self._head.find(b"\r\n")]).decode("latin-1")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            self._fail(f"the proxy answered CONNECT with no HTTP status: {status_line[:200]!r}")
        elif not code.startswith("2"):
            self._fail(f"the proxy answered CONNECT with {status_line[:200]}")
        elif end + 4 < len(self._head):  # the destination speaks only after the client hello
            self._fail("the proxy sent bytes after its answer to CONNECT")
        else:
            self.answered.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("the proxy closed the connection before answering CONNECT")


class HttpClient:
    """POSTs over connections kept per (scheme, host, port), through `proxy` if given;
    create inside the running loop."""

    def __init__(
        self,
        *,
        allowed_networks: Sequence[IPNetwork],
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
    ) -> None:
        self._proxy = None if proxy is None else proxy_of(proxy)
        self._allowed = list(allowed_networks)
        self._connect_timeout = connect_timeout
        self._ssl = ssl_context or ssl.create_default_context()
        self._idle: dict[PoolKey, list[_Connection]] = {}
        self._addresses: dict[tuple[str, int], tuple[float, list[IPAddress]]] = {}
        self._swept_at = time.monotonic()

    async def post(
        self, url: str, headers: Sequence[tuple[str, str]], body: bytes,
        on_resend: Callable[[], None] | None = None,
    ) -> HttpResponse:
        """POST `body` to `url`; OSError, TimeoutError or MalformedResponse if it fails.

        A kept-alive connection that closes before any answer may have delivered the
        request; it is sent again on a fresh connection, and `on_resend` is told."""
        try:
            destination = destination_of(url)
        except (ValueError, UnicodeError) as error:
            raise DestinationRefused(str(error)) from None
        lines = [f"POST {destination.target} HTTP/1.1", f"host: {destination.host_header}"]
        if self._proxy is not None and not destination.tls:
            # Plain http goes to the proxy as it is, naming the destination in full.
            lines[0] = f"POST http://{destination.host_header}{destination.target} HTTP/1.1"
            if self._proxy.authorization is not None:
                lines.append(f"proxy-authorization: {self._proxy.authorization}")
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append(f"content-length: {len(body)}\r\n\r\n")
        request = "\r\n".join(lines).encode("latin-1") + body
        connection = self._take_idle(destination.key)
        if connection is not None:
            try:
                return await self._exchange(destination, connection, request)
            except StaleConnection:
                # The server dropped it while idle, or after reading the request; webhooks
                # are idempotent by id, and the attempt says it was sent twice.
                if on_resend is not None:
                    on_resend()
        return await self._exchange(destination, await self._connect(destination), request)

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def _exchange(
        self, destination: Destination, connection: _Connection, request: bytes
    ) -> HttpResponse:
        try:
            response = await connection.exchange(request)
        except BaseException:
            connection.close()
            raise
        if connection.reusable:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(destination.key, []).append(connection)
        else:
            connection.close()
        self._sweep()
        return response

    def _take_idle(self, key: PoolKey) -> _Connection | None:
        connections = self._idle.get(key)
        oldest = time.monotonic() - IDLE_SECONDS
        while connections:
            connection = connections.pop()
            if not connection.closed and connection.idle_since > oldest:
                return connection
            connection.close()
        return None

    def _sweep(self) -> None:
        """Close connections idle for too long, at most once per IDLE_SECONDS."""
        now = time.monotonic()
        if now - self._swept_at < IDLE_SECONDS:
            return
        self._swept_at = now
        for key, connections in list(self._idle.items()):
            kept = []
            for connection in connections:
                if not connection.closed and connection.idle_since > now - IDLE_SECONDS:
                    kept.append(connection)
                else:
                    connection.close()
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]

    async def _connect(self, destination: Destination) -> _Connection:
        """A new connection to the first allowed address that answers, or through the
        proxy once the destination's addresses are found allowed."""
        addresses = await self._allowed_addresses(destination.host, destination.port)
        if self._proxy is not None:
            return await self._connect_through(self._proxy, destination)
        loop = asyncio.get_running_loop()
        error: OSError | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    _, connection = await loop.create_connection(
                        _Connection,
                        host=str(address),
                        port=destination.port,
                        ssl=self._ssl if destination.tls else None,
                        server_hostname=destination.host if destination.tls else None,
                    )
                return connection
            except TimeoutError:
                error = TimeoutError(f"could not connect to {destination.host} within "
                                     f"{self._connect_timeout:g}s")
            except OSError as failed:
                error = failed
        assert error is not None
        raise error

    async def _connect_through(self, proxy: Proxy, destination: Destination) -> _Connection:
        """A connection through `proxy`: to the proxy itself for http, a CONNECT tunnel to
        the destination, with TLS inside it, for https.

        The proxy is given the destination's name, not the address checked here: proxies
        that filter by name (smokescreen) need it, and Host and SNI stay the name. A name
        whose answers change between the check and the proxy's own lookup (DNS rebinding)
        reaches what the proxy resolves, so the proxy must refuse private addresses too."""
        loop = asyncio.get_running_loop()
        step = f"connect to the proxy {proxy.shown}"
        proxy_at_fault = True  # until the tunnel is open; then failures are the destination's
        transport: asyncio.Transport | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                if not destination.tls:
                    _, connection = await loop.create_connection(
                        _Connection, host=proxy.host, port=proxy.port)
                    return connection
                transport, tunnel = await loop.create_connection(
                    _Tunnel, host=proxy.host, port=proxy.port)
                step = f"open a tunnel to {destination.host} through the proxy {proxy.shown}"
                authority = f"{_bracketed(destination.host)}:{destination.port}"
                lines = [f"CONNECT {authority} HTTP/1.1", f"host: {authority}"]
                if proxy.authorization is not None:
                    lines.append(f"proxy-authorization: {proxy.authorization}")
                transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                await tunnel.answered
                step, proxy_at_fault = f"connect to {destination.host} through the proxy", False
                connection = _Connection()
                secured = await loop.start_tls(transport, connection, self._ssl,
                                               server_hostname=destination.host)
                if secured is None:
                    raise ConnectionResetError("the tunnel closed during the TLS handshake")
                connection.connection_made(secured)
                return connection
        except BaseException as error:
            if transport is not None:
                transport.close()
            if isinstance(error, TimeoutError):
                failure = ProxyFailed if proxy_at_fault else TimeoutError
                raise failure(f"could not {step} within {self._connect_timeout:g}s") from None
            if proxy_at_fault and isinstance(error, OSError) and not isinstance(
                    error, ProxyFailed):
                raise ProxyFailed(f"could not {step}: {error}") from None
            raise  # the proxy's own refusal, or the destination's TLS or connection error

    async def _allowed_addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses `host` resolves to, each one allowed; DestinationRefused if none."""
        now = time.monotonic()
        known = self._addresses.get((host, port))
        if known is not None and known[0] > now:
            return known[1]
        try:
            addresses = await resolve_host(host, port)
        except socket.gaierror as error:
            raise UnresolvedHost(f"cannot resolve {host}: {error.strerror or error}") from None
        allowed = [a for a in addresses if is_address_allowed(a, self._allowed)]
        if not allowed:
            shown = ", ".join(str(a) for a in addresses)
            raise DestinationRefused(f"{host} resolves only to addresses hookpost may not "
                                     f"send to ({shown})")
        if len(self._addresses) > 4096:
            self._addresses.clear()
        self._addresses[(host, port)] = (now + DNS_SECONDS, allowed)
        return allowed
