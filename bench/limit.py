"""The ceiling for one sending process: a plain aiohttp client POSTing 1 KB bodies.

    python -m bench.limit URL SECONDS CONCURRENCY

Prints {"requests": n, "seconds": s} once done.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp

BODY = b'{"pad":"' + b"x" * 1000 + b'"}'


async def run(url: str, seconds: float, concurrency: int) -> dict[str, float]:
    sent = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal sent
            while time.monotonic() < deadline:
                async with session.post(url, data=BODY,
                                        headers={"content-type": "application/json"}) as answer:
                    await answer.read()
                sent += 1

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took = time.monotonic() - began
    return {"requests": sent, "seconds": took}


if __name__ == "__main__":
    url, seconds, concurrency = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(run(url, seconds, concurrency))), flush=True)
