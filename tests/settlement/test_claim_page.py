"""The Payouts page: the embedded demo chain's server-side claim, and a batch inside its claim delay."""

import json
import threading

import pytest
from django.db import connections
from django.test import Client

from ledger.chain import node as chain_node
from ledger.chain.client import send
from ledger.models import AccountKind, ChainClaim
from ledger.services import ledger_account_get
from ledger.settlement.batches import settlement_batch_run
from ledger.settlement.claims import NothingToClaim, settlement_claim_send_embedded
from ledger.settlement.connection import chain_connection_get
from tests.factories import UserFactory
from tests.settlement.helpers import CONFIRMATIONS, Market, link_wallet, mine

DELAY = 3600
DEMO_ADDRESS = "0x" + "c3" * 20


def browser_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> str:
    return " ".join(str(message) for message in response.context["messages"])


@pytest.fixture
def embedded_chain(settings):
    """A fresh in-process chain for this test (the process-wide one may carry other tests' batch seqs)."""
    settings.CHAIN_RPC_URL = ""
    chain_node._embedded.cache_clear()
    conn = chain_connection_get()
    yield conn
    chain_node._embedded.cache_clear()


@pytest.fixture
def demo_payout(db, embedded_chain):
    conn = embedded_chain
    provider = UserFactory()
    link_wallet(provider, DEMO_ADDRESS)
    earned = Market(buyer=UserFactory(), provider=provider).charge(8_000_000)
    send(conn.w3, conn.operator, conn.usdc.functions.mint(conn.settlement.address, 10**12))
    batch = settlement_batch_run()
    leaf = [int(word) for word in json.loads(batch.data.content)["leaves"][0]]
    return provider, earned, leaf


def test_the_demo_chain_server_claims_for_the_provider_once(demo_payout, embedded_chain):
    provider, earned, leaf = demo_payout
    browser = browser_for(provider)

    page = browser.get("/payouts/").content.decode()
    assert "server sends your claim for you" in page and "Claim (demo: server sends it)" in page
    assert "wallet-claim" not in page and "claim.js" not in page

    response = browser.post("/payouts/claim/", {"account": DEMO_ADDRESS, "currency": "USDC"}, follow=True)

    assert "Demo chain: the server claimed" in messages_of(response)
    assert f"for {DEMO_ADDRESS.lower()}" in messages_of(response).lower()
    assert embedded_chain.settlement.functions.paidOf(*leaf).call() == earned
    assert embedded_chain.usdc.functions.balanceOf(embedded_chain.w3.to_checksum_address(DEMO_ADDRESS)).call() == earned
    claim = ChainClaim.objects.get()  # booked by the watcher scan that follows the claim
    assert claim.amount == earned and claim.user == provider and claim.ledger_transaction is not None

    again = browser.post("/payouts/claim/", {"account": DEMO_ADDRESS, "currency": "USDC"}, follow=True)
    assert "already claimed all of its USDC" in messages_of(again)
    assert ChainClaim.objects.count() == 1
    assert "Claimed" in again.content.decode()


@pytest.mark.parametrize(
    ("post", "message"),
    [
        ({"account": "0x" + "d4" * 20, "currency": "USDC"}, "is not one of your wallets"),
        ({"account": "nonsense", "currency": "USDC"}, "is not an EVM address"),
        ({"account": DEMO_ADDRESS, "currency": "BTC"}, "has no 'BTC' leaf"),
        ({"account": DEMO_ADDRESS * 50, "currency": "USDC"}, "is not an EVM address"),
    ],
)
def test_a_server_claim_of_someone_elses_or_an_unknown_leaf_is_refused(demo_payout, embedded_chain, post, message):
    provider, _earned, leaf = demo_payout
    other = UserFactory()
    link_wallet(other, "0x" + "d4" * 20)

    response = browser_for(provider).post("/payouts/claim/", post, follow=True)

    assert response.status_code == 200 and message in messages_of(response)
    assert embedded_chain.settlement.functions.paidOf(*leaf).call() == 0


def test_an_outsider_cannot_claim_the_providers_leaf_through_the_server(demo_payout, embedded_chain):
    _provider, _earned, leaf = demo_payout
    outsider = UserFactory()

    response = browser_for(outsider).post("/payouts/claim/", {"account": DEMO_ADDRESS, "currency": "USDC"}, follow=True)

    assert "is not one of your wallets" in messages_of(response)
    assert embedded_chain.settlement.functions.paidOf(*leaf).call() == 0


def test_the_server_sends_no_claim_in_real_mode(market, live):
    market.charge(3_000_000)
    live.mint(live.usdc, live.settlement.address, 10**12)
    settlement_batch_run()
    browser = browser_for(market.provider)

    page = browser.get("/payouts/").content.decode()
    response = browser.post("/payouts/claim/", {"account": live.alice.address, "currency": "USDC"}, follow=True)

    assert "Claim from wallet" in page and "server-claim" not in page
    assert "Claims are sent from your own wallet" in messages_of(response)
    assert live.usdc.functions.balanceOf(live.alice.address).call() == 0


def test_a_batch_in_its_claim_delay_is_shown_as_claimable_from_its_activation(market, live):
    live.send(live.admin, live.settlement.functions.setClaimDelay(DELAY))
    first = market.charge(3_000_000)
    settlement_batch_run()  # batch 1: pending
    browser = browser_for(market.provider)
    activates_at = live.settlement.functions.activatesAt().call()

    page = browser.get("/payouts/").content.decode()
    proof = browser.get("/api/v1/settlement/proof/")

    assert "Claim from wallet" not in page and "No batch is claimable yet." in page
    assert "Claimable from" in page and 'id="pending"' in page
    assert proof.status_code == 404 and proof.json()["code"] == "no_posted_batch"
    assert proof.json()["detail"]["seq"] == 1
    claimable = browser.get("/api/v1/settlement/claimable/").json()
    assert claimable["leaves"] == [] and claimable["pending"]["seq"] == 1
    assert claimable["unpublished"] == [{"currency": "USDC", "amount": "0"}]

    # Once the delay has passed and batch 1 is active, batch 2 (posted then) is pending and batch 1 claimable.
    # The next batch is built only once batch 1 is active at a confirmed block: the run activates it, the next builds.
    live.advance_time(DELAY)
    second = market.charge(2_000_000)
    assert settlement_batch_run() is None
    assert live.settlement.functions.activeSeq().call() == 1
    mine(live, CONFIRMATIONS)
    settlement_batch_run()
    page = browser.get("/payouts/").content.decode()
    proofs = browser.get("/api/v1/settlement/proof/").json()

    assert proofs["batch"]["seq"] == 1 and proofs["pending"]["seq"] == 2
    assert [leaf["cumulative_amount"] for leaf in proofs["leaves"]] == [str(first)]
    assert [leaf["cumulative_amount"] for leaf in proofs["pending"]["leaves"]] == [str(first + second)]
    assert "proof" not in proofs["pending"]["leaves"][0]
    assert "Claim from wallet" in page and "(batch 2)" in page
    assert activates_at > 0


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_demo_claims_pay_and_book_once(demo_payout, embedded_chain):
    provider, earned, leaf = demo_payout
    outcomes: list[str] = []

    def claim_once():
        try:
            settlement_claim_send_embedded(user_id=provider.pk, account=DEMO_ADDRESS, currency="USDC")
            outcomes.append("paid")
        except NothingToClaim:
            outcomes.append("nothing")
        except Exception as error:  # shown by the assertion below
            outcomes.append(repr(error))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["nothing", "paid"]
    assert embedded_chain.settlement.functions.paidOf(*leaf).call() == earned
    assert ChainClaim.objects.count() == 1
    earnings = ledger_account_get(user_id=provider.pk, kind=AccountKind.EARNINGS, currency="USDC").balance
    assert int(earnings) == 0
