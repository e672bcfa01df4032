"""The store: one method per named query in queries.sql, returning typed records."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, NamedTuple, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pydantic import BaseModel, Json

from hookpost import stats
from hookpost.database import ACQUIRE_TIMEOUT, DATABASE_DOWN
from hookpost.ids import first_id_at
from hookpost.queries import QUERIES as QUERIES
from hookpost.queries import load_queries as load_queries

TEST_EVENT_TYPE = "webhook.test"


DEFAULT_TENANT = "ten_default"  # takes whatever names no tenant
# Where hookpost's operational events (hookpost.*) go; only admins, and keys an admin binds
# to it, reach it.
SYSTEM_TENANT = "ten_system"


class ApiKey(BaseModel):
    id: str
    name: str
    role: str
    tenant_id: str | None = None  # bound to this tenant's rows; None: not bound
    created_at: datetime
    revoked_at: datetime | None = None


class UiSession(NamedTuple):
    """A dashboard session that still works: the key it acts as, and the CSRF token of its
    forms. A portal session acts as its link (see portal_principal); what it writes is
    owned by the key that made the link, `owner_key_id`, since the link is no key."""

    api_key: ApiKey
    csrf_token: str
    owner_key_id: str
    portal: bool = False


class PortalLink(BaseModel):
    """A one-time link to a tenant's portal; only the hash of its token is stored."""

    id: str
    tenant_id: str
    created_by_key_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


PORTAL_PRINCIPAL_NAME = "portal link"


def portal_principal(link_id: str, tenant_id: str, opened_at: datetime) -> ApiKey:
    """Who a portal session acts as: a subscriber key bound to the link's tenant, so that
    the one role check and the one scope serve it as they serve keys. Its id is the link's,
    which names no key: nothing can take it for the key that made the link."""
    return ApiKey(id=link_id, name=PORTAL_PRINCIPAL_NAME, role="subscriber",
                  tenant_id=tenant_id, created_at=opened_at)


class Tenant(BaseModel):
    id: str
    name: str
    uid: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Scope:
    """The rows a caller may see and change: one tenant's (None: every tenant's), and of
    those only the subscriptions one key made, and their deliveries (None: anyone's)."""

    tenant_id: str | None = None
    owner_key_id: str | None = None


EVERYTHING = Scope()

# What asking to revoke a key did; "not_found": no such key, or it was revoked already.
Revocation = Literal["revoked", "last_admin", "not_found"]

UniqueViolation = asyncpg.UniqueViolationError  # a uid (or other unique value) is taken


class TenantGone(LookupError):
    """The tenant a row was to be written to, or a key bound to, is not there: it has been
    deleted, or never was."""


class Subscription(BaseModel):
    id: str
    tenant_id: str
    owner_key_id: str
    url: str
    event_types: list[str]
    description: str
    status: str
    secret: str
    previous_secret_expires_at: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    failing_since: datetime | None
    disabled_reason: str | None
    disabled_at: datetime | None = None
    max_concurrency: int | None
    rate_limit: float | None
    policy: Json[dict[str, Any]] | None = None  # as the API validated it; None: the defaults
    created_at: datetime
    updated_at: datetime
    signature_scheme: str = "v1"  # v1, v1a or both
    signing_key: str | None = None  # the Ed25519 private key (whsk_...); never shown
    public_key: str | None = None  # its public key (whpk_...)


class Event(BaseModel):
    id: str
    tenant_id: str
    type: str
    payload: bytes
    producer_key_id: str
    idempotency_key: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to store, as ingest received it."""

    id: str
    type: str
    payload: bytes
    producer_key_id: str
    idempotency_key: str | None
    created_at: datetime
    tenant_id: str = DEFAULT_TENANT


class Delivery(BaseModel):
    id: str
    tenant_id: str
    event_id: str
    event_type: str
    subscription_id: str
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_response_status: int | None
    last_error_kind: str | None
    created_at: datetime
    updated_at: datetime


class Attempt(BaseModel):
    id: str
    delivery_id: str
    attempt_number: int
    trigger: str
    started_at: datetime
    duration_ms: int
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: str | None
    error_kind: str | None
    error_message: str | None
    resent: bool
    outcome: str


@dataclass(frozen=True, slots=True)
class DeliveryFilters:
    """What a delivery listing narrows to; None leaves a filter out."""

    subscription_id: str | None = None
    event_id: str | None = None
    status: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class ClaimedDelivery(NamedTuple):
    """A delivery leased to this dispatcher, with what it takes to send it. (This and
    AttemptRecord are made once per attempt: tuples, which cost a fifth of a frozen
    dataclass to make.)"""

    id: str
    event_id: str
    event_type: str
    subscription_id: str
    attempt_count: int
    scheduled_attempts: int
    status: str  # pending, or finished for a manual redelivery
    next_attempt_at: datetime | None
    origin: str  # event or test
    manual: bool  # a redelivery someone asked for, not a scheduled attempt
    taken_over: bool  # its last lease expired unrecorded: that dispatcher died or stalled
    payload: bytes
    url: str
    secret: str
    previous_secret: str | None  # still signing during a rotation's grace period
    lease_token: str  # the lease this dispatcher's claim took on it
    lease_expires_at: datetime
    send_at: datetime | None = None  # not before: the subscription's rate_limit paces it
    max_concurrency: int | None = None  # what every dispatcher may have out to it at once
    expired_lease: datetime | None = None  # taken over: when the lease before this one ended
    signature_scheme: str = "v1"  # v1 signs with the secrets, v1a with signing_key, both both
    signing_key: str | None = None
    created_at: datetime | None = None  # when its event came: a status rule's time counts from it
    policy: str | None = None  # the subscription's policy, JSON text; None: the defaults

    @property
    def trigger(self) -> str:
        if self.manual:
            return "manual"
        return "test" if self.origin == "test" else "scheduled"

    @property
    def signing_secrets(self) -> list[str]:
        """The secrets it is signed with (v1): none under v1a alone."""
        if self.signature_scheme == "v1a":
            return []
        return [self.secret] if self.previous_secret is None else [
            self.secret, self.previous_secret
        ]

    @property
    def ed25519_key(self) -> str | None:
        """The private key it is signed with (v1a), if its scheme uses one."""
        return None if self.signature_scheme == "v1" else self.signing_key


class AttemptRecord(NamedTuple):
    """One attempt row and what it changes, as the verdict decided it: one element of
    the `attempt_record_v1[]` that record_attempts stores, as it is (the field order is
    the type's)."""

    delivery_id: str
    subscription_id: str
    lease_token: str
    attempt_number: int
    trigger: str
    started_at: datetime
    duration_ms: int
    response_status: int | None
    response_headers: str | None  # JSON object text
    response_body: str | None
    error_kind: str | None
    error_message: str | None
    resent: bool
    outcome: str
    moves_delivery: bool  # False: the row only logs a send; the delivery stays as it is
    status: str
    next_attempt_at: datetime | None
    scheduled_attempts: int
    manual_done: bool  # the redelivery asked for is done
    health: str | None  # success, failure, or None (not the receiver's doing)
    disable_reason: str | None  # set: the subscription is disabled for this reason


M = TypeVar("M", bound=BaseModel)


def _model(model: type[M], row: asyncpg.Record | None) -> M | None:
    return None if row is None else model.model_validate(dict(row))


def _models(model: type[M], rows: list[asyncpg.Record]) -> list[M]:
    return [model.model_validate(dict(row)) for row in rows]


def _one(row: asyncpg.Record | None) -> asyncpg.Record:
    """The row of a query that always returns one."""
    assert row is not None
    return row

@dataclass(frozen=True, slots=True)
class DeliveryGauges:
    pending: int
    due: int
    oldest_due_seconds: float


# Folded hours of statistics a Store keeps unfolded (30 KB each at most): a day per minute
# of 40 scopes. One is known by its scope, hour and fold (one fold makes a row of every
# scope it folds).
FOLDED_HOURS_KEPT = 1000
FoldKey = tuple[str, datetime, int]


class Store:
    """All reads and writes of hookpost's tables."""

    def __init__(self, pool: asyncpg.Pool, dispatch_pool: asyncpg.Pool | None = None,
                 *, url: str | None = None) -> None:
        self.pool = pool
        # Where a connection of its own is made (the dispatcher's LISTEN); None: no such.
        self.url = url
        # The claim and the record run hundreds of times a second with the same shape, and
        # planning them anew costs Postgres about 0.4 ms a call; the dispatcher's pool
        # (create_pool(generic_plans=True)) plans them once per connection. Everything
        # else keeps a plan made for its own parameters.
        self.dispatch_pool = dispatch_pool or pool
        # The folds read last at the end (see _folded_minutes).
        self._folded_hours: dict[FoldKey, list[stats.StatsRow]] = {}

    # API keys

    async def insert_api_key(self, name: str, role: str, key_hash: bytes,
                             tenant_id: str | None = None) -> ApiKey:
        row = await _fetchrow(self.pool, QUERIES["insert_api_key"], name, role, key_hash,
                              tenant_id)
        return ApiKey.model_validate(dict(_one(row)))

    async def api_key_by_hash(self, key_hash: bytes) -> ApiKey | None:
        return _model(ApiKey, await _fetchrow(self.pool, QUERIES["api_key_by_hash"], key_hash))

    async def schema_digest(self) -> str | None:
        digest: str | None = await _fetchval(self.pool, QUERIES["schema_digest"])
        return digest

    async def count_admin_keys(self) -> int:
        count: int = await _fetchval(self.pool, QUERIES["count_admin_keys"])
        return count

    async def list_api_keys(self, limit: int, after: tuple[datetime, str] | None
                            ) -> list[ApiKey]:
        after_at, after_id = after if after else (None, None)
        rows = await _fetch(self.pool, QUERIES["list_api_keys"], limit, after_at, after_id)
        return _models(ApiKey, rows)

    async def revoke_api_key(self, id: str, now: datetime) -> Revocation:
        """Revoke a valid key, unless it is the last valid admin key (then it stays)."""
        row = await _fetchrow(self.pool, QUERIES["revoke_api_key"], id, now)
        if row is None:
            return "not_found"
        return "last_admin" if row["last_admin"] else "revoked"

    # Dashboard sessions

    async def insert_ui_session(self, token_hash: bytes, api_key_id: str, csrf_token: str,
                                now: datetime, expires_at: datetime) -> None:
        """Start a session (and forget those expired by `now`)."""
        await _execute(self.pool, QUERIES["insert_ui_session"], token_hash, api_key_id,
                       csrf_token, now, expires_at)

    async def ui_session_by_hash(self, token_hash: bytes, now: datetime) -> UiSession | None:
        """The session, if it has not expired by `now` and its key is still valid (and, for
        a portal session, its tenant is not deleted)."""
        row = await _fetchrow(self.pool, QUERIES["ui_session_by_hash"], token_hash, now)
        if row is None:
            return None
        fields = dict(row)
        csrf_token: str = fields.pop("csrf_token")
        link_id: str | None = fields.pop("portal_link_id")
        tenant_id: str | None = fields.pop("portal_tenant_id")
        opened_at: datetime = fields.pop("opened_at")
        key = ApiKey.model_validate(fields)
        if link_id is None or tenant_id is None:
            return UiSession(key, csrf_token, key.id)
        return UiSession(portal_principal(link_id, tenant_id, opened_at), csrf_token, key.id,
                         portal=True)

    async def delete_ui_session(self, token_hash: bytes) -> None:
        await _execute(self.pool, QUERIES["delete_ui_session"], token_hash)

    # Portal links

    async def insert_portal_link(self, token_hash: bytes, tenant_id: str, created_by_key_id: str,
                                 now: datetime, expires_at: datetime) -> PortalLink:
        """A new link (and forget those expired by `now`)."""
        row = await _fetchrow(self.pool, QUERIES["insert_portal_link"], token_hash, tenant_id,
                              created_by_key_id, now, expires_at)
        return PortalLink.model_validate(dict(_one(row)))

    async def open_portal_link(self, token_hash: bytes, now: datetime, session_hash: bytes,
                               csrf_token: str, session_expires_at: datetime
                               ) -> PortalLink | None:
        """Use the link and start its portal session, at once; None if it opens no more
        (used, expired, or its tenant or the key that made it is gone)."""
        row = await _fetchrow(self.pool, QUERIES["open_portal_link"], token_hash, now,
                              session_hash, csrf_token, session_expires_at)
        return _model(PortalLink, row)

    # Tenants

    async def insert_tenant(self, name: str, uid: str | None, now: datetime) -> Tenant:
        row = await _fetchrow(self.pool, QUERIES["insert_tenant"], name, uid, now)
        return Tenant.model_validate(dict(_one(row)))

    async def resolve_tenant(self, id_or_uid: str) -> Tenant | None:
        """The active tenant with this id, or else with this uid."""
        return _model(Tenant, await _fetchrow(self.pool, QUERIES["resolve_tenant"], id_or_uid))

    async def list_tenants(self, limit: int, after: tuple[datetime, str] | None
                           ) -> list[Tenant]:
        after_at, after_id = after if after else (None, None)
        rows = await _fetch(self.pool, QUERIES["list_tenants"], limit, after_at, after_id)
        return _models(Tenant, rows)

    async def update_tenant(self, id: str, *, name: str | None, uid: str | None,
                            set_uid: bool, now: datetime) -> Tenant | None:
        row = await _fetchrow(self.pool, QUERIES["update_tenant"], id, name, uid, set_uid, now)
        return _model(Tenant, row)

    async def delete_tenant(self, id: str, now: datetime) -> list[str] | None:
        """Delete a tenant with its subscriptions and keys (the default one stays); the ids
        of the keys revoked, or None if there was no such tenant."""
        row = _one(await _fetchrow(self.pool, QUERIES["delete_tenant"], id, now))
        return list(row["revoked_keys"]) if row["deleted"] else None

    async def tenant_counts(self, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Of each tenant: its subscriptions (not deleted) and their pending deliveries."""
        rows = await _fetch(self.pool, QUERIES["tenant_counts"], list(ids))
        return {row["id"]: (row["subscriptions"], row["pending"]) for row in rows}

    async def tenant_summary(self, id: str) -> tuple[dict[str, int], int]:
        """The tenant's subscriptions by status, and its pending deliveries."""
        rows = await _fetch(self.pool, QUERIES["tenant_subscriptions_by_status"], id)
        backlog: int = await _fetchval(self.pool, QUERIES["tenant_backlog"], id)
        return {row["status"]: row["count"] for row in rows}, backlog

    # Subscriptions

    async def insert_subscription(
        self, owner_key_id: str, url: str, event_types: list[str], description: str,
        status: str, secret: str, now: datetime, max_concurrency: int | None = None,
        rate_limit: float | None = None, tenant_id: str = DEFAULT_TENANT,
        signature_scheme: str = "v1", signing_key: tuple[str, str] | None = None,
        policy: str | None = None,
    ) -> Subscription:
        """The subscription made; TenantGone if its tenant has been deleted. `signing_key`
        is its Ed25519 (private, public) key pair; `policy` is JSON text (None: the
        defaults)."""
        private, public = signing_key or (None, None)
        row = await _fetchrow(
            self.pool, QUERIES["insert_subscription"], owner_key_id, url, event_types, description,
            status, secret, now, max_concurrency, rate_limit, tenant_id, signature_scheme,
            private, public, policy,
        )
        if row is None:
            raise TenantGone(tenant_id)
        return Subscription.model_validate(dict(row))

    async def get_subscription(self, id: str, scope: Scope) -> Subscription | None:
        row = await _fetchrow(self.pool, QUERIES["get_subscription"], id, scope.owner_key_id,
                              scope.tenant_id)
        return _model(Subscription, row)

    async def list_subscriptions(
        self, scope: Scope, limit: int, after: tuple[datetime, str] | None
    ) -> list[Subscription]:
        after_at, after_id = after if after else (None, None)
        rows = await _fetch(
            self.pool, QUERIES["list_subscriptions"], scope.owner_key_id, limit, after_at,
            after_id, scope.tenant_id,
        )
        return _models(Subscription, rows)

    async def update_subscription(
        self, id: str, scope: Scope, *, url: str | None,
        event_types: list[str] | None, description: str | None, status: str | None,
        now: datetime, limits: Mapping[str, float | None] | None = None,
        signature_scheme: str | None = None, signing_key: tuple[str, str] | None = None,
        set_policy: bool = False, policy: str | None = None,
    ) -> Subscription | None:
        """Change what is not None; of `limits`, each one named is set (None: removed). The
        key pair `signing_key` is kept only if the subscription has none yet; with
        `set_policy`, the policy becomes `policy` (JSON text; None: the defaults)."""
        limits = limits or {}
        private, public = signing_key or (None, None)
        row = await _fetchrow(
            self.pool, QUERIES["update_subscription"], id, scope.owner_key_id, url, event_types,
            description, status, now, "max_concurrency" in limits,
            limits.get("max_concurrency"), "rate_limit" in limits, limits.get("rate_limit"),
            scope.tenant_id, signature_scheme, private, public, set_policy, policy,
        )
        return _model(Subscription, row)

    async def delete_subscription(self, id: str, scope: Scope, now: datetime) -> bool:
        deleted: int = await _fetchval(
            self.pool, QUERIES["delete_subscription"], id, scope.owner_key_id, now,
            scope.tenant_id,
        )
        return deleted > 0

    # Events

    async def ingest_events(self, events: Sequence[NewEvent]) -> dict[str, int]:
        """Store events and fan them out in one statement (one commit for the batch).

        Returns the delivery count of each event created; an event left out was not
        created because its producer already used its idempotency key.
        """
        rows = await _fetch(
            self.pool, QUERIES["ingest_events"], [e.id for e in events], [e.type for e in events],
            [e.payload for e in events], [e.producer_key_id for e in events],
            [e.idempotency_key for e in events], [e.created_at for e in events],
            [e.tenant_id for e in events],
        )
        return {row["id"]: row["deliveries"] for row in rows}

    async def event_by_idempotency_key(
        self, producer_key_id: str, idempotency_key: str
    ) -> tuple[Event, int]:
        """The event a producer made with an idempotency key, and its delivery count."""
        first = _one(await _fetchrow(
            self.pool, QUERIES["event_by_idempotency_key"], producer_key_id, idempotency_key
        ))
        count: int = await _fetchval(self.pool, QUERIES["count_event_deliveries"], first["id"])
        return Event.model_validate(dict(first)), count

    async def get_event(
        self, id: str, producer_key_id: str | None, scope: Scope = EVERYTHING
    ) -> Event | None:
        """The event, if `scope` may see it: of its tenant, and (for a scope owning its
        subscriptions) delivered to one of them; a producer's own events only."""
        row = await _fetchrow(
            self.pool, QUERIES["get_event"], id, producer_key_id, scope.owner_key_id,
            scope.tenant_id,
        )
        return _model(Event, row)

    async def deliveries_of_event(self, event_id: str, scope: Scope = EVERYTHING
                                  ) -> list[Delivery]:
        rows = await _fetch(self.pool, QUERIES["deliveries_of_event"], event_id,
                            scope.owner_key_id, scope.tenant_id)
        return _models(Delivery, rows)

    async def send_test_event(
        self, id: str, payload: bytes, caller_key_id: str, subscription: Subscription,
        now: datetime,
    ) -> str:
        """Store a `webhook.test` event and its one delivery; the delivery's id."""
        async with _connection(self.pool) as connection, connection.transaction():
            await connection.execute(
                QUERIES["insert_event"], id, TEST_EVENT_TYPE, payload, caller_key_id, None, now,
                subscription.tenant_id,
            )
            row = _one(await connection.fetchrow(
                QUERIES["insert_test_delivery"], id, subscription.id, now, subscription.tenant_id
            ))
            delivery_id: str = row["id"]
            return delivery_id

    # Deliveries

    async def get_delivery(self, id: str, scope: Scope) -> Delivery | None:
        row = await _fetchrow(self.pool, QUERIES["get_delivery"], id, scope.owner_key_id,
                              scope.tenant_id)
        return _model(Delivery, row)

    async def list_deliveries(
        self, scope: Scope, filters: DeliveryFilters, limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[Delivery]:
        after_at, after_id = after if after else (None, None)
        rows = await _fetch(
            self.pool, QUERIES["list_deliveries"], scope.owner_key_id, filters.subscription_id,
            filters.event_id, filters.status, filters.event_type, filters.since, filters.until,
            after_at, after_id, limit, scope.tenant_id,
        )
        return _models(Delivery, rows)

    async def subscription_backlog(self, subscription_id: str) -> int:
        count: int = await _fetchval(self.pool, QUERIES["subscription_backlog"], subscription_id)
        return count

    async def request_redelivery(self, id: str, scope: Scope, now: datetime) -> bool:
        """Ask for one more attempt of a delivery; False if there is no such delivery."""
        row = await _fetchrow(self.pool, QUERIES["request_redelivery"], id, now,
                              scope.owner_key_id, scope.tenant_id)
        return row is not None

    async def redeliver_failed(
        self, subscription_id: str, since: datetime, until: datetime | None,
        event_type: str | None, now: datetime, rate_per_second: float, dry_run: bool,
    ) -> int:
        """Queue the failed deliveries that match, spaced to `rate_per_second`; how many
        match (dry run) or were queued."""
        row = _one(await _fetchrow(
            self.pool, QUERIES["redeliver_failed"], subscription_id, since, until, event_type, now,
            1.0 / rate_per_second, dry_run,
        ))
        count: int = row["matched"] if dry_run else row["queued"]
        return count

    async def rotate_secret(
        self, id: str, scope: Scope, secret: str, previous_expires_at: datetime,
        now: datetime,
    ) -> Subscription | None:
        row = await _fetchrow(
            self.pool, QUERIES["rotate_secret"], id, scope.owner_key_id, secret,
            previous_expires_at, now, scope.tenant_id,
        )
        return _model(Subscription, row)

    async def attempts_of_delivery(self, delivery_id: str) -> list[Attempt]:
        rows = await _fetch(self.pool, QUERIES["attempts_of_delivery"], delivery_id)
        return [Attempt.model_validate(_attempt_fields(row)) for row in rows]

    # The dispatcher's hot path

    async def claim_due(
        self, now: datetime, limit: int, lease_until: datetime, lease_token: str,
        room: Mapping[str, int], default_room: int,
    ) -> list[ClaimedDelivery]:
        """Lease up to `limit` due deliveries, fairly across subscriptions: at most
        `room[id]` more of each subscription named, `default_room` of any other."""
        rows = await _fetch(
            self.dispatch_pool, QUERIES["claim_due"], now, limit, lease_until, lease_token,
            list(room), default_room, list(room.values()),
        )
        return [ClaimedDelivery(**row) for row in rows]

    async def next_due_at(self, now: datetime) -> datetime | None:
        due: datetime | None = await _fetchval(self.pool, QUERIES["next_due_at"], now)
        return due

    async def record_attempts(self, records: Sequence[AttemptRecord], now: datetime
                              ) -> dict[str, str]:
        """Write the attempts; the subscriptions they disabled, with the reason."""
        rows = await _fetch(
            self.dispatch_pool, QUERIES["record_attempts"],
            records, now,
        )
        return {row["id"]: row["disable_reason"] for row in rows}

    # Statistics

    async def attempt_stats(self, scope: str, now: datetime, window: stats.Window,
                            interval: stats.Grain | None = None) -> list[stats.StatsRow]:
        """The rollup rows that stats.report reads at `now` for `window` per `interval`, of
        one subscription's or tenant's id, or of everything (stats.EVERYTHING)."""
        first_minute, first_hour = stats.oldest_periods(now, window, interval)
        async with _connection(self.pool) as connection:
            rows = await connection.fetch(QUERIES["attempt_stats"], scope, first_minute,
                                          first_hour)
            folds = {(scope, row["period_start"], row["fold"]): row["fold"] for row in rows
                     if row["grain"] == "fold"}
            folded = await self._folded_minutes(connection, scope, folds, first_minute)
        return [stats.StatsRow(row["grain"], row["period_start"], stats.Counts(
            row["succeeded"], row["retried"], row["failed"], tuple(row["latency"])))
            for row in rows if row["grain"] != "fold"] + folded

    async def _folded_minutes(self, connection: PoolConnectionProxy, scope: str,
                              folds: dict[FoldKey, int], since: datetime
                              ) -> list[stats.StatsRow]:
        """The minute rows from `since` on of the folds of `scope` (by key, each to its
        fold number); a fold is read and unfolded once, then remembered, the most recently
        read kept."""
        unfolded = {key: self._folded_hours.pop(key) for key in folds
                    if key in self._folded_hours}
        unread = [fold for key, fold in folds.items() if key not in unfolded]
        if unread:
            for row in await connection.fetch(QUERIES["attempt_stats_folded"], scope, unread):
                unfolded[scope, row["hour_start"], row["fold"]] = stats.unfold(
                    row["hour_start"], row["minutes"], row["succeeded"], row["retried"],
                    row["failed"], row["latency_ends"], row["latency"])
        self._folded_hours.update(unfolded)
        while len(self._folded_hours) > FOLDED_HOURS_KEPT:
            del self._folded_hours[next(iter(self._folded_hours))]
        return [minute for hour in unfolded.values() for minute in hour
                if minute.period_start >= since]

    async def delete_old_attempt_stats(self, grain: stats.Grain, cutoff: datetime,
                                       batch: int) -> int:
        status = await _execute(self.pool, QUERIES["delete_old_attempt_stats"], grain, cutoff,
                                batch)
        return int(status.split()[-1])

    async def delete_old_folded_attempt_stats(self, cutoff: datetime, batch: int) -> int:
        status = await _execute(self.pool, QUERIES["delete_old_folded_attempt_stats"], cutoff,
                                batch)
        return int(status.split()[-1])

    async def next_loose_minute(self, since: datetime) -> datetime | None:
        """The first minute from `since` on with unfolded minute rows, if any."""
        minute: datetime | None = await _fetchval(self.pool, QUERIES["next_loose_minute"],
                                                  since)
        return minute

    async def fold_attempt_stats(self, hour_start: datetime) -> int:
        """Fold the minute rows of the hour beginning at `hour_start`; how many it folded."""
        folded: int = await _fetchval(self.pool, QUERIES["fold_attempt_stats"], hour_start)
        return folded

    # Maintenance

    async def ensure_attempts_partitions(self, first: date, last: date) -> None:
        await _execute(self.pool, QUERIES["ensure_attempts_partitions"], first, last)

    async def drop_attempts_partitions(self, cutoff: datetime) -> int:
        dropped: int = await _fetchval(self.pool, QUERIES["drop_attempts_partitions"], cutoff)
        return dropped

    async def delete_old_default_attempts(self, cutoff: datetime, batch: int) -> int:
        status = await _execute(self.pool, QUERIES["delete_old_default_attempts"], cutoff, batch)
        return int(status.split()[-1])

    async def delete_old_events(self, cutoff: datetime, batch: int) -> int:
        deleted: int = await _fetchval(self.pool, QUERIES["delete_old_events"],
                                       first_id_at("evt", cutoff), batch)
        return deleted

    async def disable_failing_subscriptions(
        self, now: datetime, failing_since: datetime, reason: str
    ) -> list[str]:
        rows = await _fetch(
            self.pool, QUERIES["disable_failing_subscriptions"], now, failing_since, reason
        )
        return [row["id"] for row in rows]

    async def delivery_gauges(self, now: datetime, scope: Scope = EVERYTHING) -> DeliveryGauges:
        """The backlog of the deliveries `scope` reaches, as of `now`."""
        row = _one(await _fetchrow(self.pool, QUERIES["delivery_gauges"], now,
                                   scope.owner_key_id, scope.tenant_id))
        return DeliveryGauges(row["pending"], row["due"], float(row["oldest_due_seconds"]))

    async def subscriptions_needing_attention(self, scope: Scope, limit: int
                                              ) -> list[Subscription]:
        """Failing, disabled and paused subscriptions `scope` reaches, in that order."""
        rows = await _fetch(self.pool, QUERIES["subscriptions_needing_attention"],
                            scope.owner_key_id, scope.tenant_id, limit)
        return _models(Subscription, rows)

    async def subscriptions_by_status(self) -> dict[str, int]:
        rows = await _fetch(self.pool, QUERIES["subscriptions_by_status"])
        return {row["status"]: row["count"] for row in rows}

    async def largest_backlogs(self, limit: int) -> dict[str, int]:
        rows = await _fetch(self.pool, QUERIES["largest_backlogs"], limit)
        return {row["subscription_id"]: row["backlog"] for row in rows}

    async def forget_expired_sends(self, now: datetime) -> None:
        await _execute(self.pool, QUERIES["forget_expired_sends"], now)

    async def release_leases(self, leases: Mapping[str, str], now: datetime) -> None:
        """Hand back deliveries not sent: `leases` maps each delivery's id to its lease."""
        await _execute(self.pool, QUERIES["release_leases"], list(leases), now,
                       list(leases.values()))


# An AttemptRecord as the composite value asyncpg sends, its fields in the type's order.
def _attempt_fields(row: asyncpg.Record) -> dict[str, Any]:
    fields = dict(row)
    if isinstance(fields["response_headers"], str):
        fields["response_headers"] = json.loads(fields["response_headers"])
    return fields


async def _fetch(pool: asyncpg.Pool, query: str, *args: Any) -> list[asyncpg.Record]:
    async with _connection(pool) as connection:
        rows: list[asyncpg.Record] = await connection.fetch(query, *args)
        return rows


async def _fetchrow(pool: asyncpg.Pool, query: str, *args: Any) -> asyncpg.Record | None:
    async with _connection(pool) as connection:
        row: asyncpg.Record | None = await connection.fetchrow(query, *args)
        return row


async def _fetchval(pool: asyncpg.Pool, query: str, *args: Any) -> Any:
    async with _connection(pool) as connection:
        return await connection.fetchval(query, *args)


async def _execute(pool: asyncpg.Pool, query: str, *args: Any) -> str:
    async with _connection(pool) as connection:
        status: str = await connection.execute(query, *args)
        return status


@contextlib.asynccontextmanager
async def _connection(pool: asyncpg.Pool) -> AsyncIterator[PoolConnectionProxy]:
    """A connection of `pool`, thrown away instead of given back if it failed in a way
    that means it cannot be used again (DATABASE_DOWN): the next caller gets a fresh one."""
    async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as connection:
        try:
            yield connection
        except DATABASE_DOWN:
            connection.terminate()
            raise
