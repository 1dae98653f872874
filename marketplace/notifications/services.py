"""Notification writes: tell a user about an event once, send its e-mail once, save preferences, mark read.

`notification_send` runs inside the caller's transaction (a rental's or a node's state change), so a rolled-back
change tells nobody; the e-mail is queued only after the commit. The (user, key) unique constraint makes a
retried or raced event a no-op: the second insert waits for the first and then fails, inside its own savepoint.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import CharField, Exists, F, OuterRef, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from marketplace.notifications.models import Notification, NotificationKind, NotificationPreferences
from marketplace.notifications.tasks import notification_email_send
from marketplace.rentals.models import Rental, RentalState

logger = logging.getLogger(__name__)

KINDS = tuple(NotificationKind.values)


def preferences_get(*, user_id: int) -> tuple[frozenset[str], frozenset[str]]:
    """Return the kinds a user wants (on the site, by e-mail), the defaults when they never chose."""
    prefs = NotificationPreferences.objects.filter(user_id=user_id).first()
    if prefs is None:
        return frozenset(settings.NOTIFICATIONS_DEFAULT_SITE), frozenset(settings.NOTIFICATIONS_DEFAULT_EMAIL)
    return frozenset(prefs.site_kinds), frozenset(prefs.email_kinds)


def preferences_set(*, user, site_kinds: list[str], email_kinds: list[str]) -> NotificationPreferences:
    """Store the kinds a user wants; unknown kinds are refused by the form, and dropped here too."""
    site = sorted({kind for kind in site_kinds if kind in KINDS})
    email = sorted({kind for kind in email_kinds if kind in KINDS})
    prefs, _ = NotificationPreferences.objects.update_or_create(
        user=user, defaults={"site_kinds": site, "email_kinds": email}
    )
    return prefs


def notification_send(*, user_id: int, kind: str, key: str, title: str, body: str = "", url: str = "") -> int | None:
    """Record one event for a user once, by the channels they chose; return the new notification's id, or None.

    None: the user wants this kind on no channel, or the event was already recorded (same key).
    """
    site_kinds, email_kinds = preferences_get(user_id=user_id)
    on_site = kind in site_kinds
    email = kind in email_kinds
    if not (on_site or email):
        return None
    try:
        with transaction.atomic():  # a savepoint: a duplicate key leaves the caller's transaction usable
            notification = Notification.objects.create(
                user_id=user_id,
                kind=kind,
                key=key[:120],
                title=title[:200],
                body=body,
                url=url[:200],
                on_site=on_site,
                email_wanted=email,
            )
    except IntegrityError:
        return None
    if email:
        notification_id = notification.pk
        # robust: a broker that is down must not fail the state change's caller; the sweep re-queues it.
        transaction.on_commit(lambda: notification_email_send.delay(notification_id), robust=True)
    return notification.pk


def notification_emails_requeue(*, older_than_seconds: int = 300, newer_than_hours: int = 24) -> int:
    """Queue again the e-mails of the last day that are still unsent after a while; return how many.

    Sending is idempotent (notification_email_deliver), so a duplicate in the queue sends nothing twice.
    """
    now = timezone.now()
    ids = list(
        Notification.objects.filter(
            email_wanted=True,
            emailed_at__isnull=True,
            created_at__lt=now - timedelta(seconds=older_than_seconds),
            created_at__gte=now - timedelta(hours=newer_than_hours),
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:1000]
    )
    for notification_id in ids:
        notification_email_send.delay(notification_id)
    return len(ids)


def notifications_mark_read(*, user, notification_ids: list[int] | None = None) -> int:
    """Mark a user's unread notifications read (all of them, or these ids of theirs); return how many."""
    unread = Notification.objects.filter(user=user, read_at__isnull=True)
    if notification_ids is not None:
        unread = unread.filter(pk__in=notification_ids)
    return unread.update(read_at=timezone.now())


def escrow_low_notify(*, now=None) -> int:
    """Tell each running rental's owner once when its escrow falls under the low threshold; return how many."""
    percent = settings.NOTIFICATIONS_ESCROW_LOW_PERCENT
    low = (
        Rental.objects.filter(state=RentalState.RUNNING, held_total__gt=F("refunded"))
        .filter(escrow_held__lt=(F("held_total") - F("refunded")) * percent / 100)
        .exclude(
            Exists(
                Notification.objects.filter(
                    user_id=OuterRef("owner_id"),
                    key=Concat(Value("rental:"), Cast(OuterRef("pk"), CharField()), Value(":escrow_low")),
                )
            )
        )
    )
    sent = 0
    for rental in list(low.only("pk", "owner_id")):
        with transaction.atomic():
            created = notification_send(
                user_id=rental.owner_id,
                kind=NotificationKind.ESCROW_LOW,
                key=f"rental:{rental.pk}:escrow_low",
                title=f"Rental {rental.pk}: escrow is running low",
                body=(
                    f"Rental {rental.pk} holds less than {percent} % of its escrow: it stops when the escrow is used "
                    "up. Extend it from its page to keep it running."
                ),
                url=f"/rentals/{rental.pk}/",
            )
        sent += created is not None
    return sent
