"""The tenant portal in Chromium: an admin opens Tenants, opens a tenant and makes a portal
link; the link, followed from another site's page in a browser of its own (JavaScript off),
opens that tenant's portal and nothing of another tenant; it does not open twice, and an
expired link does not open at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.browser.conftest import CHROMIUM, Hookpost, HostileReceiver, _execute
from tests.browser.test_dashboard import failing_delivery, sign_in

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no Chromium at {CHROMIUM}: install Debian's with 'apt-get install chromium' "
           "(.ci/run does)",
)

# Another site, which embeds the link as a SaaS would: Playwright answers for it, so that
# the link is followed cross-site, as from a customer's product.
EMBEDDING_SITE = "https://saas.example/"


def follow_from_another_site(browser: Browser, url: str) -> tuple[Page, list[str]]:
    """A browser of its own, JavaScript off, on a page of another site that links to `url`,
    the link clicked; the page and the errors its console reported."""
    context = browser.new_context(java_script_enabled=False)
    context.route(EMBEDDING_SITE, lambda route: route.fulfill(
        content_type="text/html",
        body=f'<!doctype html><title>SaaS</title><a href="{url}">Manage your webhooks</a>'))
    page = context.new_page()
    errors: list[str] = []

    def heard(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", heard)
    page.goto(EMBEDDING_SITE)
    page.get_by_role("link", name="Manage your webhooks").click()
    return page, errors


def test_a_portal_link_opens_its_tenant_only_once_and_expires(
    page: Page, browser: Browser, hookpost: Hookpost, receiver: HostileReceiver,
    fresh_database: str, screenshot_folder: Path,
) -> None:
    acme = hookpost.call("POST", "/v1/tenants", {"name": "Acme Corp", "uid": "acme"})["id"]
    globex = hookpost.call("POST", "/v1/tenants", {"name": "Globex"})["id"]
    acme_delivery = failing_delivery(hookpost, receiver, acme)
    globex_delivery = failing_delivery(hookpost, receiver, globex)

    sign_in(page, hookpost)
    page.get_by_role("link", name="Tenants").click()
    expect(page).to_have_url(f"{hookpost.address}/ui/tenants")
    expect(page.get_by_role("link", name="Globex")).to_be_visible()
    page.screenshot(path=screenshot_folder / "portal-1-tenants.png", full_page=True)

    page.get_by_role("link", name="Acme Corp").click()
    expect(page).to_have_url(f"{hookpost.address}/ui/tenants/{acme}")
    expect(page.get_by_text("1 active · 0 paused · 0 disabled")).to_be_visible()
    page.screenshot(path=screenshot_folder / "portal-2-tenant.png", full_page=True)

    page.get_by_role("button", name="Make a portal link").click()
    expect(page.get_by_role("status")).to_contain_text("shown only now")
    link = page.get_by_label("Portal link").input_value()
    assert link.startswith(f"{hookpost.address}/ui/portal/")
    page.screenshot(path=screenshot_folder / "portal-3-link-made.png", full_page=True)

    portal, errors = follow_from_another_site(browser, link)
    # On past the page that opens the portal, to its overview, still signed in.
    expect(portal).to_have_url(f"{hookpost.address}/ui/")
    expect(portal.get_by_text("Webhooks of Acme Corp")).to_be_visible()
    portal.screenshot(path=screenshot_folder / "portal-4-portal-overview.png", full_page=True)
    portal.get_by_role("link", name="Delivery log").click()
    expect(portal.get_by_role("link", name=acme_delivery)).to_be_visible()
    expect(portal.get_by_role("link", name=globex_delivery)).to_have_count(0)
    expect(portal.get_by_role("link", name="Tenants")).to_have_count(0)
    portal.screenshot(path=screenshot_folder / "portal-5-portal-log.png", full_page=True)

    portal.get_by_role("link", name=acme_delivery).click()
    expect(portal.locator("section.attempt")).to_have_count(1)
    portal.screenshot(path=screenshot_folder / "portal-6-portal-delivery.png", full_page=True)
    # The tenant's own subscription page, with its actions, through the portal.
    portal.get_by_role("link", name="Subscriptions").click()
    expect(portal.locator("table.log tbody tr")).to_have_count(1)
    portal.locator("table.log tbody tr a").first.click()
    expect(portal.get_by_role("button", name="Pause")).to_be_visible()
    expect(portal.get_by_role("button", name="Send test event")).to_be_visible()
    portal.screenshot(path=screenshot_folder / "portal-6b-portal-subscription.png",
                      full_page=True)

    answer = portal.goto(f"{hookpost.address}/ui/tenants/{globex}")
    assert answer is not None and answer.status == 403  # admin pages, as in the API
    answer = portal.goto(f"{hookpost.address}/ui/deliveries/{globex_delivery}")
    assert answer is not None and answer.status == 404
    expect(portal.get_by_role("heading", name="404")).to_be_visible()
    portal.screenshot(path=screenshot_folder / "portal-7-other-tenant-404.png", full_page=True)
    assert [text for text in errors if "status of 40" not in text] == []

    portal.goto(f"{hookpost.address}/ui/")
    portal.get_by_role("button", name="Sign out").click()
    expect(portal.get_by_role("heading", name="You have signed out of the webhooks portal")
           ).to_be_visible()
    portal.screenshot(path=screenshot_folder / "portal-7b-signed-out.png", full_page=True)
    portal.context.close()

    again, _ = follow_from_another_site(browser, link)
    expect(again.get_by_role("heading", name="This link has expired or was already used")
           ).to_be_visible()
    again.screenshot(path=screenshot_folder / "portal-8-link-used.png", full_page=True)
    assert again.goto(f"{hookpost.address}/ui/deliveries") is not None
    expect(again).to_have_url(f"{hookpost.address}/ui/login")
    again.context.close()

    late = hookpost.call("POST", f"/v1/tenants/{acme}/portal-link",
                         {"expires_in_seconds": 60})["url"]
    # Its minute is up: as the clock would have it a minute on.
    _execute(fresh_database, "UPDATE portal_links SET expires_at = now() WHERE used_at IS NULL")
    expired, _ = follow_from_another_site(browser, late)
    expect(expired.get_by_role("heading", name="This link has expired or was already used")
           ).to_be_visible()
    expired.screenshot(path=screenshot_folder / "portal-9-link-expired.png", full_page=True)
    expired.context.close()
