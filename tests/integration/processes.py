"""Running `hookpost` as real processes, as an operator would."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.conftest import Receiver, wait_for

HOOKPOST = [sys.executable, "-m", "hookpost.cli"]


def environment(database_url: str | None, **settings: str) -> dict[str, str]:
    """This process's environment without any hookpost setting, plus `settings`."""
    clean = {
        name: value for name, value in os.environ.items()
        if not name.startswith("HOOKPOST_") and name != "DATABASE_URL"
    }
    if database_url is not None:
        clean["DATABASE_URL"] = database_url
    clean["HOOKPOST_METRICS_PORT"] = "0"  # a dispatcher's probes on a port of its own
    clean.update({f"HOOKPOST_{name.upper()}": value for name, value in settings.items()})
    return clean


def hookpost(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HOOKPOST, *arguments], env=env, capture_output=True, text=True, timeout=60
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Service:
    """A running `hookpost` process and what it has printed so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def read_until(self, text: str, timeout: float = 60) -> None:
        """Read stdout until a line containing `text` appears."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while not any(text in line for line in self.lines):
                line = await self.process.stdout.readline()
                if not line:
                    raise AssertionError(f"exited before printing {text!r}: {self.lines}")
                self.lines.append(line.decode())

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        async with asyncio.timeout(30):
            return await self.process.wait()


@asynccontextmanager
async def service(
    command: str, env: dict[str, str], log: Path | None = None
) -> AsyncIterator[Service]:
    """`hookpost COMMAND` running until the block ends; its logs go to `log` if given."""
    with open(log or os.devnull, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *HOOKPOST, command, env=env, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )
    running = Service(process)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()



async def deliver_through(base: str, admin_key: str, receiver: Receiver) -> str:
    """Subscribe `receiver`, post an event through the API at `base`; the event id."""
    auth = {"Authorization": f"Bearer {admin_key}"}
    async with aiohttp.ClientSession(base) as client:
        async with client.post("/v1/subscriptions", headers=auth,
                               json={"url": receiver.url(), "event_types": ["*"]}) as created:
            assert created.status == 201, await created.text()
        async with client.post("/v1/events", headers=auth,
                               json={"type": "order.created", "data": {}}) as posted:
            assert posted.status == 202, await posted.text()
            body: dict[str, Any] = await posted.json()
    await wait_for(lambda: len(receiver.requests) == 1, timeout=20)
    assert receiver.requests[0].headers["webhook-id"] == body["id"]
    return str(body["id"])


def admin_key(lines: list[str]) -> str:
    [line] = [line for line in lines if "admin API key" in line]
    return line.rsplit(" ", 1)[1].strip()
