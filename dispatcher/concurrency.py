"""How many attempts one dispatcher sends at once to each subscription, adapted to how it
answers: a new or struggling subscription starts at one, each success allows one more (up
to the ceiling), each timeout or connection failure halves it. Together, subscriptions in
trouble may hold only part of the dispatcher, so a hanging endpoint cannot starve the rest.
Pure bookkeeping; the worker does the waiting."""

from __future__ import annotations

from collections.abc import Mapping

START = 1
# Error kinds that mean the endpoint holds or refuses connections: sending it more at once
# only ties up more of the dispatcher.
TROUBLE = frozenset({"timeout", "connect"})
_FORGET_ABOVE = 10_000  # subscriptions remembered before the idle ones are forgotten


class Concurrency:
    def __init__(self, *, ceiling: int, max_in_flight: int, claim_ahead: int = 2) -> None:
        self.ceiling = ceiling
        self.claim_ahead = claim_ahead
        # What subscriptions in trouble may hold together; the rest stays for the others.
        self.trouble_budget = max(1, max_in_flight // 2)
        self._limit: dict[str, float] = {}
        self._proven: set[str] = set()  # its last attempt succeeded
        self._trouble: set[str] = set()  # its last attempt timed out or could not connect

    def limit(self, subscription_id: str, bound: int | None = None) -> int:
        """Attempts that may be out to the subscription at once; `bound` is its own
        max_concurrency, if it has one."""
        limit = int(self._limit.get(subscription_id, START))
        return limit if bound is None else max(1, min(limit, bound))

    def room(self, held: Mapping[str, int]) -> dict[str, int]:
        """How many more deliveries of each subscription the next claim may take, given what
        is `held` already; subscriptions not named may be taken START at a time. A proven
        subscription may have as many again claimed ahead, so the next attempt is ready
        when one ends."""
        # What subscriptions in trouble may still take, together.
        budget = self.trouble_budget - sum(held.get(sub, 0) for sub in self._trouble)
        room: dict[str, int] = {}
        for sub in sorted(self._limit.keys() | held.keys()):
            limit = self.limit(sub)
            allowed = limit * self.claim_ahead if sub in self._proven else limit
            room[sub] = max(0, allowed - held.get(sub, 0))
            if sub in self._trouble:
                room[sub] = min(room[sub], max(budget, 0))
                budget -= room[sub]
        return room

    def answered(self, subscription_id: str, *, succeeded: bool, error_kind: str | None) -> None:
        """Adapt to one attempt's answer."""
        limit = self._limit.get(subscription_id, START)
        if succeeded:
            self._limit[subscription_id] = min(self.ceiling, limit + 1)
            self._proven.add(subscription_id)
            self._trouble.discard(subscription_id)
        elif error_kind in TROUBLE:
            self._limit[subscription_id] = max(START, limit / 2)
            self._proven.discard(subscription_id)
            self._trouble.add(subscription_id)
        else:  # an answer, if not a good one: the endpoint is there and quick
            self._limit.setdefault(subscription_id, limit)
            self._trouble.discard(subscription_id)

    def forget_idle(self, held: Mapping[str, int]) -> None:
        """Keep memory bounded: past many subscriptions, forget those with nothing held."""
        if len(self._limit) <= _FORGET_ABOVE:
            return
        for sub in [sub for sub in self._limit if not held.get(sub)]:
            del self._limit[sub]
            self._proven.discard(sub)
            self._trouble.discard(sub)
