"""Celery autodiscovery looks here: the rentals tasks and the notifications' tasks."""

from celery import shared_task

from marketplace.notifications.services import escrow_low_notify, notification_emails_requeue
from marketplace.notifications.tasks import notification_email_send
from marketplace.rentals.tasks import metering, placements_sync

__all__ = ["metering", "notification_email_send", "notifications_escrow_low_scan", "placements_sync"]


@shared_task(name="marketplace.notifications_escrow_low_scan")
def notifications_escrow_low_scan() -> int:
    """Tell owners of running rentals whose escrow is low (once per rental), re-queue unsent e-mails; return how
    many owners were told."""
    notification_emails_requeue()
    return escrow_low_notify()
