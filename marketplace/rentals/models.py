"""Rentals: a buyer's request, its state changes and the placements that serve it (app label `marketplace`).

The tables keep their names (`marketplace_rental`, ...): these models moved here from marketplace/models.py
without a schema change.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class RentalState(models.TextChoices):
    PENDING = "pending", "Waiting for a round"
    ALLOCATED = "allocated", "Allocated"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired unmatched"
    INTERRUPTED = "interrupted", "Interrupted"


class Rental(models.Model):
    """A buyer's request to run one container on `vgpus` vGPUs of a pool, with its escrow and what it cost.

    Money is in USDC base units; prices are per vGPU-hour. `escrow_held` is what this rental still holds
    in the buyer's escrow account: the hold, less what was charged and released.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="rentals")
    pool = models.ForeignKey("nodes.Pool", on_delete=models.PROTECT, related_name="rentals")
    vgpus = models.PositiveIntegerField()
    max_price_per_hour = models.BigIntegerField(help_text="Most the buyer pays per vGPU-hour, USDC base units.")
    max_duration_seconds = models.PositiveIntegerField()
    image = models.CharField(max_length=255)
    command = models.JSONField(default=list, blank=True)
    env = models.JSONField(default=dict, blank=True)
    secret_env_keys = models.JSONField(default=list, blank=True)
    ports = models.JSONField(default=list, blank=True)
    # Services (issue 15): HTTP ports reached at /svc/<service_slug>/<name>/, [{"name": "api", "port": 8000}].
    expose = models.JSONField(default=list, blank=True)
    service_slug = models.CharField(max_length=32, unique=True, null=True, blank=True)
    # Anyone may call the service, without a key or token.
    service_public = models.BooleanField(default=False)
    restart_on_interruption = models.BooleanField(default=False)
    # Colocation (issue 19): the workload may be frozen while a node's owner uses the GPU; the buyer buys
    # interruptible capacity (priced apart) instead of dedicated.
    pausable = models.BooleanField(default=False)
    accepts_interruptible = models.BooleanField(default=False)
    # The least provider (node) score the rental accepts, in [0, 1]; None: the pool's minimum. Its bids carry it.
    min_provider_score = models.DecimalField(max_digits=7, decimal_places=6, null=True, blank=True)
    # The workload may reach the internet (never the provider's LAN or host), on nodes that allow it (issue 15).
    internet_egress = models.BooleanField(default=False)
    match_deadline = models.DateTimeField()
    state = models.CharField(max_length=12, choices=RentalState.choices, default=RentalState.PENDING, db_index=True)
    state_reason = models.CharField(max_length=300, blank=True)
    # The current bid; a requeued rental gets a new one (references "rental:<id>:<attempt>").
    bid = models.OneToOneField("pricing.Bid", null=True, blank=True, on_delete=models.PROTECT, related_name="rental")
    attempt = models.PositiveIntegerField(default=1)
    # Run time (ms) used by earlier, interrupted attempts; the rest of max_duration is left.
    used_ms = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=8, default="USDC")
    held_total = models.BigIntegerField(default=0)
    escrow_held = models.BigIntegerField(default=0)
    charged = models.BigIntegerField(default=0)
    refunded = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # Set once every placement is settled and the unused escrow went back.
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "marketplace"
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="marketplace_rental_owner_time")]
        constraints = [
            models.CheckConstraint(condition=Q(vgpus__gte=1), name="marketplace_rental_vgpus_positive"),
            models.CheckConstraint(condition=Q(max_price_per_hour__gte=1), name="marketplace_rental_price_positive"),
            models.CheckConstraint(condition=Q(escrow_held__gte=0), name="marketplace_rental_escrow_non_negative"),
        ]

    def __str__(self) -> str:
        return f"rental {self.pk} ({self.state})"


class RentalEvent(models.Model):
    """A state change of a rental, with why it happened."""

    rental = models.ForeignKey(Rental, on_delete=models.CASCADE, related_name="events")
    from_state = models.CharField(max_length=12, choices=RentalState.choices, blank=True)
    to_state = models.CharField(max_length=12, choices=RentalState.choices)
    reason = models.CharField(max_length=300)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "marketplace"
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.rental_id}: {self.from_state or '-'} -> {self.to_state}"


class RentalPlacement(models.Model):
    """The vGPUs of one node serving one attempt of a rental, with the rates locked for its life.

    Buyer rate per vGPU-hour = buyer_payment_per_hour / bid_units (the bid's VCG price);
    provider rate per vGPU-hour = provider_payment_per_hour / provider_units (the node's PVCG payment).
    The metering cursor and cumulative totals make every usage report count exactly once.
    """

    rental = models.ForeignKey(Rental, on_delete=models.CASCADE, related_name="placements")
    bid = models.ForeignKey("pricing.Bid", on_delete=models.PROTECT, related_name="rental_placements")
    node = models.ForeignKey("nodes.Node", on_delete=models.PROTECT, related_name="rental_placements")
    provider = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    placement_id = models.CharField(max_length=128, unique=True)
    node_placement = models.OneToOneField(
        "nodes.NodePlacement", null=True, blank=True, on_delete=models.PROTECT, related_name="rental_placement"
    )
    vgpu_local_ids = models.JSONField(default=list)
    vgpu_count = models.PositiveIntegerField()
    buyer_payment_per_hour = models.BigIntegerField()
    bid_units = models.PositiveIntegerField()
    provider_payment_per_hour = models.BigIntegerField()
    provider_units = models.PositiveIntegerField()
    # Most run time (ms) this placement may bill: what was left of the rental's duration when it started.
    limit_ms = models.BigIntegerField()
    # Usage intervals are clipped to end here (cancellation, max duration); null: no clip.
    bill_until_ms = models.BigIntegerField(null=True, blank=True)
    # A nodes.models.PlacementState: what the rentals code last read from the node's placement.
    observed_state = models.CharField(max_length=12, default="requested")
    exit_code = models.IntegerField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    metered_through_seq = models.BigIntegerField(default=0)
    metered_run_ms = models.BigIntegerField(default=0)
    metered_vgpu_ms = models.BigIntegerField(default=0)
    buyer_charged = models.BigIntegerField(default=0)
    provider_paid = models.BigIntegerField(default=0)
    streamed_log_seq = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "marketplace"
        ordering = ["pk"]
        indexes = [
            models.Index(fields=["rental"], condition=Q(settled_at__isnull=True), name="marketplace_rp_unsettled")
        ]

    def __str__(self) -> str:
        return f"{self.placement_id} ({self.observed_state})"
