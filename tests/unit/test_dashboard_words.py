"""What the dashboard says about attempts and times, the roles its pages borrow from the
API's routes, and its cookies."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from api import models
from api.auth import Role
from dispatcher.verdict import ErrorKind
from ui.app import milliseconds, percent, when
from ui.error_kinds import PLAIN_WORDS, in_plain_words
from ui.pages import LIST_DELIVERIES, READ_DELIVERY, REDELIVER, api_roles
from ui.sessions import LOGIN_COOKIE, keep_login_token


def test_every_error_kind_the_dispatcher_records_has_plain_words() -> None:
    assert set(PLAIN_WORDS) == set(ErrorKind)


def test_the_api_documents_every_error_kind_the_dispatcher_records() -> None:
    schema = models.Attempt.model_json_schema()["properties"]["error_kind"]
    [kinds] = [variant["enum"] for variant in schema["anyOf"] if "enum" in variant]
    assert set(kinds) == set(ErrorKind)


@pytest.mark.parametrize(("kind", "words"), [
    ("dns", "the host name does not resolve (DNS)"),
    ("timeout", "timed out: no complete answer in time"),
    (None, ""),
    ("a_kind_from_a_newer_release", "a_kind_from_a_newer_release"),
])
def test_an_error_kind_in_plain_words(kind: str | None, words: str) -> None:
    assert in_plain_words(kind) == words


def test_times_show_in_utc_to_the_millisecond() -> None:
    assert when(datetime(2026, 1, 2, 3, 4, 5, 678_900, tzinfo=UTC)) == (
        "2026-01-02 03:04:05.678 UTC")
    assert when(None) == ""


def test_the_pages_ask_for_the_roles_their_api_routes_ask_for() -> None:
    assert LIST_DELIVERIES == READ_DELIVERY == REDELIVER == (Role.SUBSCRIBER, Role.ADMIN)
    with pytest.raises(LookupError):
        api_roles("GET", "/v1/nowhere")


@pytest.mark.parametrize(("sslcontext", "secure"), [
    (None, False),
    (ssl.create_default_context(), True),
])
def test_the_dashboards_cookies_are_secure_behind_https(
    sslcontext: ssl.SSLContext | None, secure: bool,
) -> None:
    request = make_mocked_request("GET", "/ui/login", sslcontext=sslcontext)
    response = web.Response()
    keep_login_token(request, response, "token")
    cookie = response.cookies[LOGIN_COOKIE]
    assert cookie["httponly"] is True and cookie["samesite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert bool(cookie["secure"]) is secure


@pytest.mark.parametrize(("share", "shown"), [
    (None, "none"), (0.0, "0.0%"), (0.857142, "85.7%"), (0.9999, "99.9%"), (1.0, "100%"),
])
def test_shares_are_shown_as_percentages(share: float | None, shown: str) -> None:
    assert percent(share) == shown


@pytest.mark.parametrize(("duration", "shown"), [
    (None, "none"), (0.4, "0 ms"), (8.2, "8 ms"), (999.4, "999 ms"), (2500.0, "2.5 s"),
])
def test_durations_are_shown_in_ms_or_seconds(duration: float | None, shown: str) -> None:
    assert milliseconds(duration) == shown
