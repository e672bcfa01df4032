"""The dashboard in Chromium: sign in with the form, read the delivery log, open a failing
delivery whose receiver answered with script, redeliver it, sign out."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.browser.conftest import (
    CHROMIUM,
    HOSTILE_BODY,
    Hookpost,
    HostileReceiver,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no Chromium at {CHROMIUM}: install Debian's with 'apt-get install chromium' "
           "(.ci/run does)",
)


def failing_delivery(hookpost: Hookpost, receiver: HostileReceiver,
                     tenant_id: str | None = None) -> str:
    """Subscribe the receiver, post an event, wait for its first attempt; the delivery. In
    tenant `tenant_id` if given, else the default tenant."""
    tenant = {} if tenant_id is None else {"tenant_id": tenant_id}
    hookpost.call("POST", "/v1/subscriptions",
                  {**tenant, "url": receiver.url, "event_types": ["*"]})
    event = hookpost.call("POST", "/v1/events",
                          {**tenant, "type": "order.created", "data": {"n": 1}})
    delivery_id = ""

    def attempted() -> bool:
        nonlocal delivery_id
        [delivery] = hookpost.call("GET", f"/v1/events/{event['id']}")["deliveries"]
        delivery_id = delivery["id"]
        return bool(delivery["attempt_count"] == 1)

    wait_until(attempted)
    return delivery_id


def sign_in(page: Page, hookpost: Hookpost) -> None:
    page.goto(hookpost.dashboard)
    expect(page).to_have_url(f"{hookpost.address}/ui/login")
    page.fill('input[name="key"]', hookpost.admin_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{hookpost.address}/ui/")


def test_sign_in_read_a_hostile_answer_as_text_redeliver_and_sign_out(
    page: Page, hookpost: Hookpost, receiver: HostileReceiver, screenshot_folder: Path,
) -> None:
    delivery_id = failing_delivery(hookpost, receiver)
    console: list[ConsoleMessage] = []

    def heard(message: ConsoleMessage) -> None:
        console.append(message)

    page.on("console", heard)
    assert hookpost.dashboard == f"{hookpost.address}/ui/"

    page.goto(hookpost.dashboard)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.fill('input[name="key"]', "hp_adm_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    page.screenshot(path=screenshot_folder / "1-login-wrong-key.png", full_page=True)

    sign_in(page, hookpost)
    expect(page.get_by_text("Signed in as")).to_contain_text("admin")
    page.get_by_role("link", name="Delivery log").click()
    expect(page.get_by_role("link", name=delivery_id)).to_be_visible()
    page.screenshot(path=screenshot_folder / "2-delivery-log.png", full_page=True)

    page.select_option('select[name="status"]', "succeeded")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No deliveries match these filters")).to_be_visible()
    page.select_option('select[name="status"]', "pending")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(f"{hookpost.address}/ui/deliveries?status=pending&event_type="
                             "&subscription_id=&since=&until=")
    page.screenshot(path=screenshot_folder / "3-delivery-log-filtered.png", full_page=True)

    page.get_by_role("link", name=delivery_id).click()
    expect(page).to_have_url(f"{hookpost.address}/ui/deliveries/{delivery_id}")
    expect(page.locator("pre.body")).to_have_text(HOSTILE_BODY)
    expect(page.get_by_text("<b>bold?</b>")).to_be_visible()
    expect(page.get_by_text("the receiver answered, but not with 2xx")).to_be_visible()
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("main img, main script").count() == 0
    page.screenshot(path=screenshot_folder / "4-delivery.png", full_page=True)

    page.get_by_role("button", name="Redeliver").click()
    expect(page.get_by_role("status")).to_contain_text("Redelivery asked for")
    wait_until(lambda: receiver.requests == 2)

    def second_attempt_shown() -> bool:
        page.reload()
        return page.locator("section.attempt").count() == 2

    wait_until(second_attempt_shown)
    expect(page.locator("section.attempt").nth(1)).to_contain_text("manual")
    assert page.evaluate("typeof window.pwned") == "undefined"
    page.screenshot(path=screenshot_folder / "5-delivery-redelivered.png", full_page=True)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{hookpost.address}/ui/login")
    page.screenshot(path=screenshot_folder / "6-signed-out.png", full_page=True)
    page.goto(f"{hookpost.address}/ui/deliveries/{delivery_id}")
    expect(page).to_have_url(f"{hookpost.address}/ui/login")
    # Nothing the pages hold was refused by the CSP, and nothing failed to load but the
    # wrong key's login page, which answers 401.
    errors = [message.text for message in console if message.type == "error"]
    assert [text for text in errors if "status of 401" not in text] == []


def test_the_pages_work_with_javascript_off(
    browser: Browser, hookpost: Hookpost, receiver: HostileReceiver, screenshot_folder: Path,
) -> None:
    delivery_id = failing_delivery(hookpost, receiver)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, hookpost)
        page.get_by_role("link", name="Delivery log").click()
        page.get_by_role("link", name=delivery_id).click()
        expect(page.locator("pre.body")).to_have_text(HOSTILE_BODY)
        page.get_by_role("button", name="Redeliver").click()
        expect(page.get_by_role("status")).to_contain_text("Redelivery asked for")
        page.screenshot(path=screenshot_folder / "7-no-javascript-delivery.png",
                        full_page=True)
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(f"{hookpost.address}/ui/login")
    finally:
        context.close()
