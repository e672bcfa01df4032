"""Who may write to the system tenant, where operational events go, and that no one posts
an operational event: pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from api.auth import Role
from api.models import EventCreate
from api.tenancy import may_write_to
from hookpost.store import DEFAULT_TENANT, SYSTEM_TENANT, ApiKey


def key(role: Role, tenant_id: str | None = None) -> ApiKey:
    return ApiKey(id="key_1", name="k", role=role.value, tenant_id=tenant_id,
                  created_at=datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("caller", "tenant_id", "allowed"),
    [
        (key(Role.ADMIN), SYSTEM_TENANT, True),
        (key(Role.ADMIN), "ten_a", True),
        (key(Role.PRODUCER), SYSTEM_TENANT, False),  # reaches every tenant, but not this one
        (key(Role.PRODUCER), "ten_a", True),
        (key(Role.SUBSCRIBER), SYSTEM_TENANT, False),  # the default tenant's, its own only
        (key(Role.SUBSCRIBER), DEFAULT_TENANT, True),
        (key(Role.SUBSCRIBER, "ten_a"), SYSTEM_TENANT, False),
        (key(Role.PRODUCER, "ten_a"), SYSTEM_TENANT, False),
        (key(Role.SUBSCRIBER, SYSTEM_TENANT), SYSTEM_TENANT, True),  # an admin bound it there
        (key(Role.SUBSCRIBER, SYSTEM_TENANT), "ten_a", False),
    ],
)
def test_who_writes_to_which_tenant(caller: ApiKey, tenant_id: str, allowed: bool) -> None:
    assert may_write_to(caller, tenant_id) is allowed


@pytest.mark.parametrize(
    ("type", "accepted"),
    [
        ("order.created", True),
        ("hookpost", True),  # no dot: not of the operational events' namespace
        ("hookposted.x", True),
        ("webhook.test", True),
        ("hookpost.subscription.disabled", False),
        ("hookpost.delivery.exhausted", False),
        ("hookpost.anything.else", False),
    ],
)
def test_operational_event_types_cannot_be_posted(type: str, accepted: bool) -> None:
    body = {"type": type, "data": {}}
    if accepted:
        assert EventCreate.model_validate(body).type == type
        return
    with pytest.raises(ValidationError) as refused:
        EventCreate.model_validate(body)
    [error] = refused.value.errors()
    assert error["loc"] == ("type",)
    assert "hookpost's own operational events" in error["msg"]
