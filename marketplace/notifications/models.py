"""Notifications: what happened that a user should hear about, and which kinds they want by which channel."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class NotificationKind(models.TextChoices):
    RENTAL_STARTED = "rental_started", "A rental started"
    RENTAL_ENDED = "rental_ended", "A rental ended"
    RENTAL_FAILED = "rental_failed", "A rental failed or was interrupted"
    ESCROW_LOW = "escrow_low", "A running rental's escrow runs low"
    NODE_OFFLINE = "node_offline", "One of my nodes went offline"


class Notification(models.Model):
    """One event told to one user, at most once: `key` names the event (unique per user).

    A row exists even when the user only wants it by e-mail (`on_site` false): the key is what makes a retried
    or raced event a no-op. `emailed_at` is set when the e-mail went out.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=20, choices=NotificationKind.choices)
    key = models.CharField(max_length=120)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    url = models.CharField(max_length=200, blank=True)
    on_site = models.BooleanField(default=True)
    email_wanted = models.BooleanField(default=False)
    emailed_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "marketplace"
        ordering = ["-created_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="marketplace_notification_once")]
        indexes = [
            models.Index(
                fields=["user", "-created_at"], condition=Q(on_site=True), name="marketplace_notification_site"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.title}"


class NotificationPreferences(models.Model):
    """The kinds a user wants on the site and by e-mail; no row means the defaults (settings.NOTIFICATIONS_*)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    site_kinds = models.JSONField(default=list)
    email_kinds = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "marketplace"
        verbose_name_plural = "notification preferences"

    def __str__(self) -> str:
        return f"notification preferences of {self.user_id}"
