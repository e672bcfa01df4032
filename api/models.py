"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from dispatcher import policy
from hookpost import stats
from hookpost.settings import format_duration

EVENT_TYPE_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
# '*', an exact type, or 'prefix.*' matching every type that starts with 'prefix.'.
EVENT_FILTER_PATTERN = r"^(\*|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\.\*)?)$"

EventType = Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN, max_length=255)]
EventFilter = Annotated[str, StringConstraints(pattern=EVENT_FILTER_PATTERN, max_length=255)]
# Postgres text cannot hold NUL, so no stored string may contain one.
_NO_NUL = r"^[^\x00]*$"
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=_NO_NUL)]
Description = Annotated[str, StringConstraints(max_length=1000, pattern=_NO_NUL)]
IDEMPOTENCY_KEY_LIMIT = 255
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=IDEMPOTENCY_KEY_LIMIT,
                                                  pattern=_NO_NUL)]
Id = Annotated[str, StringConstraints(pattern=_NO_NUL)]
TenantName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=_NO_NUL)]
KeyName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=_NO_NUL)]
KeyRole = Literal["admin", "producer", "subscriber"]


def _not_a_tenant_id(uid: str) -> str:
    if uid.startswith("ten_"):
        raise ValueError("a uid cannot start with ten_, as hookpost's tenant ids do")
    return uid


# A producer's own id for a customer. Not like one of hookpost's tenant ids, which it would
# shadow wherever a tenant is named.
TenantUid = Annotated[str, StringConstraints(
    min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:-]+$"),
    AfterValidator(_not_a_tenant_id)]
TENANT_FIELD = Field(
    default=None, description="The tenant, by id or uid; the tenant `default` if left out.")


def _not_a_number(value: Any) -> Any:
    # Pydantic reads query text such as "2026" as seconds after 1970, not as a time in 2026.
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("give a date and time such as 2026-01-01T00:00:00Z, not a number")
    return value


def _in_utc(value: datetime) -> datetime:
    # Postgres takes times in UTC; 0001-01-01T00:00+05:00 has no UTC time Python can hold.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]
# A before-validator would make a strict body read its text as Python, so only the query
# (validated from text in lax mode anyway) refuses numbers.
QueryInstant = Annotated[Instant, BeforeValidator(_not_a_number)]


def _absent_not_null(schema: dict[str, Any]) -> None:
    """Document optional fields as their type alone: they are left out, never sent as null."""
    for field in schema["properties"].values():
        variants = [variant for variant in field.get("anyOf", []) if variant != {"type": "null"}]
        if len(variants) == 1:
            del field["anyOf"]
            field.update(variants[0])
        if field.get("default", ...) is None:
            del field["default"]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


MaxConcurrency = Annotated[int, Field(
    ge=1, le=1000,
    description="The most attempts out to the endpoint at once, across every dispatcher; "
                "none by default.",
)]
RateLimit = Annotated[float, Field(
    gt=0, le=10000,
    description="The most attempts started per second, across every dispatcher; none by "
                "default.",
)]
# The limits a receiver asks for: in a PATCH, null removes one.
LIMITS = ("max_concurrency", "rate_limit")
SignatureScheme = Annotated[Literal["v1", "v1a", "both"], Field(
    description="How attempts are signed in webhook-signature: v1 (HMAC-SHA256 with the "
                "secret), v1a (Ed25519; receivers verify with public_key), or both, while "
                "receivers move from one to the other.",
)]


def _header_name(name: str) -> str:
    problem = policy.header_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return name


def _header_value(value: str) -> str:
    problem = policy.header_value_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _duration(value: str | int) -> str:
    return format_duration(policy.policy_duration(value))


def _statuses(value: str | int) -> str:
    first, last = policy.status_range(str(value))
    if first == last:
        return str(first)
    return f"{first // 100}xx" if first % 100 == 0 and last == first + 99 else f"{first}-{last}"


def _named_once(headers: dict[str, str]) -> dict[str, str]:
    if len({name.lower() for name in headers}) < len(headers):
        raise ValueError("a header is named twice (header names are case-insensitive)")
    return headers


def _schedule(waits: list[str | int]) -> list[str | int]:
    problem = policy.schedule_problem([policy.policy_duration(wait) for wait in waits])
    if problem is not None:
        raise ValueError(problem)
    return waits


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, StringConstraints(max_length=policy.HEADER_VALUE_LIMIT),
                        AfterValidator(_header_value)]
# Given as text (5s, 1m, 1h, 1d, 1500ms) or whole seconds; answered as text.
PolicyDuration = Annotated[str | int, AfterValidator(_duration)]


class StatusRule(Request):
    model_config = ConfigDict(serialize_by_alias=True)

    statuses: Annotated[str | int, AfterValidator(_statuses)] = Field(
        description="A code (409), a range (500-599) or a class (4xx), of 100 to 599.")
    outcome: Literal["succeeded", "retry", "failed"] = Field(
        description="succeeded: delivered; failed: give up at once; retry: on the schedule.")
    within: PolicyDuration | None = Field(
        default=None, alias="for",
        description="The rule holds only this long after the event was made (e.g. 1h); "
                    "after that the next rule that covers the status, or the default, "
                    "decides. Null: always.")


class Policy(Request):
    """How a subscription's deliveries are sent and judged; a field left out keeps the
    default."""

    headers: Annotated[dict[HeaderName, HeaderValue], AfterValidator(_named_once)] = Field(
        default={}, max_length=policy.MAX_HEADERS,
        description="Headers added to every request, at most 20; names hookpost sets or "
                    "that belong to the connection (hop-by-hop, host, content-*, "
                    "user-agent, expect, webhook-*) are refused.")
    retry_schedule: Annotated[list[PolicyDuration], AfterValidator(_schedule)] | None = Field(
        default=None, max_length=policy.MAX_WAITS,
        description="The waits after attempts 1, 2, ...: at most 19 (20 attempts), each "
                    "at least 1s, 7d in all; [] makes one attempt only. Null: the "
                    "deployment's schedule (HOOKPOST_RETRY_SCHEDULE).")
    status_rules: list[StatusRule] = Field(
        default=[], max_length=policy.MAX_STATUS_RULES,
        description="Checked in order before the default (2xx succeeds, 4xx other than 429 "
                    "gives up, the rest is retried): the first that covers a status decides. "
                    "At most 20.")

    def stored(self) -> str | None:
        """The policy as the subscription keeps it: JSON text, None when all is default."""
        if self == Policy():
            return None
        return self.model_dump_json()


POLICY_FIELD = Field(default=None, description="The delivery policy; left out: the defaults.")


class SubscriptionCreate(Request):
    tenant_id: Id | None = TENANT_FIELD
    url: Url
    event_types: Annotated[list[EventFilter], Field(min_length=1, max_length=100)]
    description: Description = ""
    status: Literal["active", "paused"] = "active"
    max_concurrency: MaxConcurrency | None = None
    rate_limit: RateLimit | None = None
    signature_scheme: SignatureScheme = "v1"
    policy: Policy | None = POLICY_FIELD


class SubscriptionUpdate(Request):
    """Only the fields sent change; a field cannot be set to null, but a limit can (it is
    then removed) and so can the policy (it is then the default). A policy sent replaces
    the whole policy."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)

    url: Url | None = None
    event_types: Annotated[list[EventFilter], Field(min_length=1, max_length=100)] | None = None
    description: Description | None = None
    status: Literal["active", "paused"] | None = None
    max_concurrency: MaxConcurrency | None = None
    rate_limit: RateLimit | None = None
    signature_scheme: SignatureScheme | None = None
    policy: Policy | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> SubscriptionUpdate:
        for name in self.model_fields_set - {*LIMITS, "policy"}:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null; leave it out to keep it")
        return self


OPERATIONAL_PREFIX = "hookpost."  # the operational events', which only hookpost makes


def _not_operational(type: str) -> str:
    if type.startswith(OPERATIONAL_PREFIX):
        raise ValueError("types beginning with hookpost. are hookpost's own operational "
                         "events; they cannot be posted")
    return type


PostedEventType = Annotated[EventType, AfterValidator(_not_operational), Field(
    description="Types beginning with `hookpost.` are hookpost's operational events, "
                "made by hookpost alone.")]


class EventCreate(Request):
    tenant_id: Id | None = TENANT_FIELD
    type: PostedEventType
    data: dict[str, Any]
    idempotency_key: IdempotencyKey | None = None


class DeliveryQuery(BaseModel):
    """The filters of GET /v1/deliveries, read from the query string."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_absent_not_null)

    subscription_id: Id | None = None
    event_id: Id | None = None
    status: Literal["pending", "succeeded", "failed"] | None = None
    event_type: EventType | None = None
    since: QueryInstant | None = Field(default=None, description="Created at or after.")
    until: QueryInstant | None = Field(default=None, description="Created before.")
    limit: int = Field(default=50, ge=1, le=250)
    cursor: str | None = Field(default=None, description="next_cursor of the previous page.")


class PageQuery(BaseModel):
    """Paging of a list, read from the query string."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_absent_not_null)

    limit: int = Field(default=50, ge=1, le=250)
    cursor: str | None = Field(default=None, description="next_cursor of the previous page.")


class RedeliverFailed(Request):
    since: Instant = Field(description="Failed deliveries created at or after this.")
    until: Instant | None = Field(default=None, description="...and before this.")
    event_type: EventType | None = None
    dry_run: bool = Field(default=False, description="Only count what would be queued.")
    # At least one every 1000 s: a slower rate spaces them further apart than Postgres can count.
    rate_per_second: float = Field(
        default=10, ge=0.001, le=1000, description="The most redeliveries sent per second."
    )


class RotateSecret(Request):
    grace_seconds: int = Field(
        default=86400, ge=0, le=7 * 86400,
        description="How long the old secret keeps signing beside the new one.",
    )


class Subscription(BaseModel):
    id: str
    tenant_id: str
    url: str
    event_types: list[str]
    description: str
    status: Literal["active", "paused", "disabled"]
    disabled_reason: str | None = Field(
        description="Why hookpost disabled it; PATCH the status to enable it again."
    )
    max_concurrency: int | None
    rate_limit: float | None
    signature_scheme: SignatureScheme
    public_key: str | None = Field(
        description="The Ed25519 public key (whpk_...) that verifies v1a signatures; null "
                    "for a subscription made before v1a until its scheme leaves v1."
    )
    policy: Annotated[Policy, BeforeValidator(lambda stored: stored or {})]
    created_at: datetime
    updated_at: datetime


class SubscriptionHealth(BaseModel):
    last_success_at: datetime | None
    last_failure_at: datetime | None
    failing_since: datetime | None = Field(
        description="When the current run of failed attempts began; null while healthy."
    )
    pending: int = Field(description="Deliveries still to be sent.")


class SubscriptionDetail(Subscription):
    health: SubscriptionHealth


class SecretRotated(BaseModel):
    secret: str = Field(description="The new signing secret (whsec_...).")
    previous_secret_expires_at: datetime = Field(
        description="Until then every attempt is signed with the old secret too."
    )


class TestSent(BaseModel):
    event_id: str
    delivery_id: str


class RedeliveryCount(BaseModel):
    count: int = Field(description="Deliveries queued (or, in a dry run, that would be).")
    dry_run: bool


class SubscriptionCreated(Subscription):
    secret: str = Field(description="The signing secret (whsec_...); shown only here.")


class SubscriptionPage(BaseModel):
    data: list[Subscription]
    next_cursor: str | None


class EventAccepted(BaseModel):
    id: str
    tenant_id: str
    type: str
    created_at: datetime
    deliveries: int = Field(description="How many subscriptions the event fanned out to.")


class DeliverySummary(BaseModel):
    id: str
    tenant_id: str
    event_id: str
    event_type: str
    subscription_id: str
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    next_attempt_at: datetime | None
    last_response_status: int | None
    last_error_kind: str | None
    created_at: datetime
    updated_at: datetime


class DeliveryPage(BaseModel):
    data: list[DeliverySummary]
    next_cursor: str | None


class Event(BaseModel):
    id: str
    tenant_id: str
    type: str
    data: dict[str, Any]
    created_at: datetime
    deliveries: list[DeliverySummary]


class Attempt(BaseModel):
    id: str
    attempt_number: int
    trigger: Literal["scheduled", "manual", "test"]
    started_at: datetime
    duration_ms: int
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: str | None
    error_kind: Literal[
        "timeout", "connect", "dns", "refused", "tls", "http", "cut_off", "unknown", "proxy"
    ] | None = Field(description=(
        "Why no usable answer came: timeout, connect, dns (the host does not resolve), "
        "refused (it resolves to an address hookpost may not send to), tls, http (not 2xx, "
        "or not HTTP), cut_off (the dispatcher stopped during the send), unknown (a "
        "dispatcher died holding the delivery; the receiver may have got it) or proxy (the "
        "egress proxy could not be reached or refused the tunnel)."))
    error_message: str | None
    resent: bool = Field(description=(
        "Sent twice: the kept-alive connection closed without an answer, so the request "
        "went again on a fresh one; the receiver may have got both."))
    outcome: Literal["succeeded", "retry", "failed"]


class Delivery(DeliverySummary):
    attempts: list[Attempt]


class ErrorDetail(BaseModel):
    loc: list[str]
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail]


class Error(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok", "failing"]
    dispatcher_alive: bool | None = Field(
        description="The dispatcher of this process can go on; null where none runs."
    )


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    database: bool = Field(description="The database answers.")
    schema_current: bool = Field(description="Its schema is the one this code applies.")
    dispatcher_ticking: bool | None = Field(
        description="The dispatcher loop came round lately; null where none runs."
    )


# Tenants


class TenantCreate(Request):
    name: TenantName
    uid: TenantUid | None = None


class TenantUpdate(Request):
    """Only the fields sent change; a uid of null removes it."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)

    name: TenantName | None = None
    uid: TenantUid | None = None

    @model_validator(mode="after")
    def _no_null_name(self) -> TenantUpdate:
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be null; leave it out to keep it")
        return self


class Tenant(BaseModel):
    id: str
    name: str
    uid: str | None
    created_at: datetime
    updated_at: datetime


class TenantDetail(Tenant):
    subscriptions: dict[str, int] = Field(
        description="How many subscriptions it has, by status (active, paused, disabled).")
    pending: int = Field(description="Deliveries still to be sent to its subscriptions.")


class TenantPage(BaseModel):
    data: list[Tenant]
    next_cursor: str | None


PORTAL_LINK_SECONDS = (60, 3600)  # the shortest and longest life a portal link may have


class PortalLinkCreate(Request):
    expires_in_seconds: int = Field(
        default=600, ge=PORTAL_LINK_SECONDS[0], le=PORTAL_LINK_SECONDS[1],
        description="How long the link opens the portal, if it is not used before.",
    )


class PortalLinkCreated(BaseModel):
    url: str = Field(description="Opens the tenant's portal once, without a key; shown only "
                                 "in this answer.")
    expires_at: datetime


# API keys


class KeyCreate(Request):
    role: KeyRole
    name: KeyName
    tenant_id: Id | None = Field(
        default=None,
        description="The tenant, by id or uid, whose rows alone the key reaches; none for an "
                    "admin key. Left out: the key is bound to no tenant.",
    )


class ApiKeyBase(BaseModel):
    id: str
    name: str
    role: KeyRole
    tenant_id: str | None = Field(
        description="The tenant whose rows alone it reaches; null: bound to none.")
    created_at: datetime


class ApiKeyCreated(ApiKeyBase):
    key: str = Field(description="The key itself (hp_...), to send as a bearer token; shown "
                                 "only here, as hookpost keeps only its hash.")


class ApiKey(ApiKeyBase):
    revoked_at: datetime | None = Field(description="When it was revoked; null while valid.")


class ApiKeyPage(BaseModel):
    data: list[ApiKey]
    next_cursor: str | None


# Statistics


class StatsQuery(BaseModel):
    """Which chart series a statistics answer carries, read from the query string."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_absent_not_null)

    window: stats.Window = Field(default="day", description="The time the series covers, "
                                 "up to now: the last hour, day or week.")
    interval: stats.Grain | None = Field(
        default=None, description="One point per minute or per hour; by default per minute "
        "over an hour, per hour over a day or a week. Per minute covers at most a day.")

    @model_validator(mode="after")
    def _drawable(self) -> StatsQuery:
        problem = stats.series_problem(self.window, self.series_interval)
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def series_interval(self) -> stats.Grain:
        return self.interval or stats.default_interval(self.window)


class LatencyPercentiles(BaseModel):
    """Attempt durations in ms, estimated from buckets about 1.4 times apart; null
    without attempts."""

    p50: float | None
    p95: float | None
    p99: float | None


class StatsSummary(BaseModel):
    attempts: int
    succeeded: int
    retried: int = Field(description="Attempts that failed and are to be retried.")
    failed: int = Field(description="Attempts that failed for good.")
    success_rate: float | None = Field(
        description="The share of attempts that succeeded, 0 to 1; null without attempts.")
    latency_ms: LatencyPercentiles


class StatsPoint(StatsSummary):
    start: datetime = Field(description="The period begins here and lasts one interval.")


class StatsTotals(BaseModel):
    hour: StatsSummary = Field(description="The last 60 minutes, this one so far.")
    day: StatsSummary = Field(description="The last 24 hours, this one so far.")
    week: StatsSummary = Field(description="The last 168 hours, this one so far.")


class StatsSeries(BaseModel):
    window: stats.Window
    interval: stats.Grain
    points: list[StatsPoint] = Field(
        description="Every period of the window, oldest first, the current one last; "
                    "periods without attempts are there with zero counts.")


class Stats(BaseModel):
    scope: str = Field(description="The subscription's id, the tenant's id, or * for every "
                                   "attempt.")
    as_of: datetime
    totals: StatsTotals
    series: StatsSeries
