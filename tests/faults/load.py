"""What the fault suite puts on either side of hookpost: a steady producer of events and a
receiver that counts what arrives."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web

ANSWER_AFTER = 0.05  # seconds a receiver takes, so sends overlap as they do in production


class CountingReceiver:
    """A real aiohttp server on 127.0.0.1 answering 200 after ~50 ms, noting when each
    distinct `webhook-id` first arrived (duplicates are counted, and allowed)."""

    def __init__(self) -> None:
        self.first_seen: dict[str, float] = {}  # webhook-id -> time.monotonic()
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def duplicates(self) -> int:
        return self.requests - len(self.first_seen)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        webhook_id = request.headers.get("webhook-id", "")
        self.requests += 1
        self.first_seen.setdefault(webhook_id, time.monotonic())
        await request.read()
        await asyncio.sleep(ANSWER_AFTER)
        return web.Response(text="ok")

    def first_new_after(self, moment: float) -> float | None:
        """When the first webhook-id never seen before `moment` arrived, if one has."""
        later = [seen for seen in self.first_seen.values() if seen > moment]
        return min(later) if later else None


class SteadyProducer:
    """Posts events to POST /v1/events at a fixed rate, as a producer service would: each
    event has an idempotency key and is posted again, with backoff, while hookpost answers
    503 (for up to `retry_for` seconds, then it counts as refused).

    `accepted` holds the ids of events answered 202; `statuses` every answer's status;
    `errors` every request that got no answer, by exception name."""

    def __init__(self, base: str, key: str, rate: float = 100.0, retry_for: float = 10.0,
                 request_timeout: float = 10.0) -> None:
        self.base = base
        self.rate = rate
        self.retry_for = retry_for
        self._auth = {"Authorization": f"Bearer {key}"}
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self.accepted: dict[str, float] = {}  # event id -> time.monotonic() of the 202
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.refused = 0  # events still answered 503 after `retry_for`
        self.posted = 0
        self.unexpected: list[str] = []  # the first few answers other than 202 and 503
        self._stop = asyncio.Event()
        self._pacer: asyncio.Task[None] | None = None
        self._posts: set[asyncio.Task[None]] = set()
        self._client: aiohttp.ClientSession | None = None

    @property
    def failures(self) -> int:
        """Answers that are neither 202 nor 503, and requests that got no answer."""
        answered = sum(count for status, count in self.statuses.items()
                       if status not in (202, 503))
        return answered + self.errors.total()

    async def subscribe(self, url: str) -> str:
        """Subscribe `url` to every event type; the subscription id."""
        async with aiohttp.ClientSession(self.base, timeout=self._timeout) as client, \
                client.post("/v1/subscriptions", headers=self._auth,
                            json={"url": url, "event_types": ["*"]}) as created:
            assert created.status == 201, await created.text()
            body: dict[str, Any] = await created.json()
        return str(body["id"])

    def start(self) -> None:
        self._client = aiohttp.ClientSession(
            self.base, timeout=self._timeout, connector=aiohttp.TCPConnector(limit=200)
        )
        self._pacer = asyncio.create_task(self._pace(), name="producer")

    async def stop(self, timeout: float = 30.0) -> None:
        """Post nothing new; wait up to `timeout` seconds for posts still being answered."""
        self._stop.set()
        if self._pacer is not None:
            await self._pacer
        if self._posts:
            _, pending = await asyncio.wait(set(self._posts), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    async def _pace(self) -> None:
        started = time.monotonic()
        number = 0
        while not self._stop.is_set():
            number += 1
            post = asyncio.create_task(self._post(number))
            self._posts.add(post)
            post.add_done_callback(self._posts.discard)
            # Paced from the start, so a slow answer or a stalled loop does not lower the rate.
            delay = started + number / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _post(self, number: int) -> None:
        assert self._client is not None
        headers = {**self._auth, "Idempotency-Key": f"fault-load-{number}"}
        body = {"type": "order.created", "data": {"n": number}}
        self.posted += 1
        give_up = time.monotonic() + self.retry_for
        backoff = 0.5
        while True:
            try:
                async with self._client.post("/v1/events", json=body,
                                             headers=headers) as answer:
                    self.statuses[answer.status] += 1
                    text = await answer.text()
                    if answer.status == 202:
                        accepted: dict[str, Any] = await answer.json()
                        self.accepted[str(accepted["id"])] = time.monotonic()
                        return
                    if answer.status != 503:
                        if len(self.unexpected) < 5:
                            self.unexpected.append(f"{answer.status}: {text[:300]}")
                        return
            except (aiohttp.ClientError, TimeoutError) as error:
                self.errors[type(error).__name__] += 1
                return
            if time.monotonic() + backoff > give_up:
                self.refused += 1
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 4.0)
