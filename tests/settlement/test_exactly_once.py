"""Exactly-once posting: repeats, concurrent workers, crashes around the send, reverts and a node outage."""

import threading

import pytest
from django.db import connection
from eth_utils import keccak
from hexbytes import HexBytes

from ledger.models import SettlementAlert, SettlementBatch
from ledger.settlement import batches
from ledger.settlement.batches import settlement_batch_post, settlement_batch_prepare, settlement_batch_run
from ledger.settlement.connection import chain_connection_get, settlement_lock
from ledger.settlement.errors import BatchPostFailed, BatchPostPending, ChainUnavailable, SettlementBusy
from tests.factories import UserFactory
from tests.settlement.helpers import CONFIRMATIONS, Market, link_wallet, mine

OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: nothing after the point where it is raised runs."""


def posted_seqs(chain) -> list[int]:
    return [event["args"]["seq"] for event in chain.settlement.events.BatchPosted().get_logs(from_block=0)]


def assert_chain_and_db_agree(chain, *, last_seq: int) -> None:
    assert chain.settlement.functions.lastSeq().call() == last_seq
    assert posted_seqs(chain) == list(range(1, last_seq + 1))
    batches_in_db = list(SettlementBatch.objects.order_by("seq").values_list("seq", "status", "root"))
    assert [(seq, status) for seq, status, _ in batches_in_db] == [
        (seq, SettlementBatch.Status.POSTED) for seq in range(1, last_seq + 1)
    ]
    assert HexBytes(chain.settlement.functions.root().call()).to_0x_hex() == batches_in_db[-1][2]


def test_posting_the_same_batch_twice_sends_one_transaction(market, live):
    market.charge(1_000_000)
    batch = settlement_batch_prepare()

    first = settlement_batch_post(batch_id=batch.pk)
    second = settlement_batch_post(batch_id=batch.pk)

    assert first.tx_hash == second.tx_hash
    assert_chain_and_db_agree(live, last_seq=1)


def test_a_crash_after_sending_is_recovered_from_the_recorded_transaction(market, live, monkeypatch):
    market.charge(1_000_000)

    def killed(conn, batch):
        raise WorkerKilled

    with monkeypatch.context() as patch:
        patch.setattr(batches, "_await_receipt", killed)
        with pytest.raises(WorkerKilled):
            settlement_batch_run()
    batch = SettlementBatch.objects.get()
    assert batch.status == SettlementBatch.Status.SENT
    assert live.settlement.functions.lastSeq().call() == 1  # the chain has it; the database does not know yet

    settlement_batch_run()

    batch.refresh_from_db()
    assert batch.status == SettlementBatch.Status.POSTED
    assert live.w3.eth.get_transaction_receipt(batch.tx_hash)["blockNumber"] == batch.block_number
    assert_chain_and_db_agree(live, last_seq=1)


def test_a_crash_before_the_hash_was_recorded_is_recovered_from_the_chain(market, live):
    market.charge(1_000_000)
    batch = settlement_batch_prepare()
    # What a worker killed between sending and recording leaves behind: the batch on chain, nothing in the row.
    receipt = live.send(
        live.operator, live.settlement.functions.postBatch(1, HexBytes(batch.root), HexBytes("0x" + batch.data_id), 0)
    )

    settlement_batch_run()

    batch.refresh_from_db()
    assert batch.tx_hash == receipt["transactionHash"].to_0x_hex()
    assert batch.block_number == receipt["blockNumber"]
    assert_chain_and_db_agree(live, last_seq=1)


def test_a_crash_after_recording_but_before_sending_resends_with_the_same_nonce(market, live, monkeypatch):
    market.charge(1_000_000)
    eth = chain_connection_get().w3.eth

    def killed(raw):
        raise WorkerKilled

    with monkeypatch.context() as patch:
        patch.setattr(eth, "send_raw_transaction", killed)
        with pytest.raises(WorkerKilled):
            settlement_batch_run()
    recorded = SettlementBatch.objects.get()
    assert recorded.status == SettlementBatch.Status.SENT
    assert live.settlement.functions.lastSeq().call() == 0

    settlement_batch_run()

    recorded.refresh_from_db()
    assert recorded.status == SettlementBatch.Status.POSTED
    assert live.w3.eth.get_transaction(recorded.tx_hash)["nonce"] == recorded.nonce
    assert_chain_and_db_agree(live, last_seq=1)


def test_a_chain_holding_another_root_for_the_seq_raises_an_alert(market, live):
    market.charge(1_000_000)
    batch = settlement_batch_prepare()
    live.send(live.operator, live.settlement.functions.postBatch(1, b"\x01" * 32, b"\x02" * 32, 0))

    with pytest.raises(batches.ChainMismatch):
        settlement_batch_run()

    batch.refresh_from_db()
    assert batch.status == SettlementBatch.Status.PREPARED
    assert SettlementAlert.objects.get().kind == SettlementAlert.Kind.CHAIN_MISMATCH


def test_a_reverted_post_raises_an_alert_and_succeeds_once_the_cause_is_fixed(market, live):
    market.charge(1_000_000)
    live.send(live.admin, live.settlement.functions.revokeRole(OPERATOR_ROLE, live.operator.address))

    with pytest.raises(BatchPostFailed):
        settlement_batch_run()
    with pytest.raises(BatchPostFailed):
        settlement_batch_run()

    batch = SettlementBatch.objects.get()
    alert = SettlementAlert.objects.get()
    assert (batch.status, batch.attempts) == (SettlementBatch.Status.PREPARED, 2)
    assert alert.kind == SettlementAlert.Kind.POST_FAILED and alert.resolved_at is None
    assert "postBatch would revert: AccessControlUnauthorizedAccount" in alert.message
    assert alert.detail["occurrences"] == 2

    live.send(live.admin, live.settlement.functions.grantRole(OPERATOR_ROLE, live.operator.address))
    settlement_batch_run()

    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert_chain_and_db_agree(live, last_seq=1)


def test_batches_wait_while_the_node_is_down_and_post_in_order_when_it_is_back(market, live, settings):
    market.charge(1_000_000)
    settlement_batch_run()
    mine(live, CONFIRMATIONS)
    market.charge(2_000_000)
    node_url = settings.CHAIN_RPC_URL
    settings.CHAIN_RPC_URL = "http://127.0.0.1:9"

    # A batch is built from the claim bits on chain: none is prepared while the node is down.
    with pytest.raises(ChainUnavailable):
        settlement_batch_run()
    with pytest.raises(ChainUnavailable):
        settlement_batch_run()

    assert list(SettlementBatch.objects.order_by("seq").values_list("seq", "status")) == [
        (1, SettlementBatch.Status.POSTED),
    ]
    settings.CHAIN_RPC_URL = node_url
    market.charge(3_000_000)
    settlement_batch_run()
    assert_chain_and_db_agree(live, last_seq=2)


def test_a_second_caller_is_told_the_settlement_lock_is_busy(market, live):
    market.charge(1_000_000)

    with settlement_lock() as acquired:
        assert acquired
        other = threading.Thread(target=lambda: results.append(_post_in_thread()))
        results: list = []
        other.start()
        other.join()
    assert results == ["busy"]


def _post_in_thread():
    try:
        settlement_batch_prepare()
    except SettlementBusy:
        return "busy"
    finally:
        connection.close()
    return "ran"


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_post_each_batch_exactly_once(live):
    market = Market(buyer=UserFactory(), provider=UserFactory())
    link_wallet(market.provider, live.alice.address)
    market.charge(1_000_000)
    start = threading.Barrier(2)
    outcomes: list = []

    def worker():
        start.wait()
        try:
            batch = settlement_batch_run()
            outcomes.append(batch.seq if batch else None)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes, key=str) == [1, None]  # one posted it; the other found the lock taken or nothing new
    assert_chain_and_db_agree(live, last_seq=1)


def test_a_stuck_transaction_is_replaced_with_the_same_nonce_and_posted_once(market, live, settings):
    settings.CHAIN_RECEIPT_TIMEOUT_SECONDS = 1
    market.charge(1_000_000)
    live.w3.provider.make_request("evm_setAutomine", [False])
    try:
        with pytest.raises(BatchPostPending):
            settlement_batch_run()
        first = SettlementBatch.objects.get()
        with pytest.raises(BatchPostPending):
            settlement_batch_run()
        replaced = SettlementBatch.objects.get()
    finally:
        live.w3.provider.make_request("evm_setAutomine", [True])
    assert replaced.nonce == first.nonce and replaced.tx_hash != first.tx_hash
    assert SettlementAlert.objects.get(batch=replaced).detail["occurrences"] == 2
    live.w3.provider.make_request("evm_mine", [])

    settlement_batch_run()

    replaced.refresh_from_db()
    assert replaced.status == SettlementBatch.Status.POSTED
    assert live.w3.eth.get_transaction_receipt(replaced.tx_hash)["status"] == 1
    assert_chain_and_db_agree(live, last_seq=1)
