"""Reading request headers: every header value hookpost reads is checked here to be text
that Postgres can store and a receiver can be sent."""

from __future__ import annotations

import re

from aiohttp import web

from api.errors import ApiError

# C0 controls (tab included), DEL and C1 controls; aiohttp refuses most C0 itself, not all.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def header_problem(value: str, max_length: int) -> str | None:
    """Why a header value cannot be taken, or None if it can."""
    if len(value) > max_length:
        return f"is over {max_length} characters"
    try:
        value.encode()
    except UnicodeEncodeError:  # aiohttp hands bytes that are not UTF-8 over as surrogates
        return "is not UTF-8"
    if _CONTROL.search(value):
        return "holds a control character"
    return None


def read_header(request: web.Request, name: str, max_length: int) -> str | None:
    """The value of header `name`, or None if it was not sent; 400 if hookpost could not
    take it (not UTF-8, a control character, over `max_length`, or sent more than once)."""
    values = request.headers.getall(name, [])
    if not values:
        return None
    problem = "is sent more than once" if len(values) > 1 else header_problem(
        values[0], max_length
    )
    if problem is not None:
        message = f"the {name} header {problem}"
        raise ApiError(400, "invalid_header", message,
                       [{"loc": ["header", name], "message": message}])
    return values[0]
