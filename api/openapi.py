"""The OpenAPI 3.1 document, built from the route table and the pydantic models the
handlers validate with, so the spec cannot drift from the code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api.auth import Role
from api.models import Error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_REF = "#/components/schemas/{model}"
_ERROR_TEXT = {
    400: "The body is not JSON or not a JSON object, or a header is not text hookpost can "
         "read (not UTF-8, a control character, too long).",
    401: "No API key, or not a valid one.",
    403: "The key's role may not do this.",
    404: "No such resource visible to this key.",
    409: "The request conflicts with the resource's state.",
    413: "The body or the event payload is over the size limit.",
    422: "The body or the query does not validate.",
    503: "The database is unavailable for a moment; try again.",
}


@dataclass(frozen=True)
class Header:
    """A header an operation reads (optional) or may answer with."""

    name: str
    schema: dict[str, Any]
    description: str

    def spec(self) -> dict[str, Any]:
        return {"description": self.description, "schema": self.schema}


@dataclass(frozen=True)
class Operation:
    """One route: what it does, who may call it, and the models it reads and writes."""

    method: Literal["GET", "POST", "PATCH", "DELETE"]
    path: str
    handler: Handler
    summary: str
    roles: tuple[Role, ...] = ()
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = field(default=())
    content_type: str = "application/json"
    document: bool = True
    body_optional: bool = False  # an empty body stands for {}
    headers: tuple[Header, ...] = ()
    response_headers: tuple[Header, ...] = ()
    # Other answers with a body of their own instead of the error shape (e.g. 503 of /ready).
    answers: tuple[tuple[int, type[BaseModel]], ...] = ()
    reads_database: bool = True  # so it may answer 503 while the database is away

    def route(self) -> web.RouteDef:
        return web.route(self.method, self.path, self.handler)


def build_document(operations: Sequence[Operation], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for `operations`."""
    documented = [op for op in operations if op.document]
    schemas = _schemas(documented)
    paths: dict[str, dict[str, Any]] = {}
    for operation in documented:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hookpost",
            "version": version,
            "description": "Outbound webhooks: events in, signed POSTs out, every attempt "
            "recorded.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }


def _schemas(operations: Sequence[Operation]) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Error, "serialization")]
    for operation in operations:
        if operation.body is not None:
            models.append((operation.body, "validation"))
        if operation.response is not None:
            models.append((operation.response, "serialization"))
        models += [(model, "serialization") for _, model in operation.answers]
    unique = list(dict.fromkeys(models))
    _, document = models_json_schema(unique, ref_template=_REF)
    schemas: dict[str, Any] = document.get("$defs", {})
    return schemas


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _operation(operation: Operation) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "summary": operation.summary,
        "operationId": operation.handler.__name__,
        "responses": _responses(operation),
    }
    if operation.roles:
        spec["security"] = [{"apiKey": []}]
        spec["description"] = "Roles: " + ", ".join(role.value for role in operation.roles)
    else:
        spec["security"] = []
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_names(operation.path)
    ]
    if operation.query is not None:
        parameters += _query_parameters(operation.query)
    parameters += [
        {"name": header.name, "in": "header", "required": False, **header.spec()}
        for header in operation.headers
    ]
    if parameters:
        spec["parameters"] = parameters
    if operation.body is not None:
        spec["requestBody"] = {
            "required": not operation.body_optional,
            "content": {"application/json": {"schema": _ref(operation.body)}},
        }
    return spec


def _responses(operation: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if operation.response is not None:
        responses[str(operation.status)] = {
            "description": operation.summary,
            "content": {"application/json": {"schema": _ref(operation.response)}},
        }
        if operation.response_headers:
            responses[str(operation.status)]["headers"] = {
                header.name: header.spec() for header in operation.response_headers
            }
    elif operation.content_type != "application/json":
        responses[str(operation.status)] = {
            "description": operation.summary,
            "content": {operation.content_type: {"schema": {"type": "string"}}},
        }
    else:
        responses[str(operation.status)] = {"description": operation.summary}
    codes = set(operation.errors) | ({503} if operation.reads_database else set())
    if operation.roles or operation.headers:  # headers it reads may not be readable text
        codes.add(400)
    if operation.roles:
        codes |= {401, 403}
    if operation.body is not None:
        codes |= {400, 413, 422}
    if operation.query is not None:
        codes.add(422)
    if _path_names(operation.path):
        codes.add(404)
    for code in sorted(codes):
        responses[str(code)] = {
            "description": _ERROR_TEXT[code],
            "content": {"application/json": {"schema": _ref(Error)}},
        }
    for code, model in operation.answers:
        responses[str(code)] = {
            "description": _ERROR_TEXT.get(code, operation.summary),
            "content": {"application/json": {"schema": _ref(model)}},
        }
    return responses


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One query parameter per field of `model`; each is optional."""
    schema = model.model_json_schema(ref_template=_REF)
    parameters = []
    for name, field_schema in schema["properties"].items():
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": False}
        description = field_schema.pop("description", None)
        if description:
            parameter["description"] = description
        field_schema.pop("title", None)
        parameter["schema"] = field_schema
        parameters.append(parameter)
    return parameters


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
