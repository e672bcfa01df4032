"""A small HTTP proxy on 127.0.0.1 for tests: CONNECT tunnels and absolute-form requests,
each one counted, with an optional password and a switch that makes it refuse."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from urllib.parse import urlsplit


class EgressProxy:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.refuse = False  # answer 403 to everything, as a filtering proxy refusing would
        self.tunnels: list[str] = []  # the authority of every CONNECT it opened
        self.forwarded: list[str] = []  # the target of every absolute-form request it passed on
        self.authorizations: list[str | None] = []  # proxy-authorization, as each asked
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, credentials: tuple[str, str] | None = None) -> str:
        userinfo = "" if credentials is None else f"{credentials[0]}:{credentials[1]}@"
        return f"http://{userinfo}127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        method, target, _ = request_line.split(" ")
        fields = [line.split(":", 1) for line in lines]
        authorization = next((value.strip() for name, value in fields
                              if name.strip().lower() == "proxy-authorization"), None)
        self.authorizations.append(authorization)
        if self.refuse:
            await self._answer(writer, b"403 Forbidden")
            return
        if self.credentials is not None and authorization != _basic(self.credentials):
            await self._answer(writer, b"407 Proxy Authentication Required")
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = await self._open(writer, host.strip("[]"), int(port))
            if upstream is None:
                return
            self.tunnels.append(target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await self._relay(reader, writer, *upstream)
            return
        parts = urlsplit(target)
        upstream = await self._open(writer, parts.hostname or "", parts.port or 80)
        if upstream is None:
            return
        self.forwarded.append(target)
        kept = [f"{name}:{value}" for name, value in fields
                if name.strip().lower() not in ("proxy-authorization", "connection")]
        origin_form = parts.path + (f"?{parts.query}" if parts.query else "")
        upstream[1].write("\r\n".join([f"{method} {origin_form} HTTP/1.1", *kept,
                                       "connection: close", "", ""]).encode("latin-1"))
        await self._relay(reader, writer, *upstream)

    async def _open(self, writer: asyncio.StreamWriter, host: str, port: int
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await asyncio.open_connection(host, port)
        except OSError:
            await self._answer(writer, b"502 Bad Gateway")
            return None

    async def _answer(self, writer: asyncio.StreamWriter, status: bytes) -> None:
        writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     upstream_reader: asyncio.StreamReader,
                     upstream_writer: asyncio.StreamWriter) -> None:
        """Copy bytes both ways until either side closes."""

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        tasks = [asyncio.create_task(pipe(reader, upstream_writer)),
                 asyncio.create_task(pipe(upstream_reader, writer))]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks)
        finally:
            self._tasks.difference_update(tasks)


def _basic(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
