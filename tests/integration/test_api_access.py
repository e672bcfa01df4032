"""Who may do what over HTTP: the subscription lifecycle, isolation between subscribers and
between producers, cursor pages, idempotent ingest and fan-out to matching subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.app import create_app
from api.auth import Role, create_key
from hookpost.settings import Settings
from hookpost.store import Store
from tests.conftest import FakeClock
from tests.integration.conftest import Keys, get_json

# Loopback is allowlisted in tests, and no dispatcher runs here, so nothing is ever sent to it.
HOOK_URL = "http://127.0.0.1:9/hook"


async def create_subscription(
    api: TestClient[Any, Any], key: str, event_types: list[str], **fields: Any
) -> dict[str, Any]:
    response = await api.post(
        "/v1/subscriptions", json={"url": HOOK_URL, "event_types": event_types, **fields},
        headers=Keys.auth(key),
    )
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def post_event(
    api: TestClient[Any, Any], key: str, type: str, data: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None, **fields: Any,
) -> dict[str, Any]:
    response = await api.post(
        "/v1/events", json={"type": type, "data": data or {}, **fields},
        headers={**Keys.auth(key), **(headers or {})},
    )
    assert response.status == 202, await response.text()
    accepted: dict[str, Any] = await response.json()
    return accepted


async def listed_ids(api: TestClient[Any, Any], key: str) -> list[str]:
    page = await get_json(api, key, "/v1/subscriptions?limit=250")
    assert page["next_cursor"] is None
    return [subscription["id"] for subscription in page["data"]]


async def count_rows(pool: asyncpg.Pool, table: str) -> int:
    count: int = await pool.fetchval(f"SELECT count(*) FROM {table}")
    return count


@pytest.fixture
async def second_producer(store: Store) -> str:
    key, _ = await create_key(store, Role.PRODUCER, "p2")
    return key


# Subscriptions


async def test_subscriber_creates_reads_changes_lists_and_deletes_a_subscription(
    api: TestClient[Any, Any], keys: Keys
) -> None:
    created = await create_subscription(
        api, keys.subscriber, ["order.*"], description="orders to the warehouse"
    )
    assert created["id"].startswith("sub_")
    assert created["secret"].startswith("whsec_")
    assert created["url"] == HOOK_URL
    assert created["event_types"] == ["order.*"]
    assert created["status"] == "active"
    path = f"/v1/subscriptions/{created['id']}"

    read = await get_json(api, keys.subscriber, path)
    assert "secret" not in read
    assert read.pop("health") == {"last_success_at": None, "last_failure_at": None,
                                  "failing_since": None, "pending": 0}
    assert read == {name: value for name, value in created.items() if name != "secret"}

    changed = await api.patch(
        path, json={"description": "paused for the move", "status": "paused"},
        headers=keys.auth(keys.subscriber),
    )
    assert changed.status == 200, await changed.text()
    assert "secret" not in await changed.json()
    read = await get_json(api, keys.subscriber, path)
    assert read["description"] == "paused for the move"
    assert read["status"] == "paused"
    assert read["event_types"] == ["order.*"]  # fields left out keep their value
    assert read["url"] == HOOK_URL

    page = await get_json(api, keys.subscriber, "/v1/subscriptions")
    assert [subscription["id"] for subscription in page["data"]] == [created["id"]]
    assert "secret" not in page["data"][0]

    deleted = await api.delete(path, headers=keys.auth(keys.subscriber))
    assert deleted.status == 204
    gone = await api.get(path, headers=keys.auth(keys.subscriber))
    assert gone.status == 404
    assert await listed_ids(api, keys.subscriber) == []
    deleted_again = await api.delete(path, headers=keys.auth(keys.subscriber))
    assert deleted_again.status == 404


async def test_subscriber_changes_url_and_event_types(
    api: TestClient[Any, Any], keys: Keys
) -> None:
    created = await create_subscription(api, keys.subscriber, ["order.*"])
    response = await api.patch(
        f"/v1/subscriptions/{created['id']}",
        json={"url": "http://127.0.0.1:9/other", "event_types": ["invoice.paid", "*"]},
        headers=keys.auth(keys.subscriber),
    )
    assert response.status == 200, await response.text()
    changed = await response.json()
    assert changed["url"] == "http://127.0.0.1:9/other"
    assert changed["event_types"] == ["invoice.paid", "*"]
    assert changed["status"] == "active"


@pytest.mark.parametrize(
    ("method", "body"),
    [("GET", None), ("PATCH", {"status": "paused"}), ("DELETE", None)],
)
async def test_subscriber_cannot_tell_another_subscribers_subscription_exists(
    api: TestClient[Any, Any], keys: Keys, method: str, body: dict[str, Any] | None
) -> None:
    theirs = await create_subscription(api, keys.other_subscriber, ["*"])
    path = f"/v1/subscriptions/{theirs['id']}"

    response = await api.request(method, path, json=body, headers=keys.auth(keys.subscriber))

    # 404, like an id that does not exist, not 403: ids of others are not confirmed.
    assert response.status == 404, await response.text()
    assert (await response.json())["error"]["code"] == "not_found"
    untouched = await get_json(api, keys.other_subscriber, path)
    assert untouched["status"] == "active"
    assert untouched["updated_at"] == theirs["updated_at"]


async def test_subscribers_list_only_their_own_and_admin_lists_everyone(
    api: TestClient[Any, Any], keys: Keys
) -> None:
    mine = await create_subscription(api, keys.subscriber, ["*"])
    theirs = await create_subscription(api, keys.other_subscriber, ["*"])

    assert await listed_ids(api, keys.subscriber) == [mine["id"]]
    assert await listed_ids(api, keys.other_subscriber) == [theirs["id"]]
    assert await listed_ids(api, keys.admin) == [theirs["id"], mine["id"]]
    for subscription in (mine, theirs):
        read = await get_json(api, keys.admin, f"/v1/subscriptions/{subscription['id']}")
        assert read["id"] == subscription["id"]
        assert "secret" not in read


async def test_admin_can_change_and_delete_any_subscription(
    api: TestClient[Any, Any], keys: Keys
) -> None:
    theirs = await create_subscription(api, keys.subscriber, ["*"])
    path = f"/v1/subscriptions/{theirs['id']}"

    paused = await api.patch(path, json={"status": "paused"}, headers=keys.auth(keys.admin))
    assert paused.status == 200, await paused.text()
    assert (await get_json(api, keys.subscriber, path))["status"] == "paused"
    deleted = await api.delete(path, headers=keys.auth(keys.admin))
    assert deleted.status == 204
    assert (await api.get(path, headers=keys.auth(keys.subscriber))).status == 404


async def walk_pages(api: TestClient[Any, Any], key: str, limit: int) -> list[list[str]]:
    """Every page of the caller's subscriptions, following next_cursor to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = await get_json(api, key, f"/v1/subscriptions?{query}")
        pages.append([subscription["id"] for subscription in page["data"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) <= 10, "the cursor never ends"


@pytest.mark.parametrize(("count", "sizes"), [(5, [2, 2, 1]), (4, [2, 2])])
async def test_cursor_pages_list_every_subscription_once_newest_first(
    api: TestClient[Any, Any], keys: Keys, count: int, sizes: list[int]
) -> None:
    created = [(await create_subscription(api, keys.subscriber, ["*"]))["id"]
               for _ in range(count)]
    await create_subscription(api, keys.other_subscriber, ["*"])

    pages = await walk_pages(api, keys.subscriber, limit=2)

    # A full last page says there is no more rather than promising an empty one.
    assert [len(page) for page in pages] == sizes
    assert [id for page in pages for id in page] == created[::-1]


async def test_cursor_pages_split_subscriptions_made_at_the_same_instant(
    settings: Settings, store: Store, keys: Keys,
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    api = await aiohttp_client(create_app(settings, store, clock=FakeClock()))
    created = [(await create_subscription(api, keys.subscriber, ["*"]))["id"]
               for _ in range(5)]

    pages = await walk_pages(api, keys.subscriber, limit=2)

    walked = [id for page in pages for id in page]
    assert sorted(walked) == sorted(created)
    assert walked == sorted(created, reverse=True)  # ties broken by id, newest first


# Events


async def test_producer_posts_an_event_and_reads_it_with_its_deliveries(
    api: TestClient[Any, Any], keys: Keys
) -> None:
    subscription = await create_subscription(api, keys.subscriber, ["order.*"])
    data = {"order": {"id": 42, "items": [1, 2.5, "three"], "note": "café ✓", "gift": True,
                      "coupon": None}}

    accepted = await post_event(api, keys.producer, "order.created", data)

    assert accepted["id"].startswith("evt_")
    assert accepted["type"] == "order.created"
    assert accepted["deliveries"] == 1
    event = await get_json(api, keys.producer, f"/v1/events/{accepted['id']}")
    assert event["id"] == accepted["id"]
    assert event["type"] == "order.created"
    assert event["data"] == data
    [delivery] = event["deliveries"]
    assert delivery["id"].startswith("dlv_")
    assert delivery["subscription_id"] == subscription["id"]
    assert delivery["event_id"] == accepted["id"]
    assert delivery["status"] == "pending"
    assert delivery["attempt_count"] == 0


async def test_only_the_producer_of_an_event_and_admins_can_read_it(
    api: TestClient[Any, Any], keys: Keys, second_producer: str
) -> None:
    accepted = await post_event(api, keys.producer, "order.created", {"n": 1})
    path = f"/v1/events/{accepted['id']}"

    other = await api.get(path, headers=keys.auth(second_producer))
    assert other.status == 404, await other.text()
    assert (await other.json())["error"]["code"] == "not_found"
    assert (await get_json(api, keys.admin, path))["data"] == {"n": 1}


async def test_admin_can_post_events(api: TestClient[Any, Any], keys: Keys) -> None:
    accepted = await post_event(api, keys.admin, "order.created")
    assert (await get_json(api, keys.admin, f"/v1/events/{accepted['id']}"))["type"] == (
        "order.created"
    )


async def test_repeated_idempotency_key_returns_the_first_event_and_creates_nothing(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool
) -> None:
    await create_subscription(api, keys.subscriber, ["*"])
    await create_subscription(api, keys.other_subscriber, ["order.*"])
    retry = {"Idempotency-Key": "order-42-created"}
    first = await post_event(api, keys.producer, "order.created", {"n": 1}, retry)
    events, deliveries = await count_rows(pool, "events"), await count_rows(pool, "deliveries")

    response = await api.post(
        "/v1/events", json={"type": "order.created", "data": {"n": 1}},
        headers={**keys.auth(keys.producer), **retry},
    )

    assert response.status == 202
    assert response.headers["Idempotent-Replayed"] == "true"
    assert await response.json() == first
    assert first["deliveries"] == 2
    assert await count_rows(pool, "events") == events == 1
    assert await count_rows(pool, "deliveries") == deliveries == 2


async def test_concurrent_retries_with_one_idempotency_key_make_one_event(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool
) -> None:
    await create_subscription(api, keys.subscriber, ["*"])
    retry = {"Idempotency-Key": "burst"}

    accepted = await asyncio.gather(
        *(post_event(api, keys.producer, "order.created", {"n": 1}, retry) for _ in range(5))
    )

    assert len({event["id"] for event in accepted}) == 1
    assert {event["deliveries"] for event in accepted} == {1}
    assert await count_rows(pool, "events") == 1
    assert await count_rows(pool, "deliveries") == 1


async def test_idempotency_keys_belong_to_one_producer(
    api: TestClient[Any, Any], keys: Keys, second_producer: str, pool: asyncpg.Pool
) -> None:
    retry = {"Idempotency-Key": "shared-key"}
    first = await post_event(api, keys.producer, "order.created", headers=retry)
    second = await post_event(api, second_producer, "order.created", headers=retry)

    assert second["id"] != first["id"]
    assert await count_rows(pool, "events") == 2
    assert (await get_json(api, second_producer, f"/v1/events/{second['id']}"))["id"] == (
        second["id"]
    )


async def test_idempotency_key_in_the_body_works_like_the_header(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool
) -> None:
    await create_subscription(api, keys.subscriber, ["*"])
    first = await post_event(api, keys.producer, "order.created", idempotency_key="k-1")
    again = await post_event(api, keys.producer, "order.created", idempotency_key="k-1")
    by_header = await post_event(
        api, keys.producer, "order.created", headers={"Idempotency-Key": "k-1"}
    )
    both = await post_event(
        api, keys.producer, "order.created", headers={"Idempotency-Key": "k-1"},
        idempotency_key="k-1",
    )

    assert again == by_header == both == first
    assert await count_rows(pool, "events") == 1
    assert await count_rows(pool, "deliveries") == 1


async def test_events_without_idempotency_keys_are_all_kept(
    api: TestClient[Any, Any], keys: Keys, pool: asyncpg.Pool
) -> None:
    first = await post_event(api, keys.producer, "order.created", {"n": 1})
    second = await post_event(api, keys.producer, "order.created", {"n": 1})
    assert first["id"] != second["id"]
    assert await count_rows(pool, "events") == 2


# Fan-out

FILTERS: dict[str, list[str]] = {
    "everything": ["*"],
    "orders": ["order.*"],
    "order-created": ["order.created"],
    "invoices": ["invoice.*"],
    "order-created-v2": ["order.created.v2"],
    "paused-orders": ["order.*"],
    "deleted-everything": ["*"],
}


@pytest.mark.parametrize(
    ("event_type", "reached"),
    [
        ("order.created", {"everything", "orders", "order-created", "paused-orders"}),
        ("order.created.v2", {"everything", "orders", "order-created-v2", "paused-orders"}),
        ("orders.created", {"everything"}),
        ("order", {"everything"}),
        ("invoice.paid", {"everything", "invoices"}),
        ("Order.created", {"everything"}),  # types are case-sensitive
        ("customer.deleted", {"everything"}),
    ],
)
async def test_event_fans_out_to_every_matching_subscription_that_is_not_deleted(
    api: TestClient[Any, Any], keys: Keys, event_type: str, reached: set[str]
) -> None:
    owners = [keys.subscriber, keys.other_subscriber, keys.admin]
    ids: dict[str, str] = {}
    for number, (name, event_types) in enumerate(FILTERS.items()):
        status = "paused" if name.startswith("paused") else "active"
        created = await create_subscription(
            api, owners[number % len(owners)], event_types, status=status
        )
        ids[name] = created["id"]
    deleted = await api.delete(
        f"/v1/subscriptions/{ids['deleted-everything']}", headers=keys.auth(keys.admin)
    )
    assert deleted.status == 204

    accepted = await post_event(api, keys.producer, event_type)

    assert accepted["deliveries"] == len(reached)
    event = await get_json(api, keys.admin, f"/v1/events/{accepted['id']}")
    by_subscription = {delivery["subscription_id"]: delivery for delivery in event["deliveries"]}
    assert set(by_subscription) == {ids[name] for name in reached}
    # A paused subscription keeps its deliveries pending until it is resumed.
    assert {delivery["status"] for delivery in event["deliveries"]} <= {"pending"}


async def test_a_subscription_with_overlapping_filters_gets_one_delivery(
    api: TestClient[Any, Any], keys: Keys
) -> None:
    subscription = await create_subscription(
        api, keys.subscriber, ["*", "order.*", "order.created"]
    )
    accepted = await post_event(api, keys.producer, "order.created")
    assert accepted["deliveries"] == 1
    event = await get_json(api, keys.producer, f"/v1/events/{accepted['id']}")
    assert [d["subscription_id"] for d in event["deliveries"]] == [subscription["id"]]


# Deliveries


async def test_delivery_is_readable_by_its_subscriptions_owner_and_admin_only(
    api: TestClient[Any, Any], keys: Keys
) -> None:
    subscription = await create_subscription(api, keys.subscriber, ["order.*"])
    accepted = await post_event(api, keys.producer, "order.created")
    event = await get_json(api, keys.producer, f"/v1/events/{accepted['id']}")
    [summary] = event["deliveries"]
    path = f"/v1/deliveries/{summary['id']}"

    for key in (keys.subscriber, keys.admin):
        delivery = await get_json(api, key, path)
        assert delivery["id"] == summary["id"]
        assert delivery["event_id"] == accepted["id"]
        assert delivery["event_type"] == "order.created"
        assert delivery["subscription_id"] == subscription["id"]
        assert delivery["status"] == "pending"
        assert delivery["attempts"] == []

    other = await api.get(path, headers=keys.auth(keys.other_subscriber))
    assert other.status == 404, await other.text()
    producer = await api.get(path, headers=keys.auth(keys.producer))
    assert producer.status == 403, await producer.text()


async def test_deliveries_of_a_deleted_subscription_stay_readable_as_failed(
    api: TestClient[Any, Any], keys: Keys
) -> None:
    subscription = await create_subscription(api, keys.subscriber, ["*"])
    accepted = await post_event(api, keys.producer, "order.created")
    event = await get_json(api, keys.producer, f"/v1/events/{accepted['id']}")
    [summary] = event["deliveries"]

    deleted = await api.delete(
        f"/v1/subscriptions/{subscription['id']}", headers=keys.auth(keys.subscriber)
    )
    assert deleted.status == 204

    delivery = await get_json(api, keys.subscriber, f"/v1/deliveries/{summary['id']}")
    assert delivery["status"] == "failed"
    assert delivery["next_attempt_at"] is None


# Liveness


async def test_health_answers_without_a_key(api: TestClient[Any, Any]) -> None:
    response = await api.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "dispatcher_alive": None}
