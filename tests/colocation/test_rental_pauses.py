"""Paused time and the rental: it does not count toward max duration; a pause past the limit interrupts."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from marketplace.rentals.dispatch import rentals_sync
from marketplace.rentals.models import Rental, RentalPlacement, RentalState
from nodes.models import PlacementPause
from tests.factories import online_node
from tests.rentals.conftest import report_state, run_round, submit


def _running(buyer, provider, **overrides) -> tuple[Rental, RentalPlacement]:
    online_node(provider, name="rig", vgpus=2, price=500_000)
    rental = run_round(submit(buyer, vgpus=1, pausable=True, **overrides))
    rentals_sync()
    placement = RentalPlacement.objects.get(rental=rental)
    report_state(placement, "running")
    rentals_sync()
    rental.refresh_from_db()
    assert rental.state == RentalState.RUNNING
    return rental, placement


def test_paused_time_does_not_count_toward_max_duration(buyer, provider):
    rental, placement = _running(buyer, provider, max_duration_seconds=60)
    now = timezone.now()
    Rental.objects.filter(pk=rental.pk).update(started_at=now - timedelta(seconds=90))
    now_ms = int(now.timestamp() * 1000)
    pause = PlacementPause.objects.create(
        placement_id=placement.node_placement_id, paused_at_ms=now_ms - 80_000, resumed_at_ms=now_ms - 20_000
    )
    report_state(placement, "running")
    rentals_sync()
    rental.refresh_from_db()
    assert rental.state == RentalState.RUNNING  # 90 s since the start, 60 s of it frozen: 30 s of 60 used
    pause.delete()
    rentals_sync()
    rental.refresh_from_db()
    assert (rental.state, rental.state_reason) == (RentalState.COMPLETED, "Max duration reached")


def test_a_pause_longer_than_the_limit_interrupts_and_requeues(buyer, provider, settings):
    settings.RENTALS_PAUSE_LIMIT_SECONDS = 60
    rental, placement = _running(buyer, provider, restart_on_interruption=True)
    report_state(placement, "paused")
    now_ms = int(timezone.now().timestamp() * 1000)
    PlacementPause.objects.create(placement_id=placement.node_placement_id, paused_at_ms=now_ms - 30_000)
    rentals_sync()
    rental.refresh_from_db()
    assert rental.state == RentalState.RUNNING  # paused, within the limit
    PlacementPause.objects.filter(placement_id=placement.node_placement_id).update(paused_at_ms=now_ms - 61_000)
    rentals_sync()
    rental.refresh_from_db()
    assert rental.attempt == 2 and rental.state == RentalState.PENDING
    assert rental.events.filter(to_state=RentalState.INTERRUPTED, reason__contains="longer than 60 s").exists()
