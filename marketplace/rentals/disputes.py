"""Disputes: a buyer disputes an ended rental within the window; an operator refunds (fully, partly) or rejects.

The refund moves once through the ledger (one posting keyed by the dispute, written in the transaction that
locks the dispute): the buyer's available balance is credited, the providers' earnings from this rental and
the platform's fees are debited pro rata to what each took. The providers' earnings of a rental are held out of
settlement until its window closes and its dispute is resolved (ledger.settlement.holds), so what is refunded
was never published. The outcome is reputation evidence: an upheld dispute against each node of the rental,
a rejected one against the buyer; between linked accounts it counts for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from janction.errors import Conflict, ValidationFailed
from ledger.models import AccountKind, Entry, Transaction, TransactionKind
from ledger.services import Leg, Posting, ledger_post
from marketplace.models import Dispute, DisputeState, Rental, RentalPlacement, RentalState
from marketplace.rentals.errors import RentalNotFound
from reputation.models import EvidenceKind, SubjectKind
from reputation.services import evidence_record

DISPUTABLE_STATES = (RentalState.COMPLETED, RentalState.FAILED, RentalState.INTERRUPTED)
ENDED_STATES = (*DISPUTABLE_STATES, RentalState.CANCELLED, RentalState.EXPIRED)
MAX_REASON_CHARS = 2000
OWNER_REFUND_PREFIX = "owner-use:"


class DisputeInvalid(ValidationFailed):
    code = "dispute_invalid"


class DisputeNotAllowed(Conflict):
    code = "dispute_not_allowed"


def _window() -> timedelta:
    return timedelta(hours=settings.RENTALS_DISPUTE_WINDOW_HOURS)


def dispute_open(*, owner, rental_id: int, reason: str) -> Dispute:
    """Open the dispute of one of the buyer's own rentals that completed, failed or was interrupted in the window."""
    if not isinstance(reason, str) or not reason.strip():
        raise DisputeInvalid("Say what went wrong in `reason`.", detail={"field": "reason"})
    if len(reason) > MAX_REASON_CHARS:
        raise DisputeInvalid(f"Keep the reason under {MAX_REASON_CHARS} characters.", detail={"field": "reason"})
    with transaction.atomic():
        rental = Rental.objects.select_for_update().filter(pk=rental_id, owner=owner).first()
        if rental is None:
            raise RentalNotFound(f"You have no rental {rental_id}.")
        if rental.state not in DISPUTABLE_STATES:
            raise DisputeNotAllowed(
                f"Only a completed, failed or interrupted rental can be disputed; this one is {rental.state}."
            )
        if rental.ended_at is None or timezone.now() - rental.ended_at > _window():
            raise DisputeNotAllowed(
                f"Disputes are open for {settings.RENTALS_DISPUTE_WINDOW_HOURS} hours after a rental ends; "
                "this rental's window has closed.",
                code="dispute_out_of_time",
            )
        try:
            with transaction.atomic():
                return Dispute.objects.create(rental=rental, buyer=owner, reason=reason.strip())
        except IntegrityError:
            raise DisputeNotAllowed(
                "This rental was already disputed; a rental has one dispute.", code="dispute_exists"
            ) from None


@dataclass(frozen=True)
class Resolution:
    dispute: Dispute
    moved: bool  # False: it was already resolved this way (nothing moved again)


def _refund_legs(rental: Rental, amount: int) -> list[Leg]:
    """Split a refund over the accounts the rental's charges credited, pro rata to what each still holds of them.

    The credits are read from the charge postings themselves (the providers' earnings net of the fee, the platform
    fee, the market's residual), less what owner-use refunds already reversed: no account is asked for more than
    the rental gave it (a provider's `provider_paid` is gross of the fee, so it cannot be the measure). The
    rounding remainder, fewer base units than accounts, comes from the accounts with the most left.
    """
    credited: dict[tuple[int | None, str], int] = {}
    charges = Transaction.objects.filter(kind=TransactionKind.CHARGE, metadata__rental=rental.pk)
    reversals = Transaction.objects.filter(idempotency_key__startswith=OWNER_REFUND_PREFIX, metadata__rental=rental.pk)
    for entries in (
        Entry.objects.filter(transaction__in=charges, amount__gt=0),
        Entry.objects.filter(transaction__in=reversals, amount__lt=0),
    ):
        for owner_id, kind, value in entries.values_list("account__owner_id", "account__kind", "amount"):
            credited[(owner_id, kind)] = credited.get((owner_id, kind), 0) + int(value)
    accounts = sorted(((key, left) for key, left in credited.items() if left > 0), key=str)
    total = sum(left for _, left in accounts)
    if amount > total:
        raise DisputeInvalid(
            f"The refund ({amount}) is larger than what the rental's charges left to give back ({total}).",
            code="refund_too_large",
            detail={"field": "refund", "most": total},
        )
    shares = [[key, left * amount // total, left] for key, left in accounts]
    remainder = amount - sum(share for _, share, _ in shares)
    for entry in sorted(shares, key=lambda item: item[2] - item[1], reverse=True):
        extra = min(remainder, entry[2] - entry[1])
        entry[1] += extra
        remainder -= extra
    debits = [Leg(owner_id, kind, -share) for (owner_id, kind), share, _ in shares if share]
    return [Leg(rental.owner_id, AccountKind.AVAILABLE, amount), *debits]


def dispute_resolve(
    *, dispute_id: int, outcome: str, operator, refund: int | None = None, note: str = ""
) -> Resolution:
    """Resolve an open dispute: "refund" (the whole charge), "partial" (`refund` base units) or "reject".

    Resolving twice the same way returns the first resolution and moves nothing; another way is refused.
    """
    if outcome not in ("refund", "partial", "reject"):
        raise DisputeInvalid("The outcome is refund, partial or reject.", detail={"field": "outcome"})
    with transaction.atomic():
        dispute = Dispute.objects.select_for_update().filter(pk=dispute_id).first()
        if dispute is None:
            raise DisputeInvalid(f"Dispute {dispute_id} does not exist.", code="dispute_not_found", status=404)
        rental = Rental.objects.select_for_update().get(pk=dispute.rental_id)
        refundable = rental.charged - owner_refunded(rental_id=rental.pk)
        if outcome == "refund":
            amount = refundable
        elif outcome == "partial":
            if isinstance(refund, bool) or not isinstance(refund, int) or refund <= 0:
                raise DisputeInvalid(
                    "A partial refund is a positive number of USDC base units.", detail={"field": "refund"}
                )
            if refund > refundable:
                raise DisputeInvalid(
                    f"The refund ({refund}) is larger than what the rental charged and was not refunded yet "
                    f"({refundable}).",
                    code="refund_too_large",
                    detail={"field": "refund", "most": refundable},
                )
            amount = refund
        else:
            amount = 0
        state = {
            "refund": DisputeState.REFUNDED,
            "partial": DisputeState.PARTIALLY_REFUNDED,
            "reject": DisputeState.REJECTED,
        }[outcome]
        if dispute.state != DisputeState.OPEN:
            if dispute.state == state and dispute.refund == amount:
                return Resolution(dispute=dispute, moved=False)
            raise DisputeNotAllowed(f"Dispute {dispute.pk} was already resolved ({dispute.get_state_display()}).")
        key = ""
        if amount:
            key = f"dispute:{dispute.pk}:refund"
            ledger_post(
                Posting(
                    kind=TransactionKind.TRANSFER,
                    currency=rental.currency,
                    idempotency_key=key,
                    legs=tuple(_refund_legs(rental, amount)),
                    memo=f"Dispute refund of rental {rental.pk}",
                    metadata={"dispute": dispute.pk, "rental": rental.pk},
                )
            )
        dispute.state, dispute.refund, dispute.note = state, amount, note[:2000]
        dispute.resolved_by, dispute.resolved_at, dispute.ledger_idempotency_key = operator, timezone.now(), key
        dispute.save(update_fields=["state", "refund", "note", "resolved_by", "resolved_at", "ledger_idempotency_key"])
        _evidence(dispute, rental, amount)
    return Resolution(dispute=dispute, moved=True)


def owner_refunded(*, rental_id: int) -> int:
    """Return what owner-use refunds (marketplace.rentals.owner_refunds) already gave back of a rental."""
    return sum(
        int(metadata.get("amount", 0))
        for metadata in Transaction.objects.filter(
            idempotency_key__startswith=OWNER_REFUND_PREFIX, metadata__rental=rental_id
        ).values_list("metadata", flat=True)
    )


def _evidence(dispute: Dispute, rental: Rental, amount: int) -> None:
    if dispute.state == DisputeState.REJECTED:
        evidence_record(
            kind=EvidenceKind.DISPUTE_REJECTED,
            subject_kind=SubjectKind.BUYER,
            user_id=rental.owner_id,
            source="dispute",
            source_key=f"dispute:{dispute.pk}:buyer",
            detail=f"dispute {dispute.pk} of rental {rental.pk} rejected",
        )
        return
    share = amount / rental.charged if rental.charged else 1
    for node_id in sorted(set(RentalPlacement.objects.filter(rental=rental).values_list("node_id", flat=True))):
        negative = round(5_000_000 * max(share, 0.2))  # a refund of a fifth or less still weighs a fifth
        evidence_record(
            kind=EvidenceKind.DISPUTE_UPHELD,
            subject_kind=SubjectKind.NODE,
            node_id=node_id,
            positive=0,
            negative=negative,
            source="dispute",
            source_key=f"dispute:{dispute.pk}:node:{node_id}",
            detail=f"dispute {dispute.pk} of rental {rental.pk}: refunded {amount} of {rental.charged}",
            counterparty_id=rental.owner_id,
        )


def held_rental_ids(*, now: datetime | None = None) -> set[int]:
    """Return the rentals whose providers' earnings stay out of settlement: not ended, in the window, or disputed."""
    now = now or timezone.now()
    recent = Q(ended_at__gt=now - _window()) | Q(ended_at__isnull=True) | ~Q(state__in=ENDED_STATES)
    open_disputes = Q(dispute__state=DisputeState.OPEN)
    return set(Rental.objects.filter(recent | open_disputes).values_list("pk", flat=True))


def held_earnings(*, provider) -> list[dict]:
    """Return what of a provider's earnings is held out of settlement, per rental, and why.

    The amounts are the provider's earnings entries of each held rental (charges net of the fee, less refunds):
    exactly what the settlement batch leaves out, not the gross `provider_paid`.
    """
    held = held_rental_ids()
    amounts: dict[int, int] = {}
    entries = Entry.objects.filter(
        account__owner=provider, account__kind=AccountKind.EARNINGS, transaction__metadata__rental__in=sorted(held)
    )
    for metadata, amount in entries.values_list("transaction__metadata", "amount"):
        amounts[metadata["rental"]] = amounts.get(metadata["rental"], 0) + int(amount)
    rentals = Rental.objects.filter(pk__in=[pk for pk, amount in amounts.items() if amount > 0]).order_by("pk")
    result = []
    for rental in rentals.values("pk", "state", "ended_at", "dispute__state"):
        if rental["dispute__state"] == DisputeState.OPEN:
            why, until = "the buyer disputes this rental", None
        elif rental["ended_at"] is None or rental["state"] not in ENDED_STATES:
            why, until = "the rental has not ended", None
        else:
            why, until = "the dispute window is open", rental["ended_at"] + _window()
        result.append({"rental": rental["pk"], "amount": amounts[rental["pk"]], "why": why, "until": until})
    return result
