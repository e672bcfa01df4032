"""Answers built from the response models."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    """`model` as the JSON body of a response."""
    return web.Response(
        body=model.model_dump_json().encode(), status=status, content_type="application/json"
    )
