"""Fixtures of the fault suite: a throwaway Postgres, `hookpost serve` as a real process on
it, a counting receiver, and the options that say how often and how long faults last."""

from __future__ import annotations

import atexit
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.load import CountingReceiver
from tests.faults.postgres import ThrowawayPostgres
from tests.integration.processes import Service, admin_key, environment, free_port, service

SHUTDOWN_GRACE = 5.0  # seconds, HOOKPOST_SHUTDOWN_GRACE of the service under test
SUMMARIES = pytest.StashKey[list[str]]()
_PER_REQUEST_503 = "database unavailable during "  # api/errors.py logs one per 503


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faults", "the fault suite (tests/faults)")
    group.addoption("--fault-repeat", type=int, default=1, metavar="N",
                    help="run each fault N times (default 1)")
    group.addoption("--fault-away", type=float, default=60.0, metavar="SECONDS",
                    help="how long Postgres stays away in the 'away' fault (default 60)")
    group.addoption("--fault-rate", type=float, default=100.0, metavar="EVENTS",
                    help="events posted per second during a fault run (default 100)")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    summaries = terminalreporter.config.stash.get(SUMMARIES, [])
    if summaries:
        terminalreporter.section("fault runs")
        for line in summaries:
            terminalreporter.write_line(line)


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A Postgres server of this test's own, gone after it whatever happened."""
    server = ThrowawayPostgres()
    atexit.register(server.cleanup)  # should the finalizer itself never run
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
        atexit.unregister(server.cleanup)
        if server.folder.exists():
            raise AssertionError(f"throwaway Postgres left {server.folder} behind")


@pytest.fixture
async def counting_receiver() -> AsyncIterator[CountingReceiver]:
    receiver = CountingReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@dataclass
class Hookpost:
    """`hookpost serve` running on the throwaway Postgres."""

    running: Service
    base: str
    key: str
    log: Path
    postgres: ThrowawayPostgres

    def _log_lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines() if self.log.exists() else []

    def log_tail(self, lines: int = 80) -> str:
        """The end of hookpost's log without its one-per-request 503 warnings, which would
        crowd out everything else while Postgres is away."""
        kept = [line for line in self._log_lines() if _PER_REQUEST_503 not in line]
        return "\n".join(kept[-lines:])

    def errors_logged(self) -> int:
        return sum(" ERROR " in line for line in self._log_lines())

    def print_tails(self) -> None:
        """Print the end of hookpost's log and of Postgres's, for a failing test's report."""
        print(f"--- tail of {self.log} (per-request 503 warnings left out)\n{self.log_tail()}")
        print(f"--- tail of {self.postgres.log}\n{self.postgres.log_tail()}")


@pytest.fixture
async def hookpost(throwaway_postgres: ThrowawayPostgres, tmp_path: Path
                   ) -> AsyncIterator[Hookpost]:
    """`hookpost serve` as an operator runs it, logging to the test's folder."""
    port = free_port()
    env = environment(
        throwaway_postgres.url, port=str(port), allowed_networks="127.0.0.0/8",
        allow_http="true", shutdown_grace=f"{SHUTDOWN_GRACE:g}s",
    )
    log = tmp_path / "hookpost.log"
    async with service("serve", env, log=log) as running:
        started = Hookpost(running, f"http://127.0.0.1:{port}", "", log, throwaway_postgres)
        try:
            await running.read_until("hookpost listening")
        except BaseException:
            started.print_tails()
            raise
        started.key = admin_key(running.lines)
        yield started
