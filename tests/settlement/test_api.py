"""The settlement API for anonymous callers, the owner and another user, and for bad input."""

import pytest
from django.urls import reverse

from ledger.models import SettlementAlert
from ledger.settlement.batches import settlement_batch_run
from ledger.watcher import chain_watch_scan
from tests.factories import UserFactory
from tests.settlement.helpers import CONFIRMATIONS, link_wallet, mine

PRIVATE = ["settlement-proof", "settlement-claimable", "settlement-deposits", "settlement-stake"]


@pytest.fixture
def posted(market, live):
    """A posted batch in which the provider (the API's owner) is owed USDC at alice's address."""
    earned = market.charge(4_000_000)
    batch = settlement_batch_run()
    return batch, earned


@pytest.fixture
def provider_client(market, client_for):
    return client_for(market.provider)


@pytest.fixture
def client_for():
    from rest_framework.test import APIClient

    def make(user):
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.mark.parametrize("name", PRIVATE)
def test_private_endpoints_refuse_anonymous_callers(anon_client, db, name):
    response = anon_client.get(reverse(name))
    assert response.status_code in (401, 403)
    assert response.json()["code"] == "not_authenticated"


def test_batches_and_their_data_are_public(anon_client, posted):
    batch, _ = posted

    listing = anon_client.get(reverse("settlement-batches")).json()
    detail = anon_client.get(reverse("settlement-batch", args=[1])).json()
    data = anon_client.get(reverse("settlement-data", args=["0x" + batch.data_id]))

    assert listing["count"] == 1 and listing["results"][0] == detail
    assert detail["root"] == batch.root and detail["status"] == "posted" and detail["tx_hash"] == batch.tx_hash
    assert detail["data_hash"] == "0x" + batch.data_id and detail["block_number"] == batch.block_number
    assert data.status_code == 200 and data.content == batch.data.content.encode()


def test_unknown_batches_and_data_are_404(anon_client, db):
    assert anon_client.get(reverse("settlement-batch", args=[7])).json()["code"] == "batch_not_found"
    response = anon_client.get(reverse("settlement-data", args=["ab" * 32]))
    assert (response.status_code, response.json()["code"]) == (404, "batch_data_not_found")


def test_chain_info_is_public_and_names_the_node(anon_client, live):
    info = anon_client.get(reverse("settlement-chain")).json()
    assert info["mode"] == "rpc" and info["chain_id"] == 31337 and info["confirmations"] == CONFIRMATIONS
    assert info["settlement"] == live.settlement.address and info["tokens"]["USDC"] == live.usdc.address


def test_the_owner_gets_a_proof_and_its_claimable_amount(provider_client, posted, live):
    batch, earned = posted

    proof = provider_client.get(reverse("settlement-proof")).json()
    claimable = provider_client.get(reverse("settlement-claimable")).json()

    assert proof["batch"] == {"seq": 1, "root": batch.root, "data_hash": "0x" + batch.data_id}
    (leaf,) = proof["leaves"]
    assert (leaf["account"], leaf["currency"], leaf["cumulative_amount"]) == (live.alice.address, "USDC", str(earned))
    assert leaf["claimed_source"] == "chain" and leaf["claimable_amount"] == str(earned)
    assert leaf["proof"] == []  # a one-leaf tree: the leaf is the root
    (row,) = claimable["leaves"]
    assert row["claimable_amount"] == str(earned) and "proof" not in row
    assert {"currency": "USDC", "amount": "0"} in claimable["unpublished"]


def test_another_user_sees_nothing_of_the_owners_and_cannot_ask_for_its_wallet(client_for, posted, live):
    other = client_for(UserFactory())

    assert other.get(reverse("settlement-proof")).json()["leaves"] == []
    assert other.get(reverse("settlement-claimable")).json()["leaves"] == []
    response = other.get(reverse("settlement-proof"), {"address": live.alice.address})
    assert (response.status_code, response.json()["code"]) == (404, "wallet_not_found")


@pytest.mark.parametrize("address", ["0x123", "not-an-address", "0x" + "zz" * 20])
def test_a_malformed_address_is_a_400(provider_client, posted, address):
    response = provider_client.get(reverse("settlement-proof"), {"address": address})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_address")


def test_proof_before_any_posted_batch_is_a_404(provider_client):
    response = provider_client.get(reverse("settlement-proof"))
    assert (response.status_code, response.json()["code"]) == (404, "no_posted_batch")


def test_unpublished_earnings_are_reported_until_a_batch_carries_them(provider_client, posted, market):
    _, earned = posted
    more = market.charge(1_000_000)

    claimable = provider_client.get(reverse("settlement-claimable")).json()

    assert {"currency": "USDC", "amount": str(more)} in claimable["unpublished"]
    assert claimable["leaves"][0]["cumulative_amount"] == str(earned)


def test_deposits_and_stake_belong_to_their_owner(client_for, db, live):
    owner, other = UserFactory(), UserFactory()
    link_wallet(owner, live.bob.address)
    live.mint(live.usdc, live.bob.address, 5_000_000)
    live.mint(live.jct, live.bob.address, 3 * 10**18)
    live.send(live.bob, live.usdc.functions.approve(live.settlement.address, 5_000_000))
    live.send(live.bob, live.settlement.functions.deposit(live.usdc.address, 5_000_000))
    live.send(live.bob, live.jct.functions.approve(live.settlement.address, 3 * 10**18))
    live.send(live.bob, live.settlement.functions.stake(3 * 10**18))
    mine(live, CONFIRMATIONS)
    chain_watch_scan()

    deposits = client_for(owner).get(reverse("settlement-deposits")).json()
    stake = client_for(owner).get(reverse("settlement-stake")).json()

    assert deposits["count"] == 1
    assert deposits["results"][0]["amount"] == "5000000" and deposits["results"][0]["credited"] is True
    assert stake == [
        {
            "account": live.bob.address,
            "staked_amount": str(3 * 10**18),
            "pending_unstake_amount": "0",
            "unlock_at": None,
        }
    ]
    assert client_for(other).get(reverse("settlement-deposits")).json()["count"] == 0
    assert client_for(other).get(reverse("settlement-stake")).json() == []


def test_alerts_are_for_staff_only(anon_client, client_for, db):
    SettlementAlert.objects.create(kind=SettlementAlert.Kind.POST_FAILED, message="batch 1 reverted")
    staff = UserFactory(is_staff=True)

    assert anon_client.get(reverse("settlement-alerts")).status_code in (401, 403)
    refused = client_for(UserFactory()).get(reverse("settlement-alerts"))
    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")
    listing = client_for(staff).get(reverse("settlement-alerts")).json()
    assert [row["message"] for row in listing["results"]] == ["batch 1 reverted"]
