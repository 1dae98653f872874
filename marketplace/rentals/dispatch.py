"""From a won bid to running placements and back: allocation, StartPlacement, and the agents' reports.

The gateway writes what agents report into nodes.NodePlacement; `rentals_sync` (a Celery beat task every
RENTALS_SYNC_INTERVAL_SECONDS) reads those rows back in one query and moves the rentals whose placements
changed. Polling keeps the gateway free of rentals code and survives a crashed worker: the next sync
sees the same rows.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from ledger.currencies import USDC_SCALE
from ledger.errors import InsufficientFunds
from marketplace.rentals.holdings import escrow_hold, hold_amount, rental_bid_submit, rental_release
from marketplace.rentals.metering import placements_settle
from marketplace.rentals.models import Rental, RentalPlacement, RentalState
from marketplace.rentals.services import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    placements_stop,
    remaining_ms,
    rental_notify,
    rental_settle,
    rental_transition,
    stops_send,
)
from marketplace.svc.selectors import service_tunnel_addresses
from nodes.availability import open_pause_started, paused_ms
from nodes.models import PLACEMENT_FINAL_STATES, NodePlacement, NodeState, PlacementLogLine, PlacementState
from nodes.services import (
    Holder,
    SegmentMember,
    node_send,
    overlay_segment_allocate,
    placement_commands_cancel,
    vgpus_claim,
    vgpus_release,
)
from pricing.models import Allocation, Bid, BidState

logger = logging.getLogger(__name__)

LOST_NODE_STATES = (NodeState.OFFLINE, NodeState.QUARANTINED)


def rental_allocate(*, bid_id: int) -> Rental | None:
    """Turn a won bid into placements with locked rates, cut the escrow to the cleared price, and dispatch."""
    with transaction.atomic():
        rental = Rental.objects.select_for_update(of=("self",)).filter(bid_id=bid_id).first()
        if rental is None:
            return None
        bid = Bid.objects.get(pk=bid_id)
        if bid.state != BidState.WON or RentalPlacement.objects.filter(bid=bid).exists():
            return rental
        allocations = list(
            Allocation.objects.filter(bid=bid).select_related("award", "node").prefetch_related("vgpus").order_by("pk")
        )
        if rental.state != RentalState.PENDING:
            # Cancelled or expired while the round ran: hand the reserved vGPUs back.
            for allocation in allocations:
                vgpus_release(
                    node_id=allocation.node_id,
                    local_ids=[v.local_id for v in allocation.vgpus.all()],
                    holders=[Holder.bid(bid.pk)],
                )
            return rental
        limit = remaining_ms(rental)
        for allocation in allocations:
            local_ids = sorted(v.local_id for v in allocation.vgpus.all())
            RentalPlacement.objects.create(
                rental=rental,
                bid=bid,
                node=allocation.node,
                provider_id=allocation.node.owner_id,
                placement_id=f"rental-{rental.pk}-{bid.pk}-{allocation.node_id}",
                vgpu_local_ids=local_ids,
                vgpu_count=len(local_ids),
                buyer_payment_per_hour=bid.payment_per_hour or 0,
                bid_units=bid.units,
                provider_payment_per_hour=allocation.award.payment_per_hour,
                provider_units=allocation.award.units_sold,
                limit_ms=limit,
            )
        needed = hold_amount(price_per_hour=bid.payment_per_hour or 0, units=1, duration_ms=limit)
        rental_release(
            rental=rental,
            amount=rental.escrow_held - needed,
            key=f"rental:{rental.pk}:cut:{bid.pk}",
            memo=f"Rental {rental.pk} cleared below its max price",
        )
        price = (bid.payment_per_hour or 0) / bid.units / USDC_SCALE
        rental_transition(
            rental=rental,
            to_state=RentalState.ALLOCATED,
            reason=f"Won round {bid.round_id} at {price:.6f} USDC per vGPU-hour on {len(allocations)} node(s)",
        )
        transaction.on_commit(lambda: rental_dispatch(rental_id=rental.pk))
    return rental


def _start_message(
    rental: Rental, placement: RentalPlacement, peers: list[RentalPlacement], segment: dict | None = None
) -> dict:
    """Return the StartPlacement of a placement: with a CPU quota, an expiry and the state it was issued for.

    With a segment (every host on the overlay, docs/overlay.md) the peers are named by their segment names.
    """
    index = next((i for i, peer in enumerate(peers) if peer.pk == placement.pk), 0)
    port = rental.ports[0] if rental.ports else settings.RENTALS_PEER_PORT
    expires = timezone.now() + timedelta(seconds=settings.RENTALS_START_COMMAND_TTL_SECONDS)
    start = {
        "placement_id": placement.placement_id,
        "image": rental.image,
        "command": rental.command,
        "env": rental.env,
        "vgpu_local_ids": placement.vgpu_local_ids,
        "cpu_millicores": settings.RENTALS_CPU_MILLICORES_PER_VGPU * max(1, len(placement.vgpu_local_ids)),
        # Internet egress only: exposed ports need no network (the agent reaches them inside the container).
        "network_allowed": rental.internet_egress,
        "ports": [{"container_port": p, "protocol": "tcp"} for p in rental.ports],
        "expires_at_ms": int(expires.timestamp() * 1000),
        "issued_for_state": rental.state,
        "pausable": rental.pausable,
        "role": "primary" if index == 0 else "worker",
        "placement_index": index,
        "placement_count": len(peers),
    }
    if rental.expose:
        start["service_ports"] = [{"name": e["name"], "container_port": e["port"]} for e in rental.expose]
        start["tunnel_addresses"] = service_tunnel_addresses()
        start["tunnel_pool_size"] = settings.SERVICE_TUNNEL_POOL_SIZE
    if segment is not None:
        start["segment"] = segment
        start["peers"] = [
            {"placement_id": p.placement_id, "address": entry["name"], "port": port}
            for p, entry in zip(peers, segment["names"], strict=True)
        ]
    elif len(peers) > 1:
        start["peers"] = [
            {"placement_id": p.placement_id, "address": p.node.hostname or f"node-{p.node_id}", "port": port}
            for p in peers
        ]
    return {"start_placement": start}


def _overlay_service_ports(rental: Rental, placements: list[RentalPlacement]) -> list[int]:
    """Return the ports the endpoint reaches over the rental's segment (docs/decisions.md, "service segments").

    A service gets a segment even on one node, so the endpoint reaches it over the overlay; except a single
    placement with internet egress, which keeps its egress network (a segment namespace has no internet)
    and is reached through the agent's tunnel.
    """
    if len(placements) == 1 and rental.internet_egress:
        return []
    return [entry["port"] for entry in rental.expose]


def rental_dispatch(*, rental_id: int) -> None:
    """Send StartPlacement for an allocated rental's placements that were not sent yet."""
    with transaction.atomic():
        rental = Rental.objects.select_for_update(of=("self",)).filter(pk=rental_id).first()
        if rental is None or rental.state != RentalState.ALLOCATED:
            return
        placements = list(
            RentalPlacement.objects.select_for_update(of=("self",))
            .filter(rental=rental, bid_id=rental.bid_id)
            .select_related("node")
            .order_by("pk")
        )
        unreachable = []
        segments = overlay_segment_allocate(
            key=f"rental-{rental.pk}-{rental.bid_id}",
            members=[
                SegmentMember(node_id=p.node_id, placement_id=p.placement_id, role="primary" if i == 0 else "worker")
                for i, p in enumerate(placements)
            ],
            service_ports=_overlay_service_ports(rental, placements),
        )
        for placement in placements:
            if placement.dispatched_at is not None:
                continue
            segment = (segments or {}).get(placement.placement_id)
            try:
                node_send(node_id=placement.node_id, message=_start_message(rental, placement, placements, segment))
            except Exception as exc:  # node offline or gone: the provider's side failed, not the buyer's
                logger.info("placement %s not sent: %s", placement.placement_id, exc)
                unreachable.append(placement)
                continue
            placement.dispatched_at = timezone.now()
            placement.node_placement = NodePlacement.objects.get(placement_id=placement.placement_id)
            placement.save(update_fields=["dispatched_at", "node_placement"])
        if unreachable:
            for placement in unreachable:
                placement.observed_state = PlacementState.LOST
                placement.save(update_fields=["observed_state"])
            _interrupt(rental, placements, reason=f"Node {unreachable[0].node_id} was not connected")
            return
        rental_transition(rental=rental, to_state=RentalState.STARTING, reason="Sent to the provider's agent")


def rentals_sync() -> int:
    """Allocate missed wins, move rentals whose placements changed, settle ended ones; return how many moved."""
    moved = 0
    for bid_id in Rental.objects.filter(state=RentalState.PENDING, bid__state=BidState.WON).values_list(
        "bid_id", flat=True
    ):
        rental_allocate(bid_id=bid_id)
    for rental_id in Rental.objects.filter(state=RentalState.ALLOCATED).values_list("pk", flat=True):
        rental_dispatch(rental_id=rental_id)
    now = timezone.now()
    rows = (
        RentalPlacement.objects.filter(settled_at__isnull=True)
        .values_list(
            "rental_id",
            "rental__state",
            "rental__started_at",
            "rental__used_ms",
            "rental__max_duration_seconds",
            "observed_state",
            "node_placement__state",
            "node__state",
            "ended_at",
        )
        .order_by("rental_id")
    )
    due = set()
    for rental_id, state, started, used_ms, max_s, observed, reported, node_state, ended in rows:
        lost = node_state in LOST_NODE_STATES and observed not in PLACEMENT_FINAL_STATES
        changed = reported is not None and reported != observed and observed != PlacementState.LOST
        over = (
            state == RentalState.RUNNING and started and now >= started + timedelta(milliseconds=max_s * 1000 - used_ms)
        )
        stale = ended is not None and now - ended > timedelta(seconds=settings.RENTALS_SETTLE_GRACE_SECONDS)
        paused = reported == "paused"  # colocation: watched for the pause limit
        if lost or changed or over or stale or paused or state in TERMINAL_STATES:
            due.add(rental_id)
    due |= set(Rental.objects.filter(state__in=TERMINAL_STATES, settled_at__isnull=True).values_list("pk", flat=True))
    due |= set(
        RentalPlacement.objects.filter(
            settled_at__isnull=True,
            node_placement__state=PlacementState.REQUESTED,
            dispatched_at__lt=now - _start_deadline(),
        ).values_list("rental_id", flat=True)
    )
    for rental_id in sorted(due):
        moved += rental_observe(rental_id=rental_id)
    return moved


def rentals_on_node_observe(*, node_id: int) -> int:
    """Observe now every rental with an unsettled placement on this node (it was quarantined); return how many moved."""
    rental_ids = (
        RentalPlacement.objects.filter(node_id=node_id, settled_at__isnull=True)
        .values_list("rental_id", flat=True)
        .distinct()
        .order_by("rental_id")
    )
    moved = sum(rental_observe(rental_id=rental_id) for rental_id in list(rental_ids))
    # Nobody pays for what the node still runs: its agent (quarantine does not disconnect it) is told to stop.
    still_running = RentalPlacement.objects.filter(
        node_id=node_id,
        settled_at__isnull=False,
        node_placement__state__in=[PlacementState.STARTING, PlacementState.RUNNING],
    ).values_list("node_id", "placement_id")
    stops_send(list(still_running))
    return moved


def orphans_stop() -> int:
    """Stop workloads an agent still runs for placements that were already settled; return how many.

    A node that was lost has its placements settled at once; if it comes back with a container that
    survived the disconnect, its Hello reports it running again. Nobody pays for it, so it is stopped.
    Reports older than the settle grace period are ignored, so a placement the agent never confirms
    stopping is not asked forever.
    """
    recent = timezone.now() - timedelta(seconds=settings.RENTALS_SETTLE_GRACE_SECONDS)
    orphans = list(
        RentalPlacement.objects.filter(
            settled_at__isnull=False,
            node_placement__state__in=[PlacementState.STARTING, PlacementState.RUNNING],
            node_placement__reported_at__gt=F("settled_at"),
            node_placement__reported_at__gte=recent,
            node__state__in=[NodeState.ONLINE, NodeState.DRAINING],
        ).values_list("node_id", "placement_id")
    )
    for node_id, placement_id in orphans:
        logger.info("stopping placement %s on node %s: it was settled while the node was lost", placement_id, node_id)
    stops_send(orphans)
    return len(orphans)


def rental_observe(*, rental_id: int) -> int:
    """Apply what the agents reported about one rental's placements; return 1 when anything changed."""
    with transaction.atomic():
        rental = Rental.objects.select_for_update(skip_locked=True, of=("self",)).filter(pk=rental_id).first()
        if rental is None:
            return 0
        placements = list(
            RentalPlacement.objects.select_for_update(of=("self",))
            .filter(rental=rental, settled_at__isnull=True)
            .select_related("node_placement", "node")
            .order_by("pk")
        )
        changed = _observe(rental, placements)
        ended = [p for p in placements if p.settled_at is None and _settleable(rental, p)]
        if ended:
            placements_settle(rental=rental, placements=ended)
            changed = True
        if rental.state in TERMINAL_STATES or ended:
            # A start still queued for a node (it was offline, the gateway down) must never run a settled placement.
            cancel = placements if rental.state in TERMINAL_STATES else ended
            placement_commands_cancel(placement_ids=[p.placement_id for p in cancel])
        if rental_settle(rental=rental):
            changed = True
    return int(changed)


def _settleable(rental: Rental, placement: RentalPlacement) -> bool:
    if placement.observed_state in PLACEMENT_FINAL_STATES:
        return True
    grace = timedelta(seconds=settings.RENTALS_SETTLE_GRACE_SECONDS)
    return rental.state in TERMINAL_STATES and (
        placement.dispatched_at is None or (placement.ended_at and timezone.now() - placement.ended_at > grace)
    )


def _observe(rental: Rental, placements: list[RentalPlacement]) -> bool:
    changed = False
    for placement in placements:
        observed = placement.observed_state
        node_placement = placement.node_placement
        if observed in PLACEMENT_FINAL_STATES:
            continue
        if placement.node.state in LOST_NODE_STATES or placement.node.deleted_at is not None:
            observed = PlacementState.LOST
        elif _start_never_arrived(placement):
            observed = PlacementState.LOST
        elif node_placement is not None:
            observed = node_placement.state
        if observed != placement.observed_state:
            placement.observed_state = observed
            placement.exit_code = node_placement.exit_code if node_placement else None
            fields = ["observed_state", "exit_code"]
            if observed in PLACEMENT_FINAL_STATES:
                placement.ended_at = placement.ended_at or timezone.now()
                fields.append("ended_at")
            placement.save(update_fields=fields)
            if observed == PlacementState.RUNNING:
                vgpus_claim(
                    node_id=placement.node_id,
                    local_ids=placement.vgpu_local_ids,
                    reserved_by=Holder.bid(placement.bid_id),
                    holder=Holder.placement(placement.placement_id),
                )
            changed = True
    current = [p for p in placements if p.bid_id == rental.bid_id]
    if rental.state not in ACTIVE_STATES or not current:
        return changed
    states = [p.observed_state for p in current]
    if PlacementState.LOST in states:
        lost = next(p for p in current if p.observed_state == PlacementState.LOST)
        _interrupt(rental, current, reason=_lost_reason(lost))
        return True
    failed = next((p for p in current if p.observed_state == PlacementState.FAILED), None)
    if failed is not None:
        message = failed.node_placement.message if failed.node_placement else ""
        _end(rental, current, RentalState.FAILED, f"The provider could not run it: {message}".strip())
        return True
    crashed = next(
        (p for p in current if p.observed_state == PlacementState.EXITED and p.exit_code not in (0, None)), None
    )
    if crashed is not None:
        _end(rental, current, RentalState.FAILED, f"The workload exited with code {crashed.exit_code}")
        return True
    if all(state == PlacementState.EXITED for state in states):
        _end(rental, current, RentalState.COMPLETED, "The workload exited with code 0")
        return True
    if rental.state != RentalState.RUNNING and all(state == PlacementState.RUNNING for state in states):
        rental_transition(rental=rental, to_state=RentalState.RUNNING, reason="Running on every node")
        return True
    started = (PlacementState.STARTING, PlacementState.RUNNING)
    if rental.state == RentalState.ALLOCATED and any(state in started for state in states):
        rental_transition(rental=rental, to_state=RentalState.STARTING, reason="The agent is starting it")
        return True
    if _pause_limit_passed(rental, current):
        return True
    if rental.state == RentalState.RUNNING and timezone.now() >= rental.started_at + timedelta(
        milliseconds=remaining_ms(rental) + _paused_ms(current)
    ):
        _end(rental, current, RentalState.COMPLETED, "Max duration reached")
        return True
    return changed


def _paused_ms(placements: list[RentalPlacement]) -> int:
    """Return the longest time any of the placements was frozen by its owner (it does not count as run time)."""
    totals = paused_ms(node_placement_ids=[p.node_placement_id for p in placements if p.node_placement_id])
    return max(totals.values(), default=0)


def _pause_limit_passed(rental: Rental, placements: list[RentalPlacement]) -> bool:
    """Interrupt a rental a placement of which was frozen longer than RENTALS_PAUSE_LIMIT_SECONDS."""
    limit = settings.RENTALS_PAUSE_LIMIT_SECONDS
    opened = open_pause_started(node_placement_ids=[p.node_placement_id for p in placements if p.node_placement_id])
    now_ms = int(timezone.now().timestamp() * 1000)
    if not any(now_ms - paused_at > limit * 1000 for paused_at in opened.values()):
        return False
    _interrupt(rental, placements, reason=f"Paused by the node's owner for longer than {limit} s")
    return True


def _lost_reason(placement: RentalPlacement) -> str:
    """Say why a placement was lost; every cause is on the provider's side, none is the buyer's."""
    reported = placement.node_placement
    if reported is not None and reported.state == PlacementState.LOST:
        return f"The provider's agent lost the workload: {reported.message}"[:300]
    if _start_never_arrived(placement):
        return f"Node {placement.node_id} never confirmed the start in time"
    return f"Node {placement.node_id} was lost"


def _start_deadline() -> timedelta:
    return timedelta(seconds=settings.RENTALS_START_COMMAND_TTL_SECONDS + settings.RENTALS_START_REPORT_GRACE_SECONDS)


def _start_never_arrived(placement: RentalPlacement) -> bool:
    """Return whether the agent never reported on a start whose command has expired: the provider's loss."""
    node_placement = placement.node_placement
    return (
        node_placement is not None
        and node_placement.state == PlacementState.REQUESTED
        and placement.dispatched_at is not None
        and timezone.now() - placement.dispatched_at > _start_deadline()
    )


def _end(rental: Rental, placements: list[RentalPlacement], to_state: str, reason: str) -> None:
    """End a locked rental and stop what still runs; usage after this moment is not billed."""
    rental_transition(rental=rental, to_state=to_state, reason=reason)
    placements_stop(rental=rental, placements=placements, bill_until_ms=int(timezone.now().timestamp() * 1000))


def _interrupt(rental: Rental, placements: list[RentalPlacement], *, reason: str) -> None:
    """Interrupt a locked rental whose node was lost: charge only what was reported, then requeue or end it."""
    now_ms = int(timezone.now().timestamp() * 1000)
    rental_transition(rental=rental, to_state=RentalState.INTERRUPTED, reason=reason)
    lost = [p for p in placements if p.observed_state == PlacementState.LOST]
    placements_settle(rental=rental, placements=lost)
    placement_commands_cancel(placement_ids=[p.placement_id for p in lost])
    placements_stop(rental=rental, placements=[p for p in placements if p not in lost], bill_until_ms=now_ms)
    rental.used_ms += max((p.metered_run_ms for p in placements), default=0)
    rental.save(update_fields=["used_ms"])
    if rental.restart_on_interruption and remaining_ms(rental) >= 1000:
        _requeue(rental)


def _requeue(rental: Rental) -> None:
    """Queue a new bid for what is left of an interrupted rental, topping its escrow back up to the max price."""
    left = remaining_ms(rental)
    needed = hold_amount(price_per_hour=rental.max_price_per_hour, units=rental.vgpus, duration_ms=left)
    attempt = rental.attempt + 1
    top_up = needed - rental.escrow_held
    if top_up > 0:
        try:
            with transaction.atomic():
                escrow_hold(rental=rental, amount=top_up, attempt=attempt)
        except InsufficientFunds:
            rental.state_reason = f"{rental.state_reason}; not requeued: not enough funds for the rest"[:300]
            rental.save(update_fields=["state_reason"])
            return
    window = timedelta(seconds=settings.RENTALS_MATCH_DEADLINE_SECONDS)
    rental.match_deadline = timezone.now() + window
    rental.bid = rental_bid_submit(rental=rental, attempt=attempt)
    rental.attempt = attempt
    rental.save(update_fields=["escrow_held", "held_total", "match_deadline", "bid", "attempt"])
    rental_transition(rental=rental, to_state=RentalState.PENDING, reason=f"Requeued (attempt {attempt})")


def rental_logs_stream() -> int:
    """Send new log lines of unsettled placements to their rentals' live views; return how many were sent."""
    cap = settings.RENTALS_LOG_LINES_MAX
    sent = 0
    with transaction.atomic():
        placements = list(
            RentalPlacement.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(node_placement__isnull=False)
            .filter(Q(settled_at__isnull=True) | Q(settled_at__gte=timezone.now() - timedelta(seconds=30)))
            .order_by("pk")
        )
        for placement in placements:
            streamed = (
                RentalPlacement.objects.filter(rental_id=placement.rental_id).aggregate(n=Sum("streamed_log_seq"))["n"]
                or 0
            )
            if streamed >= cap:
                continue
            lines = list(
                PlacementLogLine.objects.filter(
                    placement_id=placement.node_placement_id, seq__gt=placement.streamed_log_seq
                )
                .order_by("seq")
                .values_list("seq", "stream", "text")[: cap - streamed]
            )
            if not lines:
                continue
            placement.streamed_log_seq = lines[-1][0]
            placement.save(update_fields=["streamed_log_seq"])
            rental_notify(
                rental_id=placement.rental_id,
                message={
                    "type": "rental.logs",
                    "placement": placement.placement_id,
                    "lines": [{"seq": s, "stream": st, "text": t} for s, st, t in lines],
                },
            )
            sent += len(lines)
    return sent
