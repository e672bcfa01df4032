"""Which tenant a request writes to: the one it names (by id or uid), within what the
caller's key may reach. Tenants named by id are found through a short-lived cache, so that
posting events to one costs no lookup per request; a uid is looked up every time, since it
may move to another tenant."""

from __future__ import annotations

import time

from aiohttp import web

from api.auth import Role, scope
from api.errors import not_found
from hookpost.store import DEFAULT_TENANT, SYSTEM_TENANT, ApiKey, Store, Tenant

TENANT_CACHE_SECONDS = 5.0


class TenantCache:
    """Tenants found lately by their id, which never changes. A tenant deleted is seen
    within TENANT_CACHE_SECONDS (at once in the process that deleted it); its
    subscriptions are gone at once, so nothing is delivered for it meanwhile. A uid can
    move from one tenant to another, so a uid is never answered from here."""

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._tenants: dict[str, tuple[Tenant, float]] = {}

    async def resolve(self, store: Store, id_or_uid: str) -> Tenant | None:
        now = time.monotonic()
        cached = self._tenants.get(id_or_uid)
        if cached is not None and cached[1] > now:
            return cached[0]
        tenant = await store.resolve_tenant(id_or_uid)
        if tenant is not None and tenant.id == id_or_uid:
            if len(self._tenants) >= self._limit:
                self._tenants.clear()
            self._tenants[id_or_uid] = (tenant, now + TENANT_CACHE_SECONDS)
        return tenant

    def forget(self, tenant_id: str) -> None:
        self._tenants.pop(tenant_id, None)


TENANT_CACHE = web.AppKey("tenant_cache", TenantCache)


async def tenant_to_write(request: web.Request, store: Store, caller: ApiKey,
                          named: str | None) -> str:
    """The id of the tenant a new subscription or event goes to: the one `named`, else the
    caller's own, else the default. A tenant the caller's key may not reach answers 404,
    as one that does not exist does."""
    reach = scope(caller).tenant_id  # None: every tenant
    if named is None:
        return reach or DEFAULT_TENANT
    tenant = await request.app[TENANT_CACHE].resolve(store, named)
    if tenant is None or not may_write_to(caller, tenant.id):
        raise not_found("tenant")
    return tenant.id


def may_write_to(caller: ApiKey, tenant_id: str) -> bool:
    """Whether `caller` may make subscriptions and events in tenant `tenant_id`. The system
    tenant's events tell of every tenant's subscriptions, so of the keys that reach every
    tenant only admins reach it (not a producer bound to none)."""
    reach = scope(caller).tenant_id  # None: every tenant
    if reach is not None:
        return tenant_id == reach
    return tenant_id != SYSTEM_TENANT or caller.role == Role.ADMIN
