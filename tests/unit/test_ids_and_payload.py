"""Prefixed time-ordered ids, and the exact event bytes that are signed and sent."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from api.routes import event_payload
from hookpost import ids
from hookpost.ids import first_id_at, new_id


@pytest.mark.parametrize("prefix", ["evt", "sub", "dlv", "att"])
def test_new_id_is_prefix_and_28_hex_digits(prefix: str) -> None:
    assert re.fullmatch(rf"{prefix}_[0-9a-f]{{28}}", new_id(prefix))


def test_new_ids_are_unique() -> None:
    assert len({new_id("evt") for _ in range(1000)}) == 1000


def test_new_id_starts_with_unix_milliseconds() -> None:
    made = new_id("evt")
    assert abs(int(made[4:16], 16) - datetime.now(UTC).timestamp() * 1000) < 60_000


def test_later_ids_sort_after_earlier_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    def ticks() -> Iterator[int]:
        nanoseconds = 1_767_268_800_000_000_000
        while True:
            yield nanoseconds
            nanoseconds += 1_000_000  # one millisecond

    clock = ticks()
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda: next(clock)))
    made = [new_id("evt") for _ in range(200)]
    assert sorted(made) == made


def test_an_id_made_at_a_moment_begins_with_its_milliseconds() -> None:
    at = datetime(2026, 1, 1, 12, 0, 0, 123_000, tzinfo=UTC)
    assert int(new_id("evt", at)[4:16], 16) == 1_767_268_800_123


def test_the_first_id_at_a_moment_splits_the_ids_made_before_from_those_since() -> None:
    at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    bound = first_id_at("evt", at)
    before = [new_id("evt", at - timedelta(milliseconds=ms)) for ms in (1, 1000, 10**9)]
    since = [new_id("evt", at + timedelta(milliseconds=ms)) for ms in (0, 1, 10**9)]
    assert all(made < bound for made in before)
    assert all(made > bound for made in since)


NOON = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("timestamp", "rendered"),
    [
        (NOON, "2026-01-01T12:00:00Z"),
        (NOON.replace(microsecond=123456), "2026-01-01T12:00:00.123456Z"),
        (NOON.replace(tzinfo=timezone(timedelta(0))), "2026-01-01T12:00:00Z"),
    ],
)
def test_event_payload_timestamp_is_rfc3339_utc(timestamp: datetime, rendered: str) -> None:
    envelope = json.loads(event_payload("evt_1", "order.created", timestamp, {}))
    assert envelope["timestamp"] == rendered
    assert datetime.fromisoformat(rendered.replace("Z", "+00:00")) == timestamp


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {},
            b'{"id":"evt_1","type":"order.created","timestamp":"2026-01-01T12:00:00Z","data":{}}',
        ),
        (
            {"total": 12, "items": [1, 2]},
            b'{"id":"evt_1","type":"order.created","timestamp":"2026-01-01T12:00:00Z",'
            b'"data":{"total":12,"items":[1,2]}}',
        ),
        (
            {"name": "Zo\u00eb \u2603"},
            b'{"id":"evt_1","type":"order.created","timestamp":"2026-01-01T12:00:00Z",'
            b'"data":{"name":"Zo\xc3\xab \xe2\x98\x83"}}',
        ),
    ],
    ids=["empty", "compact", "utf-8 kept"],
)
def test_event_payload_bytes(data: dict[str, Any], expected: bytes) -> None:
    payload = event_payload("evt_1", "order.created", NOON, data)
    assert payload == expected
    assert json.loads(payload)["data"] == data
