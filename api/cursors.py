"""The cursor of a listing: the (created_at, id) of the last row of a page, opaque to the
client, so a walk neither skips nor repeats rows while new ones arrive."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import TypeVar

from api import json_input
from api.errors import invalid
from hookpost import store as records


def encode_cursor(created_at: datetime, id: str) -> str:
    raw = json.dumps([created_at.isoformat(), id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, id = json_input.loads(raw)
        if not isinstance(id, str) or "\x00" in id:
            raise ValueError("no id is such a value")
        id.encode()  # a lone surrogate, which Postgres cannot take, raises UnicodeEncodeError
        return datetime.fromisoformat(created_at).astimezone(UTC), id
    except (binascii.Error, ValueError, TypeError, OverflowError):
        raise invalid("cursor is not one this API gave out", ["query", "cursor"]) from None


Row = TypeVar("Row", records.Subscription, records.Delivery, records.Tenant, records.ApiKey)


def page_of(rows: list[Row], limit: int) -> tuple[list[Row], str | None]:
    """The first `limit` of `limit + 1` rows, and the cursor of the next page if any."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)
