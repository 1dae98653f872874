"""Operators in the admin: retry a failed settlement post (through the exactly-once service) and resolve alerts."""

import pytest
from django.contrib.admin.models import LogEntry
from eth_utils import keccak

from ledger.models import SettlementAlert, SettlementBatch
from ledger.settlement.batches import settlement_batch_run
from ledger.settlement.errors import BatchPostFailed
from tests.factories import UserFactory

OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")


@pytest.fixture
def operator_client(client, db):
    operator = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(operator)
    return client


def _act(client, model: str, action: str, ids: list[int]):
    return client.post(f"/admin/{model}/", {"action": action, "_selected_action": [str(i) for i in ids]}, follow=True)


def test_an_operator_retries_a_failed_post_once_its_cause_is_fixed_and_resolves_what_is_left(
    operator_client, market, live
):
    market.charge(1_000_000)
    live.send(live.admin, live.settlement.functions.revokeRole(OPERATOR_ROLE, live.operator.address))
    with pytest.raises(BatchPostFailed):
        settlement_batch_run()
    batch = SettlementBatch.objects.get()
    alert = SettlementAlert.objects.get(kind=SettlementAlert.Kind.POST_FAILED)

    page = _act(operator_client, "ledger/settlementbatch", "retry_post", [batch.pk]).content.decode()
    assert f"Batch {batch.seq}: Posting batch {batch.seq} would revert" in page  # still refused: said, not a 500
    batch.refresh_from_db()
    assert (batch.status, batch.attempts) == (SettlementBatch.Status.PREPARED, 2)

    live.send(live.admin, live.settlement.functions.grantRole(OPERATOR_ROLE, live.operator.address))
    page = _act(operator_client, "ledger/settlementbatch", "retry_post", [batch.pk]).content.decode()
    batch.refresh_from_db()
    assert batch.status == SettlementBatch.Status.POSTED and f"Batch {batch.seq} is posted" in page
    assert live.settlement.functions.lastSeq().call() == 1
    alert.refresh_from_db()
    assert alert.resolved_at is not None  # posting resolves the batch's alerts

    again = _act(operator_client, "ledger/settlementbatch", "retry_post", [batch.pk]).content.decode()
    assert "only prepared or sent batches are posted" in again
    assert live.settlement.functions.lastSeq().call() == 1  # nothing posted twice

    log = list(LogEntry.objects.filter(object_id=str(batch.pk)).order_by("pk").values_list("change_message", flat=True))
    assert log[0] == "Retried posting (admin action): failed, batch_post_failed"
    assert log[1].startswith("Retried posting (admin action): posted, 0x")


def test_an_operator_resolves_open_alerts_once_each_recorded(operator_client):
    open_alert = SettlementAlert.objects.create(kind=SettlementAlert.Kind.BATCH_REJECTED, message="guardian said no")
    done = SettlementAlert.objects.create(
        kind=SettlementAlert.Kind.CLAIM_UNMATCHED, message="x", resolved_at="2026-01-01T00:00Z"
    )

    page = _act(operator_client, "ledger/settlementalert", "resolve", [open_alert.pk, done.pk]).content.decode()
    assert "Resolved: 1 alert(s)." in page
    open_alert.refresh_from_db()
    assert open_alert.resolved_at is not None
    assert list(LogEntry.objects.values_list("object_id", "change_message")) == [
        (str(open_alert.pk), "Resolved batch_rejected (admin action)")
    ]
    # The alert's fields are not editable around the action.
    form = operator_client.get(f"/admin/ledger/settlementalert/{open_alert.pk}/change/").content.decode()
    assert 'name="resolved_at' not in form and 'name="message"' not in form
