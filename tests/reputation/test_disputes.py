"""Disputes: who may open one and when, an operator's refund moving money once, the hold out of settlement."""

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from ledger.models import Account, Transaction
from ledger.services import charge_posting, ledger_deposit, ledger_hold, ledger_post, platform_fee
from marketplace.models import Dispute, DisputeState, Rental, RentalPlacement, RentalState
from marketplace.rentals.disputes import (
    DisputeInvalid,
    DisputeNotAllowed,
    dispute_open,
    dispute_resolve,
    held_earnings,
    held_rental_ids,
)
from marketplace.rentals.errors import RentalNotFound
from pricing.services import bid_submit
from reputation.models import Evidence, EvidenceKind, SubjectKind
from reputation.selectors import score_of
from tests.factories import UserFactory, online_node

USDC = 1_000_000
CHARGE = 4 * USDC


def _balance(user, kind: str) -> int:
    account = Account.objects.filter(owner=user, kind=kind, currency="USDC").first()
    return int(account.balance) if account else 0


def _ended_rental(
    *, state=RentalState.COMPLETED, ended_hours_ago: float = 1, provider_gross: int | None = None
) -> Rental:
    """A rental that ran on one node and was charged CHARGE (the provider's share to earnings, the fee to fees).

    With `provider_gross`, charged as metering charges: the provider is paid that price less the platform fee,
    the rest goes to the market account, and the placement's `provider_paid` is the gross figure.
    """
    buyer, provider = UserFactory(), UserFactory()
    node = online_node(provider, vgpus=1)
    ledger_deposit(user_id=buyer.pk, currency="USDC", amount=10 * USDC, idempotency_key=f"fund-{buyer.pk}")
    ledger_hold(user_id=buyer.pk, currency="USDC", amount=CHARGE, idempotency_key=f"hold-{buyer.pk}")
    ended = timezone.now() - timedelta(hours=ended_hours_ago)
    rental = Rental.objects.create(
        owner=buyer,
        pool=node.vgpus.first().pool,
        vgpus=1,
        max_price_per_hour=CHARGE,
        max_duration_seconds=3600,
        image="busybox",
        match_deadline=ended,
        state=state,
        ended_at=ended,
        charged=CHARGE,
    )
    bid = bid_submit(owner=buyer, pool_name="ada-12g", units=1, max_price_per_hour=CHARGE, reference=f"r{rental.pk}")
    posting = charge_posting(
        buyer_id=buyer.pk,
        provider_id=provider.pk,
        currency="USDC",
        buyer_amount=CHARGE,
        provider_amount=None if provider_gross is None else provider_gross - platform_fee(CHARGE),
        idempotency_key=f"charge-{rental.pk}",
        metadata={"rental": rental.pk},
    )
    ledger_post(posting)
    provider_paid = next(leg.amount for leg in posting.legs if leg.owner_id == provider.pk)
    if provider_gross is not None:
        provider_paid = provider_gross
    RentalPlacement.objects.create(
        rental=rental,
        bid=bid,
        node=node,
        provider=provider,
        placement_id=f"rental-{rental.pk}-{bid.pk}-{node.pk}",
        vgpu_count=1,
        bid_units=1,
        provider_units=1,
        buyer_payment_per_hour=CHARGE,
        provider_payment_per_hour=provider_paid,
        limit_ms=3_600_000,
        provider_paid=provider_paid,
        buyer_charged=CHARGE,
    )
    return rental


@pytest.mark.django_db
def test_a_dispute_is_refused_out_of_time_twice_on_someone_elses_or_a_running_rental_and_without_a_reason():
    rental = _ended_rental()
    with pytest.raises(RentalNotFound):
        dispute_open(owner=UserFactory(), rental_id=rental.pk, reason="not mine")
    with pytest.raises(DisputeInvalid):
        dispute_open(owner=rental.owner, rental_id=rental.pk, reason="  ")
    with pytest.raises(DisputeInvalid):
        dispute_open(owner=rental.owner, rental_id=rental.pk, reason="x" * 2001)
    late = _ended_rental(ended_hours_ago=73)
    with pytest.raises(DisputeNotAllowed) as out_of_time:
        dispute_open(owner=late.owner, rental_id=late.pk, reason="too late")
    assert out_of_time.value.code == "dispute_out_of_time"
    running = _ended_rental(state=RentalState.RUNNING)
    with pytest.raises(DisputeNotAllowed):
        dispute_open(owner=running.owner, rental_id=running.pk, reason="still running")
    assert not Dispute.objects.exists()
    dispute_open(owner=rental.owner, rental_id=rental.pk, reason="the GPU was slow")
    with pytest.raises(DisputeNotAllowed) as twice:
        dispute_open(owner=rental.owner, rental_id=rental.pk, reason="again")
    assert twice.value.code == "dispute_exists" and Dispute.objects.count() == 1


@pytest.mark.django_db
def test_the_api_opens_a_dispute_on_your_own_rental_only():
    rental = _ended_rental()
    api = APIClient()
    api.force_authenticate(UserFactory())
    assert api.post(f"/api/v1/rentals/{rental.pk}/dispute/", {"reason": "x"}, format="json").status_code == 404
    api.force_authenticate(rental.owner)
    assert api.post(f"/api/v1/rentals/{rental.pk}/dispute/", {"reason": ""}, format="json").status_code == 400
    created = api.post(f"/api/v1/rentals/{rental.pk}/dispute/", {"reason": "crashed"}, format="json")
    assert created.status_code == 201 and created.json()["state"] == "open"
    assert api.post(f"/api/v1/rentals/{rental.pk}/dispute/", {"reason": "again"}, format="json").status_code == 409
    assert api.get(f"/api/v1/rentals/{rental.pk}/dispute/").json()["reason"] == "crashed"


@pytest.mark.django_db
def test_a_refund_larger_than_the_charge_is_refused_and_nothing_moves():
    rental = _ended_rental()
    dispute = dispute_open(owner=rental.owner, rental_id=rental.pk, reason="slow")
    before = Transaction.objects.count()
    with pytest.raises(DisputeInvalid) as refused:
        dispute_resolve(dispute_id=dispute.pk, outcome="partial", refund=CHARGE + 1, operator=None)
    assert refused.value.code == "refund_too_large"
    with pytest.raises(DisputeInvalid):
        dispute_resolve(dispute_id=dispute.pk, outcome="partial", refund=0, operator=None)
    assert Transaction.objects.count() == before
    dispute.refresh_from_db()
    assert dispute.state == DisputeState.OPEN and not Evidence.objects.exists()


@pytest.mark.django_db
def test_a_rejected_dispute_is_evidence_against_the_buyer_and_moves_nothing():
    rental = _ended_rental()
    dispute = dispute_open(owner=rental.owner, rental_id=rental.pk, reason="I changed my mind")
    dispute_resolve(dispute_id=dispute.pk, outcome="reject", operator=None, note="no fault found")
    assert Evidence.objects.get().kind == EvidenceKind.DISPUTE_REJECTED
    assert score_of(kind=SubjectKind.BUYER, subject_id=rental.owner_id) < 0.5
    with pytest.raises(DisputeNotAllowed):
        dispute_resolve(dispute_id=dispute.pk, outcome="refund", operator=None)


@pytest.mark.django_db
def test_earnings_of_a_rental_that_may_still_be_disputed_are_held_out_of_settlement():
    rental = _ended_rental()
    provider = rental.placements.get().provider
    assert rental.pk in held_rental_ids()
    [held] = held_earnings(provider=provider)
    assert held["rental"] == rental.pk and held["why"] == "the dispute window is open"
    dispute = dispute_open(owner=rental.owner, rental_id=rental.pk, reason="slow")
    later = timezone.now() + timedelta(hours=100)
    assert rental.pk in held_rental_ids(now=later)  # an open dispute holds past the window
    dispute_resolve(dispute_id=dispute.pk, outcome="partial", refund=USDC, operator=None)
    assert rental.pk not in held_rental_ids(now=later)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_refunds_of_one_dispute_move_money_once_and_lower_the_providers_score():
    rental = _ended_rental()
    placement = rental.placements.get()
    dispute = dispute_open(owner=rental.owner, rental_id=rental.pk, reason="the node vanished")
    available, earnings = _balance(rental.owner, "available"), _balance(placement.provider, "earnings")
    score_before = score_of(kind=SubjectKind.NODE, subject_id=placement.node_id)
    barrier, outcomes = threading.Barrier(2), []

    def resolve():
        try:
            barrier.wait()
            outcomes.append(dispute_resolve(dispute_id=dispute.pk, outcome="refund", operator=None).moved)
        except Exception as exc:
            outcomes.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=resolve) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == [False, True]
    assert Transaction.objects.filter(idempotency_key=f"dispute:{dispute.pk}:refund").count() == 1
    assert _balance(rental.owner, "available") == available + CHARGE
    assert _balance(placement.provider, "earnings") == earnings - placement.provider_paid
    assert score_of(kind=SubjectKind.NODE, subject_id=placement.node_id) < score_before
    assert Evidence.objects.get(kind=EvidenceKind.DISPUTE_UPHELD).negative == 5_000_000


def _platform(kind: str) -> int:
    account = Account.objects.filter(owner__isnull=True, kind=kind, currency="USDC").first()
    return int(account.balance) if account else 0


@pytest.mark.django_db
@pytest.mark.parametrize("outcome", ["refund", "partial"])
def test_a_refund_of_a_metered_rental_takes_back_what_each_account_was_credited(outcome):
    """Metering pays the provider its price less the fee and leaves a residual in the market account; a refund
    asks each account for its share of what it was credited, never the gross `provider_paid` (which is more than
    the provider's earnings received, and which the ledger would refuse)."""
    rental = _ended_rental(provider_gross=3 * USDC)
    placement = rental.placements.get()
    fee = platform_fee(CHARGE)
    before = {
        "available": _balance(rental.owner, "available"),
        "earnings": _balance(placement.provider, "earnings"),
        "fees": _platform("fees"),
        "market": _platform("market"),
    }
    dispute = dispute_open(owner=rental.owner, rental_id=rental.pk, reason="it never ran my job")
    amount = CHARGE if outcome == "refund" else CHARGE // 3
    partial = None if outcome == "refund" else amount
    dispute_resolve(dispute_id=dispute.pk, outcome=outcome, operator=None, refund=partial)
    taken = {
        "earnings": before["earnings"] - _balance(placement.provider, "earnings"),
        "fees": before["fees"] - _platform("fees"),
        "market": before["market"] - _platform("market"),
    }
    assert _balance(rental.owner, "available") == before["available"] + amount
    assert sum(taken.values()) == amount
    if outcome == "refund":
        assert taken == {"earnings": 3 * USDC - fee, "fees": fee, "market": CHARGE - 3 * USDC}
    else:
        assert all(value >= 0 for value in taken.values())
        assert taken["earnings"] <= 3 * USDC - fee


@pytest.mark.django_db
def test_held_earnings_are_what_the_provider_was_credited_not_the_gross_price():
    rental = _ended_rental(provider_gross=3 * USDC)
    provider = rental.placements.get().provider
    [held] = held_earnings(provider=provider)
    assert held["amount"] == 3 * USDC - platform_fee(CHARGE) == _balance(provider, "earnings")
    dispute = dispute_open(owner=rental.owner, rental_id=rental.pk, reason="half of it never ran")
    dispute_resolve(dispute_id=dispute.pk, outcome="partial", refund=CHARGE // 2, operator=None)
    left = _balance(provider, "earnings")
    assert left < 3 * USDC - platform_fee(CHARGE)
    [after] = held_earnings(provider=provider)  # the window is still open: held, less what the refund took back
    assert after["amount"] == left
