"""The command outbox: queue control messages for a node, deliver them in order, drop the stale ones.

A StartPlacement carries an expiry: after it, the platform may already have settled the placement (the
rentals code treats a start that never arrived as the provider's loss), so the command is dropped rather
than delivered late. The rentals code also cancels the undelivered start of a placement it settles. Both
checks happen when the gateway picks commands up, so a command queued during an outage never starts a
workload for a dead rental; the agent checks the expiry once more on its side.
"""

import logging
from datetime import UTC, datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from google.protobuf import json_format

from agent.protocol.gen.janction.agent.v1 import agent_pb2
from janction.errors import Conflict, ValidationFailed
from nodes.errors import NodeNotFound
from nodes.models import (
    Node,
    NodeCommand,
    NodePlacement,
    NodeState,
    VGpu,
)
from nodes.services.lifecycle import node_transition

AGENT_LOG = logging.getLogger("nodes.agent")


def _control_message(message) -> tuple[str, dict]:
    try:
        parsed = (
            message
            if isinstance(message, agent_pb2.ControlMessage)
            else json_format.ParseDict(message, agent_pb2.ControlMessage())
        )
    except (json_format.ParseError, TypeError, AttributeError) as exc:
        raise ValidationFailed(f"Not a control message: {exc}", code="command_invalid") from None
    kind = parsed.WhichOneof("payload")
    if kind is None or kind == "usage_ack":
        raise ValidationFailed("Send one of start_placement, stop_placement, drain or ping.", code="command_invalid")
    return kind, json_format.MessageToDict(parsed, preserving_proto_field_name=True)


def node_send(*, node_id: int, message) -> NodeCommand:
    """Queue a control message for a connected node; its gateway delivers queued messages in order, at least once.

    `message` is a ControlMessage or its JSON mapping, e.g.
    `{"start_placement": {"placement_id": "p-1", "image": "busybox", "vgpu_local_ids": ["0:0"]}}`.
    A StartPlacement makes the node the placement's owner: only it may report on the placement.
    """
    kind, body = _control_message(message)
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(pk=node_id, deleted_at__isnull=True).first()
        if node is None:
            raise NodeNotFound(f"Node {node_id} does not exist.")
        # A quarantined node's agent may still be connected: it is told to stop what it runs, nothing else.
        stoppable = kind == "stop_placement" and node.state == NodeState.QUARANTINED
        if node.state not in (NodeState.ONLINE, NodeState.DRAINING) and not stoppable:
            raise Conflict(
                f"Node {node_id} is {node.state}, not connected; wait for its agent to come online.",
                code="node_not_connected",
            )
        if kind == "start_placement":
            _placement_claim(node=node, start=body[kind])
        elif kind == "stop_placement":
            placement_id = body[kind].get("placement_id", "")
            if not NodePlacement.objects.filter(node=node, placement_id=placement_id).exists():
                raise ValidationFailed(
                    f"Node {node_id} was never sent placement {placement_id!r}.", code="placement_not_on_node"
                )
        return NodeCommand.objects.create(node=node, message=body, expires_at=_command_expiry(body))


def _command_expiry(body: dict) -> datetime | None:
    """Return when a StartPlacement expires (its expires_at_ms; int64 is a string in protobuf's JSON)."""
    try:
        expires_ms = int((body.get("start_placement") or {}).get("expires_at_ms") or 0)
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(expires_ms / 1000, tz=UTC) if 0 < expires_ms < 2**53 else None


def _placement_claim(*, node: Node, start: dict) -> NodePlacement:
    placement_id = start.get("placement_id", "")
    local_ids = list(start.get("vgpu_local_ids", []))
    if not placement_id or not local_ids:
        raise ValidationFailed("A StartPlacement needs a placement_id and vGPUs.", code="command_invalid")
    known = set(VGpu.objects.filter(node=node, local_id__in=local_ids).values_list("local_id", flat=True))
    if unknown := [local_id for local_id in local_ids if local_id not in known]:
        raise ValidationFailed(f"Node {node.pk} has no vGPUs {', '.join(unknown)}.", code="command_invalid")
    placement, _ = NodePlacement.objects.get_or_create(
        placement_id=placement_id, defaults={"node": node, "vgpu_local_ids": local_ids}
    )
    if placement.node_id != node.pk:
        raise Conflict(f"Placement {placement_id!r} belongs to another node.", code="placement_on_other_node")
    return placement


def node_commands_mark_delivered(*, command_ids: list[int]) -> int:
    """Mark commands as handed to their node's stream."""
    if not command_ids:
        return 0
    return NodeCommand.objects.filter(pk__in=command_ids, delivered_at__isnull=True).update(delivered_at=timezone.now())


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
