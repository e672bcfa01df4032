"""Postgres faults under steady load: hookpost loses no accepted event, never answers 500,
delivers again within seconds of Postgres coming back, and still stops cleanly."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.faults.conftest import SHUTDOWN_GRACE, SUMMARIES, Hookpost
from tests.faults.load import CountingReceiver, SteadyProducer
from tests.faults.postgres import ThrowawayPostgres

pytestmark = [pytest.mark.faults, pytest.mark.integration]

WARM_UP = 3.0  # seconds of load before the first fault
SETTLE = 5.0  # seconds of load after the last fault
DRAIN_DEADLINE = 30.0  # seconds after the load stops for every accepted event to arrive
RESUME_LIMIT = 5.0  # seconds from Postgres accepting again to the next new delivery
CRASH_DOWN = 3.0  # seconds Postgres stays down after a crash


@dataclass(frozen=True)
class Fault:
    """Something done to Postgres `times` times, `every` seconds apart, under load; `apply`
    returns once Postgres accepts connections again."""

    name: str
    apply: Callable[[ThrowawayPostgres], None]
    times: int = 1
    every: float = 5.0
    away: float = 0.0  # seconds Postgres is held down each time, for the test's timeout

    @property
    def load_seconds(self) -> float:
        return WARM_UP + (self.times - 1) * self.every + self.times * self.away + SETTLE


def restart_fast(postgres: ThrowawayPostgres) -> None:
    postgres.restart("fast")


def crash(postgres: ThrowawayPostgres) -> None:
    postgres.stop("immediate")
    time.sleep(CRASH_DOWN)
    postgres.start()


def terminate_backends(postgres: ThrowawayPostgres) -> None:
    postgres.terminate_backends()


def away_for(seconds: float) -> Callable[[ThrowawayPostgres], None]:
    def away(postgres: ThrowawayPostgres) -> None:
        postgres.stop("fast")
        time.sleep(seconds)
        postgres.start()

    return away


def faults(away_seconds: float) -> list[Fault]:
    return [
        Fault("restart-fast", restart_fast, times=3),
        Fault("crash", crash, times=2, every=6.0, away=CRASH_DOWN),
        Fault("terminate-backends", terminate_backends, times=3),
        Fault(f"away-{away_seconds:g}s", away_for(away_seconds), away=away_seconds),
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fault" not in metafunc.fixturenames:
        return
    away = float(metafunc.config.getoption("fault_away"))
    repeat = int(metafunc.config.getoption("fault_repeat"))
    metafunc.parametrize("fault", [
        pytest.param(fault, id=fault.name,
                     marks=pytest.mark.timeout(fault.load_seconds + DRAIN_DEADLINE + 120))
        for fault in faults(away)
    ])
    metafunc.parametrize("repetition", [
        pytest.param(number, id=f"run{number}") for number in range(1, repeat + 1)
    ])


@dataclass
class FaultRun:
    """What one run of a fault under load measured."""

    fault: str
    repetition: int
    producer: SteadyProducer
    receiver: CountingReceiver
    back_at: list[float] = field(default_factory=list)  # Postgres accepting again
    statuses: dict[str, int] = field(default_factory=dict)  # deliveries by status
    health: int | str = "not asked"
    exit_code: int | None = None
    exit_seconds: float | None = None
    exited_by_itself: bool = False  # hookpost had ended before it was sent SIGTERM
    errors_logged: int = 0  # ERROR lines in hookpost's log

    @property
    def lost(self) -> list[str]:
        return [event for event in self.producer.accepted
                if event not in self.receiver.first_seen]

    @property
    def resumes(self) -> list[float | None]:
        """Per fault, seconds from Postgres accepting again to the next new delivery."""
        resumes: list[float | None] = []
        for back in self.back_at:
            arrived = self.receiver.first_new_after(back)
            resumes.append(None if arrived is None else arrived - back)
        return resumes

    def summary(self) -> str:
        resumes = ", ".join("never" if seconds is None else f"{seconds:.2f}"
                            for seconds in self.resumes)
        exit_seconds = "none" if self.exit_seconds is None else f"{self.exit_seconds:.1f}s"
        if self.exited_by_itself:
            exit_seconds = "before SIGTERM"
        statuses = self.producer.statuses
        return (
            f"{self.fault} run {self.repetition}: accepted {len(self.producer.accepted)}, "
            f"delivered {len(self.receiver.first_seen)} (+{self.receiver.duplicates} repeats),"
            f" lost {len(self.lost)}, 500s {statuses[500]}, 503s {statuses[503]}, "
            f"refused {self.producer.refused}, other failures "
            f"{self.producer.failures - statuses[500]}, resume s [{resumes}], "
            f"deliveries {self.statuses}, health {self.health}, "
            f"exit {exit_seconds} (code {self.exit_code}), errors logged {self.errors_logged}"
        )

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} accepted events never arrived, e.g. "
                         f"{self.lost[:3]}")
        if self.producer.failures:
            found.append(f"answers other than 202/503: {dict(self.producer.statuses)}, "
                         f"no answer: {dict(self.producer.errors)}; first: "
                         f"{self.producer.unexpected}")
        slow = [seconds for seconds in self.resumes
                if seconds is None or seconds > RESUME_LIMIT]
        if slow:
            found.append(f"delivery did not resume within {RESUME_LIMIT}s of Postgres "
                         f"coming back: {self.resumes}")
        if set(self.statuses) != {"succeeded"}:
            found.append(f"deliveries not all succeeded: {self.statuses}")
        if self.health != 200:
            found.append(f"/health answered {self.health}")
        limit = SHUTDOWN_GRACE + 5
        if self.exited_by_itself:
            found.append(f"hookpost exited by itself with code {self.exit_code} during the run")
        elif self.exit_seconds is None or self.exit_code != 0:
            found.append(f"SIGTERM did not end hookpost with 0 within {limit}s "
                         f"(code {self.exit_code})")
        return found


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition()` came true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def deliveries_by_status(postgres: ThrowawayPostgres) -> dict[str, int]:
    rows = postgres.sql("SELECT status, count(*) FROM deliveries GROUP BY status;")
    return {status: int(count) for status, count in
            (row.split("|") for row in rows.splitlines() if row)}


async def health_of(base: str) -> int | str:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client, \
                client.get(f"{base}/health") as answer:
            return answer.status
    except (aiohttp.ClientError, TimeoutError) as error:
        return type(error).__name__


async def terminate(hookpost: Hookpost, run: FaultRun) -> None:
    """SIGTERM hookpost and note how long it took to exit, killing it past the limit."""
    process = hookpost.running.process
    if process.returncode is not None:
        run.exited_by_itself, run.exit_code = True, process.returncode
        return
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        run.exit_code = await asyncio.wait_for(process.wait(), SHUTDOWN_GRACE + 5)
        run.exit_seconds = time.monotonic() - started
    except TimeoutError:
        process.kill()
        await process.wait()


async def test_fault_under_load(
    fault: Fault, repetition: int, request: pytest.FixtureRequest,
    throwaway_postgres: ThrowawayPostgres, hookpost: Hookpost,
    counting_receiver: CountingReceiver,
) -> None:
    producer = SteadyProducer(hookpost.base, hookpost.key,
                              rate=float(request.config.getoption("fault_rate")))
    run = FaultRun(fault.name, repetition, producer, counting_receiver)
    try:
        await producer.subscribe(counting_receiver.url)
        producer.start()
        try:
            assert await until(lambda: bool(counting_receiver.first_seen), 20), \
                "nothing delivered before any fault"
            await asyncio.sleep(WARM_UP)  # load flowing before the first fault
            for number in range(fault.times):
                if number:
                    await asyncio.sleep(fault.every)
                await asyncio.to_thread(fault.apply, throwaway_postgres)
                run.back_at.append(time.monotonic())
            await asyncio.sleep(SETTLE)  # load flowing after the last fault
        finally:
            await producer.stop()
        await until(lambda: not run.lost, DRAIN_DEADLINE)
        # Each attempt's record may land a moment after the receiver answered.
        deadline = time.monotonic() + 10
        run.statuses = await asyncio.to_thread(deliveries_by_status, throwaway_postgres)
        while set(run.statuses) != {"succeeded"} and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            run.statuses = await asyncio.to_thread(deliveries_by_status, throwaway_postgres)
        run.health = await health_of(hookpost.base)
        await terminate(hookpost, run)
        run.errors_logged = hookpost.errors_logged()
    except BaseException:
        hookpost.print_tails()
        raise
    summary = run.summary()
    print(summary)
    request.config.stash.setdefault(SUMMARIES, []).append(summary)
    problems = run.problems()
    if problems:
        hookpost.print_tails()
        pytest.fail(f"{summary}\n" + "\n".join(f"- {problem}" for problem in problems),
                    pytrace=False)
