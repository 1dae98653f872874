"""Celery task: a notification's e-mail, queued after the commit that recorded it."""

import smtplib

from celery import shared_task

from marketplace.notifications.delivery import notification_email_deliver


@shared_task(
    name="marketplace.notification_email_send",
    bind=True,
    acks_late=True,
    max_retries=5,
    autoretry_for=(smtplib.SMTPException, ConnectionError, TimeoutError),
    retry_backoff=30,
)
def notification_email_send(self, notification_id: int) -> bool:
    """Send a notification's e-mail once; a retry after it went out does nothing."""
    return notification_email_deliver(notification_id=notification_id)
