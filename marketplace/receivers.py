"""Signal receivers: a won bid becomes a rental's placements; Proof of Contribution learns who rented what."""

import logging

from django.dispatch import receiver

from marketplace.rentals.dispatch import rental_allocate
from marketplace.rentals.selectors import placement_buyers
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
