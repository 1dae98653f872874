"""Extending a rental (an escrow top-up): exact amounts, exactly once per key, row locks under real threads."""

import threading
import uuid

import pytest
from django.db import connections

from marketplace.rentals.errors import RentalAlreadyEnded, RentalFundsShort, RentalInvalid, RentalNotFound
from marketplace.rentals.extend import rental_extend
from marketplace.rentals.metering import metering_run, owed
from marketplace.rentals.models import Rental, RentalState
from marketplace.rentals.services import hold_amount, rental_cancel
from tests.factories import UserFactory
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

T0 = 1_700_000_000_000


def _running(buyer):
    rental = run_round(submit(buyer, max_duration_seconds=60))
    placement = rental.placements.get()
    report_state(placement, "running")
    sync()
    rental.refresh_from_db()
    return rental, placement


@pytest.mark.django_db(transaction=True)
def test_extending_a_running_rental_holds_the_cleared_price_and_lets_metering_bill_the_extra_time(buyer, node):
    rental, placement = _running(buyer)
    assert rental.state == RentalState.RUNNING
    escrow_before, available_before = balance(buyer, "escrow"), balance(buyer, "available")
    key = str(uuid.uuid4())

    result = rental_extend(owner=buyer, rental_id=rental.pk, add_seconds=600, idempotency_key=key)

    expected = hold_amount(price_per_hour=placement.buyer_payment_per_hour, units=1, duration_ms=600_000)
    assert result.created and result.amount == expected == 83_334  # 0.50 USDC/h for 10 min, rounded up
    rental.refresh_from_db()
    placement.refresh_from_db()
    assert rental.max_duration_seconds == 660 and placement.limit_ms == 660_000
    assert balance(buyer, "escrow") == escrow_before + expected
    assert balance(buyer, "available") == available_before - expected
    assert rental.events.filter(reason__startswith="Extended by 10 min").exists()
    # The same key again (a resent form) changes nothing.
    again = rental_extend(owner=buyer, rental_id=rental.pk, add_seconds=600, idempotency_key=key)
    assert not again.created and again.amount == 0
    rental.refresh_from_db()
    assert rental.max_duration_seconds == 660 and balance(buyer, "escrow") == escrow_before + expected
    # Usage past the first 60 s is billed now, up to the new limit, and the books balance after settling.
    report_usage(placement, 1, T0, T0 + 120_000)
    metering_run()
    placement.refresh_from_db()
    assert placement.metered_run_ms == 120_000
    report_state(placement, "exited", exit_code=0)
    sync()
    rental.refresh_from_db()
    assert rental.settled_at is not None and balance(buyer, "escrow") == 0
    assert rental.charged == owed(120_000, placement.buyer_payment_per_hour, 1)
    assert balance(buyer, "available") == 1_000 * USDC - rental.charged and ledger_total() == 0


@pytest.mark.django_db(transaction=True)
def test_a_pending_rental_extends_at_its_max_price(buyer, node):
    rental = submit(buyer, vgpus=2, max_price_per_hour="1.5", max_duration_seconds=60)
    result = rental_extend(owner=buyer, rental_id=rental.pk, add_seconds=3600, idempotency_key="pending-ext-1")
    assert result.amount == 3 * USDC  # 1.5 x 2 vGPUs x 1 h
    rental.refresh_from_db()
    assert rental.escrow_held == rental.held_total == 3 * USDC + 50_000
    rental_cancel(owner=buyer, rental_id=rental.pk)
    assert balance(buyer, "available") == 1_000 * USDC and ledger_total() == 0


@pytest.mark.django_db(transaction=True)
def test_bad_extensions_are_refused_with_what_to_change_and_change_nothing(buyer, node, settings):
    rental = submit(buyer, max_duration_seconds=60)
    other = UserFactory()
    fund(other, 100 * USDC)
    cases = [
        (dict(owner=buyer, add_seconds=59, idempotency_key="k-short-1"), RentalInvalid, "at least 60"),
        (dict(owner=buyer, add_seconds=True, idempotency_key="k-bool-1"), RentalInvalid, "whole number"),
        (dict(owner=buyer, add_seconds="600", idempotency_key="k-text-1"), RentalInvalid, "whole number"),
        (dict(owner=buyer, add_seconds=600, idempotency_key="short"), RentalInvalid, "idempotency key"),
        (dict(owner=buyer, add_seconds=600, idempotency_key="x" * 101), RentalInvalid, "idempotency key"),
        (dict(owner=buyer, add_seconds=10**9, idempotency_key="k-huge-1"), RentalInvalid, "at most"),
        (dict(owner=other, add_seconds=600, idempotency_key="k-other-1"), RentalNotFound, "no rental"),
    ]
    for kwargs, error, words in cases:
        with pytest.raises(error) as caught:
            rental_extend(rental_id=rental.pk, **kwargs)
        assert words in caught.value.message, kwargs
    poor = UserFactory()
    fund(poor, 100_000)  # 0.10 USDC: enough for 60 s at 2 USDC/h, not for an hour more
    cheap = submit(poor, max_duration_seconds=60)
    with pytest.raises(RentalFundsShort) as caught:
        rental_extend(owner=poor, rental_id=cheap.pk, add_seconds=3600, idempotency_key="k-poor-1")
    assert "2 USDC more" in caught.value.message
    rental_cancel(owner=buyer, rental_id=rental.pk)
    with pytest.raises(RentalAlreadyEnded):
        rental_extend(owner=buyer, rental_id=rental.pk, add_seconds=600, idempotency_key="k-ended-1")
    assert Rental.objects.get(pk=rental.pk).max_duration_seconds == 60
    assert Rental.objects.get(pk=cheap.pk).max_duration_seconds == 60
    assert ledger_total() == 0


def _in_threads(targets) -> list:
    barrier = threading.Barrier(len(targets))
    outcomes: list = [None] * len(targets)

    def run(i, target):
        try:
            barrier.wait()
            outcomes[i] = target()
        except Exception as exc:  # collected for the assertions
            outcomes[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_concurrent_extensions_hold_exactly_once_per_key_and_never_overdraw(provider):
    from tests.factories import online_node

    online_node(provider, name="rig", vgpus=2, price=500_000)
    buyer = UserFactory()
    fund(buyer, 2 * USDC + 100_000)  # the rental's 60 s at 2 USDC/h, then room for one hour at 2 USDC/h
    rental = submit(buyer, max_duration_seconds=60)
    available = balance(buyer, "available")
    assert available == 2 * USDC + 100_000 - 33_334

    def extend(key):
        return lambda: rental_extend(owner=buyer, rental_id=rental.pk, add_seconds=3600, idempotency_key=key)

    # Four threads with one key, four with their own keys: one hour fits, a second does not.
    outcomes = _in_threads([extend("same-key-1")] * 4 + [extend(f"own-key-{i}") for i in range(4)])
    created = [o for o in outcomes if not isinstance(o, Exception) and o.created]
    refused = [o for o in outcomes if isinstance(o, RentalFundsShort)]
    replays = [o for o in outcomes if not isinstance(o, Exception) and not o.created]
    assert len(created) == 1 and created[0].amount == 2 * USDC, outcomes
    assert len(created) + len(refused) + len(replays) == 8, outcomes
    rental.refresh_from_db()
    assert rental.max_duration_seconds == 3660
    assert balance(buyer, "available") == available - 2 * USDC
    assert balance(buyer, "escrow") == rental.escrow_held == 33_334 + 2 * USDC
    assert ledger_total() == 0
