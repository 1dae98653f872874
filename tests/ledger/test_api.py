"""Ledger API: balances, entries and the faucet, for an anonymous caller, the owner and another user."""

import uuid

import pytest

from ledger.models import Transaction
from ledger.services import ledger_deposit, ledger_hold

pytestmark = pytest.mark.django_db


def faucet(client, body, key=None):
    return client.post("/api/v1/ledger/faucet/", body, format="json", HTTP_IDEMPOTENCY_KEY=key or str(uuid.uuid4()))


@pytest.fixture
def funded(owner):
    ledger_deposit(user_id=owner.pk, currency="USDC", amount=25_000_000, idempotency_key="seed")
    ledger_hold(user_id=owner.pk, currency="USDC", amount=5_000_000, idempotency_key="hold")
    return owner


@pytest.mark.parametrize("url", ["/api/v1/ledger/balances/", "/api/v1/ledger/entries/"])
def test_anonymous_caller_is_refused_with_the_error_shape(anon_client, url):
    response = anon_client.get(url)
    assert response.status_code in (401, 403)
    assert response.json()["code"] == "not_authenticated"
    assert set(response.json()) == {"code", "message", "detail"}


def test_owner_sees_their_balances(owner_client, funded):
    rows = {(r["currency"], r["kind"]): r for r in owner_client.get("/api/v1/ledger/balances/").json()}
    assert rows[("USDC", "available")]["balance"] == "20"
    assert rows[("USDC", "escrow")]["balance_base_units"] == "5000000"
    assert rows[("JCT", "earnings")]["balance"] == "0"


def test_another_user_sees_only_their_own_zero_balances(other_client, funded):
    rows = other_client.get("/api/v1/ledger/balances/").json()
    assert {r["balance"] for r in rows} == {"0"}


def test_owner_lists_entries_with_filters(owner_client, funded):
    body = owner_client.get("/api/v1/ledger/entries/").json()
    assert body["count"] == 3  # deposit credit, hold debit, hold credit
    escrow = next(
        r
        for r in owner_client.get("/api/v1/ledger/balances/").json()
        if r["kind"] == "escrow" and r["currency"] == "USDC"
    )
    only_escrow = owner_client.get("/api/v1/ledger/entries/", {"account": escrow["id"]}).json()
    assert [e["amount"] for e in only_escrow["results"]] == ["5"]
    assert owner_client.get("/api/v1/ledger/entries/", {"currency": "JCT"}).json()["count"] == 0
    assert owner_client.get("/api/v1/ledger/entries/", {"since": "2999-01-01T00:00:00Z"}).json()["count"] == 0
    assert owner_client.get("/api/v1/ledger/entries/", {"page_size": 1}).json()["next"] is not None


def test_another_user_cannot_read_the_owners_entries(other_client, funded):
    assert other_client.get("/api/v1/ledger/entries/").json()["count"] == 0


def test_filtering_by_another_users_account_is_a_clear_400(other_client, funded):
    account_id = funded.ledger_accounts.get(kind="escrow", currency="USDC").pk
    response = other_client.get("/api/v1/ledger/entries/", {"account": account_id})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "account" in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"currency": "DOGE"}, "currency"), ({"since": "yesterday"}, "since"), ({"account": "abc"}, "account")],
)
def test_bad_entry_filters_are_400(owner_client, params, field):
    response = owner_client.get("/api/v1/ledger/entries/", params)
    assert response.status_code == 400
    assert field in response.json()["detail"]


def test_faucet_credits_in_embedded_mode_and_says_it_is_a_demo(owner_client, owner, embedded):
    response = faucet(owner_client, {"currency": "USDC", "amount": "12.5"})
    assert response.status_code == 201, response.json()
    assert response.json()["demo"] is True
    assert "not real money" in response.json()["notice"]
    assert owner.ledger_accounts.get(kind="available", currency="USDC").balance == 12_500_000


def test_faucet_does_not_exist_in_real_mode(owner_client, settings):
    settings.JANCTION_EMBEDDED = False
    response = faucet(owner_client, {"currency": "USDC", "amount": "1"})
    assert response.status_code == 404
    assert response.json()["code"] == "faucet_disabled"
    assert not Transaction.objects.exists()


def test_faucet_refuses_anonymous_callers(anon_client, embedded):
    assert faucet(anon_client, {"currency": "USDC", "amount": "1"}).status_code in (401, 403)


@pytest.mark.parametrize(
    ("body", "field", "hint"),
    [
        ({"currency": "USDC", "amount": "-1"}, "amount", "not an amount"),
        ({"currency": "USDC", "amount": "0"}, "amount", "greater than zero"),
        ({"currency": "USDC", "amount": "0.0000001"}, "amount", "6 decimals"),
        ({"currency": "USDC", "amount": 1.5}, "amount", "decimal string"),
        ({"currency": "USDC", "amount": "lots"}, "amount", "not an amount"),
        ({"currency": "USDC", "amount": 1}, "amount", "decimal string"),
        ({"currency": "USDC", "amount": "1e999999"}, "amount", "not an amount"),
        ({"currency": "DOGE", "amount": "1"}, "currency", "not a valid choice"),
        ({"currency": "USDC"}, "amount", "required"),
        ({"currency": "USDC", "amount": "1000000"}, "amount", "at most"),
        (["not", "an", "object"], "non_field_errors", "dictionary"),
    ],
)
def test_faucet_rejects_bad_input_and_writes_nothing(owner_client, embedded, body, field, hint):
    response = faucet(owner_client, body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == "invalid"
    assert hint in str(payload["detail"][field])
    assert not Transaction.objects.exists()


def test_malformed_json_is_a_400_with_a_message(owner_client, embedded):
    response = owner_client.post(
        "/api/v1/ledger/faucet/", "{not json", content_type="application/json", HTTP_IDEMPOTENCY_KEY="k" * 16
    )
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_request"
    assert not Transaction.objects.exists()
