"""An attempt's verdict: from what one send saw to the attempt row and the delivery's next
state. The one place that decides an attempt's outcome; the worker only logs and counts it,
and SQL only stores it."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from dispatcher.policy import DEFAULT_POLICY, DeliveryPolicy, StatusRule
from dispatcher.schedule import Outcome, next_attempt_at, parse_retry_after
from hookpost.store import AttemptRecord, ClaimedDelivery

GONE_REASON = "the endpoint answered 410 Gone"
# A receiver that answers with this header (any status) wants no more retries.
ABORT_HEADER, ABORT_VALUE = "webhook-delivery", "abort"
ABORTED = "the receiver asked for no more retries (webhook-delivery: abort)"
_RETRY_AFTER_STATUSES = (429, 503)


class ErrorKind(enum.StrEnum):
    TIMEOUT = "timeout"
    CONNECT = "connect"
    DNS = "dns"  # the host name does not resolve
    REFUSED = "refused"  # it resolves only to addresses hookpost may not send to
    TLS = "tls"
    HTTP = "http"  # an answer that is not 2xx, or not usable HTTP
    PROXY = "proxy"  # the egress proxy could not be reached or refused the tunnel
    # The dispatcher stopped while the request was out: the receiver may have it.
    CUT_OFF = "cut_off"
    # A dispatcher leased the delivery and died before recording what it sent, if anything.
    UNKNOWN = "unknown"


# Not the receiver's doing: the delivery goes out again at once, its retries untouched, and
# the subscription's health does not move.
_NOT_THE_RECEIVERS = (ErrorKind.CUT_OFF, ErrorKind.UNKNOWN)


class AttemptResult(NamedTuple):
    """What one send saw: a response, or why none came."""

    started_at: datetime
    duration_ms: int
    status: int | None
    headers: dict[str, str] | None
    body: str | None
    error_kind: ErrorKind | None  # a failure before any usable response
    error_message: str | None
    # The request went out a second time on a fresh connection after the kept-alive one
    # closed without answering: the receiver may have had it twice.
    resent: bool = False

    def header(self, name: str) -> str | None:
        return None if self.headers is None else self.headers.get(name.lower())


def cut_off(started_at: datetime, now: datetime, resent: bool = False) -> AttemptResult:
    """A send the dispatcher stopped before its answer came."""
    duration = round((now - started_at).total_seconds() * 1000)
    return AttemptResult(started_at, max(duration, 0), None, None, None, ErrorKind.CUT_OFF,
                         "the dispatcher stopped before the answer came; the receiver may "
                         "have got the request", resent)


def unknown_outcome(leased_at: datetime) -> AttemptResult:
    """What is known of a send by a dispatcher whose lease expired unrecorded."""
    return AttemptResult(leased_at, 0, None, None, None, ErrorKind.UNKNOWN,
                         "the dispatcher that leased this delivery stopped before recording "
                         "an attempt; the receiver may have got it")


def classify(status: int | None, rules: Sequence[StatusRule] = (),
             age: timedelta = timedelta(0)) -> Outcome:
    """What a response status (None: no response at all) means for a delivery `age` old.

    The first of a policy's `rules` that covers the status decides, while the delivery is
    younger than its time limit; otherwise 2xx succeeds, 4xx other than 429 gives up, and
    everything else is retried.
    """
    if status is None:
        return Outcome.RETRY
    for rule in rules:
        if rule.first <= status <= rule.last and (rule.within is None or age < rule.within):
            return rule.outcome
    if 200 <= status < 300:
        return Outcome.SUCCEEDED
    if 400 <= status < 500 and status != 429:
        return Outcome.FAILED
    return Outcome.RETRY


class NextState(NamedTuple):
    """Where a delivery goes after an attempt, and the outcome the attempt is recorded with."""

    status: str  # pending, succeeded or failed
    next_attempt_at: datetime | None
    outcome: Outcome
    scheduled_attempts: int


def after_attempt(
    *,
    manual: bool,
    prior_status: str,
    scheduled_attempts: int,
    next_attempt_before: datetime | None,
    outcome: Outcome,
    now: datetime,
    schedule: Sequence[timedelta],
    retry_after: timedelta | None = None,
) -> NextState:
    """The delivery's state after an attempt.

    A scheduled attempt follows the retry schedule. A manual redelivery is one extra try:
    success ends the delivery, failure leaves the automatic schedule as it was (a pending
    delivery keeps its next attempt; a finished one stays failed).
    """
    if manual:
        if outcome is Outcome.SUCCEEDED:
            return NextState("succeeded", None, outcome, scheduled_attempts)
        if prior_status == "pending":
            return NextState("pending", next_attempt_before, Outcome.FAILED, scheduled_attempts)
        return NextState("failed", None, Outcome.FAILED, scheduled_attempts)
    number = scheduled_attempts + 1
    next_at = next_attempt_at(number, outcome, now, schedule, retry_after)
    if outcome is Outcome.SUCCEEDED:
        return NextState("succeeded", None, outcome, number)
    if next_at is None:
        return NextState("failed", None, Outcome.FAILED, number)
    return NextState("pending", next_at, outcome, number)


def decide(
    delivery: ClaimedDelivery, result: AttemptResult, now: datetime,
    schedule: Sequence[timedelta], policy: DeliveryPolicy = DEFAULT_POLICY,
) -> AttemptRecord:
    """The attempt row `result` makes for `delivery`, and everything it changes: the
    delivery's next state, the subscription's health, whether it disables it. `policy`,
    the subscription's, may replace `schedule` and overrule the default status rule."""
    kind, message = result.error_kind, result.error_message
    status = result.status
    age = timedelta(0) if delivery.created_at is None else now - delivery.created_at
    verdict = classify(status, policy.status_rules, age)
    if kind is None and status is not None and verdict is not Outcome.SUCCEEDED:
        kind, message = ErrorKind.HTTP, f"HTTP {status}"
    headers = None if result.headers is None else json.dumps(result.headers)

    def record(state: NextState, *, moves: bool, manual_done: bool, health: str | None,
               disable_reason: str | None) -> AttemptRecord:
        return AttemptRecord(
            delivery_id=delivery.id, subscription_id=delivery.subscription_id,
            lease_token=delivery.lease_token, attempt_number=delivery.attempt_count + 1,
            trigger=delivery.trigger, started_at=result.started_at,
            duration_ms=result.duration_ms, response_status=status,
            response_headers=headers, response_body=result.body,
            error_kind=None if kind is None else kind.value, error_message=message,
            resent=result.resent, outcome=state.outcome.value, moves_delivery=moves,
            status=state.status, next_attempt_at=state.next_attempt_at,
            scheduled_attempts=state.scheduled_attempts, manual_done=manual_done,
            health=health, disable_reason=disable_reason,
        )

    if kind in _NOT_THE_RECEIVERS:
        due_again = now if delivery.status == "pending" and not delivery.manual else (
            delivery.next_attempt_at)
        state = NextState(delivery.status, due_again, Outcome.RETRY,
                          delivery.scheduled_attempts)
        # An unknown send is only logged: the lease that sent it is gone, and this
        # dispatcher's own attempt moves the delivery on.
        return record(state, moves=kind is ErrorKind.CUT_OFF, manual_done=False, health=None,
                      disable_reason=None)
    retry_after = None
    if status in _RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(result.header("retry-after"), now)
    state = after_attempt(
        manual=delivery.manual, prior_status=delivery.status,
        scheduled_attempts=delivery.scheduled_attempts,
        next_attempt_before=delivery.next_attempt_at, outcome=verdict, now=now,
        schedule=schedule if policy.retry_schedule is None else policy.retry_schedule,
        retry_after=retry_after,
    )
    aborted = (result.header(ABORT_HEADER) or "").strip().lower() == ABORT_VALUE
    if aborted and state.outcome is not Outcome.SUCCEEDED:  # a 2xx ends the delivery anyway
        state = NextState("failed", None, Outcome.FAILED, state.scheduled_attempts)
        message = f"{message}; {ABORTED}"
    health: str | None = "success" if state.outcome is Outcome.SUCCEEDED else "failure"
    if kind is ErrorKind.PROXY:
        # The egress proxy is hookpost's own: while it is down, no subscription is failing
        # (and none is disabled or reported for it), though the attempt still counts.
        health = None
    # A receiver that answers 410 Gone has asked to be forgotten (unless its policy says
    # that 410 means something else).
    disable_reason = GONE_REASON if status == 410 and verdict is Outcome.FAILED else None
    return record(state, moves=True, manual_done=delivery.manual, health=health,
                  disable_reason=disable_reason)
