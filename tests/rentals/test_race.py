"""Money paths under real concurrency on PostgreSQL: every report charged once, every refund paid once."""

import threading

import pytest
from django.db import connections

from marketplace.rentals.errors import RentalAlreadyEnded
from marketplace.rentals.metering import metering_run, owed
from marketplace.rentals.models import RentalState
from marketplace.rentals.services import rental_cancel
from tests.factories import UserFactory, online_node
from tests.rentals.conftest import (
    USDC,
    balance,
    fund,
    ledger_total,
    report_state,
    report_usage,
    run_round,
    submit,
    sync,
)

pytestmark = pytest.mark.django_db(transaction=True)

T0 = 1_700_000_000_000


def _in_threads(target, count: int) -> list:
    barrier = threading.Barrier(count)
    outcomes: list = []

    def run():
        try:
            barrier.wait()
            outcomes.append(target())
        except Exception as exc:  # collected for the assertions
            outcomes.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_the_same_usage_reports_metered_from_four_threads_are_charged_once(provider):
    online_node(provider, name="big", vgpus=8, price=300_000)
    buyers = [UserFactory() for _ in range(4)]
    placements = []
    for buyer in buyers:
        fund(buyer, 100 * USDC)
        for _ in range(2):
            rental = run_round(submit(buyer, max_price_per_hour="1"))
            placement = rental.placements.get()
            report_state(placement, "running")
            placements.append(placement)
    sync()
    for placement in placements:
        for seq in range(1, 6):
            report_usage(placement, seq, T0 + (seq - 1) * 1_000, T0 + seq * 1_000 + 7)

    outcomes = _in_threads(lambda: metering_run().reports, 4)
    outcomes += [metering_run().reports]

    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert sum(outcomes) == 5 * len(placements)  # each report taken by exactly one run
    for placement in placements:
        placement.refresh_from_db()
        assert placement.metered_vgpu_ms == 5_035
        assert placement.buyer_charged == owed(5_035, placement.buyer_payment_per_hour, 1)
    for buyer in buyers:
        charged = sum(p.buyer_charged for p in placements if p.rental.owner_id == buyer.pk)
        assert balance(buyer, "available") + balance(buyer, "escrow") == 100 * USDC - charged
    assert ledger_total() == 0


def test_cancelling_from_two_threads_at_once_refunds_once(node, buyer):
    rental = submit(buyer)

    outcomes = _in_threads(lambda: rental_cancel(owner=buyer, rental_id=rental.pk), 2)

    refused = [o for o in outcomes if isinstance(o, RentalAlreadyEnded)]
    assert len(refused) == 1 and len(outcomes) == 2
    rental.refresh_from_db()
    assert rental.state == RentalState.CANCELLED and rental.refunded == rental.held_total
    assert balance(buyer, "available") == 1_000 * USDC and balance(buyer, "escrow") == 0
    assert ledger_total() == 0
