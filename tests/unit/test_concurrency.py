"""How much of a dispatcher each subscription may have, from how it has answered."""

from __future__ import annotations

import pytest

from dispatcher.concurrency import START, Concurrency


def adapted(*answers: tuple[bool, str | None], ceiling: int = 16) -> Concurrency:
    concurrency = Concurrency(ceiling=ceiling, max_in_flight=256)
    for succeeded, error_kind in answers:
        concurrency.answered("sub", succeeded=succeeded, error_kind=error_kind)
    return concurrency


OK = (True, None)
TIMEOUT = (False, "timeout")
CONNECT = (False, "connect")
HTTP_500 = (False, "http")


@pytest.mark.parametrize(
    ("answers", "limit"),
    [
        ((), START),
        ((OK,), 2),
        ((OK,) * 5, 6),
        ((OK,) * 40, 16),  # never past the ceiling
        ((OK,) * 7 + (TIMEOUT,), 4),  # halved
        ((OK,) * 7 + (CONNECT, CONNECT), 2),
        ((TIMEOUT,) * 5, 1),  # never below one
        ((OK,) * 7 + (HTTP_500,), 8),  # a quick answer, if a bad one, changes nothing
        ((OK,) * 7 + (TIMEOUT, OK), 5),  # restored while it succeeds
    ],
    ids=["new", "one success", "five", "ceiling", "timeout", "connect errors", "floor",
         "http error", "recovering"],
)
def test_the_limit_follows_the_answers(answers: tuple[tuple[bool, str | None], ...],
                                       limit: int) -> None:
    assert adapted(*answers).limit("sub") == limit


def test_a_subscriptions_own_max_concurrency_bounds_its_limit() -> None:
    assert adapted(*(OK,) * 10).limit("sub", bound=4) == 4
    assert adapted().limit("sub", bound=4) == START


def test_room_claims_ahead_only_for_a_subscription_that_answers() -> None:
    proven = adapted(OK, OK, OK)  # limit 4
    assert proven.room({"sub": 1}) == {"sub": 4 * 2 - 1}
    struggling = adapted(OK, OK, OK, TIMEOUT)  # limit 2, nothing ahead
    assert struggling.room({"sub": 1}) == {"sub": 1}
    assert adapted().room({}) == {}  # an unknown subscription takes the claim's default


def test_subscriptions_in_trouble_share_half_the_dispatcher() -> None:
    concurrency = Concurrency(ceiling=16, max_in_flight=8)
    for sub in ("a", "b", "c", "d", "e"):
        concurrency.answered(sub, succeeded=False, error_kind="timeout")
    concurrency.answered("healthy", succeeded=True, error_kind=None)

    held = {"a": 1, "b": 1, "c": 1, "d": 1}  # four of eight: the budget is spent
    room = concurrency.room(held)

    assert [room[sub] for sub in ("a", "b", "c", "d", "e")] == [0, 0, 0, 0, 0]
    assert room["healthy"] == 4
    # With one held, the rest of the budget is shared out, not given to each.
    assert sum(concurrency.room({"a": 1})[sub] for sub in ("a", "b", "c", "d", "e")) == 3


def test_idle_subscriptions_are_forgotten_past_the_limit() -> None:
    concurrency = Concurrency(ceiling=16, max_in_flight=8)
    for n in range(10_001):
        concurrency.answered(f"sub{n}", succeeded=True, error_kind=None)
    concurrency.forget_idle({"sub1": 1})
    assert concurrency.limit("sub1") == 2
    assert concurrency.limit("sub2") == START
