"""The rental state machine and its money on PostgreSQL, with agent reports written as the gateway writes them."""

from datetime import timedelta

import pytest
from django.utils import timezone

from ledger.services import platform_fee
from marketplace.rentals.metering import metering_run, owed
from marketplace.rentals.models import Rental, RentalEvent, RentalPlacement, RentalState
from marketplace.rentals.services import hold_amount, rental_cancel, rental_expire_unmatched
from nodes.models import NodeCommand, NodeState, VGpu, VGpuState
from nodes.services import node_transition
from pricing.models import Bid, BidState, RoundAward
from tests.factories import UserFactory, online_node
from tests.rentals.conftest import (
    USDC,
    balance,
    ledger_total,
    platform_balance,
    report_state,
    report_usage,
    run_round,
    submit,
    sync,
)

pytestmark = pytest.mark.django_db(transaction=True)

T0 = 1_700_000_000_000  # an agent's clock, ms


def _running(buyer, node, **overrides) -> tuple[Rental, RentalPlacement]:
    rental = run_round(submit(buyer, **overrides))
    placement = rental.placements.get()
    report_state(placement, "running")
    sync()
    rental.refresh_from_db()
    placement.refresh_from_db()
    return rental, placement


def test_submit_holds_max_cost_and_queues_a_bid(buyer, node):
    rental = submit(buyer, vgpus=2, max_price_per_hour="1.5", max_duration_seconds=7200)

    assert rental.state == RentalState.PENDING
    assert rental.escrow_held == rental.held_total == 2 * 1_500_000 * 2 == 6 * USDC
    assert balance(buyer, "escrow") == 6 * USDC and balance(buyer, "available") == 994 * USDC
    bid = rental.bid
    assert (bid.units, bid.max_price_per_hour, bid.reference, bid.state) == (
        2,
        1_500_000,
        f"rental:{rental.pk}:1",
        "pending",
    )
    assert bid.deadline == rental.match_deadline
    assert list(rental.events.values_list("to_state", "reason")) == [("pending", "Submitted")]


def test_round_allocates_cuts_the_hold_and_sends_start_placement(buyer, node):
    rental = run_round(submit(buyer, max_price_per_hour="2", max_duration_seconds=3600, env={"A": "1"}))

    assert rental.state == RentalState.STARTING
    placement = rental.placements.get()
    bid = Bid.objects.get(pk=rental.bid_id)
    award = RoundAward.objects.get(round=bid.round)
    assert (placement.buyer_payment_per_hour, placement.bid_units) == (bid.payment_per_hour, 1)
    assert (placement.provider_payment_per_hour, placement.provider_units) == (award.payment_per_hour, award.units_sold)
    # The round's one price is the pool reference, 0.50 per vGPU-hour, so 0.50 stays held for 1 h.
    assert bid.payment_per_hour == 500_000
    assert rental.escrow_held == 500_000 and rental.refunded == 1_500_000
    assert balance(buyer, "escrow") == 500_000
    command = NodeCommand.objects.get(node=node)
    start = command.message["start_placement"]
    assert start["placement_id"] == placement.placement_id and start["image"] == rental.image
    assert start["command"] == ["sh", "-c", "echo hi"] and start["env"] == {"A": "1"}
    assert start["vgpu_local_ids"] == placement.vgpu_local_ids and "peers" not in start
    assert set(VGpu.objects.filter(node=node, state=VGpuState.RESERVED).values_list("holder", flat=True)) == {
        f"bid:{bid.pk}"
    }
    assert [e.to_state for e in RentalEvent.objects.filter(rental=rental)] == ["pending", "allocated", "starting"]


def test_multi_node_rentals_tell_every_placement_its_peers(buyer, provider):
    first = online_node(provider, name="a", vgpus=1, price=100_000)
    second = online_node(provider, name="b", vgpus=1, price=100_000)
    rental = run_round(submit(buyer, vgpus=2, ports=[8080]))

    assert rental.placements.count() == 2
    starts = [c.message["start_placement"] for c in NodeCommand.objects.filter(node__in=[first, second])]
    expected = sorted((p.placement_id, f"node-{p.node_id}", 8080) for p in rental.placements.all())
    for start in starts:
        assert sorted((p["placement_id"], p["address"], p["port"]) for p in start["peers"]) == expected
        assert not start.get("network_allowed") and start["ports"] == [{"container_port": 8080, "protocol": "tcp"}]


def test_usage_is_charged_per_second_at_the_locked_rates_exactly_once(buyer, provider, node):
    rental, placement = _running(buyer, node, max_price_per_hour="2")
    assert rental.state == RentalState.RUNNING
    assert set(VGpu.objects.filter(node=node, holder=placement.placement_id).values_list("state", flat=True)) == {
        "busy"
    }

    report_usage(placement, 1, T0, T0 + 1_500)
    report_usage(placement, 3, T0 + 2_500, T0 + 3_700)  # arrives before seq 2: waits for it
    metering_run()
    placement.refresh_from_db()
    assert (placement.metered_through_seq, placement.metered_vgpu_ms) == (1, 1_500)
    report_usage(placement, 2, T0 + 1_500, T0 + 2_500)
    metering_run()
    metering_run()  # nothing new: nothing charged twice
    placement.refresh_from_db()
    rental.refresh_from_db()
    assert (placement.metered_through_seq, placement.metered_vgpu_ms) == (3, 3_700)
    buyer_owed = owed(3_700, placement.buyer_payment_per_hour, placement.bid_units)
    provider_owed = owed(3_700, placement.provider_payment_per_hour, placement.provider_units)
    assert buyer_owed == 3_700 * 500_000 // 3_600_000 == 513
    assert rental.charged == placement.buyer_charged == buyer_owed
    # The platform fee comes out of the provider's side.
    assert balance(provider, "earnings") == provider_owed - platform_balance("fees")
    assert placement.provider_paid == provider_owed
    assert rental.escrow_held == 500_000 - buyer_owed == balance(buyer, "escrow")
    assert ledger_total() == 0

    report_state(placement, "exited", exit_code=0)
    sync()
    rental.refresh_from_db()
    assert rental.state == RentalState.COMPLETED and rental.settled_at is not None
    assert balance(buyer, "escrow") == 0 and rental.escrow_held == 0
    assert balance(buyer, "available") == 1_000 * USDC - rental.charged
    assert rental.refunded == rental.held_total - rental.charged
    assert set(VGpu.objects.filter(node=node).values_list("state", flat=True)) == {VGpuState.FREE}
    fees = platform_balance("fees")
    assert rental.charged == buyer_owed and balance(provider, "earnings") == provider_owed - fees
    # Fees are taken per metering posting, each rounded down, out of the provider's side.
    assert platform_fee(buyer_owed) - 2 <= fees <= platform_fee(buyer_owed)
    assert platform_balance("market") == buyer_owed - provider_owed == 0
    # A report stored after the settlement (the gateway stores only usage within the placement's life)
    # is charged once, late: held again from the buyer's available balance.
    report_usage(placement, 4, T0 + 3_700, T0 + 4_200)
    metering_run()
    metering_run()
    sync()
    rental.refresh_from_db()
    late_buyer = owed(4_200, placement.buyer_payment_per_hour, placement.bid_units)
    late_provider = owed(4_200, placement.provider_payment_per_hour, placement.provider_units)
    fees = platform_balance("fees")
    assert rental.charged == late_buyer and balance(provider, "earnings") == late_provider - fees
    assert balance(buyer, "escrow") == 0 and balance(buyer, "available") == 1_000 * USDC - rental.charged
    assert platform_balance("market") == late_buyer - late_provider == 0
    assert ledger_total() == 0


def test_usage_is_never_billed_beyond_max_duration(buyer, node):
    rental, placement = _running(buyer, node, max_duration_seconds=2)
    report_usage(placement, 1, T0, T0 + 1_500)
    report_usage(placement, 2, T0 + 1_500, T0 + 3_000)
    metering_run()
    placement.refresh_from_db()
    assert placement.metered_run_ms == 2_000

    Rental.objects.filter(pk=rental.pk).update(started_at=timezone.now() - timedelta(seconds=3))
    sync()
    rental.refresh_from_db()
    assert (rental.state, rental.state_reason) == (RentalState.COMPLETED, "Max duration reached")
    assert NodeCommand.objects.filter(message__stop_placement__placement_id=placement.placement_id).exists()
    report_state(placement, "exited", exit_code=143)
    sync()
    rental.refresh_from_db()
    assert rental.settled_at is not None
    assert rental.charged == owed(2_000, placement.buyer_payment_per_hour, 1)
    assert balance(buyer, "available") == 1_000 * USDC - rental.charged and ledger_total() == 0


def test_a_workload_that_exits_non_zero_fails_and_pays_for_what_it_used(buyer, node):
    rental, placement = _running(buyer, node)
    report_usage(placement, 1, T0, T0 + 60_000)
    report_state(placement, "exited", exit_code=3)
    sync()
    rental.refresh_from_db()
    assert (rental.state, rental.state_reason) == (RentalState.FAILED, "The workload exited with code 3")
    assert rental.charged == owed(60_000, placement.buyer_payment_per_hour, 1) == 8_333
    assert rental.settled_at is not None and balance(buyer, "escrow") == 0


def test_a_placement_the_provider_cannot_start_fails_and_costs_nothing(buyer, node):
    rental = run_round(submit(buyer))
    placement = rental.placements.get()
    report_state(placement, "failed", message="image not found")
    sync()
    rental.refresh_from_db()
    assert rental.state == RentalState.FAILED and "image not found" in rental.state_reason
    assert rental.charged == 0 and balance(buyer, "available") == 1_000 * USDC
    assert set(VGpu.objects.filter(node=node).values_list("state", flat=True)) == {VGpuState.FREE}


def test_cancelling_a_pending_rental_refunds_everything(buyer, node):
    rental = submit(buyer)
    rental_cancel(owner=buyer, rental_id=rental.pk)
    rental.refresh_from_db()
    assert rental.state == RentalState.CANCELLED and rental.settled_at is not None
    assert Bid.objects.get(pk=rental.bid_id).state == BidState.CANCELLED
    assert balance(buyer, "available") == 1_000 * USDC and balance(buyer, "escrow") == 0


def test_cancelling_a_running_rental_stops_it_and_bills_only_until_the_cancel(buyer, node):
    rental, placement = _running(buyer, node)
    now_ms = int(timezone.now().timestamp() * 1000)
    report_usage(placement, 1, now_ms - 10_000, now_ms - 5_000)
    rental_cancel(owner=buyer, rental_id=rental.pk)
    rental.refresh_from_db()
    assert rental.state == RentalState.CANCELLED and rental.settled_at is None  # waits for the agent
    assert NodeCommand.objects.filter(message__stop_placement__placement_id=placement.placement_id).exists()
    # The agent's last report straddles the cancellation: only the part before it is billed.
    report_usage(placement, 2, now_ms - 5_000, now_ms + 60_000)
    report_state(placement, "exited", exit_code=143)
    sync()
    rental.refresh_from_db()
    placement.refresh_from_db()
    assert rental.settled_at is not None
    assert 10_000 <= placement.metered_run_ms < 12_000
    assert rental.charged == owed(placement.metered_vgpu_ms, placement.buyer_payment_per_hour, 1)
    assert balance(buyer, "available") == 1_000 * USDC - rental.charged and ledger_total() == 0


def test_an_unmatched_rental_expires_at_its_deadline_with_a_full_refund(buyer, node):
    rental = submit(buyer, max_price_per_hour="0.1")  # below the reserve price: never matches
    run_round(rental)
    assert rental_expire_unmatched() == []
    assert rental_expire_unmatched(now=timezone.now() + timedelta(minutes=21)) == [rental.pk]
    rental.refresh_from_db()
    assert rental.state == RentalState.EXPIRED and rental.state_reason == "No match before the deadline"
    assert balance(buyer, "available") == 1_000 * USDC


def test_a_lost_node_interrupts_and_a_restartable_rental_runs_again_elsewhere(buyer, provider, node):
    rental, placement = _running(buyer, node, restart_on_interruption=True, max_duration_seconds=60)
    report_usage(placement, 1, T0, T0 + 5_000)
    node_transition(node=node, to_state=NodeState.OFFLINE, reason="test: no heartbeat")
    spare = online_node(provider, name="spare", vgpus=1, price=500_000)
    sync()
    rental.refresh_from_db()
    placement.refresh_from_db()
    first_charge = owed(5_000, placement.buyer_payment_per_hour, 1)
    assert placement.settled_at is not None and placement.observed_state == "lost"
    assert rental.state == RentalState.PENDING and rental.attempt == 2 and rental.used_ms == 5_000
    assert rental.charged == first_charge
    assert [e.to_state for e in rental.events.all()][-2:] == ["interrupted", "pending"]
    # Topped back up to the max price for the 55 s that are left.
    assert rental.escrow_held == hold_amount(price_per_hour=2 * USDC, units=1, duration_ms=55_000)
    # A report from the lost node that arrives later is never charged.
    report_usage(placement, 2, T0 + 5_000, T0 + 9_000)

    rental = run_round(rental)
    second = rental.placements.exclude(pk=placement.pk).get()
    assert second.node == spare and second.limit_ms == 55_000
    report_state(second, "running")
    report_usage(second, 1, T0 + 20_000, T0 + 30_000)
    report_state(second, "exited", exit_code=0)
    sync()
    rental.refresh_from_db()
    assert rental.state == RentalState.COMPLETED and rental.settled_at is not None
    assert rental.charged == first_charge + owed(10_000, second.buyer_payment_per_hour, 1)
    assert balance(buyer, "available") == 1_000 * USDC - rental.charged
    assert ledger_total() == 0


def test_a_lost_node_ends_a_rental_that_did_not_ask_for_restarts(buyer, node):
    rental, placement = _running(buyer, node)
    report_usage(placement, 1, T0, T0 + 5_000)
    node_transition(node=node, to_state=NodeState.OFFLINE, reason="test: no heartbeat")
    sync()
    rental.refresh_from_db()
    assert (rental.state, rental.state_reason) == (RentalState.INTERRUPTED, f"Node {node.pk} was lost")
    assert rental.settled_at is not None and rental.charged == owed(5_000, placement.buyer_payment_per_hour, 1)
    assert balance(buyer, "available") == 1_000 * USDC - rental.charged and balance(buyer, "escrow") == 0


def test_a_round_that_wins_a_cancelled_rentals_bid_hands_the_vgpus_back(buyer, node):
    rental = submit(buyer)
    Rental.objects.filter(pk=rental.pk).update(state=RentalState.CANCELLED)  # cancelled as the round ran
    run_round(rental)
    assert rental.placements.count() == 0
    assert set(VGpu.objects.filter(node=node).values_list("state", flat=True)) == {VGpuState.FREE}


def test_someone_elses_rental_cannot_be_cancelled(buyer, node):
    from marketplace.rentals.errors import RentalNotFound

    rental = submit(buyer)
    with pytest.raises(RentalNotFound):
        rental_cancel(owner=UserFactory(), rental_id=rental.pk)
    rental.refresh_from_db()
    assert rental.state == RentalState.PENDING


def test_a_lost_node_that_comes_back_is_told_to_stop_the_settled_workload(buyer, node):
    from marketplace.rentals.dispatch import orphans_stop
    from nodes.models import NodePlacement

    rental, placement = _running(buyer, node)
    node_transition(node=node, to_state=NodeState.OFFLINE, reason="test: no heartbeat")
    sync()
    placement.refresh_from_db()
    assert placement.settled_at is not None
    assert orphans_stop() == 0  # the node is still offline: nothing to tell it

    # It reconnects; its Hello says the container survived and still runs.
    node_transition(node=node, to_state=NodeState.ONLINE, reason="test: back")
    NodePlacement.objects.filter(pk=placement.node_placement_id).update(state="running", reported_at=timezone.now())
    before = NodeCommand.objects.filter(node=node).count()
    assert orphans_stop() == 1
    command = NodeCommand.objects.filter(node=node).order_by("-pk").first()
    assert NodeCommand.objects.filter(node=node).count() == before + 1
    assert "stop" in str(command.message).lower() and placement.placement_id in str(command.message)

    # Once the agent reports the workload exited, it is left alone; the buyer was never charged for it.
    report_state(placement, "exited", exit_code=143)
    assert orphans_stop() == 0
    rental.refresh_from_db()
    assert rental.charged == placement.buyer_charged
