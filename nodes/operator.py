"""An operator's node decisions: quarantine, release and drain any node (not only their own).

Thin functions over the node state machine (`node_transition`), each in one transaction with the node locked.
Quarantine takes the node's vGPUs off sale at once (they go offline, so the market and new rounds no longer see
them); release puts it back to offline, from which the agent's next heartbeat or Hello brings it online. The admin's
actions call these and record each decision (django.contrib.admin's LogEntry).
"""

from django.db import transaction

from nodes.errors import InvalidNodeTransition, NodeNotFound
from nodes.models import Node, NodeState
from nodes.services import node_quarantine as services_node_quarantine
from nodes.services import node_transition


def _locked(node_id: int) -> Node:
    node = Node.objects.select_for_update().filter(pk=node_id, deleted_at__isnull=True).first()
    if node is None:
        raise NodeNotFound(f"Node {node_id} does not exist.")
    return node


def node_quarantine(*, node_id: int, reason: str) -> Node:
    """Quarantine a node: nothing more is sold on it and its vGPUs leave the market now (nodes.services' service)."""
    if not Node.objects.filter(pk=node_id, deleted_at__isnull=True).exists():
        raise NodeNotFound(f"Node {node_id} does not exist.")
    return services_node_quarantine(node_id=node_id, reason=f"Quarantined by an operator: {reason}")


def node_release(*, node_id: int, reason: str) -> Node:
    """Lift a quarantine: the node is offline until its agent reports again, then online."""
    with transaction.atomic():
        node = _locked(node_id)
        if node.state != NodeState.QUARANTINED:
            raise InvalidNodeTransition(f"Only a quarantined node can be released; node {node.pk} is {node.state}.")
        node_transition(node=node, to_state=NodeState.OFFLINE, reason=f"Released by an operator: {reason}")
    return node


def node_operator_drain(*, node_id: int, reason: str) -> Node:
    """Stop selling an online node's vGPUs; what runs on it keeps running."""
    with transaction.atomic():
        node = _locked(node_id)
        if node.state != NodeState.ONLINE:
            raise InvalidNodeTransition(f"Only an online node can be drained; node {node.pk} is {node.state}.")
        node_transition(node=node, to_state=NodeState.DRAINING, reason=f"Drained by an operator: {reason}")
    return node
