"""Portal links: one-time links that open a tenant's portal (the dashboard, narrowed to that
tenant) without a key, for a producer to hand its own customers. Who may make one, how it
is made, and its address; the API's route and the dashboard's form both make them here."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from aiohttp import web

from api.auth import Role, hash_key, scope
from api.errors import ApiError, not_found
from api.state import SETTINGS
from hookpost.store import ApiKey, PortalLink, Store

# Where a link opens the portal: the dashboard's route of that name, then the token.
PORTAL_PATH = "/ui/portal/"

UNBOUND_PRODUCER = ("a producer key bound to no tenant opens no tenant's portal: the portal "
                    "reads and changes a tenant's subscriptions and deliveries, which such a "
                    "key cannot; use an admin key, or a producer key bound to the tenant")


def portal_refusal(caller: ApiKey, tenant_id: str) -> ApiError | None:
    """Why `caller` may not make a link to the portal of tenant `tenant_id`, or None if it
    may: an admin key may for every tenant, a producer key bound to a tenant for that one.
    Another tenant answers 404, as one that does not exist does (see tenant_to_write); a
    producer bound to none is refused (403), since a link grants more than it has itself."""
    if caller.role == Role.ADMIN:
        return None
    reach = scope(caller).tenant_id
    if reach is not None and reach != tenant_id:
        return not_found("tenant")
    if caller.role != Role.PRODUCER or reach is None:
        return ApiError(403, "forbidden", UNBOUND_PRODUCER)
    return None


async def make_portal_link(store: Store, maker_key_id: str, tenant_id: str,
                           lifetime: timedelta, now: datetime) -> tuple[str, PortalLink]:
    """A new link's token (shown once; only its hash is stored) and its record."""
    token = secrets.token_urlsafe(32)
    link = await store.insert_portal_link(hash_key(token), tenant_id, maker_key_id, now,
                                          now + lifetime)
    return token, link


def portal_url(request: web.Request, token: str) -> str:
    """The address a link's token opens: under HOOKPOST_PUBLIC_URL if set, else under the
    address the request came to."""
    base = request.config_dict[SETTINGS].public_url or str(request.url.origin())
    return f"{base}{PORTAL_PATH}{token}"
