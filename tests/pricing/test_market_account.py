"""The market account for operators: page, API, alert in the operator page and the admin; staff only."""

import pytest
from django.test import Client

from ledger.services import ledger_charge, ledger_deposit, ledger_hold
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    user = UserFactory()
    user.is_staff = user.is_superuser = True
    user.save(update_fields=["is_staff", "is_superuser"])
    return user


def _charge(buyer, provider, key: str, buyer_amount: int, provider_amount: int) -> None:
    ledger_deposit(user_id=buyer.pk, currency="USDC", amount=buyer_amount, idempotency_key=f"dep-{key}")
    ledger_hold(user_id=buyer.pk, currency="USDC", amount=buyer_amount, idempotency_key=f"hold-{key}")
    ledger_charge(
        buyer_id=buyer.pk,
        provider_id=provider.pk,
        currency="USDC",
        buyer_amount=buyer_amount,
        provider_amount=provider_amount,
        fee_bps=0,
        idempotency_key=f"charge-{key}",
    )


def _browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_api_shows_balance_income_outflows_and_history_to_staff_only(staff, anon_client, owner_client):
    from rest_framework.test import APIClient

    buyer, provider = UserFactory(), UserFactory()
    _charge(buyer, provider, "surplus", 1_000_000, 700_000)  # the round kept 0.30
    api = APIClient()
    api.force_authenticate(staff)
    body = api.get("/api/v1/market-account/").json()
    assert (body["balance"], body["income"], body["outflows"], body["alert"]) == ("0.3", "0.3", "0", False)
    assert body["days"][-1]["balance"] == "0.3" and body["alert_message"] == ""
    assert anon_client.get("/api/v1/market-account/").status_code in (401, 403)
    assert owner_client.get("/api/v1/market-account/").status_code == 403


def test_a_deficit_below_the_threshold_raises_the_alert_everywhere_operators_look(staff, settings):
    settings.PRICING_MARKET_ACCOUNT_ALERT_USDC = "0"
    buyer, provider = UserFactory(), UserFactory()
    _charge(buyer, provider, "deficit", 1_000_000, 1_500_000)  # an old VCG round: providers got 0.50 more
    _charge(buyer, provider, "recovered", 2_000_000, 1_000_000)  # back above zero, but it *was* below
    browser = _browser(staff)
    page = browser.get("/operator/market-account/").content.decode()
    assert 'id="market-account-alert"' in page and "fell to -0.500000 USDC" in page
    assert 'id="market-balance">0.5<' in page and 'id="market-outflows">0.5<' in page
    admin_index = browser.get("/admin/").content.decode()
    assert 'id="market-account-alert"' in admin_index
    rounds_admin = browser.get("/admin/pricing/marketround/", follow=True).content.decode()
    assert "below the alert threshold" in rounds_admin


def test_no_alert_while_the_account_stays_above_the_threshold(staff, settings):
    settings.PRICING_MARKET_ACCOUNT_ALERT_USDC = "-1"
    buyer, provider = UserFactory(), UserFactory()
    _charge(buyer, provider, "small", 1_000_000, 1_500_000)
    page = _browser(staff).get("/operator/market-account/").content.decode()
    assert 'id="market-account-alert"' not in page
    assert 'id="market-account-alert"' not in _browser(staff).get("/admin/").content.decode()


def test_operator_page_is_for_staff_only(owner):
    response = _browser(owner).get("/operator/market-account/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
