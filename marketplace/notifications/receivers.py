"""What users hear about, taken from the state-change records the rentals and nodes code already writes.

Each RentalEvent and NodeEvent row is saved inside the transaction that changes the state, so the notification
commits or rolls back with it. The keys name the event, so a retried or raced change notifies once:

| event (record)                                    | kind            | key                                 |
|---------------------------------------------------|-----------------|-------------------------------------|
| rental -> running (each attempt)                  | rental_started  | rental:<id>:<attempt>:running       |
| rental -> completed, cancelled, expired           | rental_ended    | rental:<id>:ended                   |
| rental -> failed                                  | rental_failed   | rental:<id>:failed                  |
| rental -> interrupted (each attempt)              | rental_failed   | rental:<id>:<attempt>:interrupted   |
| node online/draining -> offline, any -> quarantined | node_offline  | node:<id>:event:<node event id>     |

Escrow running low has no state change; the beat task `marketplace.notifications_escrow_low_scan` looks for it.
"""

import logging

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from marketplace.notifications.models import NotificationKind
from marketplace.notifications.services import notification_send
from marketplace.rentals.models import Rental, RentalEvent, RentalState
from nodes.models import Node, NodeEvent, NodeState

logger = logging.getLogger(__name__)

ENDED = {RentalState.COMPLETED, RentalState.CANCELLED, RentalState.EXPIRED}


def _rental_message(event: RentalEvent, rental: Rental) -> tuple[str, str, str] | None:
    state = event.to_state
    if state == RentalState.RUNNING:
        return NotificationKind.RENTAL_STARTED, f"rental:{rental.pk}:{rental.attempt}:running", "is running"
    if state in ENDED:
        return NotificationKind.RENTAL_ENDED, f"rental:{rental.pk}:ended", f"ended ({RentalState(state).label})"
    if state == RentalState.FAILED:
        return NotificationKind.RENTAL_FAILED, f"rental:{rental.pk}:failed", "failed"
    if state == RentalState.INTERRUPTED:
        return NotificationKind.RENTAL_FAILED, f"rental:{rental.pk}:{rental.attempt}:interrupted", "was interrupted"
    return None


@receiver(post_save, sender=RentalEvent, dispatch_uid="marketplace.notify_rental_event")
def notify_rental_event(sender, instance: RentalEvent, created: bool, raw: bool = False, **kwargs) -> None:
    """Tell a rental's owner it started, ended, failed or was interrupted."""
    if not created or raw:
        return
    try:
        with transaction.atomic():  # a savepoint: a failure here leaves the state change's transaction usable
            _notify_rental(instance)
    except Exception:  # telling the user must never undo the state change
        logger.exception("notifying the owner of rental %s failed", instance.rental_id)


def _notify_rental(instance: RentalEvent) -> None:
    rental = Rental.objects.only("pk", "owner_id", "attempt", "state").get(pk=instance.rental_id)
    message = _rental_message(instance, rental)
    if message is None:
        return
    kind, key, what = message
    notification_send(
        user_id=rental.owner_id,
        kind=kind,
        key=key,
        title=f"Rental {rental.pk} {what}",
        body=f"Rental {rental.pk} {what}: {instance.reason}",
        url=f"/rentals/{rental.pk}/",
    )


@receiver(post_save, sender=NodeEvent, dispatch_uid="marketplace.notify_node_event")
def notify_node_event(sender, instance: NodeEvent, created: bool, raw: bool = False, **kwargs) -> None:
    """Tell a provider their node went offline or was quarantined (not when an operator's release parks it)."""
    if not created or raw:
        return
    offline = instance.to_state == NodeState.OFFLINE and instance.from_state != NodeState.QUARANTINED
    if not (offline or instance.to_state == NodeState.QUARANTINED):
        return
    try:
        with transaction.atomic():
            _notify_node(instance, offline=offline)
    except Exception:
        logger.exception("notifying the owner of node %s failed", instance.node_id)


def _notify_node(instance: NodeEvent, *, offline: bool) -> None:
    node = Node.objects.only("pk", "owner_id", "name").get(pk=instance.node_id)
    what = "went offline" if offline else "was quarantined"
    notification_send(
        user_id=node.owner_id,
        kind=NotificationKind.NODE_OFFLINE,
        key=f"node:{node.pk}:event:{instance.pk}",
        title=f"Node {node.name} {what}",
        body=f"Your node {node.name} {what}: {instance.reason}",
        url="/nodes/",
    )
