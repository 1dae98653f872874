"""The owner takes the GPU from a rental: reputation evidence per interruption, a refund on dedicated nodes only."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from ledger.models import Account, AccountKind, Transaction
from marketplace.models import Dispute
from marketplace.rentals.disputes import DisputeInvalid, dispute_open, dispute_resolve
from marketplace.rentals.metering import metering_run
from marketplace.rentals.models import Rental, RentalPlacement, RentalState
from marketplace.rentals.owner_refunds import owner_use_refund
from nodes.availability import node_availability_set, owner_activity_record
from nodes.models import NodeFlag, NodePlacement
from nodes.services.placements import placement_status_record
from nodes.services.reports import PlacementStatusReport
from reputation.collect import missed_signals
from reputation.models import Evidence, EvidenceKind
from tests.colocation.test_rental_pauses import _running
from tests.rentals.conftest import ledger_total, platform_balance, report_usage

OWNER_PAUSE = "paused: the node's owner is using the GPU"
OWNER_STOP = "stopped: the node's owner is using the GPU"


def _charged(buyer, provider, *, mode: str = "always") -> tuple[Rental, RentalPlacement]:
    """A running rental whose placement has been charged for ten minutes of usage."""
    rental, placement = _running(buyer, provider)
    if mode != "always":
        node_availability_set(owner=provider, node_id=placement.node_id, mode=mode)
    now_ms = int(timezone.now().timestamp() * 1000)
    report_usage(placement, 1, now_ms - 600_000, now_ms - 1_000)
    metering_run()
    placement.refresh_from_db()
    assert placement.buyer_charged > 0
    return rental, placement


def _status(placement: RentalPlacement, state: str, message: str, capture) -> None:
    with capture(execute=True):
        placement_status_record(
            node_id=placement.node_id,
            status=PlacementStatusReport(
                placement_id=placement.placement_id, state=state, exit_code=None, message=message, at_ms=0
            ),
        )


def _balance(user, kind: str) -> int:
    account = Account.objects.filter(owner=user, kind=kind, currency="USDC").first()
    return int(account.balance) if account else 0


def _interruptions(node_id: int) -> list[tuple[str, int]]:
    kinds = [EvidenceKind.DEDICATED_OWNER_USE, EvidenceKind.OWNER_INTERRUPTION]
    return list(Evidence.objects.filter(node_id=node_id, kind__in=kinds).order_by("pk").values_list("kind", "negative"))


def _refunds() -> int:
    return Transaction.objects.filter(idempotency_key__startswith="owner-use:").count()


@pytest.mark.django_db
def test_a_dedicated_nodes_owner_taking_the_gpu_refunds_the_buyer_once_and_costs_reputation(
    buyer, provider, django_capture_on_commit_callbacks
):
    rental, placement = _charged(buyer, provider)
    buyer_before = _balance(buyer, AccountKind.AVAILABLE)
    earnings_before = _balance(provider, AccountKind.EARNINGS)
    fees_before = platform_balance(AccountKind.FEES)
    owner_activity_record(node_id=placement.node_id, active=True, at_ms=0, reason="a game started")
    assert NodeFlag.objects.filter(node_id=placement.node_id, code="dedicated_owner_use").exists()
    _status(placement, "paused", OWNER_PAUSE, django_capture_on_commit_callbacks)

    assert _interruptions(placement.node_id) == [(EvidenceKind.DEDICATED_OWNER_USE, 5_000_000)]
    assert _balance(buyer, AccountKind.AVAILABLE) - buyer_before == placement.buyer_charged
    # The money comes back from where the charges put it: all of this placement's earnings, its fee, the residual.
    assert earnings_before > 0 and _balance(provider, AccountKind.EARNINGS) == 0
    assert fees_before - platform_balance(AccountKind.FEES) > 0
    assert _refunds() == 1 and ledger_total() == 0

    # The path again: resumed and frozen a second time, and the refund called directly. A second interruption
    # is new evidence, but the placement is refunded once.
    _status(placement, "running", "resumed", django_capture_on_commit_callbacks)
    _status(placement, "paused", OWNER_PAUSE, django_capture_on_commit_callbacks)
    assert owner_use_refund(placement_id=placement.placement_id) == 0
    assert len(_interruptions(placement.node_id)) == 2
    assert _refunds() == 1 and ledger_total() == 0
    assert _balance(buyer, AccountKind.AVAILABLE) - buyer_before == placement.buyer_charged

    # A later dispute of the rental can give back only what was not refunded yet.
    _status(placement, "lost", OWNER_STOP, django_capture_on_commit_callbacks)
    Rental.objects.filter(pk=rental.pk).update(state=RentalState.INTERRUPTED, ended_at=timezone.now())
    rental.refresh_from_db()
    dispute = dispute_open(owner=buyer, rental_id=rental.pk, reason="the owner took it")
    with pytest.raises(DisputeInvalid) as too_much:
        dispute_resolve(dispute_id=dispute.pk, outcome="partial", refund=rental.charged, operator=None)
    assert too_much.value.code == "refund_too_large"
    resolved = dispute_resolve(dispute_id=dispute.pk, outcome="refund", operator=None)
    assert resolved.dispute.refund == rental.charged - placement.buyer_charged
    assert Dispute.objects.count() == 1 and ledger_total() == 0


@pytest.mark.django_db
def test_a_stopped_placement_on_a_dedicated_node_is_one_interruption_and_one_refund(
    buyer, provider, django_capture_on_commit_callbacks
):
    _, placement = _charged(buyer, provider)
    _status(placement, "lost", OWNER_STOP, django_capture_on_commit_callbacks)
    _status(placement, "lost", OWNER_STOP, django_capture_on_commit_callbacks)  # a resent report
    assert _interruptions(placement.node_id) == [(EvidenceKind.DEDICATED_OWNER_USE, 5_000_000)]
    assert _refunds() == 1 and ledger_total() == 0


@pytest.mark.django_db
def test_an_interruptible_nodes_interruption_is_small_evidence_and_no_refund(
    buyer, provider, django_capture_on_commit_callbacks
):
    _, placement = _charged(buyer, provider, mode="when_idle")
    buyer_before = _balance(buyer, AccountKind.AVAILABLE)
    owner_activity_record(node_id=placement.node_id, active=True, at_ms=0, reason="a render started")
    _status(placement, "paused", OWNER_PAUSE, django_capture_on_commit_callbacks)
    assert _interruptions(placement.node_id) == [(EvidenceKind.OWNER_INTERRUPTION, 250_000)]
    assert _refunds() == 0 and _balance(buyer, AccountKind.AVAILABLE) == buyer_before


@pytest.mark.django_db
def test_a_placement_lost_for_another_reason_is_no_owner_interruption(
    buyer, provider, django_capture_on_commit_callbacks
):
    _, placement = _charged(buyer, provider)
    _status(placement, "lost", "the container runtime crashed", django_capture_on_commit_callbacks)
    assert _interruptions(placement.node_id) == [] and _refunds() == 0
    assert Evidence.objects.filter(node_id=placement.node_id, kind=EvidenceKind.PLACEMENT_LOST).exists()


@pytest.mark.django_db
def test_self_dealing_interruptions_count_for_nothing(provider, django_capture_on_commit_callbacks):
    from ledger.services import ledger_deposit

    ledger_deposit(user_id=provider.pk, currency="USDC", amount=100_000_000, idempotency_key=f"self-{provider.pk}")
    _, placement = _charged(provider, provider)  # the provider rents its own dedicated node
    _status(placement, "paused", OWNER_PAUSE, django_capture_on_commit_callbacks)
    evidence = Evidence.objects.get(node_id=placement.node_id, kind=EvidenceKind.DEDICATED_OWNER_USE)
    assert evidence.self_dealing and (evidence.positive, evidence.negative) == (0, 0)
    assert NodePlacement.objects.get(pk=placement.node_placement_id).state == "paused"


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_refunds_of_one_placement_move_money_once(buyer, provider):
    _, placement = _charged(buyer, provider)
    buyer_before = _balance(buyer, AccountKind.AVAILABLE)
    barrier, outcomes = threading.Barrier(2), []

    def refund():
        try:
            barrier.wait()
            outcomes.append(owner_use_refund(placement_id=placement.placement_id))
        except Exception as exc:
            outcomes.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=refund) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == [0, placement.buyer_charged]
    assert _refunds() == 1 and ledger_total() == 0
    assert _balance(buyer, AccountKind.AVAILABLE) == buyer_before + placement.buyer_charged


@pytest.mark.django_db
def test_the_collector_records_an_interruption_whose_signal_was_lost(buyer, provider):
    _, placement = _charged(buyer, provider, mode="when_idle")
    _status(placement, "paused", OWNER_PAUSE, _no_callbacks)  # the signal never runs
    assert _interruptions(placement.node_id) == []
    assert missed_signals(since=timezone.now() - timedelta(hours=1)) >= 1
    assert missed_signals(since=timezone.now() - timedelta(hours=1)) == 0
    assert _interruptions(placement.node_id) == [(EvidenceKind.OWNER_INTERRUPTION, 250_000)]


@contextmanager
def _no_callbacks(execute: bool = False):
    yield
