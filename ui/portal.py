"""The tenant portal's way in: a portal link opens a session narrowed to its tenant, and from
there the dashboard's own pages serve it as they serve a subscriber key bound to that
tenant (see hookpost.store.portal_principal): no page of its own, no check of its own."""

from __future__ import annotations

import re

import aiohttp_jinja2
from aiohttp import web

from api.state import STORE
from ui.sessions import open_portal

# Where the portal starts: the dashboard's first page, as the session's rights show it.
PORTAL_HOME = "/ui/"
# What secrets.token_urlsafe makes; anything else is no link's token.
_LINK_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


async def portal_link(request: web.Request) -> web.Response:
    """Open the portal with a link, once. The answer is a page that goes on into the portal
    by itself (a meta refresh, no script), not a redirect: a link followed from another
    site's page is a cross-site navigation, and through a redirect after it the browser
    does not send the SameSite=Strict cookie just set; a page's own navigation is
    same-site, so it does."""
    token = request.match_info["token"]
    response = web.Response(content_type="text/html", charset="utf-8")
    link = None
    if _LINK_TOKEN.match(token):
        link = await open_portal(request, response, token)
    if link is None:
        # 410, not 404: the address was right once and will not work again, for anyone;
        # whether it never was a link is not worth a second lookup to tell apart.
        return aiohttp_jinja2.render_template("portal_closed.html", request, {}, status=410)
    tenant = await request.config_dict[STORE].resolve_tenant(link.tenant_id)
    response.text = aiohttp_jinja2.render_string(
        "portal_opening.html", request,
        {"home": PORTAL_HOME, "tenant_name": link.tenant_id if tenant is None else tenant.name})
    return response


ROUTES = [
    web.get("/portal/{token}", portal_link),
]
