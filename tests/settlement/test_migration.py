"""A new Settlement deployment's first batch carries what the old contract (version 2) already paid (Hardhat)."""

import json

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from ledger.chain.artifacts import SETTLEMENT_V2_CONTRACT
from ledger.chain.client import deploy
from ledger.merkle import StandardMerkleTree
from ledger.settlement.batches import _allocate, settlement_batch_run, token_addresses
from ledger.settlement.connection import chain_connection_get
from ledger.settlement.leaves import unpack
from ledger.settlement.migration import MigrationError
from tests.settlement.helpers import claim_call

V2_LEAF_TYPES = ("uint256", "address", "address", "uint128")


def test_the_first_batch_on_a_new_contract_carries_what_the_old_one_paid(market, live, settings):
    earned = market.charge(10_000_000)
    with transaction.atomic():  # the allocation the old contract knew (made by the old platform's batches)
        (index, token, account, _), *_ = _allocate(high_water=10**12, tokens=token_addresses(chain_connection_get()))
    old = deploy(
        live.w3,
        live.admin,
        SETTLEMENT_V2_CONTRACT,
        live.admin.address,
        live.operator.address,
        live.admin.address,
        live.jct.address,
        0,
        0,
        0,
    )
    live.mint(live.usdc, old.address, 10**12)
    old_tree = StandardMerkleTree.of([[index, token, account, 4_000_000]], V2_LEAF_TYPES)
    live.send(live.operator, old.functions.postBatch(1, old_tree.root, b"\x00" * 32, 0))
    live.send(live.alice, old.functions.claim(index, token, account, 4_000_000, []))
    settings.CHAIN_MIGRATED_FROM_ADDRESS = old.address

    with pytest.raises(MigrationError, match="Pause the old Settlement"):
        settlement_batch_run()  # a claim could still land there after its amounts were read
    live.send(live.admin, old.functions.pause())
    live.mint(live.usdc, live.settlement.address, 10**12)
    batch = settlement_batch_run()

    content = json.loads(batch.data.content)
    assert content["carried_from"] == old.address and content["previous_seq"] is None
    leaf = unpack(content["leaves"][0])
    assert (leaf.index, leaf.cumulative, leaf.paid_before, leaf.previous) == (index, earned, 4_000_000, 0)
    client = APIClient()
    client.force_authenticate(market.provider)
    row = client.get("/api/v1/settlement/proof/").json()["leaves"][0]
    assert (row["claimed_amount"], row["claimable_amount"]) == ("4000000", str(earned - 4_000_000))
    before = live.usdc.functions.balanceOf(live.alice.address).call()
    live.send(live.alice, claim_call(live.settlement, row))
    assert live.usdc.functions.balanceOf(live.alice.address).call() - before == earned - 4_000_000
