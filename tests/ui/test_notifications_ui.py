"""Notifications in Chromium: the bell and its count (htmx), the list and one notification, the preferences form on
the profile page by keyboard; axe-core finds nothing serious at 1440 or 360 px and nothing scrolls sideways."""

import pytest

from marketplace.notifications.models import NotificationPreferences
from marketplace.notifications.services import notification_send
from tests.factories import PASSWORD, UserFactory
from tests.ui.test_make_run import AXE, WIDTHS, _axe_findings

pytestmark = pytest.mark.django_db(transaction=True)


def _log_in(page, user) -> None:
    page.goto("/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/")


def test_notifications_pages_are_accessible_at_both_widths_and_the_bell_refreshes(browser, live_server):
    from playwright.sync_api import expect

    if not AXE.exists():
        pytest.fail("axe-core is missing: run `make js-deps` (npm ci).")
    axe_source = AXE.read_text()
    user = UserFactory()
    other = UserFactory()
    notification_send(user_id=other.pk, kind="rental_failed", key="o:1", title="Somebody else's rental failed")
    first = notification_send(
        user_id=user.pk, kind="rental_failed", key="r:1:failed", title="Rental 1 failed", body="Rental 1 failed: OOM"
    )
    notification_send(user_id=user.pk, kind="node_offline", key="n:1", title="Node rig went offline", url="/nodes/")
    findings, too_wide = [], []

    for width in WIDTHS:
        context = browser.new_context(base_url=live_server.url, viewport={"width": width, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            _log_in(page, user)
            for path in ("/notifications/", f"/notifications/{first}/", "/settings/profile/"):
                page.goto(path)
                findings.extend(f"{path} at {width}: {line}" for line in _axe_findings(page, axe_source))
                scroll = page.evaluate("document.documentElement.scrollWidth")
                if scroll > width:
                    too_wide.append(f"{path} at {width} px is {scroll} px wide")
            page.goto("/notifications/")
            listing = page.locator("#notifications-list")
            expect(listing).to_contain_text("Node rig went offline")
            expect(listing).not_to_contain_text("Somebody else")
            if width == 360:
                page.click("#nav-toggle")
            bell = page.locator("#notifications-bell")
            expect(bell).to_be_visible()
            unread = 1 if width == WIDTHS[0] else 0  # opening the first one read it; the second width read both
            if unread:
                expect(page.locator("#notifications-unread")).to_contain_text("1")
                # A new event shows up on the bell at htmx's next poll (30 s; triggered here at once).
                notification_send(user_id=user.pk, kind="rental_ended", key="r:2:ended", title="Rental 2 ended")
                page.evaluate(
                    "htmx.ajax('GET', '/notifications/bell/', {target: '#notifications-bell', swap: 'outerHTML'})"
                )
                expect(page.locator("#notifications-unread")).to_contain_text("2")
                page.click("#notifications-read-all")
                expect(page.locator(".messages")).to_contain_text("2 notifications marked read.")
                expect(page.locator("#notifications-unread")).to_have_count(0)
        finally:
            context.close()

    assert not findings, "\n".join(findings)
    assert not too_wide, too_wide


def test_preferences_are_saved_from_the_profile_page_by_keyboard(page, live_server):
    from playwright.sync_api import expect

    user = UserFactory()
    _log_in(page, user)
    page.goto("/settings/profile/#notifications")
    email_started = page.get_by_role("group", name="By e-mail").get_by_label("A rental started")
    expect(email_started).not_to_be_checked()  # the default: started is not e-mailed
    email_started.focus()
    page.keyboard.press("Space")
    page.get_by_role("group", name="On the site").get_by_label("One of my nodes went offline").click()
    page.click("#notifications-save")
    expect(page.locator(".messages")).to_contain_text("Your notification choices are saved.")
    prefs = NotificationPreferences.objects.get(user=user)
    assert "rental_started" in prefs.email_kinds and "node_offline" not in prefs.site_kinds
    expect(page.get_by_role("group", name="By e-mail").get_by_label("A rental started")).to_be_checked()
