"""Node writes: creation and enrollment tokens, the provider's controls, the node and vGPU state machines."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from nodes.errors import InvalidNodeTransition, NodeBusy, NodeNameTaken, NodeNotFound
from nodes.models import Node, NodeEvent, NodeState, VGpu, VGpuState

ENROLLMENT_TOKEN_PREFIX = "jne"  # noqa: S105 - a public prefix, not a secret

# Which node state may follow which (DESIGN.md section 4).
NODE_TRANSITIONS: dict[str, set[str]] = {
    NodeState.PENDING: {NodeState.ONLINE, NodeState.QUARANTINED},
    NodeState.ONLINE: {NodeState.OFFLINE, NodeState.DRAINING, NodeState.QUARANTINED},
    NodeState.OFFLINE: {NodeState.ONLINE, NodeState.QUARANTINED},
    NodeState.DRAINING: {NodeState.ONLINE, NodeState.OFFLINE, NodeState.QUARANTINED},
    NodeState.QUARANTINED: {NodeState.OFFLINE},
}

# Which vGPU state may follow which.
VGPU_TRANSITIONS: dict[str, set[str]] = {
    VGpuState.FREE: {VGpuState.RESERVED, VGpuState.OFFLINE},
    VGpuState.RESERVED: {VGpuState.BUSY, VGpuState.FREE, VGpuState.OFFLINE},
    VGpuState.BUSY: {VGpuState.FREE, VGpuState.OFFLINE},
    VGpuState.OFFLINE: {VGpuState.FREE},
}


@dataclass(frozen=True)
class EnrollmentTicket:
    node: Node
    token: str  # shown once
    command: str


def hash_enrollment_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _agent_command(token: str) -> str:
    return (
        f"python -m agent --gateway {settings.AGENT_GATEWAY_PUBLIC_ADDRESS} --enroll-token {token} "
        f"--state-dir ~/.janction-agent"
    )


def _issue_token(node: Node) -> str:
    token = f"{ENROLLMENT_TOKEN_PREFIX}_{secrets.token_urlsafe(32)}"
    node.enrollment_token_hash = hash_enrollment_token(token)
    node.enrollment_expires_at = timezone.now() + timedelta(seconds=settings.NODE_ENROLLMENT_TOKEN_TTL_SECONDS)
    return token


def node_create(*, owner, name: str, reserve_price_per_hour: int = 0) -> EnrollmentTicket:
    """Create a pending node and its one-time enrollment token, returning the command that starts the agent."""
    node = Node(owner=owner, name=name, reserve_price_per_hour=reserve_price_per_hour)
    token = _issue_token(node)
    try:
        with transaction.atomic():
            node.save()
    except IntegrityError:
        raise NodeNameTaken(f"You already have a node named {name!r}; pick another name.") from None
    return EnrollmentTicket(node=node, token=token, command=_agent_command(token))


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
    return EnrollmentTicket(node=node, token=token, command=_agent_command(token))


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


def vgpu_transition(*, vgpus: list[VGpu], to_state: str, holder: str = "") -> None:
    """Move locked vGPUs to `to_state`, checking every transition first."""
    for vgpu in vgpus:
        if to_state not in VGPU_TRANSITIONS[vgpu.state]:
            raise InvalidNodeTransition(f"vGPU {vgpu.local_id} is {vgpu.state} and cannot become {to_state}.")
    keep_holder = to_state in (VGpuState.RESERVED, VGpuState.BUSY)
    VGpu.objects.filter(pk__in=[v.pk for v in vgpus]).update(state=to_state, holder=holder if keep_holder else "")
    for vgpu in vgpus:
        vgpu.state = to_state
        vgpu.holder = holder if keep_holder else ""
