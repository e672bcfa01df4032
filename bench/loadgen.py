"""Posts events to a hookpost API from a process of its own.

    python -m bench.loadgen URL KEY SECONDS CONCURRENCY            # as fast as it goes
    python -m bench.loadgen URL KEY SECONDS RATE --rate OUT.json   # RATE events per second
    python -m bench.loadgen URL KEY SECONDS CONCURRENCY --tenant TENANT  # to one tenant

Prints {"events", "seconds", "p50_ms", "p99_ms", "errors"}; with --rate it also writes
[[event id, unix time its 202 arrived], ...] to OUT.json for end-to-end latency. Events go
to the tenant named by --tenant (an id or uid), else to the key's own or the default.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import time

from dispatcher.http import HttpClient


def event_body(tenant: str | None = None) -> bytes:
    """What every benchmark posts: an event of type bench.event with 1 KB of data, to
    `tenant` if named."""
    event: dict[str, object] = {"type": "bench.event", "data": {"pad": "x" * 1000}}
    if tenant is not None:
        event["tenant_id"] = tenant
    return json.dumps(event).encode()


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(url: str, key: str, seconds: float, amount: int, rate_out: str | None,
              body: bytes) -> dict[str, float]:
    # hookpost's own HTTP client costs about half the CPU of aiohttp's, and this process
    # shares the machine with the API it measures.
    client = HttpClient(allowed_networks=[ipaddress.ip_network("127.0.0.0/8")],
                        connect_timeout=10)
    headers = [("authorization", f"Bearer {key}"), ("content-type", "application/json")]
    latencies: list[float] = []
    accepted: list[tuple[str, float]] = []
    errors = 0
    try:

        async def post() -> None:
            nonlocal errors
            began = time.perf_counter()
            answer = await client.post(url + "/v1/events", headers, body)
            if answer.status != 202:
                errors += 1
                return
            latencies.append((time.perf_counter() - began) * 1000)
            if rate_out is not None:  # when the 202 arrived here
                accepted.append((json.loads(answer.body)["id"], time.time()))

        began = time.monotonic()
        deadline = began + seconds
        if rate_out is None:
            async def worker() -> None:
                while time.monotonic() < deadline:
                    await post()

            await asyncio.gather(*(worker() for _ in range(amount)))
        else:
            tasks = []
            for number in range(int(seconds * amount)):
                delay = began + number / amount - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(post()))
            await asyncio.gather(*tasks)
        took = time.monotonic() - began
    finally:
        await client.close()
    if rate_out is not None:
        with open(rate_out, "w") as file:
            json.dump(accepted, file)
    return {"events": len(latencies), "seconds": took, "errors": errors,
            "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("key")
    parser.add_argument("seconds", type=float)
    parser.add_argument("amount", type=int, help="concurrency, or events/s with --rate")
    parser.add_argument("--rate", metavar="OUT.json", help="post at a rate; write arrivals")
    parser.add_argument("--tenant", help="the tenant to post to, by id or uid")
    arguments = parser.parse_args()
    print(json.dumps(asyncio.run(run(
        arguments.url, arguments.key, arguments.seconds, arguments.amount, arguments.rate,
        event_body(arguments.tenant)))), flush=True)
