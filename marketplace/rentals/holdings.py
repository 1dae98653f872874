"""What a rental holds: its escrow (hold, release, refund) and its placements' vGPUs.

The one place a rental's escrow moves and its bid is queued, used by submission, requeueing, allocation,
metering and settlement alike. It sits below services, dispatch and metering, which all import it.
"""

from ledger.currencies import Currency
from ledger.services import ledger_hold, ledger_release
from marketplace.rentals.models import Rental, RentalPlacement
from nodes.services import Holder, vgpus_release
from pricing.models import Bid, Capacity
from pricing.services import bid_submit

CURRENCY = Currency.USDC
MS_PER_HOUR = 3_600_000


def hold_amount(*, price_per_hour: int, units: int, duration_ms: int) -> int:
    """Return what `units` vGPUs at `price_per_hour` each cost for `duration_ms`, rounded up to a base unit."""
    return -(-price_per_hour * units * duration_ms // MS_PER_HOUR)


def escrow_hold(*, rental: Rental, amount: int, attempt: int) -> None:
    """Move `amount` more of the owner's funds into escrow for this attempt (unsaved); raise InsufficientFunds."""
    ledger_hold(
        user_id=rental.owner_id,
        currency=rental.currency,
        amount=amount,
        idempotency_key=f"rental:{rental.pk}:hold:{attempt}",
        memo=f"Escrow for rental {rental.pk}" + (f", attempt {attempt}" if attempt > 1 else ""),
        metadata={"rental": rental.pk},
    )
    rental.escrow_held += amount
    rental.held_total += amount


def escrow_top_up(*, rental: Rental, amount: int, key: str, memo: str, metadata: dict) -> None:
    """Hold `amount` more of the owner's funds for a locked rental under `key` (unsaved); raise InsufficientFunds."""
    ledger_hold(
        user_id=rental.owner_id,
        currency=rental.currency,
        amount=amount,
        idempotency_key=key,
        memo=memo,
        metadata={"rental": rental.pk, **metadata},
    )
    rental.escrow_held += amount
    rental.held_total += amount


def rental_bid_submit(*, rental: Rental, attempt: int) -> Bid:
    """Queue the bid of this attempt for the next round: the rental's vGPUs at its max price, until its deadline."""
    return bid_submit(
        owner=rental.owner,
        pool_name=rental.pool.name,
        units=rental.vgpus,
        max_price_per_hour=rental.max_price_per_hour,
        reference=f"rental:{rental.pk}:{attempt}",
        deadline=rental.match_deadline,
        capacity=rental_capacity(rental),
        needs_egress=rental.internet_egress,
    )


def rental_capacity(rental: Rental) -> str:
    """Return the sub-pool a rental's bids buy from: interruptible when it accepts it, else dedicated only."""
    return Capacity.INTERRUPTIBLE if rental.accepts_interruptible else Capacity.DEDICATED


def escrow_release(*, rental: Rental, amount: int, key: str, memo: str) -> None:
    """Give `amount` of a locked rental's escrow back to its owner (unsaved: the caller saves the rental)."""
    if amount > 0:
        ledger_release(
            user_id=rental.owner_id,
            currency=rental.currency,
            amount=amount,
            idempotency_key=key,
            memo=memo,
            metadata={"rental": rental.pk},
        )
    rental.escrow_held -= amount
    rental.refunded += amount


def rental_release(*, rental: Rental, amount: int, key: str, memo: str) -> None:
    """Release part of a locked rental's escrow back to its owner's available balance."""
    if amount <= 0:
        return
    escrow_release(rental=rental, amount=amount, key=key, memo=memo)
    rental.save(update_fields=["escrow_held", "refunded"])


def placement_vgpus_free(*, placement: RentalPlacement) -> None:
    """Give a placement's vGPUs back to the pool if this placement (or its bid's reservation) still holds them."""
    vgpus_release(
        node_id=placement.node_id,
        local_ids=placement.vgpu_local_ids,
        holders=[Holder.placement(placement.placement_id), Holder.bid(placement.bid_id)],
    )
