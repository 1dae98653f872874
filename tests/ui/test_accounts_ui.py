"""The browser journey: sign in, read balances, create an API key that is shown once, sign out."""

import pytest

from ledger.services import ledger_deposit
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_sign_in_see_balances_create_api_key(page, tmp_path, settings):
    settings.JANCTION_EMBEDDED = True
    user = UserFactory()
    ledger_deposit(user_id=user.pk, currency="USDC", amount=42_500_000, idempotency_key="ui-seed")

    page.goto("/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/")
    assert page.locator(".banner.demo").is_visible()
    balances = page.locator("#balances")
    assert "42.5" in balances.inner_text()
    assert "Deposit" in page.locator("#entries").inner_text()

    page.click("text=API keys")
    page.fill("input[name=name]", "laptop")
    page.click("text=Create key")
    key = page.locator("#new-key-value").inner_text()
    assert key.startswith("jct_")
    page.screenshot(path=str(tmp_path / "api-keys.png"), full_page=True)
    page.reload()
    assert page.locator("#new-key").count() == 0
    assert "laptop" in page.locator("#keys").inner_text()

    page.click("text=Revoke")
    assert "revoked" in page.locator("#keys").inner_text()

    page.click("text=Sign out")
    page.goto("/dashboard/")
    assert "/accounts/login/" in page.url


def test_wrong_password_shows_an_error(page):
    user = UserFactory()
    page.goto("/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    assert "not correct" in page.content()
    assert "/accounts/login/" in page.url
