"""Signal receivers: a won bid becomes a rental's placements, a quarantined node's rentals are settled at once,
Proof of Contribution learns who rented what."""

import logging

from django.dispatch import receiver

from ledger.settlement.holds import earnings_hold_source_set
from marketplace.rentals.dispatch import rental_allocate, rentals_on_node_observe
from marketplace.rentals.disputes import held_rental_ids
from marketplace.rentals.owner_refunds import owner_use_refund
from marketplace.rentals.selectors import placement_buyers
from nodes.signals import node_quarantined, placement_interrupted
from pricing.signals import bid_allocated
from reputation.signals import placement_buyers_requested

logger = logging.getLogger(__name__)


@receiver(bid_allocated, dispatch_uid="marketplace.rental_on_bid_allocated")
def rental_on_bid_allocated(sender, bid_id: int, round_id: int, **kwargs) -> None:
    """Allocate the rental of a won bid; the sync task retries whatever fails here."""
    try:
        rental_allocate(bid_id=bid_id)
    except Exception:
        logger.exception("allocating the rental of bid %s (round %s) failed; the next sync retries", bid_id, round_id)


@receiver(placement_buyers_requested, dispatch_uid="marketplace.placement_buyers")
def rental_placement_buyers(sender, placement_ids: set[str], **kwargs) -> dict[str, int]:
    """Return the renting user of each placement id that a rental made."""
    return placement_buyers(placement_ids=placement_ids)


@receiver(node_quarantined, dispatch_uid="marketplace.rentals_on_node_quarantined")
def rentals_on_node_quarantined(sender, node_id: int, **kwargs) -> None:
    """Interrupt, settle and refund the rentals that ran on a quarantined node; the sync task retries failures."""
    try:
        rentals_on_node_observe(node_id=node_id)
    except Exception:
        logger.exception("settling the rentals of quarantined node %s failed; the next sync retries", node_id)


@receiver(placement_interrupted, dispatch_uid="marketplace.owner_use_refund")
def rentals_on_placement_interrupted(sender, placement_id: str, dedicated: bool, **kwargs) -> None:
    """Refund the buyer of a placement a dedicated node's owner interrupted (once per placement)."""
    if not dedicated:
        return  # interruptible capacity: the buyer accepted it, usage stops being charged at the interruption
    try:
        owner_use_refund(placement_id=placement_id)
    except Exception:
        logger.exception("refunding placement %s after its owner took the dedicated GPU failed", placement_id)


# Earnings of rentals that may still be refunded stay out of settlement batches (marketplace.rentals.disputes).
earnings_hold_source_set(held_rental_ids)
