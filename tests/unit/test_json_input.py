"""Client JSON: standard numbers only, and nesting measured without recursion."""

from __future__ import annotations

import time

import pytest

from api.json_input import MAX_DEPTH, loads, nesting_depth


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"1", 0),
        (b'"text"', 0),
        (b"{}", 1),
        (b"[]", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b"[[], [[]], []]", 3),
        (b'["[[[", "{{{"]', 1),  # brackets inside strings do not count
        (b'["\\"[[", "\\\\", []]', 2),  # nor after an escaped quote; an escaped backslash ends
        (b'{"a": "unterminated [[[', 1),  # the rest of an unterminated string is a string
        (b"[" * 10_000, 10_000),
        (b"[" * 100 + b"]" * 100, 100),
    ],
)
def test_nesting_depth(raw: bytes, depth: int) -> None:
    assert nesting_depth(raw) == depth


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 200_000,
        b'"' + b'\\"' * 100_000,  # one long unterminated string of escaped quotes
        b'"' * 200_000,
        b'["a",' * 40_000,
    ],
)
def test_nesting_depth_takes_linear_time_on_hostile_input(raw: bytes) -> None:
    started = time.perf_counter()
    nesting_depth(raw)
    assert time.perf_counter() - started < 1.0


def test_loads_reads_json_nested_up_to_the_limit() -> None:
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    assert loads(b'{"a": [' + b"[1]," * 1000 + b"[2]]}") == {"a": [[1]] * 1000 + [[2]]}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 100_000])
def test_loads_refuses_json_nested_past_the_limit(depth: int) -> None:
    with pytest.raises(ValueError, match="deeper than"):
        loads(b"[" * depth + b"]" * depth)


@pytest.mark.parametrize("raw", [b"NaN", b"[Infinity]", b'{"a": -Infinity}', b"1e400", b"{"])
def test_loads_refuses_what_is_not_standard_json(raw: bytes) -> None:
    with pytest.raises(ValueError):
        loads(raw)
