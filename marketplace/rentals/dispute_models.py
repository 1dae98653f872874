"""A buyer's dispute of an ended rental, resolved by an operator (imported by marketplace.models)."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from ledger.fields import BaseUnitsField


class DisputeState(models.TextChoices):
    OPEN = "open", "Open"
    REFUNDED = "refunded", "Refunded in full"
    PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
    REJECTED = "rejected", "Rejected"


class Dispute(models.Model):
    """One per rental: the buyer's reason, and the operator's decision with the refund it moved (USDC base units)."""

    rental = models.OneToOneField("marketplace.Rental", on_delete=models.PROTECT, related_name="dispute")
    buyer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="disputes")
    reason = models.TextField(max_length=2000)
    state = models.CharField(max_length=20, choices=DisputeState.choices, default=DisputeState.OPEN, db_index=True)
    refund = models.BigIntegerField(default=0)
    note = models.TextField(max_length=2000, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    ledger_idempotency_key = models.CharField(max_length=80, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=Q(refund__gte=0), name="marketplace_dispute_refund_non_negative")
        ]

    def __str__(self) -> str:
        return f"dispute of rental {self.rental_id} ({self.state})"


class StakeSlash(models.Model):
    """An operator's slash of part of a provider's JCT stake after an upheld dispute (marketplace.rentals.slashing).

    `mode` "ledger": the ledger-level stake (embedded default), moved in the same transaction as this row.
    `mode` "chain": Settlement.slash on chain for `account`; `tx_hash` is empty until the transaction is mined.
    """

    dispute = models.ForeignKey(Dispute, on_delete=models.PROTECT, related_name="slashes")
    provider = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    amount = BaseUnitsField(help_text="JCT base units (18 decimals).")
    evidence = models.TextField(max_length=2000)
    operator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    mode = models.CharField(max_length=6)
    account = models.CharField(max_length=42, blank=True)
    tx_hash = models.CharField(max_length=66, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["dispute", "provider"], name="marketplace_stake_slash_once_per_provider"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="marketplace_stake_slash_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"slash of provider {self.provider_id} for dispute {self.dispute_id}"
