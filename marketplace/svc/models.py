"""Per-service access tokens and per-port counters (app label `marketplace`)."""

from django.db import models
from django.db.models import Q


class ServiceToken(models.Model):
    """A bearer token that opens one rental's service and nothing else; only its hash is stored."""

    rental = models.ForeignKey("marketplace.Rental", on_delete=models.CASCADE, related_name="service_tokens")
    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=16, unique=True, help_text="Public part of the token, for look-up.")
    token_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "marketplace"
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["rental", "name"], condition=Q(revoked_at__isnull=True), name="marketplace_svctoken_active_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class ServiceStats(models.Model):
    """Counters of one exposed port of a rental, added to by every ingress process."""

    rental = models.ForeignKey("marketplace.Rental", on_delete=models.CASCADE, related_name="service_stats")
    port_name = models.CharField(max_length=32)
    requests = models.BigIntegerField(default=0)
    # Answers with a 5xx status, the ingress's own included (502/503/504).
    errors = models.BigIntegerField(default=0)
    bytes_in = models.BigIntegerField(default=0, help_text="Request bytes forwarded to the service (bodies).")
    bytes_out = models.BigIntegerField(default=0, help_text="Response bytes forwarded to the caller (bodies).")
    # Time to the response head, summed over requests (mean = latency_ms_total / requests), and the largest.
    latency_ms_total = models.BigIntegerField(default=0)
    latency_ms_max = models.BigIntegerField(default=0)
    # Requests the ingress carried over the overlay (through the hub) rather than the agent's tunnel.
    overlay_requests = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "marketplace"
        constraints = [models.UniqueConstraint(fields=["rental", "port_name"], name="marketplace_svcstats_port")]

    def __str__(self) -> str:
        return f"{self.rental_id}/{self.port_name}: {self.requests} requests"
