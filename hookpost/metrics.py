"""The Prometheus metrics hookpost exports; every process serves its own at /metrics."""

from __future__ import annotations

import functools

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

CONTENT_TYPE = CONTENT_TYPE_LATEST
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

ATTEMPTS = Counter(
    "hookpost_attempts", "Attempts made, by outcome and response class (2xx, 5xx, timeout, ...).",
    ["outcome", "response"], registry=REGISTRY,
)
ATTEMPT_SECONDS = Histogram(
    "hookpost_attempt_duration_seconds", "Time from sending an attempt to its response.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "hookpost_attempts_in_flight", "Attempts this process is sending now.", registry=REGISTRY
)
EVENTS = Counter(
    "hookpost_events_ingested", "Events accepted, by event type.", ["type"], registry=REGISTRY
)
DELIVERIES_PENDING = Gauge(
    "hookpost_deliveries_pending", "Deliveries not yet finished.", registry=REGISTRY
)
DELIVERIES_DUE = Gauge(
    "hookpost_deliveries_due", "Pending deliveries whose next attempt is due now.",
    registry=REGISTRY,
)
OLDEST_DUE_SECONDS = Gauge(
    "hookpost_oldest_due_delivery_age_seconds",
    "How long the longest-waiting due delivery has been due.", registry=REGISTRY,
)
SUBSCRIPTIONS = Gauge(
    "hookpost_subscriptions", "Subscriptions by status.", ["status"], registry=REGISTRY
)
BACKLOG = Gauge(
    "hookpost_subscription_backlog",
    "Unfinished deliveries of the subscriptions with the largest backlogs (top N only).",
    ["subscription_id"], registry=REGISTRY,
)
DISABLED = Counter(
    "hookpost_subscriptions_disabled", "Subscriptions hookpost disabled, by reason.",
    ["reason"], registry=REGISTRY,
)


@functools.cache
def attempts_counter(outcome: str, response: str) -> Counter:
    """The ATTEMPTS child for one outcome and response class (looked up once, not per
    attempt)."""
    return ATTEMPTS.labels(outcome, response)


@functools.lru_cache(maxsize=4096)
def events_counter(type: str) -> Counter:
    """The EVENTS child for one event type (looked up once, not per event)."""
    return EVENTS.labels(type)


def response_class(status: int | None, error_kind: str | None) -> str:
    """`2xx`..`5xx` for a response, else the error kind (`timeout`, `connect`, ...)."""
    if status is not None:
        return f"{status // 100}xx"
    return error_kind or "unknown"


def exposition() -> bytes:
    """Every metric in the Prometheus text format."""
    return generate_latest(REGISTRY)
