"""Settlement batches against Hardhat: from ledger charges to an on-chain root and a provider's claim."""

import hashlib
import json

import pytest
from django.urls import reverse
from hexbytes import HexBytes
from rest_framework.test import APIClient

from ledger.currencies import Currency
from ledger.merkle import StandardMerkleTree
from ledger.models import AccountKind, ChainClaim, PayoutAllocation, SettlementBatch, StakeEvent
from ledger.services import ledger_account_get
from ledger.settlement.batches import LEAF_TYPES, settlement_batch_post, settlement_batch_prepare, settlement_batch_run
from ledger.settlement.leaves import unpack
from ledger.watcher import chain_watch_scan
from tests.factories import UserFactory
from tests.settlement.helpers import CONFIRMATIONS, claim_call, leaf_amounts, link_wallet, mine

DELAY = 3_600


def proof_for(user, address=None) -> dict:
    client = APIClient()
    client.force_authenticate(user)
    response = client.get(reverse("settlement-proof"), {"address": address} if address else {})
    assert response.status_code == 200, response.json()
    return response.json()


def claim_with_api_proof(chain, user, claimant) -> int:
    """Claim every leaf the API offers ``claimant``; return the USDC it received."""
    before = chain.usdc.functions.balanceOf(claimant.address).call()
    for leaf in proof_for(user, claimant.address)["leaves"]:
        if leaf["currency"] == Currency.USDC:
            chain.send(claimant, claim_call(chain.settlement, leaf))
    return chain.usdc.functions.balanceOf(claimant.address).call() - before


def test_full_cycle_deposit_spend_batch_claim(market, live):
    bob = live.bob
    link_wallet(market.buyer, bob.address)
    live.mint(live.usdc, bob.address, 50_000_000)
    live.send(bob, live.usdc.functions.approve(live.settlement.address, 50_000_000))
    live.send(bob, live.settlement.functions.deposit(live.usdc.address, 50_000_000))
    mine(live, CONFIRMATIONS)
    assert chain_watch_scan().credited == 1

    earned = market.charge(40_000_000, fund=False)
    batch = settlement_batch_run()

    assert batch.seq == 1 and batch.status == SettlementBatch.Status.POSTED
    assert live.settlement.functions.lastSeq().call() == 1
    assert HexBytes(live.settlement.functions.root().call()).to_0x_hex() == batch.root
    data = APIClient().get(reverse("settlement-data", args=[batch.data_id])).content
    assert hashlib.sha256(data).hexdigest() == batch.data_id
    leaves = json.loads(data)["leaves"]
    assert StandardMerkleTree.of(leaves, LEAF_TYPES).root == batch.root
    assert [live.usdc.address, live.alice.address, str(earned)] in [leaf[1:] for leaf in leaf_amounts(json.loads(data))]

    assert claim_with_api_proof(live, market.provider, live.alice) == earned == 38_000_000
    leaf = proof_for(market.provider)["leaves"][0]
    assert leaf["claimable_amount"] == "0"
    live.assert_reverts(live.alice, claim_call(live.settlement, leaf), "AlreadyClaimed", leaf["index"])


def test_second_batch_lets_the_provider_claim_only_the_difference(market, live):
    live.mint(live.usdc, live.settlement.address, 10**12)
    first = market.charge(10_000_000)
    settlement_batch_run()
    assert claim_with_api_proof(live, market.provider, live.alice) == first

    second = market.charge(3_000_000) + market.charge(1_000_000)
    assert settlement_batch_run() is None  # batch 1's activation has no confirmations yet: the next one waits
    mine(live, CONFIRMATIONS)
    batch = settlement_batch_run()

    assert batch.seq == 2
    leaf = next(row for row in proof_for(market.provider)["leaves"] if row["currency"] == Currency.USDC)
    assert leaf["cumulative_amount"] == str(first + second)
    assert leaf["claimed_amount"] == str(first)
    assert leaf["claimable_amount"] == str(second)
    assert claim_with_api_proof(live, market.provider, live.alice) == second


def test_the_watcher_books_a_claim_out_of_the_providers_earnings(market, live):
    live.mint(live.usdc, live.settlement.address, 10**12)
    earned = market.charge(2_000_000)
    settlement_batch_run()
    claim_with_api_proof(live, market.provider, live.alice)
    mine(live, CONFIRMATIONS)

    chain_watch_scan()
    chain_watch_scan()

    earnings = ledger_account_get(user_id=market.provider.pk, kind=AccountKind.EARNINGS, currency=Currency.USDC)
    assert earnings.balance == 0
    clearing = ledger_account_get(user_id=None, kind=AccountKind.CHAIN_CLEARING, currency=Currency.USDC)
    assert int(clearing.balance) == -2_000_000 + earned  # the buyer's deposit out, the claim back in


def test_the_watcher_tells_claims_from_unstakes_and_sums_cumulative_claims(market, live):
    live.mint(live.usdc, live.settlement.address, 10**12)
    first = market.charge(2_000_000)
    settlement_batch_run()
    claim_with_api_proof(live, market.provider, live.alice)
    second = market.charge(3_000_000)
    mine(live, CONFIRMATIONS)
    settlement_batch_run()
    claim_with_api_proof(live, market.provider, live.alice)
    # JCT leaves the contract to an unstaking account too; that is no claim.
    live.mint(live.jct, live.bob.address, 5)
    live.send(live.bob, live.jct.functions.approve(live.settlement.address, 5))
    live.send(live.bob, live.settlement.functions.stake(5))
    live.send(live.admin, live.settlement.functions.setUnstakeCooldown(0))
    live.send(live.bob, live.settlement.functions.requestUnstake(5))
    live.send(live.bob, live.settlement.functions.withdrawStake())
    mine(live, CONFIRMATIONS)

    chain_watch_scan()
    chain_watch_scan()

    claims = list(ChainClaim.objects.order_by("block_number").values_list("account", "amount", "cumulative"))
    assert [(account, int(a), int(c)) for account, a, c in claims] == [
        (live.alice.address, first, first),
        (live.alice.address, second, first + second),
    ]
    assert StakeEvent.objects.filter(kind=StakeEvent.Kind.WITHDRAWN).count() == 1


def test_no_new_batch_when_nothing_owed_changed(market, live):
    market.charge(1_000_000)
    assert settlement_batch_run().seq == 1
    mine(live, CONFIRMATIONS)

    assert settlement_batch_prepare() is None
    assert SettlementBatch.objects.count() == 1


def test_earnings_of_a_user_without_a_wallet_are_carried_until_they_link_one(market, live):
    walletless = UserFactory()
    market.provider = walletless
    earned = market.charge(5_000_000)
    assert settlement_batch_prepare() is None  # nobody with a wallet is owed anything yet

    link_wallet(walletless, live.carol.address)
    batch = settlement_batch_run()

    leaves = leaf_amounts(json.loads(batch.data.content))
    index = PayoutAllocation.objects.get(user=walletless).pk
    assert leaves == [[index, live.usdc.address, live.carol.address, str(earned)]]


def test_a_relinked_user_is_never_published_more_than_they_earned(market, live):
    first = market.charge(1_000_000)
    settlement_batch_run()
    mine(live, CONFIRMATIONS)  # the next batch is built from a confirmed block at which batch 1 is claimable
    market.provider.wallets.all().delete()
    link_wallet(market.provider, live.carol.address)
    second = market.charge(2_000_000)

    batch = settlement_batch_run()

    leaves = {(row[2], int(row[3])) for row in leaf_amounts(json.loads(batch.data.content))}
    assert leaves == {(live.alice.address, first), (live.carol.address, second)}
    assert sum(int(a.cumulative) for a in PayoutAllocation.objects.filter(user=market.provider)) == first + second


def test_jct_rewards_get_their_own_leaf(market, live):
    earned = market.charge(7 * 10**18, currency=Currency.JCT)

    batch = settlement_batch_run()

    index = PayoutAllocation.objects.get(user=market.provider, currency=Currency.JCT).pk
    assert leaf_amounts(json.loads(batch.data.content)) == [[index, live.jct.address, live.alice.address, str(earned)]]


@pytest.mark.parametrize("bad", ["zz", "0x" + "g" * 64])
def test_bad_data_hash_is_a_400(db, bad):
    response = APIClient().get(reverse("settlement-data", args=[bad]))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_data_hash"


def test_a_claim_against_the_previous_root_after_the_next_batch_was_built_is_not_paid_twice(market, live):
    """Two-bit claims end to end: batch 2 is built from the chain's claim bits, then the provider claims against
    batch 1 (still claimable while batch 2 waits out its delay); batch 2 then pays only what batch 1 did not."""
    live.send(live.admin, live.settlement.functions.setClaimDelay(DELAY))
    live.mint(live.usdc, live.settlement.address, 10**12)
    first = market.charge(10_000_000)
    settlement_batch_run()
    live.advance_time(DELAY)
    assert settlement_batch_run() is None  # activates batch 1; the next batch waits for its confirmations
    mine(live, CONFIRMATIONS)
    second = market.charge(4_000_000)

    batch = settlement_batch_prepare()  # built: batch 1 is claimable and nobody has claimed
    leaf = unpack(json.loads(batch.data.content)["leaves"][0])
    assert (leaf.previous, leaf.paid_before) == (first, 0)
    assert claim_with_api_proof(live, market.provider, live.alice) == first  # a late claim against batch 1
    settlement_batch_post(batch_id=batch.pk)
    assert proof_for(market.provider)["batch"]["seq"] == 1  # batch 2 is pending
    live.advance_time(DELAY)
    live.send(live.outsider, live.settlement.functions.activateBatch())

    row = next(row for row in proof_for(market.provider)["leaves"] if row["currency"] == Currency.USDC)
    assert (row["claimed_amount"], row["claimable_amount"]) == (str(first), str(second))
    assert claim_with_api_proof(live, market.provider, live.alice) == second
    live.assert_reverts(live.alice, claim_call(live.settlement, row), "AlreadyClaimed", leaf.index)
    assert live.usdc.functions.balanceOf(live.alice.address).call() == first + second
