"""Ingest side by side: this checkout's API and another checkout's (an earlier commit, say),
at fan-out 1, each on a fresh database of one Postgres, loaded at the same moment for the
same window. Whatever else the machine does in that window slows both alike, so their
ratio holds still where runs one after the other swing by a fifth.

    python -m bench.side_by_side OTHER_CHECKOUT [--rounds 10] [--seconds 10]

The other checkout needs its own `.venv` (`make install` there). It is driven only through
its command line (`migrate`, `keys create`, `api`) and its HTTP API, which every version
has, so any earlier commit can be the other side. Each round swaps which API is started
and loaded first. Prints each round and the ratio of this checkout's events/s to the
other's, pooled over the rounds."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.__main__ import (
    HERE,
    Postgres,
    Receiver,
    free_port,
    hookpost_env,
    say,
    stop,
)
from bench.loadgen import event_body

CONNECTIONS = 32  # for each API: the two together load it as the ingest scenario does one


@dataclass
class Side:
    name: str
    checkout: Path
    api: subprocess.Popen[str] | None = None
    port: int = 0
    key: str = ""

    @property
    def python(self) -> str:
        return str(self.checkout / ".venv" / "bin" / "python")

    def cli(self, url: str, *arguments: str) -> str:
        done = subprocess.run([self.python, "-m", "hookpost.cli", *arguments], cwd=self.checkout,
                              env=hookpost_env(url), capture_output=True, text=True, check=True)
        return done.stdout.strip().splitlines()[-1]

    async def start(self, postgres: Postgres, receiver: Receiver) -> None:
        """A fresh database with one subscription to every event, and an API on it."""
        url = await postgres.empty(f"hookpost_side_{self.name}")
        self.cli(url, "migrate")  # by the checkout's own schema
        admin = self.cli(url, "keys", "create", "--role", "admin", "--name", "bench")
        self.key = self.cli(url, "keys", "create", "--role", "producer", "--name", "bench")
        self.port = free_port()
        self.api = subprocess.Popen([self.python, "-m", "hookpost.cli", "api"], cwd=self.checkout,
                                    env=hookpost_env(url, port=str(self.port)),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        async with aiohttp.ClientSession() as client:
            for _ in range(300):
                try:
                    async with client.get(f"http://127.0.0.1:{self.port}/health") as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            else:
                raise TimeoutError(f"the API of {self.checkout} did not start")
            async with client.post(f"http://127.0.0.1:{self.port}/v1/subscriptions",
                                   json={"url": f"{receiver.base}/side", "event_types": ["*"]},
                                   headers={"Authorization": f"Bearer {admin}"}) as answer:
                assert answer.status == 201, await answer.text()

    def load(self, seconds: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", f"http://127.0.0.1:{self.port}", self.key,
             str(seconds), str(CONNECTIONS)],
            cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> None:
        if self.api is not None:
            stop(self.api)
            self.api = None


async def run(other: Path, rounds: int, seconds: float) -> float:
    assert json.loads(event_body())["type"] == "bench.event"
    postgres = Postgres()
    receiver = Receiver()
    this, that = Side("this", HERE.parent), Side("other", other.resolve())
    totals = {"this": 0.0, "other": 0.0}
    try:
        for number in range(rounds):
            order = (this, that) if number % 2 == 0 else (that, this)
            for side in order:
                await side.start(postgres, receiver)
            loads = [side.load(seconds) for side in order]
            rates = {}
            for side, load in zip(order, loads, strict=True):
                measured = json.loads(load.communicate()[0])
                rates[side.name] = measured["events"] / measured["seconds"]
                side.stop()
            for name, rate in rates.items():
                totals[name] += rate
            say(f"round {number + 1}: this {rates['this']:.0f} events/s, other "
                f"{rates['other']:.0f}, ratio {rates['this'] / rates['other']:.3f}")
    finally:
        this.stop()
        that.stop()
        stop(receiver.process)
        postgres.close()
    ratio = totals["this"] / totals["other"]
    say(f"this checkout ÷ {other}: {ratio:.3f} over {rounds} rounds")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.side_by_side", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", type=Path, help="the other checkout, with its own .venv")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    arguments = parser.parse_args()
    asyncio.run(run(arguments.other, arguments.rounds, arguments.seconds))


if __name__ == "__main__":
    main()
