"""The Janction extension loaded unpacked into real Chromium (headless: Debian's Chromium loads MV3 extensions
under --headless=new), on a local page imitating a DuckDuckGo result page served at duckduckgo.com's address:
capture is off until enabled; then a search is captured, shown for review with its e-mail address redacted,
submitted with the paired device's signature, and shown on the site as pending, then accepted."""

import tempfile
from pathlib import Path

import pytest

from contributions.models import Device, Record
from contributions.review import contribution_review_run
from tests.factories import PASSWORD, UserFactory
from tests.ui.conftest import CHROMIUM

pytestmark = pytest.mark.django_db(transaction=True)

EXTENSION = Path(__file__).resolve().parents[2] / "extension"
RESULTS_PAGE = (Path(__file__).parent / "pages" / "duckduckgo_results.html").read_text()
SEARCH = "https://duckduckgo.com/?q=contact+jane.doe%40example.com+about+rust+lifetimes&ia=web"


def test_extension_captures_only_when_enabled_redacts_and_uploads_for_review(playwright, live_server):
    from playwright.sync_api import expect

    user = UserFactory()
    context = playwright.chromium.launch_persistent_context(
        tempfile.mkdtemp(prefix="janction-extension-"),
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            f"--disable-extensions-except={EXTENSION}",
            f"--load-extension={EXTENSION}",
        ],
    )
    try:
        context.set_default_timeout(15_000)
        context.route(
            "https://duckduckgo.com/**", lambda route: route.fulfill(body=RESULTS_PAGE, content_type="text/html")
        )
        worker = context.service_workers[0] if context.service_workers else context.wait_for_event("serviceworker")
        extension_id = worker.url.split("/")[2]
        options = context.new_page()
        options.goto(f"chrome-extension://{extension_id}/options.html")
        # The page's first render (it reads the extension's storage) fills the site field with the default: type
        # after it, or on a loaded machine it overwrites the address and the pairing tab opens localhost:8000.
        expect(options.locator("#consent-state")).to_have_text("not agreed yet")
        options.fill("#server-url", live_server.url)
        options.click("#save-server")
        expect(options.locator("#server-url")).to_have_value(live_server.url)  # saved, and rendered back
        options.click("#accept-terms")
        expect(options.locator("#consent-state")).to_contain_text("agreed")
        expect(options.locator("#source-duckduckgo")).not_to_be_checked()

        # Off by default: a search on a supported site is not captured.
        search = context.new_page()
        search.goto(SEARCH)
        search.wait_for_timeout(1_000)
        assert worker.evaluate("chrome.storage.local.get('pending').then(s => (s.pending || []).length)") == 0
        expect(options.locator("#review")).to_contain_text("Nothing captured yet.")

        # Pairing: the signed-in user approves the key the options page shows.
        site = context.new_page()
        site.goto(f"{live_server.url}/accounts/login/")
        site.fill("input[name=login]", user.email)
        site.fill("input[name=password]", PASSWORD)
        site.click("button[type=submit]")
        site.wait_for_url("**/dashboard/")
        with context.expect_page() as opened:
            options.click("#pair")
        approval = opened.value
        fingerprint = options.locator("#fingerprint").inner_text().split(" ")[0]
        expect(approval.locator("#pair-fingerprint")).to_have_text(fingerprint)
        approval.click("#approve")
        approval.wait_for_url("**/contributions/")
        options.click("#check-pairing")
        expect(options.locator("#status")).to_have_text("Paired.")
        assert Device.objects.get().user == user

        # Enabled: the search is captured, redacted, shown for review, then submitted.
        options.check("#source-duckduckgo")
        search.goto(SEARCH + "&p=2")
        content = options.locator("#review textarea.content")
        expect(content).to_have_value("contact [email] about rust lifetimes")
        expect(options.locator("#review .meta")).to_contain_text("redacted: email")
        options.click("#submit")
        expect(options.locator("#status")).to_contain_text("Submitted 1 records")
        expect(options.locator("#review")).to_contain_text("Nothing captured yet.")

        record = Record.objects.get()
        assert record.user == user and record.source == "duckduckgo" and record.metadata == {"results": 3}
        site.goto(f"{live_server.url}/contributions/")
        expect(site.locator(f'tr[data-record="{record.pk}"] .state')).to_have_text("pending")

        contribution_review_run()
        site.reload()
        expect(site.locator(f'tr[data-record="{record.pk}"] .state')).to_have_text("accepted")
    finally:
        context.close()
