"""Accounts: profiles and API keys; the rental models live in marketplace/rentals/models.py.

Payout wallets and their SIWE nonces are the ledger's (ledger.models.Wallet): settlement pays out to them.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Region(models.TextChoices):
    NORTH_AMERICA = "na", "North America"
    SOUTH_AMERICA = "sa", "South America"
    EUROPE = "eu", "Europe"
    ASIA_PACIFIC = "apac", "Asia-Pacific"
    MIDDLE_EAST_AFRICA = "mea", "Middle East & Africa"


class Profile(models.Model):
    """What the marketplace knows about a user beyond their login."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    display_name = models.CharField(max_length=80, blank=True)
    region = models.CharField(max_length=8, choices=Region.choices, default=Region.EUROPE)
    is_buyer = models.BooleanField(default=True)
    is_provider = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.display_name or self.user.get_username()


class ApiKey(models.Model):
    """A named bearer key for the REST API; only its hash is stored, the key is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=16, unique=True, help_text="Public part of the key, for look-up.")
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # A key scoped to one service opens only that rental's /svc/ endpoint, never the account API.
    service_rental = models.ForeignKey(
        "marketplace.Rental", null=True, blank=True, on_delete=models.CASCADE, related_name="scoped_api_keys"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "name"], condition=Q(revoked_at__isnull=True), name="marketplace_apikey_active_name"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


# Django finds an app's models in its models module: the rentals' are imported here.
from marketplace.rentals.models import Rental, RentalEvent, RentalPlacement, RentalState  # noqa: E402

__all__ = ["ApiKey", "Profile", "Region", "Rental", "RentalEvent", "RentalPlacement", "RentalState"]
from marketplace.notifications.models import (  # noqa: E402, F401
    Notification,
    NotificationKind,
    NotificationPreferences,
)
from marketplace.rentals.dispute_models import Dispute, DisputeState, StakeSlash  # noqa: E402, F401 - registered with this app
from marketplace.svc.models import ServiceStats, ServiceToken  # noqa: E402, F401 - registered with this app
