"""Reliability in numbers: the share of scheduled availability delivered, interruptions per 100 rental-hours."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework.test import APIClient

from marketplace.rentals.dispatch import rentals_sync
from marketplace.rentals.models import RentalPlacement
from nodes.availability import node_reliability
from nodes.models import AvailabilityMode, Node, NodeAvailability, NodeEvent, NodePlacement, OwnerPeriod, PlacementPause
from tests.factories import online_node
from tests.rentals.conftest import report_usage, run_round, submit


def test_owner_use_on_a_dedicated_node_and_offline_time_are_undelivered_and_pauses_count(provider, buyer):
    node = online_node(provider, name="rig", vgpus=2, price=500_000)
    now = timezone.now()
    Node.objects.filter(pk=node.pk).update(enrolled_at=now - timedelta(hours=10))
    OwnerPeriod.objects.create(node=node, started_at=now - timedelta(hours=2), ended_at=now - timedelta(hours=1))
    NodeEvent.objects.create(node=node, from_state="online", to_state="offline", reason="t")
    NodeEvent.objects.filter(node=node, to_state="offline").update(at=now - timedelta(hours=5))
    NodeEvent.objects.create(node=node, from_state="offline", to_state="online", reason="t")
    NodeEvent.objects.filter(node=node, to_state="online", reason="t").update(at=now - timedelta(hours=4))
    rental = run_round(submit(buyer, vgpus=1))
    rentals_sync()
    placement = RentalPlacement.objects.get(rental=rental)
    now_ms = int(now.timestamp() * 1000)
    report_usage(placement, 1, now_ms - 2 * 3_600_000, now_ms)
    PlacementPause.objects.create(placement_id=placement.node_placement_id, paused_at_ms=now_ms - 1000)
    reliability = node_reliability(node_id=node.pk, now=now)
    # 10 h promised (always); 1 h offline and 1 h taken by the owner were not delivered.
    assert reliability.scheduled_hours == 10.0
    assert reliability.delivered_share == 0.8
    assert (reliability.rental_hours, reliability.interruptions) == (2.0, 1)
    assert reliability.interruptions_per_100_rental_hours == 50.0
    # On a "when idle" node the owner's own use is allowed: only the offline hour is missing.
    NodeAvailability.objects.create(node=node, mode=AvailabilityMode.WHEN_IDLE)
    NodePlacement.objects.filter(pk=placement.node_placement_id).update(state="lost", stopped_at=now)
    when_idle = node_reliability(node_id=node.pk, now=now)
    assert (when_idle.scheduled_hours, when_idle.delivered_share, when_idle.interruptions) == (9.0, 0.8889, 2)
    # Buyers see the node's numbers on their rental.
    client = APIClient()
    client.force_authenticate(buyer)
    shown = client.get(f"/api/v1/rentals/{rental.pk}/").json()["placements"][0]["node_reliability"]
    assert shown["interruptions"] == 2 and shown["delivered_share"] is not None
