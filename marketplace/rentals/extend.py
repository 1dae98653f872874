"""Extend a rental that has not ended: more run time, paid for by a further escrow hold (a top-up).

Exactly once per idempotency key: the rental row is locked first, so two requests for one rental run one after the
other, and the second with a key already posted to the ledger changes nothing. The hold is at the price the rental
pays: its cleared round price once a round placed it, its max price while it waits.
"""

import re
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from ledger.currencies import from_base_units
from ledger.errors import InsufficientFunds
from ledger.models import Transaction
from marketplace.rentals.errors import RentalAlreadyEnded, RentalFundsShort, RentalInvalid
from marketplace.rentals.holdings import CURRENCY, escrow_top_up, hold_amount
from marketplace.rentals.models import Rental, RentalEvent, RentalPlacement, RentalState
from marketplace.rentals.services import TERMINAL_STATES, _lock_rental
from pricing.models import BidState

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{8,100}\Z")


@dataclass(frozen=True)
class Extension:
    rental: Rental
    amount: int  # base units newly held (0 on a replay)
    created: bool


def _ledger_key(rental_id: int, key: str) -> str:
    return f"rental:{rental_id}:extend:{key}"


def extension_price_per_hour(rental: Rental) -> int:
    """Return what one hour more of the whole rental costs now: the cleared price once placed, else the max price."""
    bid = rental.bid
    if rental.state != RentalState.PENDING and bid is not None and bid.state == BidState.WON and bid.payment_per_hour:
        return bid.payment_per_hour
    return rental.max_price_per_hour * rental.vgpus


def rental_extend(*, owner, rental_id: int, add_seconds, idempotency_key: str) -> Extension:
    """Add `add_seconds` of run time to one of the owner's rentals and hold what they can cost."""
    if not isinstance(idempotency_key, str) or not KEY_PATTERN.match(idempotency_key):
        raise RentalInvalid(
            "Send an idempotency key of 8 to 100 letters, digits or _.:- (a UUID is fine).",
            detail={"field": "idempotency_key"},
        )
    if isinstance(add_seconds, bool) or not isinstance(add_seconds, int) or add_seconds < 60:
        raise RentalInvalid("Extend by a whole number of seconds, at least 60.", detail={"field": "add_seconds"})
    with transaction.atomic():
        rental = _lock_rental(rental_id=rental_id, owner=owner)
        if Transaction.objects.filter(idempotency_key=_ledger_key(rental.pk, idempotency_key)).exists():
            return Extension(rental=rental, amount=0, created=False)  # this extension was already applied
        if rental.state in TERMINAL_STATES:
            raise RentalAlreadyEnded(
                f"Rental {rental.pk} is already {rental.state}; start a new rental instead.",
                detail={"state": rental.state},
            )
        most = settings.RENTALS_MAX_DURATION_SECONDS
        if rental.max_duration_seconds + add_seconds > most:
            room = max(most - rental.max_duration_seconds, 0)
            raise RentalInvalid(
                f"A rental runs at most {most // 60} minutes in all; this one can grow by {room // 60} more.",
                detail={"field": "add_seconds"},
            )
        placements = list(
            RentalPlacement.objects.select_for_update().filter(rental=rental, settled_at__isnull=True).order_by("pk")
        )
        amount = hold_amount(price_per_hour=extension_price_per_hour(rental), units=1, duration_ms=add_seconds * 1000)
        try:
            escrow_top_up(
                rental=rental,
                amount=amount,
                key=_ledger_key(rental.pk, idempotency_key),
                memo=f"Escrow top-up: rental {rental.pk} extended by {add_seconds // 60} min",
                metadata={"add_seconds": add_seconds},
            )
        except InsufficientFunds:
            raise RentalFundsShort(
                f"Extending by {add_seconds // 60} minutes needs {_usdc(amount)} USDC more in escrow; "
                "add funds or extend by less.",
                detail={"needed_base_units": str(amount)},
            ) from None
        rental.max_duration_seconds += add_seconds
        rental.save(update_fields=["max_duration_seconds", "held_total", "escrow_held"])
        for placement in placements:  # metering bills a placement up to its limit: it grows with the rental
            placement.limit_ms += add_seconds * 1000
            placement.save(update_fields=["limit_ms"])
        RentalEvent.objects.create(
            rental=rental,
            from_state=rental.state,
            to_state=rental.state,
            reason=f"Extended by {add_seconds // 60} min; {_usdc(amount)} USDC more held",
        )
    return Extension(rental=rental, amount=amount, created=True)


def _usdc(base_units: int) -> str:
    return from_base_units(base_units, CURRENCY)
