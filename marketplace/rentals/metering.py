"""Charge the agents' usage reports per second at each placement's locked rates, in bulk, exactly once.

Each placement keeps a cursor (the last usage seq charged) and cumulative totals: billed run time,
billed vGPU-milliseconds, what the buyer was charged and the provider paid. What is owed is recomputed
from the cumulative vGPU-milliseconds (exact integers, rounded down) and only the difference is posted,
so rounding never drifts. Reports are taken in seq order up to the first gap; a settlement takes them all.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, F, OuterRef, Subquery
from django.utils import timezone

from ledger.errors import InsufficientFunds
from ledger.models import AccountKind, TransactionKind
from ledger.services import Leg, Posting, charge_posting, ledger_hold, ledger_post_bulk, platform_fee
from marketplace.rentals.holdings import MS_PER_HOUR, placement_vgpus_free, rental_release
from marketplace.rentals.models import Rental, RentalPlacement
from nodes.models import UsageReport
from nodes.services import placement_stopped

logger = logging.getLogger(__name__)

# Usage stored this long after its placement was settled is still charged (agents resend within minutes).
LATE_USAGE_WINDOW = timedelta(days=1)
REPORT_FIELDS = ("placement_id", "seq", "interval_start_ms", "interval_end_ms", "vgpu_count", "received_at")


@dataclass
class MeteringResult:
    reports: int = 0
    postings: int = 0
    placements: int = 0
    # Seconds between each charged report's arrival and its charge.
    lags: list[float] = field(default_factory=list)


def owed(vgpu_ms: int, payment_per_hour: int, units: int) -> int:
    """Return what `vgpu_ms` vGPU-milliseconds cost at `payment_per_hour` for `units` vGPUs, rounded down."""
    return vgpu_ms * payment_per_hour // (units * MS_PER_HOUR)


def _pending_reports():
    return UsageReport.objects.filter(
        placement_id=OuterRef("node_placement_id"), seq__gt=OuterRef("metered_through_seq")
    )


def metering_run(*, limit: int = 5000) -> MeteringResult:
    """Charge every unsettled placement's new usage reports in one bulk ledger transaction, then late usage."""
    result = _metering_run(limit=limit)
    late = late_usage_charge(limit=limit)
    result.reports += late.reports
    result.postings += late.postings
    result.placements += late.placements
    return result


def _metering_run(*, limit: int) -> MeteringResult:
    with transaction.atomic():
        candidates = (
            RentalPlacement.objects.filter(settled_at__isnull=True, node_placement__isnull=False)
            .filter(Exists(_pending_reports()))
            .values_list("rental_id", flat=True)[:limit]
        )
        rental_ids = sorted(set(candidates))
        if not rental_ids:
            return MeteringResult()
        # Rentals first, then their placements: the order every rentals write takes its locks in.
        rentals = {
            r.pk: r
            for r in Rental.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=rental_ids)
            .order_by("pk")
        }
        placements = list(
            RentalPlacement.objects.select_for_update()
            .filter(rental_id__in=list(rentals), settled_at__isnull=True, node_placement__isnull=False)
            .order_by("pk")
        )
        return _meter(placements=placements, rentals=rentals, final=False)


def placements_settle(*, rental: Rental, placements: list[RentalPlacement]) -> MeteringResult:
    """Charge every stored report of a locked rental's locked placements, then stop charging them."""
    if not placements:
        return MeteringResult()
    result = _meter(placements=[p for p in placements if p.node_placement_id], rentals={rental.pk: rental}, final=True)
    now = timezone.now()
    for placement in placements:
        placement.settled_at = now
        placement.ended_at = placement.ended_at or now
        placement.save(update_fields=["settled_at", "ended_at"])
        placement_vgpus_free(placement=placement)
    # The platform's end of the placements: the gateway refuses usage beyond it from here on.
    placement_stopped(placement_ids=[p.node_placement_id for p in placements if p.node_placement_id], at=now)
    return result


def late_usage_charge(*, limit: int = 1000) -> MeteringResult:
    """Charge verified usage that was stored after its placement was settled, exactly once.

    The gateway stores only usage within the placement's life as the platform recorded it, so a report
    that arrives late (the agent was reconnecting, the gateway restarting) still covers time before the
    settlement: it is charged and paid like any other. When the rental's escrow was already released,
    what it costs is held again from the buyer's available balance; what the buyer cannot cover, the
    market account pays the provider.
    """
    result = MeteringResult()
    recent = timezone.now() - LATE_USAGE_WINDOW
    late = (
        RentalPlacement.objects.filter(settled_at__gte=recent, node_placement__isnull=False)
        .filter(Exists(_pending_reports()))
        .values_list("rental_id", flat=True)[:limit]
    )
    for rental_id in sorted(set(late)):
        with transaction.atomic():
            rental = Rental.objects.select_for_update(skip_locked=True, of=("self",)).filter(pk=rental_id).first()
            if rental is None:
                continue
            placements = list(
                RentalPlacement.objects.select_for_update()
                .filter(rental=rental, settled_at__isnull=False, node_placement__isnull=False)
                .order_by("pk")
            )
            # Keys name the cursors before this charge: a new batch of late reports gets new keys.
            batch = "-".join(f"{p.pk}.{p.metered_through_seq}" for p in placements)
            _hold_for_late_usage(rental, placements, key=f"rental:{rental.pk}:late-hold:{batch}")
            charged = _meter(placements=placements, rentals={rental.pk: rental}, final=True)
            if rental.settled_at is not None and rental.escrow_held > 0:
                rental_release(
                    rental=rental,
                    amount=rental.escrow_held,
                    key=f"rental:{rental.pk}:late-release:{batch}",
                    memo=f"Unused escrow of rental {rental.pk} after late usage",
                )
            result.reports += charged.reports
            result.postings += charged.postings
            result.placements += charged.placements
    return result


def _hold_for_late_usage(rental: Rental, placements: list[RentalPlacement], *, key: str) -> None:
    """Hold from the buyer's available balance what the rental's late usage costs beyond its escrow."""
    needed = 0
    for placement in placements:
        last = (
            UsageReport.objects.filter(placement_id=placement.node_placement_id)
            .order_by("-seq")
            .values_list("seq", flat=True)
            .first()
        )
        if last is None or last <= placement.metered_through_seq:
            continue
        vgpu_ms = placement.metered_vgpu_ms
        for start_ms, end_ms, count in UsageReport.objects.filter(
            placement_id=placement.node_placement_id, seq__gt=placement.metered_through_seq
        ).values_list("interval_start_ms", "interval_end_ms", "vgpu_count"):
            vgpu_ms += max(end_ms - start_ms, 0) * min(count, placement.vgpu_count)
        needed += owed(vgpu_ms, placement.buyer_payment_per_hour, placement.bid_units) - placement.buyer_charged
    top_up = needed - rental.escrow_held
    if top_up <= 0:
        return
    try:
        with transaction.atomic():
            ledger_hold(
                user_id=rental.owner_id,
                currency=rental.currency,
                amount=top_up,
                idempotency_key=key,
                memo=f"Late usage of rental {rental.pk}",
                metadata={"rental": rental.pk},
            )
    except InsufficientFunds:
        logger.warning("rental %s: the buyer cannot cover late usage; the market pays the provider", rental.pk)
        return
    rental.escrow_held += top_up
    rental.held_total += top_up
    rental.save(update_fields=["escrow_held", "held_total"])


def _meter(*, placements: list[RentalPlacement], rentals: dict[int, Rental], final: bool) -> MeteringResult:
    result = MeteringResult()
    if not placements:
        return result
    by_node_placement = {p.node_placement_id: p for p in placements}
    reports: dict[int, list[tuple]] = {}
    cursor = RentalPlacement.objects.filter(node_placement_id=OuterRef("placement_id"))
    rows = (
        UsageReport.objects.filter(placement_id__in=list(by_node_placement))
        .alias(cursor=Subquery(cursor.values("metered_through_seq")[:1]))
        .filter(seq__gt=F("cursor"))
        .order_by("placement_id", "seq")
        .values_list(*REPORT_FIELDS)
    )
    for row in rows:
        reports.setdefault(row[0], []).append(row)
    now = timezone.now()
    postings: list[Posting] = []
    changed_placements = []
    charged_by_rental: dict[int, int] = {}
    for node_placement_id, placement_reports in reports.items():
        placement = by_node_placement[node_placement_id]
        rental = rentals.get(placement.rental_id)
        if rental is None:
            continue
        first_seq = placement.metered_through_seq + 1
        taken = _advance(placement, placement_reports, final=final, now=now, lags=result.lags)
        if not taken:
            continue
        result.reports += taken
        new_buyer = owed(placement.metered_vgpu_ms, placement.buyer_payment_per_hour, placement.bid_units)
        new_provider = owed(placement.metered_vgpu_ms, placement.provider_payment_per_hour, placement.provider_units)
        available = rental.escrow_held - charged_by_rental.get(rental.pk, 0)
        buyer_delta = min(new_buyer - placement.buyer_charged, available)
        provider_delta = new_provider - placement.provider_paid
        key = f"meter:{placement.pk}:{first_seq}-{placement.metered_through_seq}"
        posting = _posting(rental, placement, buyer_delta, provider_delta, key)
        if posting is not None:
            postings.append(posting)
        placement.buyer_charged += max(buyer_delta, 0)
        placement.provider_paid += max(provider_delta, 0)
        charged_by_rental[rental.pk] = charged_by_rental.get(rental.pk, 0) + max(buyer_delta, 0)
        changed_placements.append(placement)
    if not changed_placements:
        return result
    ledger_post_bulk(postings)
    RentalPlacement.objects.bulk_update(
        changed_placements,
        ["metered_through_seq", "metered_run_ms", "metered_vgpu_ms", "buyer_charged", "provider_paid"],
        batch_size=1000,
    )
    changed_rentals = []
    for rental_id, amount in charged_by_rental.items():
        if amount:
            rental = rentals[rental_id]
            rental.charged += amount
            rental.escrow_held -= amount
            changed_rentals.append(rental)
    if changed_rentals:
        Rental.objects.bulk_update(changed_rentals, ["charged", "escrow_held"], batch_size=1000)
    result.postings = len(postings)
    result.placements = len(changed_placements)
    return result


def _advance(placement: RentalPlacement, rows: list[tuple], *, final: bool, now: datetime, lags: list[float]) -> int:
    """Add contiguous new reports (all of them when final) to the placement's clipped totals; return how many."""
    taken = 0
    for _, seq, start_ms, end_ms, vgpu_count, received_at in rows:
        if seq <= placement.metered_through_seq:
            continue
        if not final and seq != placement.metered_through_seq + 1:
            break  # a gap: wait for the missing report
        if placement.bill_until_ms is not None:
            end_ms = min(end_ms, placement.bill_until_ms)
        run_ms = max(end_ms - start_ms, 0)
        run_ms = min(run_ms, max(placement.limit_ms - placement.metered_run_ms, 0))
        placement.metered_run_ms += run_ms
        placement.metered_vgpu_ms += run_ms * min(vgpu_count, placement.vgpu_count)
        placement.metered_through_seq = seq
        lags.append((now - received_at).total_seconds())
        taken += 1
    return taken


def _posting(rental: Rental, placement: RentalPlacement, buyer: int, provider: int, key: str) -> Posting | None:
    metadata = {"rental": rental.pk, "placement": placement.placement_id}
    if buyer > 0:
        # The platform fee comes out of the provider's side, so the market account keeps the round's budget
        # (never negative) and trading with yourself always costs the fee.
        return charge_posting(
            buyer_id=rental.owner_id,
            provider_id=placement.provider_id,
            currency=rental.currency,
            buyer_amount=buyer,
            provider_amount=max(provider - platform_fee(buyer), 0),
            idempotency_key=key,
            memo=f"Usage of rental {rental.pk}",
            metadata=metadata,
        )
    if provider > 0:
        # The buyer's VCG price rounded to nothing this time; the market account pays the provider.
        return Posting(
            kind=TransactionKind.CHARGE,
            currency=rental.currency,
            idempotency_key=key,
            legs=(Leg(None, AccountKind.MARKET, -provider), Leg(placement.provider_id, AccountKind.EARNINGS, provider)),
            memo=f"Usage of rental {rental.pk} (market-funded)",
            metadata=metadata,
        )
    return None
