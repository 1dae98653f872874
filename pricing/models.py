"""Market rounds: bids waiting for a round, the stored rounds, what each node was awarded, and allocations."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class BidState(models.TextChoices):
    PENDING = "pending", "Waiting for a round"
    WON = "won", "Allocated"
    EXPIRED = "expired", "Expired unmatched"
    CANCELLED = "cancelled", "Cancelled"


class Capacity(models.TextChoices):
    """Two goods per pool, cleared in separate rounds: capacity a node's owner can take back, and not."""

    DEDICATED = "dedicated", "Dedicated"
    INTERRUPTIBLE = "interruptible", "Interruptible"


class Bid(models.Model):
    """A buyer's all-or-nothing demand for `units` vGPUs of one pool, at most `max_price_per_hour` per vGPU-hour.

    Rentals create one bid each (their `reference`, e.g. "rental:42") and learn the outcome from
    the `pricing.signals.bid_allocated` signal and the bid's allocations.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bids")
    pool = models.ForeignKey("nodes.Pool", on_delete=models.PROTECT, related_name="bids")
    units = models.PositiveIntegerField()
    # USDC base units (micro-USDC) per vGPU-hour.
    max_price_per_hour = models.BigIntegerField()
    reference = models.CharField(max_length=64, unique=True)
    # Which sub-pool the bid buys from (colocation): it is only ever matched with asks of that capacity.
    capacity = models.CharField(max_length=13, choices=Capacity.choices, default=Capacity.DEDICATED)
    # The rental asks for internet egress: the bid is only matched with asks of nodes that allow it (issue 15).
    needs_egress = models.BooleanField(default=False)
    state = models.CharField(max_length=10, choices=BidState.choices, default=BidState.PENDING, db_index=True)
    deadline = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    round = models.ForeignKey("MarketRound", null=True, blank=True, on_delete=models.PROTECT, related_name="won_bids")
    # What the buyer pays per hour for all its units (the round's price x units), in USDC base units; set when won.
    payment_per_hour = models.BigIntegerField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["pool", "state", "created_at"], name="pricing_bid_pool_state")]
        constraints = [
            models.CheckConstraint(condition=Q(units__gte=1), name="pricing_bid_units_positive"),
            models.CheckConstraint(condition=Q(max_price_per_hour__gte=0), name="pricing_bid_price_non_negative"),
        ]

    def __str__(self) -> str:
        return f"bid {self.pk} ({self.reference})"


class MarketRound(models.Model):
    """One cleared round of one pool, stored so anyone can recompute it with `python -m pricing.pvcg`."""

    pool = models.ForeignKey("nodes.Pool", on_delete=models.PROTECT, related_name="rounds")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Exactly what went into the engine and what came out (the CLI's JSON contract).
    inputs = models.JSONField()
    outputs = models.JSONField()
    # SHA-256 of the canonical JSON of {"inputs": ..., "outputs": ...}.
    digest = models.CharField(max_length=64)
    # The engine mechanism that cleared the round and its public parameters (rounds before it was stored: "vcg").
    mechanism = models.CharField(max_length=32, default="trade-reduction")
    # The sub-pool this round cleared (dedicated or interruptible asks and bids only).
    capacity = models.CharField(max_length=13, choices=Capacity.choices, default=Capacity.DEDICATED)
    # A round of egress bids: only the asks of nodes that allow internet egress took part.
    egress = models.BooleanField(default=False)
    parameters = models.JSONField(default=dict)
    bids_count = models.PositiveIntegerField()
    asks_count = models.PositiveIntegerField()
    units_traded = models.PositiveIntegerField()
    # Sums per hour in USDC base units; budget = buyers - providers (negative: the market account pays).
    buyer_payments_per_hour = models.BigIntegerField()
    provider_payments_per_hour = models.BigIntegerField()
    budget_per_hour = models.BigIntegerField()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"round {self.pk} of {self.pool_id}"


class RoundAward(models.Model):
    """What one node sold in a round and its payment per hour for those units (see docs/pricing.md)."""

    round = models.ForeignKey(MarketRound, on_delete=models.CASCADE, related_name="awards")
    node = models.ForeignKey("nodes.Node", on_delete=models.PROTECT, related_name="awards")
    units_sold = models.PositiveIntegerField()
    reserve_price_per_hour = models.BigIntegerField()
    vcg_payment_per_hour = models.BigIntegerField()
    adjustment_per_hour = models.BigIntegerField()
    payment_per_hour = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["round", "node"], name="pricing_award_unique_node")]

    def __str__(self) -> str:
        return f"{self.units_sold} units of node {self.node_id} in round {self.round_id}"


class Allocation(models.Model):
    """The concrete vGPUs of one node that serve a won bid."""

    round = models.ForeignKey(MarketRound, on_delete=models.CASCADE, related_name="allocations")
    bid = models.ForeignKey(Bid, on_delete=models.PROTECT, related_name="allocations")
    award = models.ForeignKey(RoundAward, on_delete=models.PROTECT, related_name="allocations")
    node = models.ForeignKey("nodes.Node", on_delete=models.PROTECT, related_name="allocations")
    vgpus = models.ManyToManyField("nodes.VGpu", related_name="allocations")
    units = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.units} vGPUs of node {self.node_id} for bid {self.bid_id}"
