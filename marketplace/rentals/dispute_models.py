"""A buyer's dispute of an ended rental, resolved by an operator (imported by marketplace.models)."""

from django.conf import settings
from django.db import models
from django.db.models import Q


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
