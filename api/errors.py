"""The one error shape: `{"error": {"code", "message", "details"}}`, for every failure."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from hookpost.database import DATABASE_DOWN

log = logging.getLogger("hookpost.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "unavailable",
}


class ApiError(Exception):
    """A request hookpost refuses, with the status and code the client sees."""

    def __init__(self, status: int, code: str, message: str,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []


def error_response(status: int, code: str, message: str,
                   details: list[dict[str, Any]] | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return web.json_response(body, status=status)


def validation_details(
    error: ValidationError, prefix: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Pydantic's errors as `{"loc": [...], "message": ...}` without echoing input."""
    return [
        {"loc": [*prefix, *(str(part) for part in item["loc"])], "message": item["msg"]}
        for item in error.errors(include_url=False, include_input=False)
    ]


def invalid(message: str, loc: list[str]) -> ApiError:
    return ApiError(422, "validation_error", message, [{"loc": loc, "message": message}])


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")



@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every refusal and failure into the JSON error shape."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error.status, error.code, error.message, error.details)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = _CODES.get(error.status, "error")
        message = error.reason
        if error.status == 413:
            message = "the request body is larger than the limit"
        response = error_response(error.status, code, message)
        if "Allow" in error.headers:  # a 405 must say which methods the resource has
            response.headers["Allow"] = error.headers["Allow"]
        return response
    except DATABASE_DOWN as error:
        log.warning("database unavailable during %s %s: %s", request.method, request.path, error)
        return error_response(503, "unavailable", "the database is unavailable; try again")
    except json.JSONDecodeError:
        return error_response(400, "invalid_json", "the request body is not valid JSON")
    except Exception:
        # A bug: logged in full, answered in the one error shape without its details.
        log.exception("unhandled error during %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed to handle the request")
