"""Availability policies: the API's validation, the schedule's effect on rounds, the agent's claims checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from marketplace.rentals.dispatch import rentals_sync
from marketplace.rentals.models import RentalPlacement
from nodes.availability import (
    nodes_out_of_market,
    owner_activity_record,
    placement_pause_track,
    policy_in_market,
    usage_overlaps_pause,
)
from nodes.models import AvailabilityMode, NodeAvailability, NodeCommand, NodeFlag, OwnerPeriod, PlacementPause
from tests.factories import UserFactory, online_node
from tests.rentals.conftest import report_usage, run_round, submit

URL = "/api/v1/nodes/{}/availability/"


@pytest.fixture
def api(provider):
    client = APIClient()
    client.force_authenticate(provider)
    return client


@pytest.fixture
def node(provider):
    return online_node(provider, name="gamer", vgpus=2, price=500_000)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"mode": "schedule", "windows": []}, "at least one window"),
        ({"mode": "schedule", "windows": [{"day": 0, "start": "10:00", "end": "10:00"}]}, "empty or crosses"),
        ({"mode": "schedule", "windows": [{"day": 0, "start": "23:00", "end": "07:00"}]}, "split a window"),
        (
            {
                "mode": "schedule",
                "windows": [
                    {"day": 1, "start": "08:00", "end": "12:00"},
                    {"day": "tuesday", "start": "11:00", "end": "13:00"},
                ],
            },
            "overlap",
        ),
        ({"mode": "schedule", "windows": [{"day": 7, "start": "08:00", "end": "12:00"}]}, "day must be"),
        ({"mode": "schedule", "windows": [{"day": 1, "start": "8am", "end": "12:00"}]}, "HH:MM"),
        ({"mode": "schedule", "windows": [{"day": 1, "start": "08:00", "end": "24:30"}]}, "later than 24:00"),
        ({"mode": "schedule", "windows": [{"day": 1, "start": "08:00", "end": "12:00", "x": 1}]}, "exactly day"),
        ({"mode": "always", "time_zone": "Mars/Olympus"}, "Unknown time zone"),
        ({"mode": "always", "windows": [{"day": 1, "start": "08:00", "end": "12:00"}]}, "only apply"),
        ({"mode": "when_idle", "utilization_threshold_percent": 0}, "utilization_threshold_percent"),
        ({"mode": "when_idle", "memory_threshold_percent": 101}, "memory_threshold_percent"),
        ({"mode": "when_idle", "grace_seconds": -1}, "grace_seconds"),
        ({"mode": "sometimes"}, "mode"),
        ({"mode": "schedule", "windows": [{"day": 1, "start": "08:00", "end": "09:00"}] * 71}, "windows"),
    ],
)
def test_bad_policies_are_refused_with_a_message_naming_what_to_change(api, node, body, says):
    response = api.put(URL.format(node.pk), body, format="json")
    assert response.status_code == 400, response.json()
    assert says in str(response.json())
    assert not NodeAvailability.objects.filter(node=node).exists()


def test_another_providers_node_is_not_found(node):
    client = APIClient()
    client.force_authenticate(UserFactory())
    assert client.put(URL.format(node.pk), {"mode": "when_idle"}, format="json").status_code == 404
    assert client.get(URL.format(node.pk)).status_code == 404


def test_a_policy_is_stored_shown_and_sent_to_the_connected_agent(api, node):
    body = {
        "mode": "when_idle",
        "utilization_threshold_percent": 40,
        "memory_threshold_percent": 15,
        "grace_seconds": 20,
    }
    response = api.put(URL.format(node.pk), body, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["capacity"] == "interruptible" and response.json()["in_market"] is True
    command = NodeCommand.objects.filter(node=node).last()
    assert command.message == {
        "colocation": {
            "watch_owner": True,
            "utilization_threshold_percent": 40,
            "memory_threshold_percent": 15,
            "grace_seconds": 20,
            "owner_time": False,
        }
    }
    assert api.get(URL.format(node.pk)).json()["mode"] == "when_idle"


def _schedule(node, *, day: int, start: str, end: str, zone: str = "Europe/Madrid") -> NodeAvailability:
    return NodeAvailability.objects.create(
        node=node, mode=AvailabilityMode.SCHEDULE, time_zone=zone, windows=[{"day": day, "start": start, "end": end}]
    )


def test_a_schedule_is_read_in_the_nodes_time_zone(node):
    # Monday 2026-11-30 22:30 UTC is Monday 23:30 in Madrid (CET, UTC+1).
    policy = _schedule(node, day=0, start="23:00", end="24:00")
    at = datetime(2026, 11, 30, 22, 30, tzinfo=UTC)
    assert policy_in_market(policy, at)
    assert not policy_in_market(policy, at + timedelta(minutes=30))  # 00:00 Tuesday in Madrid
    assert not policy_in_market(policy, at - timedelta(minutes=31))


def test_a_scheduled_node_drops_out_of_the_next_round_at_its_windows_end(node, buyer, provider):
    now = timezone.localtime(timezone.now(), timezone=UTC)
    minute = now.hour * 60 + now.minute
    end = minute + 1  # at 23:59 the window ends at "24:00", which a window may name; the next minute is outside it
    policy = _schedule(node, day=now.weekday(), start="00:00", end=f"{end // 60:02d}:{end % 60:02d}", zone="UTC")
    assert nodes_out_of_market(node_ids=[node.pk]) == set()
    # The window has ended by the next round: the node asks for nothing, so the bid waits.
    assert nodes_out_of_market(node_ids=[node.pk], now=now.replace(second=0) + timedelta(minutes=1)) == {node.pk}
    policy.windows = [{"day": (now.weekday() + 1) % 7, "start": "00:00", "end": "24:00"}]
    policy.save()
    rental = run_round(submit(buyer, vgpus=1))
    assert rental.state == "pending"
    market_round = node.awards.first()
    assert market_round is None


def test_an_owner_claim_takes_a_when_idle_node_out_of_the_market_and_a_dedicated_node_is_flagged(node, provider):
    NodeAvailability.objects.create(node=node, mode=AvailabilityMode.WHEN_IDLE)
    future = int((timezone.now() + timedelta(days=3)).timestamp() * 1000)
    assert owner_activity_record(node_id=node.pk, active=True, at_ms=future, reason="pid 42 (graphics)")
    assert nodes_out_of_market(node_ids=[node.pk]) == {node.pk}
    period = OwnerPeriod.objects.get(node=node)
    assert period.started_at <= timezone.now()  # a claim from the future is clamped to now
    assert not owner_activity_record(node_id=node.pk, active=True, at_ms=0, reason="again")
    assert owner_activity_record(node_id=node.pk, active=False, at_ms=0, reason="")
    assert nodes_out_of_market(node_ids=[node.pk]) == set()
    dedicated = online_node(provider, name="dedicated")
    owner_activity_record(node_id=dedicated.pk, active=True, at_ms=0, reason="pid 7")
    assert NodeFlag.objects.filter(node=dedicated, code="dedicated_owner_use").exists()
    assert not NodeFlag.objects.filter(node=node).exists()


def test_usage_over_a_claimed_pause_is_refused_and_a_backdated_pause_cannot_uncharge_stored_usage(
    node, buyer, settings
):
    settings.AGENT_USAGE_START_TOLERANCE_SECONDS = 3600
    rental = run_round(submit(buyer, vgpus=1, pausable=True))
    rentals_sync()
    placement = RentalPlacement.objects.get(rental=rental)
    node_placement = placement.node_placement
    now_ms = int(timezone.now().timestamp() * 1000)
    report_usage(placement, 1, now_ms - 60_000, now_ms - 30_000)
    # The agent claims it paused before usage it already reported: the pause starts where the usage ended.
    placement_pause_track(placement=node_placement, before="running", after="paused", at_ms=now_ms - 50_000, message="")
    pause = PlacementPause.objects.get(placement=node_placement)
    assert pause.paused_at_ms == now_ms - 30_000
    placement_pause_track(placement=node_placement, before="paused", after="running", at_ms=now_ms - 10_000, message="")
    pause.refresh_from_db()
    assert (pause.resumed_at_ms, pause.ended_by) == (now_ms - 10_000, "resumed")
    assert usage_overlaps_pause(placement=node_placement, start_ms=now_ms - 30_000, end_ms=now_ms - 29_999)
    assert usage_overlaps_pause(placement=node_placement, start_ms=now_ms - 40_000, end_ms=now_ms - 10_000)
    assert not usage_overlaps_pause(placement=node_placement, start_ms=now_ms - 10_000, end_ms=now_ms)
    assert not usage_overlaps_pause(placement=node_placement, start_ms=now_ms - 60_000, end_ms=now_ms - 30_000)
    # An open pause reaches to now and beyond: nothing after it is charged until the agent resumes.
    placement_pause_track(placement=node_placement, before="running", after="paused", at_ms=now_ms, message="")
    assert usage_overlaps_pause(placement=node_placement, start_ms=now_ms + 5_000, end_ms=now_ms + 6_000)
    # Only one pause is open at a time (a repeated PAUSED status is not a new pause).
    placement_pause_track(placement=node_placement, before="paused", after="paused", at_ms=now_ms + 1, message="")
    assert PlacementPause.objects.filter(placement=node_placement, resumed_at_ms__isnull=True).count() == 1


def test_the_provider_page_sets_a_schedule_and_names_a_bad_window_line(node, provider, client):
    client.force_login(provider)
    page = client.get("/nodes/")
    assert b"Save availability" in page.content
    bad = client.post(
        f"/nodes/{node.pk}/availability/",
        {"mode": "schedule", "time_zone": "Europe/Madrid", "windows": "mon 23:00-24:00\nevery night"},
        follow=True,
    )
    assert "Window line 2" in bad.content.decode()
    assert not NodeAvailability.objects.filter(node=node).exists()
    client.post(
        f"/nodes/{node.pk}/availability/",
        {"mode": "schedule", "time_zone": "Europe/Madrid", "windows": "mon 23:00-24:00\ntue 0:00-07:30"},
    )
    policy = NodeAvailability.objects.get(node=node)
    assert policy.windows == [
        {"day": 0, "start": "23:00", "end": "24:00"},
        {"day": 1, "start": "00:00", "end": "07:30"},
    ]
    other = UserFactory()
    client.force_login(other)
    client.post(f"/nodes/{node.pk}/availability/", {"mode": "always"})
    assert NodeAvailability.objects.get(node=node).mode == "schedule"  # another provider cannot change it


def test_the_agent_of_a_scheduled_node_is_told_when_its_window_closes_and_opens(node, provider):
    from nodes.availability import availability_schedules_push

    monday_noon = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    _schedule(node, day=0, start="08:00", end="13:00", zone="UTC")
    NodeCommand.objects.all().delete()
    assert availability_schedules_push(now=monday_noon) == []  # inside the window, as the agent was told
    assert availability_schedules_push(now=monday_noon + timedelta(hours=1)) == [node.pk]
    assert NodeCommand.objects.filter(node=node).count() == 1
    assert availability_schedules_push(now=monday_noon + timedelta(hours=2)) == []  # told once
    assert availability_schedules_push(now=monday_noon + timedelta(days=7)) == [node.pk]


def test_owner_claims_out_of_range_are_refused_as_the_senders_fault(node, settings):
    from nodes.checks import AgentMessageInvalid

    with pytest.raises(AgentMessageInvalid):
        owner_activity_record(node_id=node.pk, active=True, at_ms=0, reason="x" * 301)
    with pytest.raises(AgentMessageInvalid):
        owner_activity_record(node_id=node.pk, active=True, at_ms=-5, reason="")
    assert not OwnerPeriod.objects.filter(node=node).exists()
    # A claim from long ago cannot rewrite the past beyond the clock-skew allowance.
    owner_activity_record(node_id=node.pk, active=True, at_ms=1, reason="pid 9")
    started = OwnerPeriod.objects.get(node=node).started_at
    assert timezone.now() - started <= timedelta(seconds=settings.AGENT_USAGE_MAX_CLOCK_SKEW_SECONDS + 1)
