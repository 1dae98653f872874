"""Quarantine: take a node out of the market for an upper layer's finding (e.g. failed verification challenges).

Its vGPUs go offline, so the rentals code interrupts its placements and refunds what was not used, as for a
lost node. Unlike a ban, the certificate stays valid: an operator may look and move it back to offline.
"""

from django.db import transaction

from nodes.errors import NodeNotFound
from nodes.models import Node, NodeState
from nodes.services import node_transition


def node_quarantine(*, node_id: int, reason: str) -> bool:
    """Quarantine a node; return whether it moved (False: it already was)."""
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(pk=node_id).first()
        if node is None:
            raise NodeNotFound(f"Node {node_id} does not exist.")
        return node_transition(node=node, to_state=NodeState.QUARANTINED, reason=f"Quarantined: {reason}")
