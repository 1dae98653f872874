"""A dedicated node's owner took the GPU from a rental's placement: the buyer gets that placement's charges back.

Rule (docs/colocation.md, docs/decisions.md): when the node's policy is `always` and its owner froze or stopped
a placement, the buyer is refunded everything the rental paid for that placement up to the interruption (its
metered charges), once per placement: one ledger posting keyed `owner-use:<rental placement>:refund`, written
while the rental and the placement are locked. The money comes back exactly from where the placement's usage
charges put it: the provider's earnings, the platform's fee and the market account's residual (each charge
posting's credits reversed, the buyer's available balance credited what its escrow paid). Those earnings are
still held out of settlement while the rental runs. A later dispute can refund only the rest
(disputes.owner_refunded).
"""

from __future__ import annotations

from django.db import transaction

from ledger.models import AccountKind, Entry, Transaction, TransactionKind
from ledger.services import Leg, Posting, ledger_post
from marketplace.rentals.disputes import OWNER_REFUND_PREFIX
from marketplace.rentals.models import Rental, RentalPlacement


def owner_use_refund(*, placement_id: str) -> int | None:
    """Refund the buyer what a rental placement charged; return the amount moved now (0 if already refunded or
    nothing was charged), or None when the placement is not a rental's (a challenge, an unknown id)."""
    rental_id = RentalPlacement.objects.filter(placement_id=placement_id).values_list("rental_id", flat=True).first()
    if rental_id is None:
        return None
    with transaction.atomic():
        rental = Rental.objects.select_for_update().get(pk=rental_id)
        placement = RentalPlacement.objects.select_for_update().get(placement_id=placement_id)
        key = f"{OWNER_REFUND_PREFIX}{placement.pk}:refund"
        if Transaction.objects.filter(idempotency_key=key).exists():
            return 0
        legs = _reversal_legs(rental, placement)
        amount = sum(leg.amount for leg in legs if leg.kind == AccountKind.AVAILABLE)
        if amount <= 0:
            return 0
        ledger_post(
            Posting(
                kind=TransactionKind.TRANSFER,
                currency=rental.currency,
                idempotency_key=key,
                legs=tuple(legs),
                memo=f"Refund of placement {placement.placement_id}: the dedicated node's owner took the GPU",
                metadata={"rental": rental.pk, "placement": placement.pk, "amount": amount},
            )
        )
    return amount


def _reversal_legs(rental: Rental, placement: RentalPlacement) -> list[Leg]:
    """Reverse the placement's usage charges the buyer's escrow paid: credits back out, the buyer credited."""
    charges = Transaction.objects.filter(
        kind=TransactionKind.CHARGE, metadata__rental=rental.pk, metadata__placement=placement.placement_id
    )
    totals: dict[tuple[int | None, str], int] = {}
    paid = 0
    for transaction_id in charges.values_list("pk", flat=True).order_by("pk"):
        entries = list(
            Entry.objects.filter(transaction_id=transaction_id).values_list(
                "account__owner_id", "account__kind", "amount"
            )
        )
        buyer = -sum(int(a) for o, k, a in entries if o == rental.owner_id and k == AccountKind.ESCROW and int(a) < 0)
        if buyer <= 0:
            continue  # market-funded: the buyer paid nothing this time
        paid += buyer
        for owner_id, kind, amount in entries:
            if int(amount) > 0:
                totals[(owner_id, kind)] = totals.get((owner_id, kind), 0) - int(amount)
    legs = [Leg(owner_id, kind, amount) for (owner_id, kind), amount in sorted(totals.items(), key=str) if amount]
    return [Leg(rental.owner_id, AccountKind.AVAILABLE, paid), *legs] if paid else []
