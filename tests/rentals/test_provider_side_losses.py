"""Provider-side losses (agent crash, expired start) requeue the rental; starts carry an expiry and a CPU quota."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from marketplace.rentals.metering import owed
from marketplace.rentals.models import RentalPlacement, RentalState
from marketplace.rentals.services import rental_cancel
from nodes.models import NodeCommand, NodePlacement
from nodes.services import node_commands_pending
from tests.factories import UserFactory, online_node
from tests.rentals.conftest import USDC, balance, ledger_total, report_state, report_usage, run_round, submit, sync

pytestmark = pytest.mark.django_db(transaction=True)

T0 = 1_700_000_000_000


def _start_command(placement: RentalPlacement) -> NodeCommand:
    return NodeCommand.objects.get(message__start_placement__placement_id=placement.placement_id)


def test_start_placement_carries_an_expiry_the_state_it_was_issued_for_and_a_cpu_quota(buyer, node, settings):
    settings.RENTALS_CPU_MILLICORES_PER_VGPU = 3000
    before = timezone.now()
    rental = run_round(submit(buyer, vgpus=2))
    placement = rental.placements.get()
    command = _start_command(placement)
    start = command.message["start_placement"]
    assert start["cpu_millicores"] == 6000, "never unlimited: a quota per vGPU"
    assert start["issued_for_state"] == RentalState.ALLOCATED
    ttl = timedelta(seconds=settings.RENTALS_START_COMMAND_TTL_SECONDS)
    assert before + ttl <= command.expires_at <= timezone.now() + ttl
    assert int(start["expires_at_ms"]) == int(command.expires_at.timestamp() * 1000)


def test_an_agent_crash_that_lost_the_workload_requeues_the_rental_and_bills_only_reported_use(buyer, provider, node):
    rental = run_round(submit(buyer, restart_on_interruption=True, max_duration_seconds=60))
    placement = rental.placements.get()
    report_state(placement, "running")
    sync()
    report_usage(placement, 1, T0, T0 + 5_000)
    report_state(placement, "lost", exit_code=None, message="the workload was gone when the agent restarted")
    online_node(provider, name="spare", vgpus=1, price=500_000)
    sync()
    rental.refresh_from_db()
    placement.refresh_from_db()
    events = [e.to_state for e in rental.events.all()]
    assert RentalState.FAILED not in events, "the provider's loss is never the buyer's failure"
    assert events[-2:] == [RentalState.INTERRUPTED, RentalState.PENDING] and rental.attempt == 2
    reason = rental.events.get(to_state=RentalState.INTERRUPTED).reason
    assert reason == "The provider's agent lost the workload: the workload was gone when the agent restarted"
    assert placement.settled_at is not None and rental.charged == owed(5_000, placement.buyer_payment_per_hour, 1)
    assert ledger_total() == 0


def test_a_lost_workload_of_a_rental_without_restarts_ends_interrupted_not_failed(buyer, node):
    rental = run_round(submit(buyer))
    placement = rental.placements.get()
    report_state(placement, "running")
    sync()
    report_state(placement, "lost", message="the provider's agent shut down")
    sync()
    rental.refresh_from_db()
    assert rental.state == RentalState.INTERRUPTED and rental.settled_at is not None
    assert rental.charged == 0 and balance(buyer, "available") == 1_000 * USDC


def test_a_start_the_agent_never_confirmed_is_lost_after_its_expiry_and_requeued(buyer, provider, node, settings):
    rental = run_round(submit(buyer, restart_on_interruption=True))
    placement = rental.placements.get()
    sync()
    rental.refresh_from_db()
    assert rental.state == RentalState.STARTING
    deadline = settings.RENTALS_START_COMMAND_TTL_SECONDS + settings.RENTALS_START_REPORT_GRACE_SECONDS
    RentalPlacement.objects.filter(pk=placement.pk).update(
        dispatched_at=timezone.now() - timedelta(seconds=deadline + 1)
    )
    sync()
    rental.refresh_from_db()
    placement.refresh_from_db()
    assert placement.observed_state == "lost" and placement.settled_at is not None
    assert rental.state == RentalState.PENDING and rental.attempt == 2
    assert "never confirmed the start" in rental.events.get(to_state=RentalState.INTERRUPTED).reason
    command = _start_command(placement)
    assert command.cancelled_at is not None and command.delivered_at is None
    assert node_commands_pending(node_ids=[node.pk], limit=100) == []


def test_a_cancelled_rental_cancels_its_undelivered_start(buyer, node):
    rental = run_round(submit(buyer))
    placement = rental.placements.get()
    command = _start_command(placement)
    assert [pk for pk, _, _ in node_commands_pending(node_ids=[node.pk], limit=100)] == [command.pk]
    rental_cancel(owner=buyer, rental_id=rental.pk)
    sync()
    command.refresh_from_db()
    assert command.cancelled_at is not None
    pending = node_commands_pending(node_ids=[node.pk], limit=100)
    assert all("start_placement" not in message for _, _, message in pending)


def test_an_expired_command_is_dropped_when_the_gateway_picks_commands_up(buyer, node):
    rental = run_round(submit(buyer))
    command = _start_command(rental.placements.get())
    NodeCommand.objects.filter(pk=command.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert node_commands_pending(node_ids=[node.pk], limit=100) == []
    command.refresh_from_db()
    assert command.cancelled_at is not None and command.delivered_at is None


def test_limits_not_enforced_is_shown_on_the_rental_page_and_in_the_admin(buyer, node, client):
    rental = run_round(submit(buyer))
    placement = rental.placements.get()
    note = "pids, total memory and CPU limits are not enforced (the agent is not root)"
    NodePlacement.objects.filter(pk=placement.node_placement_id).update(state="running", limits_not_enforced=note)
    client.force_login(buyer)
    page = client.get(reverse("rental-page", args=[rental.pk])).content.decode()
    assert "LIMITS NOT ENFORCED" in page and note in page

    enforced = run_round(submit(buyer))
    page = client.get(reverse("rental-page", args=[enforced.pk])).content.decode()
    assert "LIMITS NOT ENFORCED" not in page

    admin = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin)
    listing = client.get(reverse("admin:nodes_nodeplacement_changelist"), {"limits": "not_enforced"}).content.decode()
    assert placement.placement_id in listing and note in listing
    assert enforced.placements.get().placement_id not in listing
