"""Which queued commands the gateway may still deliver, and what an agent's Goodbye does.

A StartPlacement carries an expiry: after it, the platform may already have settled the placement (the
rentals code treats a start that never arrived as the provider's loss), so the command is dropped rather
than delivered late. The rentals code also cancels the undelivered start of a placement it settles. Both
checks happen when the gateway picks commands up, so a command queued during an outage never starts a
workload for a dead rental; the agent checks the expiry once more on its side.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from nodes.models import Node, NodeCommand, NodeState
from nodes.services import AGENT_LOG, node_transition


def node_commands_pending(*, node_ids: list[int], limit: int) -> list[tuple[int, int, dict]]:
    """Drop expired undelivered commands of these nodes, then return the deliverable ones in id order."""
    if not node_ids:
        return []
    now = timezone.now()
    expired = NodeCommand.objects.filter(
        node_id__in=node_ids, delivered_at__isnull=True, cancelled_at__isnull=True, expires_at__lte=now
    ).update(cancelled_at=now)
    if expired:
        AGENT_LOG.info("dropped %d expired command(s) for nodes %s", expired, node_ids[:20])
    return list(
        NodeCommand.objects.filter(node_id__in=node_ids, delivered_at__isnull=True, cancelled_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("pk")
        .values_list("pk", "node_id", "message")[:limit]
    )


def placement_commands_cancel(*, placement_ids: list[str]) -> int:
    """Cancel the undelivered StartPlacement commands of settled placements; return how many."""
    if not placement_ids:
        return 0
    return NodeCommand.objects.filter(
        delivered_at__isnull=True,
        cancelled_at__isnull=True,
        message__start_placement__placement_id__in=placement_ids,
    ).update(cancelled_at=timezone.now())


def node_goodbye(*, node_id: int, reason: str) -> bool:
    """Take a node offline at once because its agent said goodbye; return whether it was online."""
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(pk=node_id, deleted_at__isnull=True).first()
        if node is None or node.state not in (NodeState.ONLINE, NodeState.DRAINING):
            return False
        text = " ".join(reason.split())[:120] or "no reason given"
        return node_transition(node=node, to_state=NodeState.OFFLINE, reason=f"The agent signed off: {text}")
