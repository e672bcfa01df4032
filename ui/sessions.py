"""Dashboard sessions: the cookie a sign-in (or a portal link) sets, the key it stands for,
and the CSRF tokens of forms. A session is a row of ui_sessions; the cookie holds a random
token whose hash names the row, as an API key's hash names its record."""

from __future__ import annotations

import secrets
from datetime import datetime

from aiohttp import web

from api.auth import hash_key
from api.errors import ApiError
from api.state import CLOCK, SETTINGS, STORE
from hookpost.store import ApiKey, PortalLink, UiSession

SESSION_COOKIE = "hookpost_session"
# The login form's own token (a double-submit cookie): there is no session to hold one yet.
LOGIN_COOKIE = "hookpost_login"
CSRF_FIELD = "csrf"
COOKIE_PATH = "/ui"
# A session token or a CSRF token is never longer than this; anything longer is not ours.
_TOKEN_LIMIT = 128


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
                max_age: int | None = None) -> None:
    # Strict: no other site's page can make the browser send it, not even by a link.
    response.set_cookie(name, value, path=COOKIE_PATH, httponly=True, samesite="Strict",
                        secure=request.secure, max_age=max_age)


def _cookie(request: web.Request, name: str) -> str | None:
    value = request.cookies.get(name)
    if not value or len(value) > _TOKEN_LIMIT:
        return None
    return value


async def start_session(request: web.Request, response: web.StreamResponse,
                        api_key: ApiKey) -> None:
    """Sign `api_key` in: a new session row, its cookie set on `response`."""
    settings = request.config_dict[SETTINGS]
    now: datetime = request.config_dict[CLOCK]()
    token = new_token()
    await request.config_dict[STORE].insert_ui_session(
        hash_key(token), api_key.id, new_token(), now, now + settings.ui_session_lifetime)
    lifetime = int(settings.ui_session_lifetime.total_seconds())
    _set_cookie(request, response, SESSION_COOKIE, token, max_age=lifetime)
    response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)


async def open_portal(request: web.Request, response: web.StreamResponse,
                      link_token: str) -> PortalLink | None:
    """Use the portal link `link_token` and start its portal session, its cookie set on
    `response` (in place of any session this browser had, which ends); None if the link
    opens no more."""
    settings = request.config_dict[SETTINGS]
    now: datetime = request.config_dict[CLOCK]()
    store = request.config_dict[STORE]
    token = new_token()
    link = await store.open_portal_link(
        hash_key(link_token), now, hash_key(token), new_token(),
        now + settings.portal_session_lifetime)
    if link is None:
        return None
    previous = _cookie(request, SESSION_COOKIE)
    if previous is not None:
        await store.delete_ui_session(hash_key(previous))
    lifetime = int(settings.portal_session_lifetime.total_seconds())
    _set_cookie(request, response, SESSION_COOKIE, token, max_age=lifetime)
    return link


async def current_session(request: web.Request) -> UiSession | None:
    """The caller's session, if its cookie names one that still works."""
    token = _cookie(request, SESSION_COOKIE)
    if token is None:
        return None
    return await request.config_dict[STORE].ui_session_by_hash(
        hash_key(token), request.config_dict[CLOCK]())


async def end_session(request: web.Request, response: web.StreamResponse) -> None:
    token = _cookie(request, SESSION_COOKIE)
    if token is not None:
        await request.config_dict[STORE].delete_ui_session(hash_key(token))
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)


def login_token(request: web.Request) -> str:
    """The token the login form carries: the one its cookie holds, else a new one."""
    return _cookie(request, LOGIN_COOKIE) or new_token()


def keep_login_token(request: web.Request, response: web.StreamResponse, token: str) -> None:
    """Set the login form's token in its cookie, for the POST to be checked against."""
    _set_cookie(request, response, LOGIN_COOKIE, token)


def _refuse_forgery() -> ApiError:
    return ApiError(403, "forbidden", "the form was not one this dashboard gave out (its "
                    "security token is missing or wrong); reload the page and try again")


def check_csrf(sent: object, expected: str | None) -> None:
    """403 unless a form sent the token its page was given."""
    if not isinstance(sent, str) or expected is None or not secrets.compare_digest(
            sent.encode(), expected.encode()):
        raise _refuse_forgery()


def check_login_csrf(request: web.Request, sent: object) -> None:
    check_csrf(sent, _cookie(request, LOGIN_COOKIE))
