"""Reorg-safe posting on Hardhat: evm_snapshot/evm_revert stand in for a reorganisation that drops a post."""

from hexbytes import HexBytes

from ledger.models import SettlementBatch
from ledger.settlement.batches import settlement_batch_final, settlement_batch_run
from tests.settlement.helpers import CONFIRMATIONS, mine


def posted_events(chain, seq):
    return chain.settlement.events.BatchPosted().get_logs(argument_filters={"seq": seq}, from_block=0)


def test_a_reorg_that_drops_a_post_is_detected_and_the_batch_posted_again_once(market, live):
    market.charge(3_000_000)
    before_post = live.w3.provider.make_request("evm_snapshot", [])["result"]
    batch = settlement_batch_run()
    assert batch.status == SettlementBatch.Status.POSTED
    assert not settlement_batch_final(batch=batch)

    assert live.w3.provider.make_request("evm_revert", [before_post])["result"] is True  # the post's block is gone
    assert live.settlement.functions.lastSeq().call() == 0
    settlement_batch_run()

    batch.refresh_from_db()
    assert batch.status == SettlementBatch.Status.POSTED and batch.seq == 1 and batch.attempts == 2
    assert live.settlement.functions.lastSeq().call() == 1
    assert HexBytes(live.settlement.functions.root().call()).to_0x_hex() == batch.root
    (event,) = posted_events(live, 1)
    assert HexBytes(event["args"]["dataHash"]).to_0x_hex() == "0x" + batch.data_id
    assert event["blockNumber"] == batch.block_number

    mine(live, CONFIRMATIONS)
    assert settlement_batch_final(batch=batch)
    settlement_batch_run()  # final now: nothing is re-checked or sent again
    batch.refresh_from_db()
    assert batch.attempts == 2 and len(posted_events(live, 1)) == 1


def test_a_post_that_survives_with_its_confirmations_is_left_alone(market, live):
    market.charge(3_000_000)
    batch = settlement_batch_run()

    mine(live, CONFIRMATIONS - 1)
    assert not settlement_batch_final(batch=batch)
    settlement_batch_run()
    mine(live, 1)

    batch.refresh_from_db()
    assert settlement_batch_final(batch=batch)
    assert batch.attempts == 1 and len(posted_events(live, 1)) == 1
