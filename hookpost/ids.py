"""Prefixed, time-ordered identifiers such as `evt_0190f3c2a1b4c9d2e3f4a5b6c7d8`.

The same shape is made by `new_id()` in schema.sql for rows created in SQL.
"""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    """A new id: prefix, underscore, 12 hex digits of unix milliseconds, 16 random hex digits."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"
