"""The guardian rejects a posted batch (Hardhat): marked, alerted, posting held; the next batch carries it."""

from django.utils import timezone
from hexbytes import HexBytes

from ledger.currencies import Currency
from ledger.models import SettlementAlert, SettlementBatch
from ledger.settlement.batches import settlement_batch_run
from ledger.settlement.selectors import proofs_for_user
from ledger.watcher import chain_watch_scan
from tests.settlement.helpers import CONFIRMATIONS, claim_call, mine

CLAIM_DELAY_SECONDS = 3_600


def reject_and_watch(live, seq):
    live.send(live.admin, live.settlement.functions.rejectBatch(seq))  # deploy_all made the admin the guardian
    mine(live, CONFIRMATIONS)
    chain_watch_scan()


def usdc_leaf(user):
    return next(row for row in proofs_for_user(user_id=user.pk)["leaves"] if row["currency"] == Currency.USDC)


def test_a_rejected_batch_is_marked_alerted_holds_posting_and_the_next_batch_carries_it(market, live):
    live.send(live.admin, live.settlement.functions.setClaimDelay(CLAIM_DELAY_SECONDS))
    earned = market.charge(3_000_000)
    rejected = settlement_batch_run()
    assert live.settlement.functions.pendingSeq().call() == 1

    reject_and_watch(live, 1)

    rejected.refresh_from_db()
    assert rejected.status == SettlementBatch.Status.REJECTED and rejected.rejected_at is not None
    (alert,) = SettlementAlert.objects.filter(kind=SettlementAlert.Kind.BATCH_REJECTED)
    assert alert.batch == rejected and alert.resolved_at is None and "Posting is held" in alert.message
    chain_watch_scan()  # a re-scan neither alerts again nor changes the batch
    assert SettlementAlert.objects.get(pk=alert.pk).detail["occurrences"] == 1

    # Held: more earnings, but no batch is made or posted while the alert is open.
    earned += market.charge(1_000_000)
    assert settlement_batch_run() is None
    assert SettlementBatch.objects.count() == 1 and live.settlement.functions.lastSeq().call() == 1

    alert.resolved_at = timezone.now()  # the operator looked into it
    alert.save(update_fields=["resolved_at"])
    carried = settlement_batch_run()

    assert carried.seq == 2 and carried.status == SettlementBatch.Status.POSTED
    assert HexBytes(live.settlement.functions.root().call()).to_0x_hex() == carried.root
    live.advance_time(CLAIM_DELAY_SECONDS)
    live.send(live.outsider, live.settlement.functions.activateBatch())
    leaf = usdc_leaf(market.provider)
    assert int(leaf["cumulative_amount"]) == earned  # what batch 1 owed plus what was earned since
    live.mint(live.usdc, live.settlement.address, earned)
    before = live.usdc.functions.balanceOf(live.alice.address).call()
    live.send(live.alice, claim_call(live.settlement, leaf))
    assert live.usdc.functions.balanceOf(live.alice.address).call() - before == earned


def test_after_a_rejection_the_same_amounts_are_posted_again_once_the_alert_is_resolved(market, live):
    live.send(live.admin, live.settlement.functions.setClaimDelay(CLAIM_DELAY_SECONDS))
    market.charge(2_000_000)
    rejected = settlement_batch_run()
    reject_and_watch(live, 1)
    SettlementAlert.objects.filter(kind=SettlementAlert.Kind.BATCH_REJECTED).update(resolved_at=timezone.now())

    again = settlement_batch_run()

    # Nothing was earned since: the tree is the rejected one's, and it is posted (not skipped as unchanged).
    assert again.seq == 2 and again.root == rejected.root and again.status == SettlementBatch.Status.POSTED
    assert settlement_batch_run() is None  # and only once


def test_a_rejected_root_this_platform_never_prepared_raises_a_mismatch_alert(market, live):
    live.send(live.admin, live.settlement.functions.setClaimDelay(CLAIM_DELAY_SECONDS))
    forged = b"\x42" * 32  # posted with the operator key, but not by the platform
    live.send(live.operator, live.settlement.functions.postBatch(1, forged, b"\x00" * 32, 0))

    reject_and_watch(live, 1)

    (alert,) = SettlementAlert.objects.filter(kind=SettlementAlert.Kind.CHAIN_MISMATCH)
    assert "not the root this platform prepared" in alert.message
    assert not SettlementAlert.objects.filter(kind=SettlementAlert.Kind.BATCH_REJECTED).exists()
