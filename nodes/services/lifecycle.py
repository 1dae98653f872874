"""Node lifecycle: the provider's controls (create, rename, ask, drain, delete) and the node state machine."""

from django.db import IntegrityError, transaction
from django.utils import timezone

from nodes.errors import InvalidNodeTransition, NodeBusy, NodeNameTaken, NodeNotFound
from nodes.models import (
    Node,
    NodeEvent,
    NodeState,
    RevokedCertificate,
    VGpu,
    VGpuState,
)
from nodes.services.enrollment import EnrollmentTicket, _agent_command, _issue_token
from nodes.signals import node_quarantined

# Which node state may follow which (docs/architecture.md).
NODE_TRANSITIONS: dict[str, set[str]] = {
    NodeState.PENDING: {NodeState.ONLINE, NodeState.QUARANTINED},
    NodeState.ONLINE: {NodeState.OFFLINE, NodeState.DRAINING, NodeState.QUARANTINED},
    NodeState.OFFLINE: {NodeState.ONLINE, NodeState.QUARANTINED},
    NodeState.DRAINING: {NodeState.ONLINE, NodeState.OFFLINE, NodeState.QUARANTINED},
    NodeState.QUARANTINED: {NodeState.OFFLINE},
}


def node_create(*, owner, name: str, reserve_price_per_hour: int = 0) -> EnrollmentTicket:
    """Create a pending node and its one-time enrollment token, returning the command that starts the agent."""
    node = Node(owner=owner, name=name, reserve_price_per_hour=reserve_price_per_hour)
    token = _issue_token(node)
    try:
        with transaction.atomic():
            node.save()
    except IntegrityError:
        raise NodeNameTaken(f"You already have a node named {name!r}; pick another name.") from None
    return EnrollmentTicket(node=node, token=token, command=_agent_command(node, token))


def _owned_node_for_update(*, owner, node_id: int) -> Node:
    node = Node.objects.select_for_update().filter(owner=owner, pk=node_id, deleted_at__isnull=True).first()
    if node is None:
        raise NodeNotFound(f"You have no node with id {node_id}.")
    return node


def node_token_regenerate(*, owner, node_id: int) -> EnrollmentTicket:
    """Issue a fresh enrollment token for a node that has not enrolled yet."""
    with transaction.atomic():
        node = _owned_node_for_update(owner=owner, node_id=node_id)
        if node.enrolled_at is not None:
            raise InvalidNodeTransition("This node is already enrolled; create a new node for another host.")
        token = _issue_token(node)
        node.save(update_fields=["enrollment_token_hash", "enrollment_expires_at"])
    return EnrollmentTicket(node=node, token=token, command=_agent_command(node, token))


def node_rename(*, owner, node_id: int, name: str) -> Node:
    """Rename one of the provider's nodes."""
    try:
        with transaction.atomic():
            node = _owned_node_for_update(owner=owner, node_id=node_id)
            node.name = name
            node.save(update_fields=["name"])
    except IntegrityError:
        raise NodeNameTaken(f"You already have a node named {name!r}; pick another name.") from None
    return node


def node_set_ask(*, owner, node_id: int, reserve_price_per_hour: int | None = None, paused: bool | None = None) -> Node:
    """Change a node's ask: its reserve price per vGPU-hour (USDC base units) and whether it is paused."""
    with transaction.atomic():
        node = _owned_node_for_update(owner=owner, node_id=node_id)
        fields = []
        if reserve_price_per_hour is not None:
            node.reserve_price_per_hour = reserve_price_per_hour
            fields.append("reserve_price_per_hour")
        if paused is not None:
            node.ask_paused = paused
            fields.append("ask_paused")
        if fields:
            node.save(update_fields=fields)
    return node


def node_transition(*, node: Node, to_state: str, reason: str) -> bool:
    """Move a locked node to `to_state` if the state machine allows it; record the event. Return whether it moved."""
    if node.state == to_state:
        return False
    if to_state not in NODE_TRANSITIONS[node.state]:
        raise InvalidNodeTransition(f"A node that is {node.state} cannot become {to_state}.")
    NodeEvent.objects.create(node=node, from_state=node.state, to_state=to_state, reason=reason[:200])
    node.state = to_state
    node.state_reason = reason[:200]
    node.save(update_fields=["state", "state_reason"])
    if to_state == NodeState.QUARANTINED:
        node_id = node.pk
        transaction.on_commit(lambda: node_quarantined.send(sender=Node, node_id=node_id, reason=reason[:200]))
    if to_state in (NodeState.OFFLINE, NodeState.QUARANTINED):
        # Its vGPUs cannot be sold or keep running: placements on them are the rentals code's to interrupt.
        VGpu.objects.filter(node=node).exclude(state=VGpuState.OFFLINE).update(state=VGpuState.OFFLINE, holder="")
    elif to_state == NodeState.ONLINE:
        VGpu.objects.filter(node=node, state=VGpuState.OFFLINE).update(state=VGpuState.FREE)
    return True


def node_drain(*, owner, node_id: int, reason: str = "Drained by its provider") -> Node:
    """Stop selling a node's vGPUs; what runs keeps running."""
    with transaction.atomic():
        node = _owned_node_for_update(owner=owner, node_id=node_id)
        if node.state != NodeState.ONLINE:
            raise InvalidNodeTransition(f"Only an online node can be drained; this one is {node.state}.")
        node_transition(node=node, to_state=NodeState.DRAINING, reason=reason)
    return node


def node_undrain(*, owner, node_id: int) -> Node:
    """Sell a drained node's vGPUs again."""
    with transaction.atomic():
        node = _owned_node_for_update(owner=owner, node_id=node_id)
        if node.state != NodeState.DRAINING:
            raise InvalidNodeTransition(f"Only a draining node can be put back on sale; this one is {node.state}.")
        node_transition(node=node, to_state=NodeState.ONLINE, reason="Back on sale")
    return node


def node_delete(*, owner, node_id: int) -> None:
    """Remove a node that runs nothing; its history stays for the ledger and reputation."""
    with transaction.atomic():
        node = _owned_node_for_update(owner=owner, node_id=node_id)
        if VGpu.objects.filter(node=node, state__in=[VGpuState.RESERVED, VGpuState.BUSY]).exists():
            raise NodeBusy("This node still runs placements; drain it and wait for them to finish.")
        VGpu.objects.filter(node=node).update(state=VGpuState.OFFLINE, holder="")
        node.deleted_at = timezone.now()
        node.enrollment_token_hash = ""
        node.save(update_fields=["deleted_at", "enrollment_token_hash"])
        node_certificate_revoke(node=node, reason="The node was deleted")


def node_certificate_revoke(*, node: Node, reason: str) -> bool:
    """Revoke a node's client certificate for good: every later Connect with it is refused. Return whether new."""
    if not node.certificate_serial:
        return False
    _, created = RevokedCertificate.objects.get_or_create(
        serial=node.certificate_serial, defaults={"node": node, "reason": reason[:200]}
    )
    return created


def node_quarantine(*, node_id: int, reason: str) -> Node:
    """Take a node out of the market for good (an operator's decision); its running placements are lost.

    Its vGPUs go offline at once; `node_quarantined` tells the rentals code, after commit, to settle and
    refund what ran there. Quarantining a quarantined node again changes nothing.
    """
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(pk=node_id).first()
        if node is None:
            raise NodeNotFound(f"Node {node_id} does not exist.")
        if node.state != NodeState.QUARANTINED:
            node_transition(node=node, to_state=NodeState.QUARANTINED, reason=reason)
    return node


def node_ban(*, node_id: int, reason: str) -> Node:
    """Quarantine a node and revoke its certificate (an operator's decision); a new enrollment is needed to return."""
    with transaction.atomic():
        node = node_quarantine(node_id=node_id, reason=f"Banned: {reason}")
        node_certificate_revoke(node=node, reason=f"Banned: {reason}")
    return node
