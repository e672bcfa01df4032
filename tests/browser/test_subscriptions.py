"""The overview and subscription pages in Chromium: find a failing subscription from the
overview and read its timeout, pause and resume, send a test event and see it arrive,
redeliver what failed after its dry-run count, and a form without its CSRF token."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import CHROMIUM, Hookpost, HostileReceiver, wait_until
from tests.browser.test_dashboard import sign_in

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no Chromium at {CHROMIUM}: install Debian's with 'apt-get install chromium' "
           "(.ci/run does)",
)


def subscribe(hookpost: Hookpost, url: str, **fields: Any) -> str:
    created = hookpost.call("POST", "/v1/subscriptions",
                            {"url": url, "event_types": ["*"], **fields})
    subscription_id: str = created["id"]
    return subscription_id


def deliveries_of(hookpost: Hookpost, subscription_id: str) -> list[dict[str, Any]]:
    listed = hookpost.call("GET", f"/v1/deliveries?subscription_id={subscription_id}")
    rows: list[dict[str, Any]] = listed["data"]
    return rows


def test_find_a_failing_subscription_from_the_overview_and_read_its_timeout(
    page: Page, hookpost: Hookpost, receiver: HostileReceiver, screenshot_folder: Path,
) -> None:
    slow = subscribe(hookpost, receiver.at("/slow"), description="the slow one")
    subscribe(hookpost, receiver.at("/ok"), event_types=["never.sent"])
    hookpost.call("POST", "/v1/events", {"type": "order.created", "data": {"n": 1}})
    wait_until(lambda: any(row["attempt_count"] == 1
                           for row in deliveries_of(hookpost, slow)), timeout=20)

    sign_in(page, hookpost)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    attention = page.locator("table.log tbody tr")
    expect(attention).to_have_count(1)
    expect(attention.first).to_contain_text("failing")
    expect(attention.first).to_contain_text(receiver.at("/slow"))
    page.screenshot(path=screenshot_folder / "sub-1-overview.png", full_page=True)

    page.get_by_role("link", name=slow).click()
    expect(page).to_have_url(f"{hookpost.address}/ui/subscriptions/{slow}")
    expect(page.get_by_role("heading", name=f"Subscription {slow}")).to_contain_text("failing")
    expect(page.locator("dl.facts").nth(1)).to_contain_text("Failing since")
    page.screenshot(path=screenshot_folder / "sub-2-failing-subscription.png", full_page=True)

    page.locator("table.log tbody tr a").first.click()
    expect(page).to_have_url(re.compile(r"/ui/deliveries/dlv_"))
    attempt = page.locator("section.attempt").first
    expect(attempt).to_contain_text("timeout")
    expect(attempt).to_contain_text("no answer")
    page.screenshot(path=screenshot_folder / "sub-3-timeout-attempt.png", full_page=True)


def test_pause_resume_and_a_test_event_that_arrives(
    page: Page, hookpost: Hookpost, receiver: HostileReceiver, screenshot_folder: Path,
) -> None:
    ok = subscribe(hookpost, receiver.at("/ok"))
    sign_in(page, hookpost)
    page.get_by_role("link", name="Subscriptions").click()
    expect(page.get_by_role("heading", name="Subscriptions")).to_be_visible()
    page.screenshot(path=screenshot_folder / "sub-4-subscriptions.png", full_page=True)
    page.get_by_role("link", name=ok).click()

    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("Paused")
    expect(page.get_by_role("heading", name=f"Subscription {ok}")).to_contain_text("paused")
    assert hookpost.call("GET", f"/v1/subscriptions/{ok}")["status"] == "paused"
    page.screenshot(path=screenshot_folder / "sub-5-paused.png", full_page=True)
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_contain_text("Active")
    assert hookpost.call("GET", f"/v1/subscriptions/{ok}")["status"] == "active"

    page.get_by_role("button", name="Send test event").click()
    expect(page.get_by_role("status")).to_contain_text("Test event sent")
    wait_until(lambda: receiver.arrived["/ok"] == 1)
    page.get_by_role("link", name="Follow the test delivery").click()

    def succeeded() -> bool:
        page.reload()
        return "succeeded" in (page.locator("dl.facts").first.text_content() or "")

    wait_until(succeeded)
    expect(page.locator("section.attempt")).to_have_count(1)
    page.screenshot(path=screenshot_folder / "sub-6-test-delivery.png", full_page=True)


def test_bulk_redelivery_shows_its_dry_run_count_then_sends_when_confirmed(
    page: Page, hookpost: Hookpost, receiver: HostileReceiver, screenshot_folder: Path,
) -> None:
    bad = subscribe(hookpost, receiver.at("/bad"))
    for n in range(3):
        hookpost.call("POST", "/v1/events", {"type": f"order.n{n}", "data": {"n": n}})
    wait_until(lambda: [row["status"] for row in deliveries_of(hookpost, bad)]
               == ["failed"] * 3)

    sign_in(page, hookpost)
    page.goto(f"{hookpost.address}/ui/subscriptions/{bad}")
    page.get_by_role("button", name="Count them").click()
    expect(page.get_by_role("status")).to_contain_text("3 failed deliveries")
    expect(page.get_by_role("status")).to_contain_text("Nothing has been sent yet")
    page.screenshot(path=screenshot_folder / "sub-7-bulk-dry-run.png", full_page=True)
    assert receiver.arrived["/bad"] == 3

    page.get_by_role("button", name="Redeliver 3").click()
    expect(page.get_by_role("status")).to_contain_text("queued for redelivery. (3)")
    wait_until(lambda: receiver.arrived["/bad"] == 6)
    page.screenshot(path=screenshot_folder / "sub-8-bulk-queued.png", full_page=True)


def test_a_form_posted_without_its_csrf_token_is_refused(
    page: Page, hookpost: Hookpost, receiver: HostileReceiver, screenshot_folder: Path,
) -> None:
    ok = subscribe(hookpost, receiver.at("/ok"))
    sign_in(page, hookpost)
    page.goto(f"{hookpost.address}/ui/subscriptions/{ok}")
    pause = page.locator('form[action$="/status"]')
    pause.locator('input[name="csrf"]').evaluate("field => field.remove()")
    pause.get_by_role("button", name="Pause").click()
    expect(page.get_by_text("security token is missing or wrong")).to_be_visible()
    page.screenshot(path=screenshot_folder / "sub-9-csrf-refused.png", full_page=True)
    assert hookpost.call("GET", f"/v1/subscriptions/{ok}")["status"] == "active"
