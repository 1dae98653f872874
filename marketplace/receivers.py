"""Signal receivers: a won bid becomes a rental's placements."""

import logging

from django.dispatch import receiver

from ledger.settlement.holds import earnings_hold_source_set
from marketplace.rentals.dispatch import rental_allocate
from marketplace.rentals.disputes import held_rental_ids
from pricing.signals import bid_allocated

logger = logging.getLogger(__name__)


@receiver(bid_allocated, dispatch_uid="marketplace.rental_on_bid_allocated")
def rental_on_bid_allocated(sender, bid_id: int, round_id: int, **kwargs) -> None:
    """Allocate the rental of a won bid; the sync task retries whatever fails here."""
    try:
        rental_allocate(bid_id=bid_id)
    except Exception:
        logger.exception("allocating the rental of bid %s (round %s) failed; the next sync retries", bid_id, round_id)


# Earnings of rentals that may still be refunded stay out of settlement batches (marketplace.rentals.disputes).
earnings_hold_source_set(held_rental_ids)
