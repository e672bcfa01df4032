"""The dispatcher's HTTP/1.1 client against real servers on loopback: keep-alive, framing,
malformed and cut answers, timeouts, address checks, the bytes sent, TLS, an egress proxy."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

import dispatcher.http
from dispatcher.destinations import DestinationRefused, IPNetwork
from dispatcher.http import (
    RESPONSE_BODY_LIMIT,
    Destination,
    HttpClient,
    HttpResponse,
    MalformedResponse,
    ProxyFailed,
    UnresolvedHost,
    destination_of,
    proxy_of,
)
from tests.egress_proxy import EgressProxy

# The client works with whatever transports the loop gives it: run on both loops.
pytestmark = pytest.mark.every_loop

LOOPBACK: list[IPNetwork] = [ipaddress.ip_network("127.0.0.0/8")]
LOOPBACK_V4_AND_V6: list[IPNetwork] = [*LOOPBACK, ipaddress.ip_network("::1/128")]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
DEADLINE = 5.0  # seconds any single wait in these tests may take


class RawServer:
    """A TCP server on loopback that runs `handler` for each connection it accepts and
    counts them."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = 0
        self.connections = 0
        self.requests: list[bytes] = []  # every request read, head and body, as received
        self.errors: list[BaseException] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    async def start(self, host: str, ssl_context: ssl.SSLContext | None) -> None:
        self._server = await asyncio.start_server(self._serve, host, 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, path: str = "/hook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def next_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next request on this connection, or None once the client has closed it."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as error:
            if error.partial:
                raise
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test is over
        except BaseException as error:
            self.errors.append(error)
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(1):
                    await writer.wait_closed()
            self._tasks.discard(task)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        assert not self.errors, f"the test server failed: {self.errors!r}"


Handler = Callable[[RawServer, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Serve(Protocol):
    async def __call__(
        self, handler: Handler, *, host: str = ..., ssl_context: ssl.SSLContext | None = ...
    ) -> RawServer: ...


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts raw servers on loopback; each is stopped when the test ends."""
    servers: list[RawServer] = []

    async def start(
        handler: Handler, *, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
    ) -> RawServer:
        server = RawServer(handler)
        await server.start(host, ssl_context)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    client = HttpClient(allowed_networks=LOOPBACK, connect_timeout=2.0)
    yield client
    await client.close()


async def post(
    client: HttpClient, url: str, body: bytes = b"{}",
    headers: Sequence[tuple[str, str]] = (("content-type", "application/json"),),
    on_resend: Callable[[], None] | None = None,
) -> HttpResponse:
    async with asyncio.timeout(DEADLINE):
        return await client.post(url, headers, body, on_resend=on_resend)


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), DEADLINE)


async def wait_longer_than(seconds: float) -> None:
    """Return once more than `seconds` have passed on the monotonic clock."""
    until = time.monotonic() + seconds
    async with asyncio.timeout(seconds + DEADLINE):
        while time.monotonic() <= until:
            await asyncio.sleep(min(0.02, seconds))


async def closed_by_client(reader: asyncio.StreamReader) -> None:
    """Return once the client has closed this connection (it must send nothing more)."""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(DEADLINE):
            assert await reader.read() == b""


async def answer_ok(server: RawServer, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
    while await server.next_request(reader) is not None:
        writer.write(OK)
        await writer.drain()


def answers(*responses: bytes) -> Handler:
    """A handler that answers the n-th request on each connection with `responses[n]` (the
    last one once they run out), each written at once."""

    async def handle(server: RawServer, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        n = 0
        while await server.next_request(reader) is not None:
            writer.write(responses[min(n, len(responses) - 1)])
            await writer.drain()
            n += 1

    return handle


def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A plain listening socket on 127.0.0.1: any connection made to it waits in its backlog,
    whatever the event loop does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


# Keep-alive.


async def test_two_sequential_posts_to_one_host_and_port_reuse_one_connection(
    serve: Serve, client: HttpClient
) -> None:
    server = await serve(answer_ok)

    first = await post(client, server.url("/hook"))
    second = await post(client, server.url("/hook"))

    assert (first.status, first.body, second.status, second.body) == (200, b"ok", 200, b"ok")
    assert len(server.requests) == 2
    assert server.connections == 1


async def test_posts_to_different_paths_of_one_host_and_port_share_the_connection(
    serve: Serve, client: HttpClient
) -> None:
    server = await serve(answer_ok)

    for path in ("/a", "/b", "/c?x=1", "/a"):
        assert (await post(client, server.url(path))).status == 200

    assert [request.split(b" ")[1] for request in server.requests] == [
        b"/a", b"/b", b"/c?x=1", b"/a"
    ]
    assert server.connections == 1


@pytest.mark.parametrize("settle", [True, False], ids=["noticed", "at-once"])
async def test_a_connection_the_server_closed_while_idle_is_replaced(
    serve: Serve, client: HttpClient, settle: bool
) -> None:
    closed = asyncio.Event()

    async def answer_once_then_close(server: RawServer, reader: asyncio.StreamReader,
                                     writer: asyncio.StreamWriter) -> None:
        if await server.next_request(reader) is not None:
            writer.write(OK)
            await writer.drain()
        writer.close()
        await writer.wait_closed()
        closed.set()

    server = await serve(answer_once_then_close)
    assert (await post(client, server.url())).status == 200
    if settle:
        await wait(closed)
        await asyncio.sleep(0)  # let the client's loop see the end of the connection

    again = await post(client, server.url())

    assert (again.status, again.body) == (200, b"ok")
    assert server.connections == 2


async def test_a_kept_alive_connection_closed_without_an_answer_is_retried_on_a_new_one(
    serve: Serve, client: HttpClient
) -> None:
    async def drop_the_second_request(server: RawServer, reader: asyncio.StreamReader,
                                      writer: asyncio.StreamWriter) -> None:
        if await server.next_request(reader) is None:
            return
        writer.write(OK)
        await writer.drain()
        if server.connections == 1:
            await server.next_request(reader)
            return  # closed with no answer, as a server timing out its idle connection does
        await answer_ok(server, reader, writer)

    server = await serve(drop_the_second_request)
    resends: list[str] = []
    assert (await post(client, server.url(), on_resend=lambda: resends.append("/"))).status == 200
    assert resends == []

    again = await post(client, server.url("/again"), on_resend=lambda: resends.append("/again"))

    assert (again.status, again.body) == (200, b"ok")
    assert server.connections == 2
    assert resends == ["/again"], "the attempt must say it was sent twice"
    assert [request.split(b" ")[1] for request in server.requests] == [
        b"/hook", b"/again", b"/again"
    ]


async def test_a_kept_alive_connection_cut_during_the_response_is_not_retried(
    serve: Serve, client: HttpClient
) -> None:
    async def answer_then_cut(server: RawServer, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        await server.next_request(reader)
        writer.write(OK)
        await writer.drain()
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-")
        await writer.drain()

    server = await serve(answer_then_cut)
    assert (await post(client, server.url())).status == 200

    with pytest.raises(ConnectionError):
        await post(client, server.url())

    assert server.connections == 1
    assert len(server.requests) == 2


async def test_a_response_with_connection_close_is_read_and_the_next_post_connects_anew(
    serve: Serve, client: HttpClient
) -> None:
    dropped = asyncio.Event()

    async def answer_connection_close(server: RawServer, reader: asyncio.StreamReader,
                                      writer: asyncio.StreamWriter) -> None:
        # The server leaves the connection open: the client must close it, not reuse it.
        while await server.next_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\n"
                         b"first")
            await writer.drain()
        dropped.set()

    server = await serve(answer_connection_close)

    response = await post(client, server.url())
    assert response.status == 200
    assert response.headers == [("connection", "close"), ("content-length", "5")]
    assert response.body == b"first"
    await wait(dropped)

    assert (await post(client, server.url())).status == 200
    assert server.connections == 2


async def test_a_chunked_body_is_read_whole_and_the_connection_reused(
    serve: Serve, client: HttpClient
) -> None:
    pieces = [b"hello, ", b"chunked ", b"x" * 1000, b" world"]

    async def answer_chunked(server: RawServer, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        while await server.next_request(reader) is not None:
            writer.write(b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n")
            await writer.drain()
            for piece in pieces:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    server = await serve(answer_chunked)

    first = await post(client, server.url())
    second = await post(client, server.url())

    assert first.status == second.status == 201
    assert first.body == second.body == b"".join(pieces)
    assert server.connections == 1


async def test_a_body_ended_by_the_connection_closing_is_read_whole(
    serve: Serve, client: HttpClient
) -> None:
    body = bytes(range(256)) * 12  # 3 KiB, under the limit

    async def answer_until_close(server: RawServer, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\r\n")
        for start in range(0, len(body), 1000):
            writer.write(body[start:start + 1000])
            await writer.drain()
        # The handler returns and the connection closes: that ends the body.

    server = await serve(answer_until_close)

    response = await post(client, server.url())
    assert response.status == 200
    assert response.headers == [("content-type", "application/octet-stream")]
    assert response.body == body

    assert (await post(client, server.url())).body == body
    assert server.connections == 2


@pytest.mark.parametrize("together", [True, False], ids=["one-write", "two-writes"])
async def test_a_100_continue_before_the_final_response_gives_the_final_status_and_headers(
    serve: Serve, client: HttpClient, together: bool
) -> None:
    interim = b"HTTP/1.1 100 Continue\r\nx-interim: yes\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nx-final: yes\r\ncontent-length: 5\r\n\r\nfinal"

    async def answer_after_continue(server: RawServer, reader: asyncio.StreamReader,
                                    writer: asyncio.StreamWriter) -> None:
        while await server.next_request(reader) is not None:
            if together:
                writer.write(interim + final)
            else:
                writer.write(interim)
                await writer.drain()
                await asyncio.sleep(0.01)  # let the client read the interim answer alone
                writer.write(final)
            await writer.drain()

    server = await serve(answer_after_continue)

    response = await post(client, server.url())

    assert response.status == 200
    assert response.headers == [("x-final", "yes"), ("content-length", "5")]
    assert response.body == b"final"
    assert (await post(client, server.url())).body == b"final"
    assert server.connections == 1


# Malformed, oversized and cut answers.


async def test_response_headers_over_64_kib_fail_as_malformed(
    serve: Serve, client: HttpClient
) -> None:
    # Just over the limit, so however the one write is split into reads, only the last read
    # completes the head.
    filler = b"".join(b"x-filler-%d: %s\r\n" % (n, b"a" * 1009) for n in range(10, 74))
    head = b"HTTP/1.1 200 OK\r\n" + filler + b"content-length: 2\r\n\r\n"
    assert dispatcher.http.HEAD_LIMIT < len(head) < dispatcher.http.HEAD_LIMIT + 64
    server = await serve(answers(head + b"ok"))

    with pytest.raises(MalformedResponse):
        await post(client, server.url())


async def test_response_headers_that_grow_past_64_kib_without_ending_fail_as_malformed(
    serve: Serve, client: HttpClient
) -> None:
    async def endless_headers(server: RawServer, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        await server.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for n in range(100):
            writer.write(b"x-filler-%d: %s\r\n" % (n, b"a" * 1000))
            await writer.drain()
        await closed_by_client(reader)

    server = await serve(endless_headers)

    with pytest.raises(MalformedResponse):
        await post(client, server.url())


@pytest.mark.parametrize(
    "answer",
    [b"SSH-2.0-OpenSSH_9.6\r\n", b"garbage\r\n\r\n", b"HTTP/1.1 abc Nope\r\n\r\n",
     b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
     b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"],
    ids=["ssh", "garbage", "bad-status", "bad-length", "switching-protocols"],
)
async def test_an_answer_that_is_not_a_usable_http_response_fails_as_malformed(
    serve: Serve, client: HttpClient, answer: bytes
) -> None:
    server = await serve(answers(answer))

    with pytest.raises(MalformedResponse):
        await post(client, server.url())


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_1_mib_body_is_cut_to_the_limit_and_its_connection_not_reused(
    serve: Serve, client: HttpClient, framing: str
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB

    async def answer_big(server: RawServer, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        while await server.next_request(reader) is not None:
            if framing == "chunked":
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for start in range(0, len(body), 64 * 1024):
                    writer.write(b"10000\r\n" + body[start:start + 64 * 1024] + b"\r\n")
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    server = await serve(answer_big)

    response = await post(client, server.url())
    assert response.status == 200
    assert len(response.body) == RESPONSE_BODY_LIMIT == 4096
    assert response.body == body[:RESPONSE_BODY_LIMIT]

    assert (await post(client, server.url())).body == body[:RESPONSE_BODY_LIMIT]
    assert server.connections == 2


def answer_once(response: bytes) -> Handler:
    """A handler that answers the first request with `response`, then closes."""

    async def handle(server: RawServer, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.next_request(reader)
        writer.write(response)
        await writer.drain()

    return handle


@pytest.mark.parametrize(
    "cut",
    [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/pl",
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b",
    ],
    ids=["in the headers", "short of its content-length"],
)
async def test_a_response_cut_off_by_the_connection_closing_fails_with_a_connection_error(
    serve: Serve, client: HttpClient, cut: bytes
) -> None:
    server = await serve(answer_once(cut))

    with pytest.raises(ConnectionError):
        await post(client, server.url())
    assert server.connections == 1


async def test_a_fresh_connection_closed_without_an_answer_fails_with_a_connection_error(
    serve: Serve, client: HttpClient
) -> None:
    async def read_and_close(server: RawServer, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        await server.next_request(reader)

    server = await serve(read_and_close)

    with pytest.raises(ConnectionError):
        await post(client, server.url())
    assert len(server.requests) == 1  # not sent again: only a kept-alive connection is retried
    assert server.connections == 1


async def test_a_server_that_never_answers_times_out_and_its_connection_is_not_reused(
    serve: Serve, client: HttpClient
) -> None:
    dropped = asyncio.Event()

    async def first_never_answers(server: RawServer, reader: asyncio.StreamReader,
                                  writer: asyncio.StreamWriter) -> None:
        if server.connections == 1:
            await server.next_request(reader)
            await closed_by_client(reader)
            dropped.set()
            return
        await answer_ok(server, reader, writer)

    server = await serve(first_never_answers)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await client.post(server.url(), [], b"{}")
    await wait(dropped)

    assert (await post(client, server.url())).status == 200
    assert server.connections == 2


# Where the client may connect.


async def test_an_address_outside_the_allowed_networks_is_refused_before_connecting(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    client = HttpClient(allowed_networks=[], connect_timeout=2.0)
    try:
        with pytest.raises(DestinationRefused):
            async with asyncio.timeout(DEADLINE):
                await client.post(f"http://127.0.0.1:{port}/hook", [], b"{}")
    finally:
        await client.close()

    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing connected


async def test_a_connect_that_gets_no_answer_times_out_with_its_own_message() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        # Fill the backlog, never accepting: the kernel drops further connection attempts.
        waiting = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3)]
        for sock in waiting:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        client = HttpClient(allowed_networks=LOOPBACK, connect_timeout=0.3)
        try:
            with pytest.raises(TimeoutError) as raised:
                await post(client, f"http://127.0.0.1:{port}/hook")
            assert str(raised.value) == "could not connect to 127.0.0.1 within 0.3s"
        finally:
            await client.close()
            for sock in waiting:
                sock.close()


async def test_a_url_that_cannot_be_sent_to_is_refused(client: HttpClient) -> None:
    with pytest.raises(DestinationRefused):
        await post(client, "ftp://127.0.0.1/hook")


async def test_a_host_that_does_not_resolve_fails_as_unresolved(client: HttpClient) -> None:
    with pytest.raises(UnresolvedHost):
        await post(client, "http://nothing.invalid/hook")


async def test_a_closed_port_refuses_the_connection(client: HttpClient) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))  # bound, never listening: nothing else can take the port
        port = bound.getsockname()[1]

        with pytest.raises(ConnectionRefusedError):
            await post(client, f"http://127.0.0.1:{port}/hook")


# What is sent.


@pytest.mark.parametrize(
    "body", [b'{"id": 1, "note": "\xc3\xbcn\xc3\xafcode"}\r\n\x00\xff', b""], ids=["odd", "empty"]
)
async def test_the_request_bytes_are_exactly_line_host_headers_length_and_body(
    serve: Serve, client: HttpClient, body: bytes
) -> None:
    server = await serve(answer_ok)
    headers = [("content-type", "application/json"), ("webhook-id", "msg_1"), ("x-a", "A b")]

    await post(client, server.url("/path?q=1"), body, headers)

    assert server.requests == [
        b"POST /path?q=1 HTTP/1.1\r\n"
        b"host: 127.0.0.1:%d\r\n"
        b"content-type: application/json\r\n"
        b"webhook-id: msg_1\r\n"
        b"x-a: A b\r\n"
        b"content-length: %d\r\n"
        b"\r\n" % (server.port, len(body)) + body
    ]


@pytest.mark.skipif(not ipv6_loopback_works(), reason="::1 cannot be bound here")
async def test_an_ipv6_literal_is_sent_in_brackets_with_the_port(serve: Serve) -> None:
    server = await serve(answer_ok, host="::1")
    client = HttpClient(allowed_networks=LOOPBACK_V4_AND_V6, connect_timeout=2.0)
    try:
        response = await post(client, f"http://[::1]:{server.port}/x", b"{}", [])
    finally:
        await client.close()

    assert response.status == 200
    assert server.requests == [
        b"POST /x HTTP/1.1\r\nhost: [::1]:%d\r\ncontent-length: 2\r\n\r\n{}" % server.port
    ]


# TLS.


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


async def test_tls_with_the_default_context_rejects_a_self_signed_certificate(
    serve: Serve, server_tls: ssl.SSLContext
) -> None:
    server = await serve(answer_ok, ssl_context=server_tls)
    client = HttpClient(allowed_networks=LOOPBACK_V4_AND_V6, connect_timeout=2.0)
    try:
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            await post(client, server.url("/", host="localhost", scheme="https"))
    finally:
        await client.close()
    assert server.requests == []


async def test_tls_with_a_context_that_trusts_the_certificate_succeeds(
    serve: Serve, server_tls: ssl.SSLContext, certificate: tuple[Path, Path]
) -> None:
    server = await serve(answer_ok, ssl_context=server_tls)
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    client = HttpClient(allowed_networks=LOOPBACK_V4_AND_V6, connect_timeout=2.0,
                        ssl_context=trusting)
    try:
        first = await post(client, server.url("/", host="localhost", scheme="https"))
        second = await post(client, server.url("/", host="localhost", scheme="https"))
    finally:
        await client.close()

    assert (first.status, first.body, second.status) == (200, b"ok", 200)
    assert server.requests[0].startswith(b"POST / HTTP/1.1\r\nhost: localhost:%d\r\n"
                                         % server.port)
    assert server.connections == 1


# Idle connections.


async def test_a_connection_idle_longer_than_idle_seconds_is_not_reused(
    serve: Serve, client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatcher.http, "IDLE_SECONDS", 0.2)
    dropped = asyncio.Event()

    async def answer_and_note_drop(server: RawServer, reader: asyncio.StreamReader,
                                   writer: asyncio.StreamWriter) -> None:
        await answer_ok(server, reader, writer)
        dropped.set()

    server = await serve(answer_and_note_drop)
    await post(client, server.url())
    await post(client, server.url())
    assert server.connections == 1  # reused while fresh

    await wait_longer_than(0.2)
    assert (await post(client, server.url())).status == 200

    assert server.connections == 2
    await wait(dropped)  # and the stale one was closed


async def test_bytes_sent_on_an_idle_connection_make_the_client_drop_it(
    serve: Serve, client: HttpClient
) -> None:
    dropped = asyncio.Event()

    async def answer_then_chatter(server: RawServer, reader: asyncio.StreamReader,
                                  writer: asyncio.StreamWriter) -> None:
        if server.connections > 1:
            await answer_ok(server, reader, writer)
            return
        await server.next_request(reader)
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.01)  # the response and the chatter arrive apart
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        await closed_by_client(reader)
        dropped.set()

    server = await serve(answer_then_chatter)
    assert (await post(client, server.url())).status == 200
    await wait(dropped)

    response = await post(client, server.url())

    assert (response.status, response.body) == (200, b"ok")
    assert server.connections == 2
    assert len(server.requests) == 2


async def test_bytes_after_the_response_in_the_same_read_are_not_taken_as_the_response(
    serve: Serve, client: HttpClient
) -> None:
    extra = b"HTTP/1.1 500 Smuggled\r\nx-extra: yes\r\ncontent-length: 4\r\n\r\nnope"
    server = await serve(answers(OK + extra, OK))

    response = await post(client, server.url())

    assert (response.status, response.headers, response.body) == (
        200, [("content-length", "2")], b"ok"
    )
    again = await post(client, server.url())
    assert (again.status, again.body) == (200, b"ok")
    assert server.connections == 2


# destination_of.


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com", Destination(False, "example.com", 80, "/", "example.com")),
        ("http://example.com:80/a", Destination(False, "example.com", 80, "/a", "example.com")),
        ("https://example.com:443/a",
         Destination(True, "example.com", 443, "/a", "example.com")),
        ("https://example.com:80/", Destination(True, "example.com", 80, "/", "example.com:80")),
        ("http://example.com:443/", Destination(False, "example.com", 443, "/",
                                                "example.com:443")),
        ("http://Example.COM:8080?a=1&b=%20",
         Destination(False, "example.com", 8080, "/?a=1&b=%20", "example.com:8080")),
        ("https://example.com/p/q?x=1#fragment",
         Destination(True, "example.com", 443, "/p/q?x=1", "example.com")),
        ("http://bücher.example/", Destination(False, "xn--bcher-kva.example", 80, "/",
                                                "xn--bcher-kva.example")),
        ("http://[::1]/", Destination(False, "::1", 80, "/", "[::1]")),
        ("https://[2001:db8::1]:8443/h", Destination(True, "2001:db8::1", 8443, "/h",
                                                     "[2001:db8::1]:8443")),
        ("http://127.0.0.1:9000/x", Destination(False, "127.0.0.1", 9000, "/x",
                                                "127.0.0.1:9000")),
        ("http://h.example/a b/é?q=ü v&r=/s?t",
         Destination(False, "h.example", 80, "/a%20b/%C3%A9?q=%C3%BC%20v&r=/s?t", "h.example")),
    ],
)
def test_destination_of_splits_a_url_into_what_a_request_needs(
    url: str, expected: Destination
) -> None:
    assert destination_of(url) == expected


def test_destination_of_keys_connections_by_scheme_host_and_port() -> None:
    assert destination_of("https://example.com/a").key == ("https", "example.com", 443)
    assert destination_of("http://example.com:8080/b").key == ("http", "example.com", 8080)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "mailto:someone@example.com", "example.com/hook",
            "http:///hook", "file:///etc/passwd", "HTTP2://example.com/"],
)
def test_destination_of_refuses_what_is_not_http_or_https(url: str) -> None:
    with pytest.raises(ValueError):
        destination_of(url)


# Through an egress proxy.

CREDENTIALS = ("hookpost", "s3cret:pa@ss")


@pytest.fixture
async def proxy() -> AsyncIterator[EgressProxy]:
    proxy = EgressProxy()
    await proxy.start()
    yield proxy
    await proxy.close()


def client_through(proxy_url: str, ssl_context: ssl.SSLContext | None = None,
                   allowed: Sequence[IPNetwork] = LOOPBACK_V4_AND_V6) -> HttpClient:
    return HttpClient(allowed_networks=allowed, connect_timeout=2.0, ssl_context=ssl_context,
                      proxy=proxy_url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:3128", ("127.0.0.1", 3128, None)),
        ("http://proxy.internal:8080/", ("proxy.internal", 8080, None)),
        ("http://[::1]:4750", ("::1", 4750, None)),
        ("http://u:p@proxy:1", ("proxy", 1, "Basic dTpw")),
        ("http://user%40corp:p%3Aw@proxy:1", ("proxy", 1, "Basic " + base64.b64encode(
            b"user@corp:p:w").decode())),
    ],
)
def test_a_proxy_url_names_its_host_port_and_credentials(
    url: str, expected: tuple[str, int, str | None]
) -> None:
    parsed = proxy_of(url)
    assert (parsed.host, parsed.port, parsed.authorization) == expected
    assert parsed.shown == (f"[{parsed.host}]" if ":" in parsed.host else parsed.host) + (
        f":{parsed.port}")


@pytest.mark.parametrize("url", ["https://proxy:443", "http://proxy", "socks5://proxy:1080",
                                 "http://:8080", "proxy:8080"])
def test_a_proxy_url_that_is_not_http_host_and_port_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="http://"):
        proxy_of(url)


async def test_https_goes_through_a_connect_tunnel_with_tls_to_the_receiver_inside(
    serve: Serve, server_tls: ssl.SSLContext, certificate: tuple[Path, Path],
    proxy: EgressProxy,
) -> None:
    proxy.credentials = CREDENTIALS
    server = await serve(answer_ok, ssl_context=server_tls)
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    client = client_through(proxy.url(CREDENTIALS), trusting)
    try:
        first = await post(client, server.url("/hook", host="localhost", scheme="https"))
        second = await post(client, server.url("/hook", host="localhost", scheme="https"))
    finally:
        await client.close()

    assert (first.status, first.body, second.status) == (200, b"ok", 200)
    # One tunnel, kept alive; the proxy got the name (it resolves), and the credentials.
    assert proxy.tunnels == [f"localhost:{server.port}"]
    assert proxy.authorizations == ["Basic " + base64.b64encode(
        b"hookpost:s3cret:pa@ss").decode()]
    assert server.connections == 1
    assert all(request.startswith(b"POST /hook HTTP/1.1\r\nhost: localhost:%d\r\n"
                                  % server.port) for request in server.requests)
    assert not any(b"proxy-authorization" in request for request in server.requests)


async def test_http_goes_to_the_proxy_in_absolute_form(
    serve: Serve, proxy: EgressProxy
) -> None:
    proxy.credentials = CREDENTIALS
    server = await serve(answer_ok)
    client = client_through(proxy.url(CREDENTIALS))
    try:
        response = await post(client, server.url("/hook?a=1"))
    finally:
        await client.close()

    assert response.status == 200
    assert proxy.forwarded == [f"http://127.0.0.1:{server.port}/hook?a=1"]
    assert proxy.tunnels == []
    assert proxy.authorizations[0] is not None
    [request] = server.requests
    assert request.startswith(b"POST /hook?a=1 HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
                              % server.port)


async def test_a_proxy_that_refuses_the_tunnel_is_a_proxy_failure(
    serve: Serve, server_tls: ssl.SSLContext, proxy: EgressProxy
) -> None:
    server = await serve(answer_ok, ssl_context=server_tls)
    proxy.refuse = True
    client = client_through(proxy.url())
    try:
        with pytest.raises(ProxyFailed, match=r"the proxy answered CONNECT with HTTP/1\.1 403"):
            await post(client, server.url("/", host="localhost", scheme="https"))
    finally:
        await client.close()
    assert server.requests == []


async def test_wrong_proxy_credentials_are_a_proxy_failure_that_does_not_show_them(
    serve: Serve, server_tls: ssl.SSLContext, proxy: EgressProxy
) -> None:
    proxy.credentials = CREDENTIALS
    server = await serve(answer_ok, ssl_context=server_tls)
    client = client_through(proxy.url(("hookpost", "wrong-password")))
    try:
        with pytest.raises(ProxyFailed, match="407") as refused:
            await post(client, server.url("/", host="localhost", scheme="https"))
    finally:
        await client.close()
    assert "wrong-password" not in str(refused.value)


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_proxy_that_does_not_answer_is_a_proxy_failure(
    serve: Serve, scheme: str
) -> None:
    server = await serve(answer_ok)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client = client_through(f"http://user:hunter2@127.0.0.1:{port}")
    try:
        with pytest.raises(ProxyFailed, match=f"could not connect to the proxy 127.0.0.1:{port}"
                           ) as failed:
            await post(client, server.url("/", host="localhost", scheme=scheme))
    finally:
        await client.close()
    assert "hunter2" not in str(failed.value)


async def test_an_untrusted_certificate_behind_the_proxy_is_a_tls_error_not_the_proxys(
    serve: Serve, server_tls: ssl.SSLContext, proxy: EgressProxy
) -> None:
    server = await serve(answer_ok, ssl_context=server_tls)
    client = client_through(proxy.url())
    try:
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            await post(client, server.url("/", host="localhost", scheme="https"))
    finally:
        await client.close()
    assert proxy.tunnels == [f"localhost:{server.port}"]


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_destination_checks_run_before_anything_reaches_the_proxy(
    serve: Serve, proxy: EgressProxy, scheme: str
) -> None:
    server = await serve(answer_ok)
    client = client_through(proxy.url(), allowed=[])
    try:
        with pytest.raises(DestinationRefused):
            await post(client, server.url("/", scheme=scheme))
        with pytest.raises(UnresolvedHost):
            await post(client, f"{scheme}://no-such-host.invalid/")
    finally:
        await client.close()
    assert proxy.authorizations == []
