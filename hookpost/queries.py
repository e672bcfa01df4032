"""The named queries of hookpost/queries.sql, parsed once at import."""

from __future__ import annotations

import re
from pathlib import Path

_QUERY_HEADER = re.compile(r"^-- name: (\w+) --$", re.MULTILINE)


def load_queries(path: Path) -> dict[str, str]:
    """The named queries of a .sql file: each starts at a `-- name: NAME --` line."""
    text = path.read_text()
    parts = _QUERY_HEADER.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
