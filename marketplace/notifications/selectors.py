"""Notification reads."""

from marketplace.notifications.models import Notification


def unread_count(user) -> int:
    """Return how many of the user's on-site notifications are unread."""
    return Notification.objects.filter(user=user, on_site=True, read_at__isnull=True).count()
