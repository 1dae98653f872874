"""A quarantined node's rentals are settled at once through nodes' own signal (issue 10: nodes owns quarantine)."""

import pytest

from marketplace.rentals.metering import owed
from marketplace.rentals.models import RentalState
from nodes.models import NodeState, VGpu, VGpuState
from nodes.services import node_ban, node_quarantine
from tests.rentals.conftest import USDC, balance, ledger_total, report_state, report_usage, run_round, submit, sync

pytestmark = pytest.mark.django_db(transaction=True)

T0 = 1_700_000_000_000


def test_banning_a_node_interrupts_bills_only_reported_use_and_refunds_the_rest_without_a_sync(buyer, node):
    rental = run_round(submit(buyer))
    placement = rental.placements.get()
    report_state(placement, "running")
    sync()
    report_usage(placement, 1, T0, T0 + 4_000)

    node_ban(node_id=node.pk, reason="sold fake GPUs")

    rental.refresh_from_db()
    placement.refresh_from_db()
    assert rental.state == RentalState.INTERRUPTED and rental.settled_at is not None
    assert placement.settled_at is not None and placement.observed_state == "lost"
    assert rental.charged == owed(4_000, placement.buyer_payment_per_hour, 1)
    assert rental.escrow_held == 0 and balance(buyer, "escrow") == 0
    assert balance(buyer, "available") == 1_000 * USDC - rental.charged
    assert set(VGpu.objects.filter(node=node).values_list("state", "holder")) == {(VGpuState.OFFLINE, "")}
    assert ledger_total() == 0


def test_quarantining_twice_changes_nothing_and_a_node_without_rentals_is_fine(node):
    node_quarantine(node_id=node.pk, reason="abuse report")
    node_quarantine(node_id=node.pk, reason="abuse report again")
    node.refresh_from_db()
    assert node.state == NodeState.QUARANTINED and node.state_reason == "abuse report"
    assert node.events.filter(to_state=NodeState.QUARANTINED).count() == 1
