"""Request and response bodies of the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

EVENT_TYPE_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
# '*', an exact type, or 'prefix.*' matching every type that starts with 'prefix.'.
EVENT_FILTER_PATTERN = r"^(\*|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\.\*)?)$"

EventType = Annotated[str, StringConstraints(pattern=EVENT_TYPE_PATTERN, max_length=255)]
EventFilter = Annotated[str, StringConstraints(pattern=EVENT_FILTER_PATTERN, max_length=255)]
# Postgres text cannot hold NUL, so no stored string may contain one.
_NO_NUL = r"^[^\x00]*$"
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=_NO_NUL)]
Description = Annotated[str, StringConstraints(max_length=1000, pattern=_NO_NUL)]
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255,
                                                  pattern=_NO_NUL)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SubscriptionCreate(Request):
    url: Url
    event_types: Annotated[list[EventFilter], Field(min_length=1, max_length=100)]
    description: Description = ""
    status: Literal["active", "paused"] = "active"


class SubscriptionUpdate(Request):
    """Only the fields sent change; a field cannot be set to null."""

    url: Url | None = None
    event_types: Annotated[list[EventFilter], Field(min_length=1, max_length=100)] | None = None
    description: Description | None = None
    status: Literal["active", "paused"] | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> SubscriptionUpdate:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null; leave it out to keep it")
        return self


class EventCreate(Request):
    type: EventType
    data: dict[str, Any]
    idempotency_key: IdempotencyKey | None = None


class Subscription(BaseModel):
    id: str
    url: str
    event_types: list[str]
    description: str
    status: str
    created_at: datetime
    updated_at: datetime


class SubscriptionCreated(Subscription):
    secret: str = Field(description="The signing secret (whsec_...); shown only here.")


class SubscriptionPage(BaseModel):
    data: list[Subscription]
    next_cursor: str | None


class EventAccepted(BaseModel):
    id: str
    type: str
    created_at: datetime
    deliveries: int = Field(description="How many subscriptions the event fanned out to.")


class DeliverySummary(BaseModel):
    id: str
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


class Event(BaseModel):
    id: str
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
    error_kind: Literal["timeout", "connect", "dns", "tls", "http"] | None
    error_message: str | None
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
