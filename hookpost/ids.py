"""Prefixed, time-ordered identifiers such as `evt_0190f3c2a1b4c9d2e3f4a5b6c7d8`.

An id begins with the millisecond it was made, so ids of one prefix sort in the order they
were made, and a table's primary key is also its index by time. The same shape is made by
`new_id()` in schema.sql for rows created in SQL.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime


def new_id(prefix: str, at: datetime | None = None) -> str:
    """A new id: prefix, underscore, 12 hex digits of the unix milliseconds of `at` (else of
    now), 16 random hex digits."""
    return f"{first_id_at(prefix, at)}{secrets.token_hex(8)}"


def first_id_at(prefix: str, at: datetime | None = None) -> str:
    """Sorts after every id of `prefix` made before `at` and before every one made since."""
    millis = time.time_ns() // 1_000_000 if at is None else int(at.timestamp() * 1000)
    return f"{prefix}_{millis:012x}"
