"""Header values: only text Postgres can store and a receiver can be sent is taken."""

from __future__ import annotations

import pytest

from api.headers import header_problem


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("order-42", None),
        ("clé-ünïcode-✓", None),  # UTF-8 text is fine
        ("k" * 255, None),
        ("k" * 256, "is over 255 characters"),
        ("\udcff\udcfe", "is not UTF-8"),  # how aiohttp hands over the bytes FF FE
        ("a\udc80b", "is not UTF-8"),
        ("a\x00b", "holds a control character"),
        ("a\tb", "holds a control character"),
        ("a\rb", "holds a control character"),
        ("a\x1fb", "holds a control character"),
        ("a\x7fb", "holds a control character"),
        ("a\x85b", "holds a control character"),  # C1
        ("a\x9fb", "holds a control character"),
        ("a\xa0b", None),  # NBSP is printable here; only URLs refuse spaces
    ],
)
def test_header_problem(value: str, problem: str | None) -> None:
    assert header_problem(value, 255) == problem
