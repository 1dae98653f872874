"""Send a notification's e-mail exactly once (the Celery task's body)."""

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from marketplace.notifications.models import Notification


def notification_email_deliver(*, notification_id: int) -> bool:
    """Send a notification's e-mail unless it went already; return whether this call sent it.

    The row stays locked while the mail is handed over, so a duplicate task waits and then finds it sent.
    """
    with transaction.atomic():
        notification = (
            Notification.objects.select_for_update()
            .select_related("user")
            .filter(pk=notification_id, email_wanted=True, emailed_at__isnull=True)
            .first()
        )
        if notification is None or not notification.user.email:
            return False
        link = f"\n\n{settings.JANCTION_SITE_URL.rstrip('/')}{notification.url}" if notification.url else ""
        send_mail(
            subject=f"{settings.ACCOUNT_EMAIL_SUBJECT_PREFIX}{notification.title}",
            message=f"{notification.body}{link}\n\nChoose what you hear about on your profile page.",
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[notification.user.email],
        )
        notification.emailed_at = timezone.now()
        notification.save(update_fields=["emailed_at"])
    return True
