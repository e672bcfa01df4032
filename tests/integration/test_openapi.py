"""GET /openapi.json describes every route, its auth, bodies and errors; and schemathesis,
run against the live app, finds no server error and no response that breaks the document."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.auth import Role, create_key
from api.errors import errors_middleware
from api.routes import OPERATIONS
from hookpost.settings import Settings
from hookpost.store import Store
from tests.integration.conftest import (
    Keys,
    Receiver,
    answer_status,
    get_json,
    make_dispatcher,
    post_event,
    subscribe,
)

DOCUMENTED = [operation for operation in OPERATIONS if operation.document]
ERROR_REF = {"$ref": "#/components/schemas/Error"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES_PER_RUN = 25


async def openapi_document(api: TestClient[Any, Any]) -> dict[str, Any]:
    response = await api.get("/openapi.json")
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    document: dict[str, Any] = await response.json()
    return document


def ref(model: type[Any]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


# The document


async def test_the_document_is_openapi_3_1_and_lists_every_route(
    api: TestClient[Any, Any],
) -> None:
    document = await openapi_document(api)

    assert document["openapi"] == "3.1.0"
    listed = {(path, method.upper()) for path, item in document["paths"].items()
              for method in item}
    assert listed == {(operation.path, operation.method) for operation in DOCUMENTED}
    # Valid against the OpenAPI 3.1 meta-schema, as schemathesis checks it.
    schemathesis.openapi.from_dict(document).validate()


async def test_every_operation_declares_its_auth_bodies_and_error_shape(
    api: TestClient[Any, Any],
) -> None:
    document = await openapi_document(api)
    schemas = document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer",
    }

    for operation in DOCUMENTED:
        spec = document["paths"][operation.path][operation.method.lower()]
        responses = spec["responses"]
        label = f"{operation.method} {operation.path}"
        if operation.roles:
            assert spec["security"] == [{"apiKey": []}], label
            for status in ("401", "403"):
                assert responses[status]["content"]["application/json"]["schema"] == ERROR_REF
        else:
            assert spec["security"] == [], label
        if operation.body is not None:
            body = spec["requestBody"]
            assert body["content"]["application/json"]["schema"] == ref(operation.body), label
            assert body["required"] is not operation.body_optional, label
            assert operation.body.__name__ in schemas, label
            for status in ("400", "413", "422"):
                assert responses[status]["content"]["application/json"]["schema"] == ERROR_REF
        else:
            assert "requestBody" not in spec, label
        success = responses[str(operation.status)]
        if operation.response is not None:
            assert success["content"]["application/json"]["schema"] == ref(operation.response)
            assert operation.response.__name__ in schemas, label
        if "{id}" in operation.path:
            assert responses["404"]["content"]["application/json"]["schema"] == ERROR_REF
        if operation.query is not None:
            names = {parameter["name"] for parameter in spec["parameters"]
                     if parameter["in"] == "query"}
            assert names == set(operation.query.model_fields), label
            assert responses["422"]["content"]["application/json"]["schema"] == ERROR_REF
        own_answers = {str(code): model for code, model in operation.answers}
        for status, response in responses.items():
            if status in own_answers:  # e.g. /ready answers 503 with its readiness
                assert response["content"]["application/json"]["schema"] == ref(
                    own_answers[status]), label
            elif status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"] == ERROR_REF, label
        headers = {parameter["name"] for parameter in spec.get("parameters", [])
                   if parameter["in"] == "header"}
        assert headers == {header.name for header in operation.headers}, label

    ingest = document["paths"]["/v1/events"]["post"]
    assert "Idempotent-Replayed" in ingest["responses"]["202"]["headers"]


async def test_the_document_offers_no_null_the_api_refuses(api: TestClient[Any, Any]) -> None:
    document = await openapi_document(api)
    null = {"type": "null"}

    # A PATCH leaves a field out to keep it; null is refused.
    update = document["components"]["schemas"]["SubscriptionUpdate"]["properties"]
    for name, field_schema in update.items():
        assert null not in field_schema.get("anyOf", []), name
        assert "default" not in field_schema, name
    # A query string cannot carry null at all.
    for operation in DOCUMENTED:
        spec = document["paths"][operation.path][operation.method.lower()]
        for parameter in spec.get("parameters", []):
            assert null not in parameter["schema"].get("anyOf", []), parameter["name"]
            assert parameter["schema"].get("default", "") is not None, parameter["name"]


# Schemathesis against the running app


@dataclass
class Seeded:
    """Ids that exist, so generated requests reach past the 404 of an unknown id."""

    subscription_id: str
    doomed_subscription_id: str  # for DELETE, so the others keep theirs
    event_id: str
    delivery_id: str
    doomed_key_id: str  # a producer's, for DELETE /v1/keys/{id}

    def id_for(self, method: str, path: str) -> str:
        if path.startswith("/v1/keys/"):
            return self.doomed_key_id
        if path.startswith("/v1/events/"):
            return self.event_id
        if path.startswith("/v1/deliveries/"):
            return self.delivery_id
        if method == "DELETE":
            return self.doomed_subscription_id
        return self.subscription_id


async def seed(api: TestClient[Any, Any], admin: str, receiver: Receiver, store: Store,
               settings: Settings) -> Seeded:
    """A subscription with a failed delivery and its attempt, and a subscription and a key
    to delete."""
    receiver.respond = answer_status(400)
    subscription = await subscribe(api, admin, receiver.url(), ["order.*"],
                                   description="seeded for schemathesis")
    doomed = await subscribe(api, admin, receiver.url("/doomed"), ["invoice.*"])
    event = await post_event(api, admin, "order.created", {"order": 1, "note": "ünïcode"})
    await make_dispatcher(store, settings).run(until_idle=True)
    [delivery] = (await get_json(api, admin, f"/v1/events/{event['id']}"))["deliveries"]
    assert delivery["status"] == "failed"
    _, doomed_key = await create_key(store, Role.PRODUCER, "doomed")
    return Seeded(subscription["id"], doomed["id"], event["id"], delivery["id"], doomed_key.id)


# Headers that frame the HTTP message itself, not API input: the server refuses broken
# framing (say, a generated `Transfer-Encoding: \y`) before any handler runs, with its own
# plain-text 400, which no API document describes.
FRAMING_HEADERS = {"connection", "content-length", "expect", "host", "te", "trailer",
                   "transfer-encoding", "upgrade"}


def explore(operation: APIOperation[Any, Any, Any, Any],
            strategy: SearchStrategy[schemathesis.Case[Any]], base_url: str,
            headers: dict[str, str], failures: dict[tuple[str, frozenset[str]], str]) -> None:
    """Send what `strategy` generates and check each response, adding what fails to
    `failures`, one report per operation and kind of failure."""

    # Failures are collected, not raised: the app's state moves on with each request, so
    # Hypothesis could neither shrink nor replay a failing case reliably.
    @settings(max_examples=EXAMPLES_PER_RUN, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def exercise(case: schemathesis.Case[Any]) -> None:
        for name in [name for name in case.headers or {} if name.lower() in FRAMING_HEADERS]:
            del case.headers[name]
        try:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)
        except FailureGroup as group:
            codes = frozenset(failure.code for failure in group.exceptions)
            failures.setdefault((operation.label, codes), str(group))

    with contextlib.suppress(Unsatisfiable):  # negative data for an operation with no input
        exercise()


def run_schemathesis(base_url: str, admin: str, seeded: Seeded) -> list[str]:
    """Every distinct failure schemathesis finds over every operation, in both modes, with
    generated ids and with ids that exist."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: dict[tuple[str, frozenset[str]], str] = {}
    for route in DOCUMENTED:
        operation = schema[route.path][route.method]
        path_ids: list[dict[str, Any] | None] = [None]
        if "{id}" in route.path:
            path_ids.append({"id": seeded.id_for(route.method, route.path)})
        for mode in GenerationMode:
            for path_parameters in path_ids:
                strategy = operation.as_strategy(mode, path_parameters=path_parameters)
                explore(operation, strategy, base_url, Keys.auth(admin), failures)
    return list(failures.values())


async def test_schemathesis_finds_no_server_error_and_no_response_off_the_document(
    api: TestClient[Any, Any], store: Store, settings: Settings, receiver: Receiver,
) -> None:
    admin, _ = await create_key(store, Role.ADMIN, "schemathesis")
    seeded = await seed(api, admin, receiver, store, settings)
    base_url = str(api.make_url("")).rstrip("/")
    assert base_url.startswith("http://127.0.0.1:")

    failures = await asyncio.to_thread(run_schemathesis, base_url, admin, seeded)

    assert not failures, "\n\n".join(failures)


# Found while fuzzing the API against its document (schemathesis found the slow rate; probing
# the same inputs by hand found the rest). Each was a 500 with a text body.


@dataclass(frozen=True)
class Refusal:
    method: str
    path: str  # {sub} stands for an existing subscription's id
    status: int
    loc: list[str] | None = None
    body: dict[str, Any] | None = None
    query: dict[str, str] = field(default_factory=dict)


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_SINCE = {"since": "2026-01-01T00:00:00Z"}
_LONG_LABEL = "http://" + "a" * 64 + ".example/hook"
FOUND = [
    *(pytest.param(Refusal(method, path, 404, body=body), id=f"nul-id-{method}-{path}")
      for method, path, body in [
          ("GET", "/v1/subscriptions/%00", None),
          ("PATCH", "/v1/subscriptions/%00", {"status": "paused"}),
          ("DELETE", "/v1/subscriptions/%00", None),
          ("POST", "/v1/subscriptions/%00/rotate-secret", None),
          ("POST", "/v1/subscriptions/%00/test", None),
          ("POST", "/v1/subscriptions/%00/redeliver-failed", _SINCE),
          ("GET", "/v1/events/%00", None),
          ("GET", "/v1/deliveries/%00", None),
          ("POST", "/v1/deliveries/%00/redeliver", None),
          ("DELETE", "/v1/keys/%00", None),
      ]),
    pytest.param(Refusal("GET", "/v1/deliveries", 422, ["query", "subscription_id"],
                         query={"subscription_id": "sub_\x00"}), id="nul-in-subscription-filter"),
    pytest.param(Refusal("GET", "/v1/deliveries", 422, ["query", "event_id"],
                         query={"event_id": "\x00"}), id="nul-in-event-filter"),
    pytest.param(Refusal("GET", "/v1/subscriptions", 422, ["query", "cursor"],
                         query={"cursor": _cursor(b'["2026-01-01T00:00:00+00:00", "\\u0000"]')}),
                 id="nul-in-cursor-id"),
    pytest.param(Refusal("GET", "/v1/deliveries", 422, ["query", "since"],
                         query={"since": "0001-01-01T00:00:00+05:00"}), id="since-before-year-1"),
    pytest.param(Refusal("GET", "/v1/deliveries", 422, ["query", "until"],
                         query={"until": "9999-12-31T23:59:59-05:00"}), id="until-after-9999"),
    pytest.param(Refusal("GET", "/v1/deliveries", 422, ["query", "since"],
                         query={"since": "2026"}), id="since-a-number-not-a-time"),
    pytest.param(Refusal("POST", "/v1/subscriptions/{sub}/redeliver-failed", 422,
                         ["body", "since"], body={"since": "0001-01-01T00:00:00+05:00"}),
                 id="redeliver-since-before-year-1"),
    pytest.param(Refusal("POST", "/v1/subscriptions/{sub}/redeliver-failed", 422,
                         ["body", "rate_per_second"], body={**_SINCE, "rate_per_second": 5e-324}),
                 id="redeliver-at-a-rate-too-slow-to-schedule"),
    pytest.param(Refusal("POST", "/v1/subscriptions", 422, ["body", "url"],
                         body={"url": _LONG_LABEL, "event_types": ["*"]}),
                 id="url-host-label-over-63"),
    pytest.param(Refusal("POST", "/v1/subscriptions", 422, ["body", "url"],
                         body={"url": "http://a..b/hook", "event_types": ["*"]}),
                 id="url-host-empty-label"),
    pytest.param(Refusal("PATCH", "/v1/subscriptions/{sub}", 422, ["body", "url"],
                         body={"url": "http://a..b/hook"}), id="patch-url-host-empty-label"),
]


@pytest.mark.parametrize("refusal", FOUND)
async def test_input_that_was_a_server_error_is_refused_in_the_error_shape(
    api: TestClient[Any, Any], keys: Keys, refusal: Refusal,
) -> None:
    subscription = await subscribe(api, keys.admin, "http://127.0.0.1:9/hook")
    path = refusal.path.format(sub=subscription["id"])

    response = await api.request(refusal.method, path, json=refusal.body,
                                 params=refusal.query, headers=keys.auth(keys.admin))

    text = await response.text()
    assert response.status == refusal.status, text
    assert response.content_type == "application/json", text
    error = (await response.json())["error"]
    assert error["code"] == ("not_found" if refusal.status == 404 else "validation_error")
    if refusal.loc is not None:
        assert refusal.loc in [detail["loc"] for detail in error["details"]], error


async def test_a_405_names_the_allowed_methods(api: TestClient[Any, Any]) -> None:
    response = await api.request("TRACE", "/health")

    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_an_unexpected_failure_still_answers_the_error_shape(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)

    response = await client.get("/broken")

    assert response.status == 500
    body = await response.json()
    assert body["error"]["code"] == "internal_error"
    assert "a bug" not in body["error"]["message"]
