"""Real headless Chromium (Debian's package) driven by Playwright against Django's live server."""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def playwright():
    """One Playwright per test module (its sync API cannot be started twice at once in one thread).

    Not per session: Playwright's sync API keeps an asyncio event loop running in this (the main) thread while
    it is open, and async_to_sync (the live view's group_send, Channels' test communicator) refuses to run in a
    thread with a running loop. A session-wide browser broke every such test that ran after a UI module in the
    same process, which under pytest-xdist is any order. Closing it at the end of the module ends the loop.
    """
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: run `make system-deps` (Debian package chromium).")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make are still synchronous.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as running:
            yield running
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def browser(playwright):
    """One headless Chromium per test module (see `playwright`)."""
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )
    yield browser
    browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
