"""Every refused request answers with the one error shape and the right status, and writes
nothing: no subscription, event, delivery or attempt appears, and no subscription changes."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from api.app import create_app
from api.json_input import MAX_DEPTH
from hookpost.store import Store
from tests.integration.conftest import Keys, RawResponse, make_settings, raw_request

TABLES = ("subscriptions", "events", "deliveries", "attempts")
# Loopback is allowlisted in tests, and no dispatcher runs here, so nothing is ever sent to it.
HOOK_URL = "http://127.0.0.1:9/hook"

ServeApi = Callable[..., Awaitable[TestClient[Any, Any]]]


async def row_counts(pool: asyncpg.Pool) -> dict[str, int]:
    """How many rows each of hookpost's tables holds."""
    return {table: await pool.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}


@asynccontextmanager
async def writes_nothing(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Asserts that the block adds no rows anywhere and changes no subscription."""
    counts = await row_counts(pool)
    subscriptions = await pool.fetch("SELECT * FROM subscriptions ORDER BY id")
    yield
    assert await row_counts(pool) == counts
    assert await pool.fetch("SELECT * FROM subscriptions ORDER BY id") == subscriptions


async def assert_error(response: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """The response is the JSON error shape with `status` and `code`; returns its `error`."""
    return error_of(response.status, response.content_type, await response.text(), status, code)


def assert_raw_error(response: RawResponse, status: int, code: str) -> dict[str, Any]:
    """assert_error for an answer read off a plain socket."""
    content_type = response.headers.get("content-type", "").partition(";")[0]
    return error_of(response.status, content_type, response.body.decode(), status, code)


def error_of(answered: int, content_type: str, text: str, status: int, code: str
             ) -> dict[str, Any]:
    assert answered == status, text
    assert content_type == "application/json", text
    body = json.loads(text)
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], list)
    for detail in error["details"]:
        assert isinstance(detail["loc"], list)
        assert all(isinstance(part, str) for part in detail["loc"])
        assert isinstance(detail["message"], str)
    return error


async def refused_url(api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, url: str
                      ) -> dict[str, Any]:
    """Creating a subscription to `url` is refused with 422 and writes nothing; the error."""
    async with writes_nothing(pool):
        response = await api.post(
            "/v1/subscriptions", json={"url": url, "event_types": ["*"]},
            headers=keys.auth(keys.subscriber),
        )
        return await assert_error(response, 422, "validation_error")


@dataclass(frozen=True)
class Existing:
    """Rows made before each refused request, so refusals can name real ids."""

    subscription_id: str
    event_id: str
    delivery_id: str


@pytest.fixture
async def existing(api: TestClient[Any, Any], keys: Keys) -> Existing:
    created = await api.post(
        "/v1/subscriptions", json={"url": HOOK_URL, "event_types": ["order.*"]},
        headers=keys.auth(keys.subscriber),
    )
    assert created.status == 201, await created.text()
    posted = await api.post(
        "/v1/events", json={"type": "order.created", "data": {"n": 1}},
        headers=keys.auth(keys.producer),
    )
    assert posted.status == 202, await posted.text()
    event_id = (await posted.json())["id"]
    event = await api.get(f"/v1/events/{event_id}", headers=keys.auth(keys.producer))
    [delivery] = (await event.json())["deliveries"]
    return Existing((await created.json())["id"], event_id, delivery["id"])


@pytest.fixture
def serve_api(
    database_url: str, store: Store,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> ServeApi:
    """Serves the REST API with test settings changed by keyword arguments."""

    async def serve(**overrides: Any) -> TestClient[Any, Any]:
        return await aiohttp_client(create_app(make_settings(database_url, **overrides), store))

    return serve


# The table of refusals. `path` may name "{sub}", "{evt}" and "{dlv}", the existing rows.


@dataclass(frozen=True)
class Refusal:
    method: str
    path: str
    status: int
    code: str
    key: str | None = "subscriber"  # the Keys attribute to send; None sends no Authorization
    body: Any = None  # bytes are sent as they are, anything else but None as JSON
    headers: dict[str, str] = field(default_factory=dict)
    loc: list[str] | None = None  # one of the details must name this loc
    mentions: str | None = None  # the message or a detail must say this


SUBSCRIPTIONS = "/v1/subscriptions"
SUBSCRIPTION = "/v1/subscriptions/{sub}"
EVENTS = "/v1/events"
VALID_SUBSCRIPTION = {"url": HOOK_URL, "event_types": ["order.*"]}
VALID_EVENT = {"type": "order.created", "data": {"n": 2}}


def create_subscription(body: Any, status: int = 422, code: str = "validation_error",
                        **more: Any) -> Refusal:
    return Refusal("POST", SUBSCRIPTIONS, status, code, body=body, **more)


def update_subscription(body: Any, status: int = 422, code: str = "validation_error",
                        **more: Any) -> Refusal:
    return Refusal("PATCH", SUBSCRIPTION, status, code, body=body, **more)


def post_event(body: Any, status: int = 422, code: str = "validation_error",
               **more: Any) -> Refusal:
    return Refusal("POST", EVENTS, status, code, key="producer", body=body, **more)


def nested_event(depth: int) -> bytes:
    """An event request body whose arrays and objects nest `depth` levels deep."""
    lists = depth - 2  # inside the body's object and its data object
    return b'{"type": "order.created", "data": {"x": ' + b"[" * lists + b"]" * lists + b"}}"


def nested_list(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


NOT_JSON = [
    pytest.param(create_subscription(b'{"url": ', 400, "invalid_json"),
                 id="create-subscription-malformed-json"),
    pytest.param(update_subscription(b"{'status': 'paused'}", 400, "invalid_json"),
                 id="update-subscription-malformed-json"),
    pytest.param(post_event(b'{"type": "order.created", "data": {}', 400, "invalid_json"),
                 id="post-event-malformed-json"),
    pytest.param(post_event(b"", 400, "invalid_json"), id="post-event-empty-body"),
    pytest.param(post_event(b'{"type": "a", "data": {"x": "\xff"}}', 400, "invalid_json"),
                 id="post-event-not-utf8"),
    pytest.param(create_subscription([VALID_SUBSCRIPTION], 400, "invalid_json"),
                 id="create-subscription-list"),
    pytest.param(update_subscription("paused", 400, "invalid_json"),
                 id="update-subscription-string"),
    pytest.param(post_event([VALID_EVENT], 400, "invalid_json"), id="post-event-list"),
    pytest.param(post_event("order.created", 400, "invalid_json"), id="post-event-string"),
    pytest.param(post_event(b"null", 400, "invalid_json"), id="post-event-null"),
    # Nested past MAX_DEPTH: Python's parser once recursed until it gave up (500).
    pytest.param(post_event(nested_event(MAX_DEPTH + 1), 400, "invalid_json",
                            mentions="deeper than"), id="post-event-nested-too-deep"),
    pytest.param(post_event(nested_event(100_000), 400, "invalid_json", mentions="deeper than"),
                 id="post-event-nested-100000-deep"),
    pytest.param(create_subscription(b'{"url": "http://127.0.0.1:9/hook", "event_types": '
                                     + nested_list(5000) + b"}", 400, "invalid_json"),
                 id="create-subscription-nested-too-deep"),
    pytest.param(update_subscription(b'{"description": ' + nested_list(5000) + b"}", 400,
                                     "invalid_json"), id="update-subscription-nested-too-deep"),
    # JSON Python reads but pydantic does not (once 422): no text can hold a lone surrogate.
    pytest.param(post_event(b'{"type": "order.created", "data": {"x": "\\udcff"}}', 400,
                            "invalid_json", mentions="surrogate"),
                 id="post-event-lone-surrogate"),
]

INVALID_FIELDS = [
    # Unknown fields
    pytest.param(create_subscription({**VALID_SUBSCRIPTION, "colour": "red"},
                                     loc=["body", "colour"]),
                 id="create-subscription-unknown-field"),
    pytest.param(update_subscription({"secret": "whsec_AAAA"}, loc=["body", "secret"]),
                 id="update-subscription-cannot-set-secret"),
    pytest.param(post_event({**VALID_EVENT, "priority": 1}, loc=["body", "priority"]),
                 id="post-event-unknown-field"),
    # Wrong types
    pytest.param(create_subscription({"url": HOOK_URL, "event_types": "order.created"},
                                     loc=["body", "event_types"]),
                 id="create-subscription-event-types-string"),
    pytest.param(create_subscription({"url": 42, "event_types": ["*"]}, loc=["body", "url"]),
                 id="create-subscription-url-number"),
    pytest.param(create_subscription({**VALID_SUBSCRIPTION, "status": "deleted"},
                                     loc=["body", "status"]),
                 id="create-subscription-status-deleted"),
    pytest.param(create_subscription({**VALID_SUBSCRIPTION, "status": "disabled"},
                                     loc=["body", "status"]),
                 id="create-subscription-status-disabled"),
    pytest.param(create_subscription({**VALID_SUBSCRIPTION, "description": 7},
                                     loc=["body", "description"]),
                 id="create-subscription-description-number"),
    pytest.param(update_subscription({"event_types": "order.created"},
                                     loc=["body", "event_types"]),
                 id="update-subscription-event-types-string"),
    pytest.param(update_subscription({"url": 42}, loc=["body", "url"]),
                 id="update-subscription-url-number"),
    pytest.param(update_subscription({"status": "deleted"}, loc=["body", "status"]),
                 id="update-subscription-status-deleted"),
    pytest.param(update_subscription({"status": "disabled"}, loc=["body", "status"]),
                 id="update-subscription-status-disabled"),
    pytest.param(post_event({"type": "order.created", "data": [1, 2]}, loc=["body", "data"]),
                 id="post-event-data-list"),
    pytest.param(post_event({"type": "order.created", "data": "{}"}, loc=["body", "data"]),
                 id="post-event-data-string"),
    pytest.param(post_event({"type": 7, "data": {}}, loc=["body", "type"]),
                 id="post-event-type-number"),
    pytest.param(post_event({**VALID_EVENT, "idempotency_key": 7},
                            loc=["body", "idempotency_key"]),
                 id="post-event-idempotency-key-number"),
    # Missing required fields
    pytest.param(create_subscription({"event_types": ["*"]}, loc=["body", "url"]),
                 id="create-subscription-without-url"),
    pytest.param(create_subscription({"url": HOOK_URL}, loc=["body", "event_types"]),
                 id="create-subscription-without-event-types"),
    pytest.param(create_subscription({}, loc=["body", "url"]), id="create-subscription-empty"),
    pytest.param(post_event({"data": {}}, loc=["body", "type"]), id="post-event-without-type"),
    pytest.param(post_event({"type": "order.created"}, loc=["body", "data"]),
                 id="post-event-without-data"),
    # Event types that are not names
    *(pytest.param(post_event({"type": name, "data": {}}, loc=["body", "type"]),
                   id=f"post-event-type-{name!r}")
      for name in ("order created", "", "a..b", ".order", "order.", "order.*", "*")),
    # Filters that are not '*', 'prefix.*' or an exact type
    *(pytest.param(create_subscription({"url": HOOK_URL, "event_types": [pattern]},
                                       loc=["body", "event_types", "0"]),
                   id=f"create-subscription-filter-{pattern!r}")
      for pattern in ("order*", "*.created", "order.*.created", "", "order created")),
    pytest.param(update_subscription({"event_types": ["*.created"]},
                                     loc=["body", "event_types", "0"]),
                 id="update-subscription-filter-'*.created'"),
    pytest.param(create_subscription({"url": HOOK_URL, "event_types": []},
                                     loc=["body", "event_types"]),
                 id="create-subscription-no-event-types"),
    pytest.param(update_subscription({"event_types": []}, loc=["body", "event_types"]),
                 id="update-subscription-no-event-types"),
    # Sizes
    pytest.param(create_subscription({**VALID_SUBSCRIPTION, "description": "d" * 1001},
                                     loc=["body", "description"]),
                 id="create-subscription-description-too-long"),
    pytest.param(create_subscription({"url": "", "event_types": ["*"]}, loc=["body", "url"]),
                 id="create-subscription-empty-url"),
    pytest.param(post_event({**VALID_EVENT, "idempotency_key": ""},
                            loc=["body", "idempotency_key"]),
                 id="post-event-empty-idempotency-key"),
    pytest.param(post_event({**VALID_EVENT, "idempotency_key": "k" * 256},
                            loc=["body", "idempotency_key"]),
                 id="post-event-idempotency-key-too-long"),
    # Signature schemes: v1, v1a or both; the key pair is hookpost's own
    *(pytest.param(create_subscription({**VALID_SUBSCRIPTION, "signature_scheme": scheme},
                                       loc=["body", "signature_scheme"],
                                       mentions="'v1', 'v1a' or 'both'"),
                   id=f"create-subscription-signature-scheme-{scheme!r}")
      for scheme in ("v2", "V1A", "ed25519", "", 1, None, ["v1", "v1a"])),
    *(pytest.param(update_subscription({"signature_scheme": scheme},
                                       loc=["body", "signature_scheme"],
                                       mentions="'v1', 'v1a' or 'both'"),
                   id=f"update-subscription-signature-scheme-{scheme!r}")
      for scheme in ("v2", "v1,v1a", True)),
    *(pytest.param(create_subscription({**VALID_SUBSCRIPTION, name: "whpk_AAAA"},
                                       loc=["body", name]),
                   id=f"create-subscription-cannot-set-{name}")
      for name in ("public_key", "signing_key")),
    pytest.param(update_subscription({"public_key": "whpk_AAAA"}, loc=["body", "public_key"]),
                 id="update-subscription-cannot-set-public-key"),
    # Nulls: PATCH leaves out what it keeps, it cannot null a field
    *(pytest.param(update_subscription({name: None}, mentions=f"{name} cannot be null"),
                   id=f"update-subscription-{name}-null")
      for name in ("url", "event_types", "description", "status", "signature_scheme")),
]

_WRITES = [
    ("create-subscription", "POST", SUBSCRIPTIONS, VALID_SUBSCRIPTION),
    ("update-subscription", "PATCH", SUBSCRIPTION, {"status": "paused"}),
    ("post-event", "POST", EVENTS, VALID_EVENT),
]
_BAD_AUTHORIZATION = [
    ("no-authorization", {}),
    ("unknown-bearer-key", {"Authorization": "Bearer nonsense"}),
    ("basic-auth", {"Authorization": "Basic xyz"}),
    ("bearer-without-key", {"Authorization": "Bearer "}),
    ("key-without-scheme", {"Authorization": "hp_sub_nonsense"}),
]

UNAUTHENTICATED = [
    *(pytest.param(Refusal(method, path, 401, "unauthorized", key=None, body=body,
                           headers=headers), id=f"{write}-{problem}")
      for write, method, path, body in _WRITES
      for problem, headers in _BAD_AUTHORIZATION),
    # The key is checked before the body is read: an anonymous caller learns nothing from it.
    pytest.param(Refusal("POST", EVENTS, 401, "unauthorized", key=None, body=b"{"),
                 id="post-event-malformed-without-key"),
    pytest.param(Refusal("GET", SUBSCRIPTIONS, 401, "unauthorized", key=None),
                 id="list-subscriptions-without-key"),
    pytest.param(Refusal("GET", "/v1/events/{evt}", 401, "unauthorized", key=None),
                 id="read-event-without-key"),
]

WRONG_ROLE = [
    pytest.param(Refusal("POST", SUBSCRIPTIONS, 403, "forbidden", key="producer",
                         body=VALID_SUBSCRIPTION), id="producer-creates-subscription"),
    pytest.param(Refusal("PATCH", SUBSCRIPTION, 403, "forbidden", key="producer",
                         body={"status": "paused"}), id="producer-updates-subscription"),
    pytest.param(Refusal("DELETE", SUBSCRIPTION, 403, "forbidden", key="producer"),
                 id="producer-deletes-subscription"),
    pytest.param(Refusal("GET", SUBSCRIPTIONS, 403, "forbidden", key="producer"),
                 id="producer-lists-subscriptions"),
    pytest.param(Refusal("POST", EVENTS, 403, "forbidden", key="subscriber", body=VALID_EVENT),
                 id="subscriber-posts-event"),
    # An event not delivered to any of the subscriber's subscriptions does not exist for them.
    pytest.param(Refusal("GET", "/v1/events/{evt}", 404, "not_found", key="other_subscriber"),
                 id="subscriber-reads-event-not-delivered-to-them"),
    pytest.param(Refusal("GET", "/v1/deliveries/{dlv}", 403, "forbidden", key="producer"),
                 id="producer-reads-delivery"),
]

NOT_FOUND = [
    pytest.param(Refusal("GET", "/v1/subscriptions/sub_nope", 404, "not_found"),
                 id="read-unknown-subscription"),
    pytest.param(Refusal("PATCH", "/v1/subscriptions/sub_nope", 404, "not_found",
                         body={"status": "paused"}), id="update-unknown-subscription"),
    pytest.param(Refusal("DELETE", "/v1/subscriptions/sub_nope", 404, "not_found"),
                 id="delete-unknown-subscription"),
    pytest.param(Refusal("GET", "/v1/subscriptions/sub_nope", 404, "not_found", key="admin"),
                 id="admin-reads-unknown-subscription"),
    pytest.param(Refusal("DELETE", "/v1/subscriptions/sub_nope", 404, "not_found",
                         key="admin"), id="admin-deletes-unknown-subscription"),
    pytest.param(Refusal("GET", "/v1/events/evt_nope", 404, "not_found", key="producer"),
                 id="read-unknown-event"),
    pytest.param(Refusal("GET", "/v1/events/evt_nope", 404, "not_found", key="admin"),
                 id="admin-reads-unknown-event"),
    pytest.param(Refusal("GET", "/v1/deliveries/dlv_nope", 404, "not_found"),
                 id="read-unknown-delivery"),
    pytest.param(Refusal("GET", "/v1/deliveries/dlv_nope", 404, "not_found", key="admin"),
                 id="admin-reads-unknown-delivery"),
    pytest.param(Refusal("GET", "/v1/nothing-here", 404, "not_found"), id="unknown-route"),
    pytest.param(Refusal("PUT", SUBSCRIPTION, 405, "method_not_allowed",
                         body={"status": "paused"}), id="put-is-not-a-method"),
]

def cursor(raw: bytes) -> str:
    """A cursor made by hand, shaped like the ones the API gives out."""
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_FORGED_CURSOR = cursor(b'["not a time", "sub_x"]')
_YEAR_ZERO_CURSOR = cursor(b'["0001-01-01T00:00:00+05:00", "sub_x"]')
_SURROGATE_CURSOR = cursor(b'["2026-01-01T00:00:00+00:00", "sub_\\udcff"]')
_NUMBER_CURSOR = cursor(b'["2026-01-01T00:00:00+00:00", 7]')
BAD_PAGES = [
    *(pytest.param(Refusal("GET", f"{SUBSCRIPTIONS}?limit={limit}", 422, "validation_error",
                           loc=["query", "limit"]), id=f"limit-{limit or 'empty'}")
      for limit in ("0", "251", "abc", "-1", "1.5", "")),
    pytest.param(Refusal("GET", f"{SUBSCRIPTIONS}?cursor=garbage", 422, "validation_error",
                         loc=["query", "cursor"]), id="cursor-garbage"),
    pytest.param(Refusal("GET", f"{SUBSCRIPTIONS}?cursor={_FORGED_CURSOR}", 422,
                         "validation_error", loc=["query", "cursor"]), id="cursor-forged"),
    # A cursor is opaque: one that is deep JSON inside is as wrong as any other (once 500).
    pytest.param(Refusal("GET", f"{SUBSCRIPTIONS}?cursor={cursor(nested_list(2000))}", 422,
                         "validation_error", loc=["query", "cursor"]),
                 id="cursor-nested-too-deep"),
    pytest.param(Refusal("GET", f"/v1/deliveries?cursor={cursor(nested_list(2000))}", 422,
                         "validation_error", loc=["query", "cursor"]),
                 id="deliveries-cursor-nested-too-deep"),
    pytest.param(Refusal("GET", f"{SUBSCRIPTIONS}?cursor={_SURROGATE_CURSOR}", 422,
                         "validation_error", loc=["query", "cursor"]),
                 id="cursor-id-lone-surrogate"),
    pytest.param(Refusal("GET", f"{SUBSCRIPTIONS}?cursor={_NUMBER_CURSOR}", 422,
                         "validation_error", loc=["query", "cursor"]),
                 id="cursor-id-number"),
]

BAD_IDEMPOTENCY_KEYS = [
    pytest.param(post_event(VALID_EVENT, 400, "invalid_header",
                            headers={"Idempotency-Key": "k" * 256},
                            loc=["header", "Idempotency-Key"]),
                 id="idempotency-header-too-long"),
    pytest.param(post_event(VALID_EVENT, headers={"Idempotency-Key": ""},
                            loc=["header", "Idempotency-Key"]),
                 id="idempotency-header-empty"),
    pytest.param(post_event({**VALID_EVENT, "idempotency_key": "body-key"},
                            headers={"Idempotency-Key": "header-key"},
                            loc=["header", "Idempotency-Key"], mentions="differ"),
                 id="idempotency-header-and-field-differ"),
]


async def send(api: TestClient[Any, Any], keys: Keys, existing: Existing,
               refusal: Refusal) -> ClientResponse:
    headers = dict(refusal.headers)
    if refusal.key is not None:
        headers.update(keys.auth(getattr(keys, refusal.key)))
    path = refusal.path.format(
        sub=existing.subscription_id, evt=existing.event_id, dlv=existing.delivery_id
    )
    if isinstance(refusal.body, bytes):
        headers["Content-Type"] = "application/json"
        return await api.request(refusal.method, path, data=refusal.body, headers=headers)
    if refusal.body is None:
        return await api.request(refusal.method, path, headers=headers)
    return await api.request(refusal.method, path, json=refusal.body, headers=headers)


# Found while writing these tests: each once answered 500 with a text body, not a refusal.
SERVER_ERRORS = [
    pytest.param(
        Refusal("GET", f"{SUBSCRIPTIONS}?cursor={_YEAR_ZERO_CURSOR}", 422, "validation_error",
                loc=["query", "cursor"]),
        id="cursor-time-out-of-range",
    ),
    pytest.param(
        Refusal("GET", f"{SUBSCRIPTIONS}?limit=\u00b2", 422, "validation_error",
                loc=["query", "limit"]),
        id="limit-superscript-two",
    ),
    pytest.param(
        create_subscription({**VALID_SUBSCRIPTION, "description": "nul \u0000 byte"}),
        id="create-subscription-nul-in-description",
    ),
    pytest.param(
        update_subscription({"description": "nul \u0000 byte"}),
        id="update-subscription-nul-in-description",
    ),
    pytest.param(
        post_event({**VALID_EVENT, "idempotency_key": "nul \u0000 byte"}),
        id="post-event-nul-in-idempotency-key",
    ),
]


@pytest.mark.parametrize(
    "refusal",
    [*NOT_JSON, *INVALID_FIELDS, *UNAUTHENTICATED, *WRONG_ROLE, *NOT_FOUND, *BAD_PAGES,
     *BAD_IDEMPOTENCY_KEYS, *SERVER_ERRORS],
)
async def test_refused_request_answers_the_error_shape_and_writes_nothing(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, existing: Existing,
    refusal: Refusal,
) -> None:
    async with writes_nothing(pool):
        response = await send(api, keys, existing, refusal)
        error = await assert_error(response, refusal.status, refusal.code)
    if refusal.loc is not None:
        assert refusal.loc in [detail["loc"] for detail in error["details"]], error
    if refusal.mentions is not None:
        assert refusal.mentions in json.dumps(error), error


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
async def test_event_data_that_is_not_json_numbers_is_refused(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, number: bytes,
) -> None:
    body = b'{"type": "order.created", "data": {"amount": ' + number + b"}}"
    async with writes_nothing(pool):
        response = await api.post(
            "/v1/events", data=body,
            headers={**keys.auth(keys.producer), "Content-Type": "application/json"},
        )
        assert 400 <= response.status < 500, await response.text()


# Size limits: an app whose limit is 1 KiB.

LIMIT = 1024


@pytest.fixture
async def small_api(serve_api: ServeApi) -> TestClient[Any, Any]:
    return await serve_api(max_payload_bytes=LIMIT)


def event_body(size: int) -> bytes:
    """A compact event request body of exactly `size` bytes."""
    empty = json.dumps({"type": "order.created", "data": {"pad": ""}}, separators=(",", ":"))
    body = json.dumps({"type": "order.created", "data": {"pad": "x" * (size - len(empty))}},
                      separators=(",", ":")).encode()
    assert len(body) == size
    return body


async def post_raw(api: TestClient[Any, Any], key: str, body: Any,
                   path: str = "/v1/events") -> ClientResponse:
    headers = {**Keys.auth(key), "Content-Type": "application/json"}
    return await api.post(path, data=body, headers=headers)


async def test_event_body_over_the_limit_is_413(
    small_api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool
) -> None:
    async with writes_nothing(pool):
        response = await post_raw(small_api, keys.producer, event_body(2 * LIMIT))
        await assert_error(response, 413, "payload_too_large")


async def test_chunked_event_body_over_the_limit_is_413(
    small_api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        body = event_body(2 * LIMIT)
        for start in range(0, len(body), 256):
            yield body[start:start + 256]

    async with writes_nothing(pool):
        response = await post_raw(small_api, keys.producer, chunks())
        await assert_error(response, 413, "payload_too_large")


async def test_subscription_body_over_the_limit_is_413(
    small_api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool
) -> None:
    body = json.dumps({"url": HOOK_URL, "event_types": ["order.created"] * 100}).encode()
    assert len(body) > LIMIT
    async with writes_nothing(pool):
        response = await post_raw(small_api, keys.subscriber, body, "/v1/subscriptions")
        await assert_error(response, 413, "payload_too_large")


async def test_event_whose_envelope_outgrows_the_limit_is_413(
    small_api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool
) -> None:
    # The request itself fits; the stored body adds id and timestamp and does not.
    async with writes_nothing(pool):
        response = await post_raw(small_api, keys.producer, event_body(LIMIT))
        await assert_error(response, 413, "payload_too_large")


async def test_event_whose_envelope_fits_the_limit_is_accepted(
    small_api: TestClient[Any, Any], keys: Keys
) -> None:
    response = await post_raw(small_api, keys.producer, event_body(LIMIT - 200))
    assert response.status == 202, await response.text()


# Destinations


@pytest.fixture
async def strict_api(serve_api: ServeApi) -> TestClient[Any, Any]:
    """An app that allowlists no network but still accepts http://."""
    return await serve_api(allowed_networks=[], allow_http=True)


@pytest.fixture
async def https_only_api(serve_api: ServeApi) -> TestClient[Any, Any]:
    return await serve_api(allowed_networks=[], allow_http=False)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:9/x", "127.0.0.1"),
        ("http://localhost/x", ""),  # resolves to 127.0.0.1 or ::1, whichever comes first
        ("http://10.0.0.1/x", "10.0.0.1"),
        ("http://192.168.1.10/x", "192.168.1.10"),
        ("http://100.64.0.1/x", "100.64.0.1"),
        ("http://169.254.169.254/latest", "169.254.169.254"),
        ("http://0.0.0.0/x", "0.0.0.0"),
        ("http://[::1]/x", "::1"),
        ("http://[::ffff:127.0.0.1]/x", "127.0.0.1"),
        ("http://[fd00::1]/x", "fd00::1"),
    ],
)
async def test_private_and_loopback_destinations_are_refused(
    strict_api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, url: str, address: str
) -> None:
    error = await refused_url(strict_api, keys, pool, url)
    assert "not a public address" in error["message"]
    assert address in error["message"]
    assert ["body", "url"] in [detail["loc"] for detail in error["details"]]


@pytest.mark.parametrize(
    "url",
    ["http://127.1/x", "http://2130706433/x", "http://0x7f000001/x", "http://017700000001/x",
     "http://0/x", "http://[::ffff:a00:1]/x", "http://[fe80::1]/x"],
)
async def test_disguised_private_addresses_are_refused(
    strict_api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, url: str
) -> None:
    error = await refused_url(strict_api, keys, pool, url)
    assert "not an allowed destination" in error["message"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://93.184.216.34/", "https"),
        ("ftp://93.184.216.34/file", "https"),
        ("https://user:pass@93.184.216.34/", "credentials"),
        ("https://token@93.184.216.34/", "credentials"),
        ("https:///no-host", "no host"),
        ("93.184.216.34/hook", "https"),
        ("https://93.184.216.34:99999/", "not a valid URL"),
    ],
)
async def test_urls_of_the_wrong_shape_are_refused(
    https_only_api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, url: str, reason: str
) -> None:
    error = await refused_url(https_only_api, keys, pool, url)
    assert reason in error["message"]


async def test_ftp_is_refused_even_when_http_is_allowed(
    strict_api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool
) -> None:
    error = await refused_url(strict_api, keys, pool, "ftp://93.184.216.34/")
    assert "scheme" in error["message"]


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/x", "http://[::1]/x", "ftp://127.0.0.1/x", "http://u:p@127.0.0.1/x"]
)
async def test_changing_the_url_to_a_refused_one_keeps_the_old_url(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, existing: Existing, url: str
) -> None:
    path = f"/v1/subscriptions/{existing.subscription_id}"
    async with writes_nothing(pool):
        response = await api.patch(
            path, json={"url": url, "description": "moved"}, headers=keys.auth(keys.subscriber)
        )
        await assert_error(response, 422, "validation_error")
    read = await api.get(path, headers=keys.auth(keys.subscriber))
    subscription = await read.json()
    assert subscription["url"] == HOOK_URL
    assert subscription["description"] == ""


# Header values hookpost could not store or pass on, sent as raw bytes.

_RAW_EVENT = json.dumps(VALID_EVENT).encode()
_BAD_HEADER_VALUES = [
    ("not-utf8", b"\xff\xfe", "not UTF-8"),
    ("tab", b"key\twith-a-tab", "control character"),
    ("c1-nel", b"\xc2\x85key", "control character"),  # NEL, a C1 control, as UTF-8
    ("c1-csi", b"\xc2\x9bkey", "control character"),
]
BAD_HEADERS = [
    *(pytest.param("POST", EVENTS, "Idempotency-Key", value, reason,
                   id=f"idempotency-key-{label}")
      for label, value, reason in [*_BAD_HEADER_VALUES,
                                   ("too-long", b"k" * 256, "over 255 characters")]),
    *(pytest.param(method, path, "Authorization", b"Bearer " + value, reason,
                   id=f"{write}-authorization-{label}")
      for write, method, path in [("post-event", "POST", EVENTS),
                                  ("create-subscription", "POST", SUBSCRIPTIONS),
                                  ("list-subscriptions", "GET", SUBSCRIPTIONS)]
      for label, value, reason in [*_BAD_HEADER_VALUES,
                                   ("too-long", b"k" * 600, "over 512 characters")]),
]


@pytest.mark.parametrize(("method", "path", "name", "value", "reason"), BAD_HEADERS)
async def test_a_header_hookpost_cannot_take_is_400_and_writes_nothing(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, existing: Existing,
    method: str, path: str, name: str, value: bytes, reason: str,
) -> None:
    headers = [("Content-Type", b"application/json"), (name, value)]
    if name != "Authorization":
        headers.append(("Authorization", f"Bearer {keys.producer}".encode()))
    body = _RAW_EVENT if path == EVENTS else json.dumps(VALID_SUBSCRIPTION).encode()
    async with writes_nothing(pool):
        response = await raw_request(api, method, path, headers, body if method == "POST" else b"")
        error = assert_raw_error(response, 400, "invalid_header")
    assert error["details"][0]["loc"] == ["header", name]
    assert reason in error["message"]


async def test_an_idempotency_key_sent_twice_is_400_and_writes_nothing(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, existing: Existing,
) -> None:
    headers = [("Authorization", f"Bearer {keys.producer}".encode()),
               ("Content-Type", b"application/json"),
               ("Idempotency-Key", b"k-1"), ("Idempotency-Key", b"k-2")]
    async with writes_nothing(pool):
        response = await raw_request(api, "POST", EVENTS, headers, _RAW_EVENT)
        error = assert_raw_error(response, 400, "invalid_header")
    assert "more than once" in error["message"]


@pytest.mark.parametrize("value", [b"a\x00b", b"a\x7fb", b"a\x01b", b"a\rb"])
async def test_aiohttp_refuses_nul_del_and_c0_in_headers_before_hookpost_reads_them(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, existing: Existing,
    value: bytes,
) -> None:
    # The HTTP parser answers these itself, in plain text: no handler runs, nothing is written.
    headers = [("Authorization", f"Bearer {keys.producer}".encode()),
               ("Content-Type", b"application/json"), ("Idempotency-Key", value)]
    async with writes_nothing(pool):
        response = await raw_request(api, "POST", EVENTS, headers, _RAW_EVENT)
    assert response.status == 400, response.body


async def test_a_readable_unicode_idempotency_key_is_taken(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool,
) -> None:
    headers = [("Authorization", f"Bearer {keys.producer}".encode()),
               ("Content-Type", b"application/json"), ("Idempotency-Key", "clé-1".encode())]
    response = await raw_request(api, "POST", EVENTS, headers, _RAW_EVENT)
    assert response.status == 202, response.body
    assert await pool.fetchval("SELECT idempotency_key FROM events") == "clé-1"


async def test_an_event_nested_as_deep_as_allowed_is_accepted(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool,
) -> None:
    response = await post_raw(api, keys.producer, nested_event(MAX_DEPTH))
    assert response.status == 202, await response.text()
    assert await pool.fetchval("SELECT count(*) FROM events") == 1


# URLs holding characters a URL cannot hold unescaped: urlsplit drops tab, CR and LF, so
# the host checked was not the one stored.

_UNSAFE_URLS = [
    *(f"http://127.0.0.1:9/ho{character}ok" for character in
      ("\r", "\n", "\t", " ", "\x00", "\x01", "\x1f", "\x7f", "\x85", "\x9b", "\u00a0",
       "\u2028", "\u3000", "\u200b", "\ufeff")),
    "http://127.0.0.1:9/hook\r\n",
    " http://127.0.0.1:9/hook",
    "http://127.0.\n0.1:9/hook",
    "http://exam\tple.com/hook",
]


@pytest.mark.parametrize("url", _UNSAFE_URLS)
async def test_a_url_holding_a_control_or_space_is_refused(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, url: str
) -> None:
    error = await refused_url(api, keys, pool, url)
    assert ["body", "url"] in [detail["loc"] for detail in error["details"]]


@pytest.mark.parametrize("url", _UNSAFE_URLS)
async def test_changing_the_url_to_one_holding_a_control_or_space_keeps_the_old_url(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool, existing: Existing, url: str
) -> None:
    path = f"/v1/subscriptions/{existing.subscription_id}"
    async with writes_nothing(pool):
        response = await api.patch(path, json={"url": url}, headers=keys.auth(keys.subscriber))
        await assert_error(response, 422, "validation_error")
    subscription = await (await api.get(path, headers=keys.auth(keys.subscriber))).json()
    assert subscription["url"] == HOOK_URL
