"""API keys: how they are made, stored (hashed) and checked."""

from __future__ import annotations

import hashlib
import secrets
import time
from enum import StrEnum

from aiohttp import web

from api.errors import ApiError
from api.headers import read_header
from hookpost.store import DEFAULT_TENANT, EVERYTHING, ApiKey, Scope, Store, TenantGone


class Role(StrEnum):
    ADMIN = "admin"
    PRODUCER = "producer"
    SUBSCRIBER = "subscriber"


def new_key(role: Role) -> str:
    """A fresh API key; only its hash is ever stored."""
    return f"hp_{role.value[:3]}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


ADMIN_KEY_UNBOUND = ("an admin key cannot be bound to a tenant: it manages every tenant, "
                     "their keys included; leave the tenant out")
LAST_ADMIN_KEY = ("the key is the last valid admin key: without it no one could manage keys "
                  "or tenants; create another admin key first")


def may_be_bound(role: Role) -> bool:
    """Whether a key of `role` may be bound to one tenant. Not an admin key: it makes keys
    and tenants, so bound to one tenant it could still make itself a key for any other."""
    return role != Role.ADMIN


class AdminKeyBound(ValueError):
    """An admin key was to be bound to a tenant (see may_be_bound)."""


async def tenant_to_bind(store: Store, role: Role, named: str | None) -> str | None:
    """The id of the tenant (`named` by id or uid) a new key of `role` is bound to, if any;
    AdminKeyBound or TenantGone if it cannot be."""
    if named is None:
        return None
    if not may_be_bound(role):
        raise AdminKeyBound(ADMIN_KEY_UNBOUND)
    tenant = await store.resolve_tenant(named)
    if tenant is None:
        raise TenantGone(named)
    return tenant.id


async def create_key(store: Store, role: Role, name: str, tenant_id: str | None = None
                     ) -> tuple[str, ApiKey]:
    """A new key (shown once) and its record; `tenant_id` binds it to one tenant's rows."""
    key = new_key(role)
    return key, await store.insert_api_key(name, role.value, hash_key(key), tenant_id)


KEY_CACHE_SECONDS = 5.0


class KeyCache:
    """Valid keys seen lately, so a busy caller costs no lookup per request. A key revoked
    in the database is refused within KEY_CACHE_SECONDS."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._keys: dict[bytes, tuple[ApiKey, float]] = {}

    async def lookup(self, store: Store, key_hash: bytes) -> ApiKey | None:
        now = time.monotonic()
        cached = self._keys.get(key_hash)
        if cached is not None and cached[1] > now:
            return cached[0]
        api_key = await store.api_key_by_hash(key_hash)
        if api_key is not None:
            if len(self._keys) >= self._limit:
                self._keys.clear()
            self._keys[key_hash] = (api_key, now + KEY_CACHE_SECONDS)
        return api_key

    def forget(self, key_id: str) -> None:
        """Drop a key just revoked, so this process refuses it at once (others within
        KEY_CACHE_SECONDS)."""
        for key_hash, (api_key, _) in list(self._keys.items()):
            if api_key.id == key_id:
                del self._keys[key_hash]


KEY_CACHE = web.AppKey("key_cache", KeyCache)
# Ten times the length of any key hookpost makes.
AUTHORIZATION_LIMIT = 512


async def authorize(request: web.Request, store: Store, *roles: Role) -> ApiKey:
    """The caller's key, if it is valid and has one of `roles`; else 401 or 403 (400 if
    the Authorization header is not text hookpost can read)."""
    header = read_header(request, "Authorization", AUTHORIZATION_LIMIT) or ""
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer <key>'")
    api_key = await request.app[KEY_CACHE].lookup(store, hash_key(key.strip()))
    if api_key is None:
        raise ApiError(401, "unauthorized", "the API key is not valid")
    return check_role(api_key, *roles)


def check_role(api_key: ApiKey, *roles: Role) -> ApiKey:
    """`api_key` if it has one of `roles`, else 403: the one role check, for the API's
    callers and the dashboard's sessions alike."""
    if api_key.role not in roles:
        allowed = ", ".join(role.value for role in roles)
        raise ApiError(403, "forbidden", f"this needs a key with role {allowed}")
    return api_key


def scope(api_key: ApiKey) -> Scope:
    """The rows this key may see and change, and the tenants it may write to. An admin
    reaches every tenant, and so does a producer bound to none (which reads only the events
    it posted). A key bound to a tenant reaches that tenant alone. A subscriber key bound
    to none (every key made before tenants) reaches the subscriptions it made, in the
    default tenant."""
    if api_key.tenant_id is not None:
        return Scope(tenant_id=api_key.tenant_id)
    if api_key.role == Role.SUBSCRIBER:
        return Scope(tenant_id=DEFAULT_TENANT, owner_key_id=api_key.id)
    return EVERYTHING
