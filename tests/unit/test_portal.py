"""Who may make a portal link, and whom a portal session acts as: pure decisions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.auth import Role, check_role, scope
from api.errors import ApiError
from api.portal import portal_refusal
from hookpost.store import ApiKey, Scope, portal_principal

AT = datetime(2026, 1, 1, tzinfo=UTC)


def key(role: Role, tenant_id: str | None = None) -> ApiKey:
    return ApiKey(id="key_1", name="k", role=role.value, tenant_id=tenant_id, created_at=AT)


@pytest.mark.parametrize(
    ("caller", "status"),
    [
        (key(Role.ADMIN), None),
        (key(Role.PRODUCER, "ten_a"), None),
        (key(Role.PRODUCER, "ten_b"), 404),  # another tenant is not there for it
        (key(Role.PRODUCER), 403),  # a link would give it more than it has
        (key(Role.SUBSCRIBER, "ten_a"), 403),
        (key(Role.SUBSCRIBER, "ten_b"), 404),
    ],
)
def test_who_may_make_a_link_to_the_portal_of_ten_a(caller: ApiKey, status: int | None) -> None:
    refusal = portal_refusal(caller, "ten_a")
    assert (None if refusal is None else refusal.status) == status


def test_a_portal_session_acts_as_a_subscriber_bound_to_the_links_tenant() -> None:
    principal = portal_principal("prt_1", "ten_a", AT)
    assert principal.id == "prt_1" and principal.role == Role.SUBSCRIBER
    assert scope(principal) == Scope(tenant_id="ten_a")
    assert check_role(principal, Role.SUBSCRIBER, Role.ADMIN) is principal
    with pytest.raises(ApiError) as refused:
        check_role(principal, Role.ADMIN)
    assert refused.value.status == 403
    assert portal_refusal(principal, "ten_a") is not None
