"""Node writes: creation and enrollment tokens, the provider's controls, the node and vGPU state machines."""

import hashlib
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from janction.errors import Conflict, ValidationFailed
from nodes.ca import platform_ca
from nodes.checks import (
    INT32_MAX,
    INT64_MAX,
    MAX_GPU_INDEX,
    MAX_GPU_MEMORY_BYTES,
    MAX_GPUS_PER_HELLO,
    MAX_PLACEMENTS_PER_HELLO,
    MAX_VGPUS_PER_HELLO,
    AgentMessageInvalid,
    check_int,
    check_text,
)
from nodes.errors import EnrollmentRefused, InvalidNodeTransition, NodeBusy, NodeNameTaken, NodeNotFound
from nodes.models import (
    GatewayClock,
    Gpu,
    Node,
    NodeCommand,
    NodeEvent,
    NodeFlag,
    NodePlacement,
    NodeState,
    PlacementLogLine,
    Pool,
    RevokedCertificate,
    UsageReport,
    VGpu,
    VGpuState,
)
from nodes.telemetry import gpu_telemetry_record

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


logger = logging.getLogger(__name__)

# The embedded demo's node command runs on the demo machine itself: from the checkout, with a declared fake GPU.
DEMO_AGENT_FLAGS = '--fake-gpus "RTX 4090:1" --runtime sandbox'


def _agent_command(node: Node, token: str) -> str:
    """Return the shell command that enrolls and starts the agent, pinning the platform CA by fingerprint."""
    try:
        pin = f" --ca-fingerprint {platform_ca().fingerprint}"
    except ImproperlyConfigured:
        # No CA, no gateway: the agent could not enroll anywhere yet; the command is still the right shape.
        logger.warning("no agent CA is configured, so the node command carries no --ca-fingerprint")
        pin = ""
    python, demo = (".venv/bin/python", f" {DEMO_AGENT_FLAGS}") if settings.JANCTION_EMBEDDED else ("python3", "")
    return (
        f"{python} -m agent --gateway {settings.AGENT_GATEWAY_PUBLIC_ADDRESS}{pin} --enroll-token {token} "
        f"--state-dir ~/.janction-agent/node-{node.pk}{demo}"
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


def node_ban(*, node_id: int, reason: str) -> Node:
    """Quarantine a node and revoke its certificate (an operator's decision); a new enrollment is needed to return."""
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(pk=node_id).first()
        if node is None:
            raise NodeNotFound(f"Node {node_id} does not exist.")
        if node.state != NodeState.QUARANTINED:
            node_transition(node=node, to_state=NodeState.QUARANTINED, reason=f"Banned: {reason}")
        node_certificate_revoke(node=node, reason=f"Banned: {reason}")
    return node


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


# -- Agent-facing services (called by the gateway in nodes/gateway/, and node_send by everyone) --------------

AGENT_LOG = logging.getLogger("nodes.agent")
PLACEMENT_FINAL_STATES = frozenset({"exited", "failed", "lost"})
LOG_STREAMS = frozenset({"stdout", "stderr"})


@dataclass(frozen=True)
class NodeEnrollment:
    node: Node
    certificate_pem: str
    ca_certificate_pem: str


@dataclass(frozen=True)
class GpuReport:
    index: int
    uuid: str
    name: str
    memory_bytes: int
    compute_capability: str
    architecture: str
    driver_version: str
    cuda_version: str
    mig_capable: bool
    mig_enabled: bool
    fake: bool


@dataclass(frozen=True)
class VGpuReport:
    local_id: str
    gpu_uuid: str
    memory_bytes: int
    compute_share_percent: int
    pool: str
    enforcement: str
    enforcement_env: dict[str, str]
    mig_device_uuid: str
    fake: bool


@dataclass(frozen=True)
class RunningPlacementReport:
    placement_id: str
    state: str
    vgpu_local_ids: list[str]
    started_at_ms: int
    last_usage_seq: int
    last_log_seq: int


@dataclass(frozen=True)
class HelloReport:
    agent_version: str
    runtime: str
    hostname: str
    network_unsupported: bool
    gpus: list[GpuReport]
    vgpus: list[VGpuReport]
    placements: list[RunningPlacementReport]


@dataclass(frozen=True)
class GpuSampleReport:
    index: int
    utilization_percent: int
    memory_used_bytes: int
    temperature_celsius: int
    power_milliwatts: int
    compute_processes: int


@dataclass(frozen=True)
class NodeHeartbeat:
    node_id: int
    received_at: datetime
    # Latest sample per GPU, keyed by Gpu primary key (the gateway maps indexes after Hello).
    gpu_samples: dict[int, GpuSampleReport]


@dataclass(frozen=True)
class PlacementStatusReport:
    placement_id: str
    state: str
    exit_code: int | None
    message: str
    at_ms: int
    limits_not_enforced: str = ""


@dataclass(frozen=True)
class LogChunkReport:
    placement_id: str
    seq: int
    stream: str
    lines: list[str]


@dataclass(frozen=True)
class UsageReportIn:
    placement_id: str
    seq: int
    interval_start_ms: int
    interval_end_ms: int
    vgpu_count: int
    vgpu_milliseconds: int
    signature: bytes


def node_enroll(*, token: str, csr_pem: str, hostname: str = "") -> NodeEnrollment:
    """Exchange a valid, unexpired, unused enrollment token and a CSR for a client certificate."""
    from nodes.ca import platform_ca

    token_hash = hash_enrollment_token(token.strip())
    with transaction.atomic():
        node = (
            Node.objects.select_for_update()
            .filter(enrollment_token_hash=token_hash, deleted_at__isnull=True)
            .order_by("pk")
            .first()
            if token.strip()
            else None
        )
        if node is None:
            raise EnrollmentRefused(
                "Unknown enrollment token; copy it again from the node's page.", code="token_unknown"
            )
        if node.enrolled_at is not None:
            raise EnrollmentRefused(
                "This enrollment token was already used; create a new node to enroll another host.", code="token_used"
            )
        if node.enrollment_expires_at is None or node.enrollment_expires_at <= timezone.now():
            raise EnrollmentRefused(
                "This enrollment token has expired; issue a new token for the node and start the agent with it.",
                code="token_expired",
            )
        if node.state == NodeState.QUARANTINED:
            raise EnrollmentRefused("This node is quarantined and cannot enroll.", code="node_quarantined")
        ca = platform_ca()
        issued = ca.issue_client_certificate(csr_pem=csr_pem, node_id=node.pk)
        node.enrolled_at = timezone.now()
        node.certificate_serial = issued.serial
        node.certificate_pem = issued.pem
        node.hostname = hostname[:255]
        node.save(update_fields=["enrolled_at", "certificate_serial", "certificate_pem", "hostname"])
    AGENT_LOG.info("node %s enrolled (certificate %s, host %s)", node.pk, issued.serial, hostname)
    return NodeEnrollment(node=node, certificate_pem=issued.pem, ca_certificate_pem=ca.certificate_pem)


def node_authenticate(*, certificate_pem: str | bytes) -> Node:
    """Return the live node a verified client certificate belongs to, refusing deleted and quarantined nodes."""
    from nodes.ca import certificate_serial_hex

    data = certificate_pem.encode() if isinstance(certificate_pem, str) else certificate_pem
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise EnrollmentRefused("The client certificate cannot be read.", code="certificate_invalid") from None
    serial = certificate_serial_hex(certificate)
    revoked = RevokedCertificate.objects.filter(serial=serial).values_list("reason", flat=True).first()
    if revoked is not None:
        raise EnrollmentRefused(
            f"This certificate was revoked ({revoked.lower()}); it is no longer accepted.", code="node_revoked"
        )
    common_names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    node = Node.objects.filter(certificate_serial=serial).order_by("pk").first()
    if node is None or not common_names or common_names[0].value != str(node.pk):
        raise EnrollmentRefused("No node holds this certificate; enroll the agent again.", code="certificate_unknown")
    if node.deleted_at is not None:
        raise EnrollmentRefused("This node was deleted; its certificate is no longer accepted.", code="node_deleted")
    if node.state == NodeState.QUARANTINED:
        raise EnrollmentRefused("This node is quarantined; contact support.", code="node_quarantined")
    return node


# Architecture families the platform sells; a pool is "<family>-<GiB>g" of one of them (or made by an operator).
KNOWN_ARCHITECTURES = frozenset(
    {"kepler", "maxwell", "pascal", "volta", "turing", "ampere", "ada", "hopper", "blackwell"}
)
MAX_POOL_MEMORY_GIB = 1024


def _pool_for(report: VGpuReport, gpu: Gpu) -> Pool | None:
    """Return the vGPU's pool: an existing one, or a new one only when the catalogue names it."""
    pool = Pool.objects.filter(name=report.pool).first()
    if pool is not None:
        return pool
    gib = max(1, math.floor(report.memory_bytes / 2**30 + 0.5))  # as the agent names pools
    if gpu.architecture not in KNOWN_ARCHITECTURES or not 1 <= gib <= MAX_POOL_MEMORY_GIB:
        return None
    if report.pool != f"{gpu.architecture}-{gib}g":
        return None
    pool, _ = Pool.objects.get_or_create(
        name=report.pool, defaults={"architecture": gpu.architecture, "memory_gib": gib}
    )
    return pool


def hello_check(hello: HelloReport) -> None:
    """Refuse a Hello whose inventory is larger than any machine or whose values cannot be stored."""
    check_int(len(hello.gpus), field="the number of GPUs", high=MAX_GPUS_PER_HELLO)
    check_int(len(hello.vgpus), field="the number of vGPUs", high=MAX_VGPUS_PER_HELLO)
    check_int(len(hello.placements), field="the number of placements", high=MAX_PLACEMENTS_PER_HELLO)
    check_text(hello.agent_version, field="agent_version", max_length=40)
    check_text(hello.runtime, field="runtime", max_length=20)
    check_text(hello.hostname, field="hostname", max_length=255)
    indexes, uuids = set(), set()
    for gpu in hello.gpus:
        check_int(gpu.index, field="gpu.index", high=MAX_GPU_INDEX)
        check_int(gpu.memory_bytes, field="gpu.memory_bytes", low=1, high=MAX_GPU_MEMORY_BYTES)
        check_text(gpu.uuid, field="gpu.uuid", max_length=100)
        check_text(gpu.name, field="gpu.name", max_length=100)
        check_text(gpu.compute_capability, field="gpu.compute_capability", max_length=10)
        check_text(gpu.architecture, field="gpu.architecture", max_length=20)
        check_text(gpu.driver_version, field="gpu.driver_version", max_length=40)
        check_text(gpu.cuda_version, field="gpu.cuda_version", max_length=20)
        if not gpu.uuid or gpu.uuid in uuids or gpu.index in indexes:
            raise AgentMessageInvalid("Every GPU needs its own non-empty uuid and index.")
        uuids.add(gpu.uuid)
        indexes.add(gpu.index)
    local_ids = set()
    for vgpu in hello.vgpus:
        check_text(vgpu.local_id, field="vgpu.local_id", max_length=40)
        check_text(vgpu.pool, field="vgpu.pool", max_length=40)
        check_text(vgpu.enforcement, field="vgpu.enforcement", max_length=10)
        check_text(vgpu.mig_device_uuid, field="vgpu.mig_device_uuid", max_length=100)
        check_int(vgpu.memory_bytes, field="vgpu.memory_bytes", low=1, high=MAX_GPU_MEMORY_BYTES)
        check_int(vgpu.compute_share_percent, field="vgpu.compute_share_percent", high=100)
        check_int(len(vgpu.enforcement_env), field="the number of enforcement_env entries", high=32)
        for key, value in vgpu.enforcement_env.items():
            check_text(key, field="an enforcement_env name", max_length=128)
            check_text(value, field="an enforcement_env value", max_length=1024)
        if not vgpu.local_id or vgpu.local_id in local_ids:
            raise AgentMessageInvalid("Every vGPU needs its own non-empty local_id.")
        local_ids.add(vgpu.local_id)
    for placement in hello.placements:
        check_text(placement.placement_id, field="placement_id", max_length=128)
        check_int(placement.last_usage_seq, field="last_usage_seq")
        check_int(placement.last_log_seq, field="last_log_seq")
        check_int(placement.started_at_ms, field="started_at_ms")


def node_flag(*, node_id: int, code: str, detail: str) -> None:
    """Record evidence against a node for operators (in its own transaction: it outlives a refused write)."""
    NodeFlag.objects.create(node_id=node_id, code=code[:40], detail=detail[:500])
    AGENT_LOG.warning("node %s flagged (%s): %s", node_id, code, detail)


def node_hello(*, node_id: int, hello: HelloReport) -> dict[int, int]:
    """Record a node's inventory and slicing plan, bring it online and return its GPU ids by index.

    The Hello is the agent's claim, checked as evidence: sizes and text fit their columns, a real GPU's UUID
    belongs to one node only (a second claimant is refused and flagged), a node that once declared fake GPUs
    stays labelled fake until an operator clears it, and pools come from the catalogue or an operator.
    """
    hello_check(hello)
    try:
        return _node_hello(node_id=node_id, hello=hello)
    except GpuClaimed as claimed:
        node_flag(node_id=node_id, code=claimed.code, detail=claimed.message)
        raise


class GpuClaimed(AgentMessageInvalid):
    code = "gpu_uuid_claimed"


def _node_hello(*, node_id: int, hello: HelloReport) -> dict[int, int]:
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(pk=node_id, deleted_at__isnull=True).first()
        if node is None:
            raise NodeNotFound(f"Node {node_id} does not exist.")
        declared_fake = any(gpu.fake for gpu in hello.gpus) or any(vgpu.fake for vgpu in hello.vgpus)
        # Once fake, always fake: only an operator (admin) clears the label.
        fake = node.has_fake_gpus or declared_fake
        # Any claim, fake or not, on another node's real GPU is refused.
        uuids = [gpu.uuid for gpu in hello.gpus]
        if uuids:
            claimed = sorted(
                Gpu.objects.filter(uuid__in=uuids, fake=False).exclude(node=node).values_list("uuid", flat=True)
            )
            if claimed:
                raise GpuClaimed(
                    f"GPU {claimed[0]} belongs to another node; a GPU UUID can be claimed by one node only."
                )
        node.hostname = hello.hostname
        node.agent_version = hello.agent_version
        node.runtime = hello.runtime
        node.network_unsupported = hello.network_unsupported
        node.has_fake_gpus = fake
        node.last_seen_at = timezone.now()
        node.save(
            update_fields=[
                "hostname",
                "agent_version",
                "runtime",
                "network_unsupported",
                "has_fake_gpus",
                "last_seen_at",
            ]
        )
        gpus: dict[str, Gpu] = {}
        # Indexes may move between UUIDs: clear what this Hello reassigns before writing.
        Gpu.objects.filter(node=node).exclude(uuid__in=[g.uuid for g in hello.gpus]).filter(
            index__in=[g.index for g in hello.gpus], vgpus__isnull=True
        ).delete()
        for report in hello.gpus:
            try:
                with transaction.atomic():
                    gpu, _ = Gpu.objects.update_or_create(
                        node=node,
                        index=report.index,
                        defaults={
                            "uuid": report.uuid,
                            "name": report.name,
                            "memory_bytes": report.memory_bytes,
                            "compute_capability": report.compute_capability,
                            "architecture": report.architecture,
                            "driver_version": report.driver_version,
                            "cuda_version": report.cuda_version,
                            "mig_capable": report.mig_capable,
                            "mig_enabled": report.mig_enabled,
                            "fake": report.fake or fake,
                        },
                    )
            except IntegrityError:
                raise GpuClaimed(
                    f"GPU {report.uuid} belongs to another node; a GPU UUID can be claimed by one node only."
                ) from None
            gpus[report.uuid] = gpu
        planned = []
        for report in hello.vgpus:
            gpu = gpus.get(report.gpu_uuid)
            if gpu is None:
                AGENT_LOG.warning("node %s: vGPU %s names an unknown GPU; ignored", node_id, report.local_id)
                continue
            pool = _pool_for(report, gpu)
            if pool is None:
                AGENT_LOG.warning(
                    "node %s: vGPU %s names pool %r, not in the catalogue; ignored",
                    node_id,
                    report.local_id,
                    report.pool,
                )
                continue
            VGpu.objects.update_or_create(
                node=node,
                local_id=report.local_id,
                defaults={
                    "gpu": gpu,
                    "pool": pool,
                    "memory_bytes": report.memory_bytes,
                    "compute_share_percent": report.compute_share_percent,
                    "enforcement": report.enforcement,
                    "enforcement_env": dict(report.enforcement_env),
                    "mig_device_uuid": report.mig_device_uuid,
                    "fake": report.fake or fake,
                },
            )
            planned.append(report.local_id)
        # What left the plan goes, unless something still holds it.
        VGpu.objects.filter(node=node, state__in=[VGpuState.FREE, VGpuState.OFFLINE]).exclude(
            local_id__in=planned
        ).delete()
        Gpu.objects.filter(node=node).exclude(pk__in=[gpu.pk for gpu in gpus.values()]).filter(
            vgpus__isnull=True
        ).delete()
        if node.state in (NodeState.PENDING, NodeState.OFFLINE):
            node_transition(node=node, to_state=NodeState.ONLINE, reason="The agent connected")
        if node.state in (NodeState.ONLINE, NodeState.DRAINING):
            VGpu.objects.filter(node=node, state=VGpuState.OFFLINE).update(state=VGpuState.FREE)
        _placements_reattach(node=node, reports=hello.placements)
    return {gpu.index: gpu.pk for gpu in gpus.values()}


# Which placement state may follow which: forward only, plus paused <-> running.
PLACEMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    "requested": frozenset({"starting", "running", "exited", "failed", "lost"}),
    "starting": frozenset({"running", "exited", "failed", "lost"}),
    "running": frozenset({"paused", "exited", "failed", "lost"}),
    "paused": frozenset({"running", "exited", "failed", "lost"}),
    "exited": frozenset(),
    "failed": frozenset(),
    "lost": frozenset(),
}


def placement_may_become(current: str, to_state: str) -> bool:
    """Return whether a placement in `current` may move to `to_state` (staying put is allowed)."""
    return to_state == current or to_state in PLACEMENT_TRANSITIONS.get(current, frozenset())


def _placements_reattach(*, node: Node, reports: list[RunningPlacementReport]) -> None:
    """Take the agent's word on where its placements are, along the transition table only.

    The vGPUs a placement runs on are the platform's record (from StartPlacement), never the Hello's; a
    placement the platform holds as ended but the agent reports live is told to stop.
    """
    known = {p.placement_id: p for p in NodePlacement.objects.select_for_update().filter(node=node).order_by("pk")}
    now = timezone.now()
    for report in reports:
        placement = known.get(report.placement_id)
        if placement is None:
            AGENT_LOG.warning("node %s reports placement %r it was never sent; ignored", node.pk, report.placement_id)
            continue
        if not placement_may_become(placement.state, report.state):
            AGENT_LOG.warning(
                "node %s reports placement %s %s; it is %s: told to stop",
                node.pk,
                placement.placement_id,
                report.state,
                placement.state,
            )
            if report.state not in PLACEMENT_FINAL_STATES:
                NodeCommand.objects.create(
                    node=node, message={"stop_placement": {"placement_id": placement.placement_id}}
                )
            continue
        placement.state = report.state
        placement.started_at_ms = report.started_at_ms
        placement.last_usage_seq = report.last_usage_seq
        placement.last_log_seq = report.last_log_seq
        placement.reported_at = now
        fields = ["state", "started_at_ms", "last_usage_seq", "last_log_seq", "reported_at"]
        if report.state in PLACEMENT_FINAL_STATES and placement.stopped_at is None:
            placement.stopped_at = now
            fields.append("stopped_at")
        placement.save(update_fields=fields)


def node_heartbeats_apply(*, heartbeats: list[NodeHeartbeat]) -> list[int]:
    """Write a batch of buffered heartbeats in bulk; bring back nodes marked offline. Return the revived ids."""
    if not heartbeats:
        return []
    nodes = [Node(pk=beat.node_id, last_seen_at=beat.received_at) for beat in heartbeats]
    gpus = [
        Gpu(
            pk=gpu_id,
            utilization_percent=min(sample.utilization_percent, 100),
            memory_used_bytes=sample.memory_used_bytes,
            temperature_celsius=min(sample.temperature_celsius, 32767),
            power_milliwatts=sample.power_milliwatts,
            compute_processes=sample.compute_processes,
            telemetry_at=beat.received_at,
        )
        for beat in heartbeats
        for gpu_id, sample in beat.gpu_samples.items()
    ]
    revived = []
    with transaction.atomic():
        _bulk_set(Node, nodes, {"last_seen_at": "timestamptz"})
        gpu_telemetry_record(samples=[(g.pk, g.telemetry_at, g.utilization_percent, g.memory_used_bytes) for g in gpus])
        if gpus:
            _bulk_set(
                Gpu,
                gpus,
                {
                    "utilization_percent": "smallint",
                    "memory_used_bytes": "bigint",
                    "temperature_celsius": "smallint",
                    "power_milliwatts": "integer",
                    "compute_processes": "integer",
                    "telemetry_at": "timestamptz",
                },
            )
        for node in (
            Node.objects.select_for_update(skip_locked=True)
            .filter(pk__in=[beat.node_id for beat in heartbeats], state=NodeState.OFFLINE, deleted_at__isnull=True)
            .order_by("pk")
        ):
            node_transition(node=node, to_state=NodeState.ONLINE, reason="Heartbeats resumed")
            revived.append(node.pk)
    return revived


def _bulk_set(model, rows: list, columns: dict[str, str]) -> None:
    """Write `columns` of many rows in one UPDATE (PostgreSQL: joined with unnest'ed arrays, no CASE chains)."""
    rows = sorted(rows, key=lambda row: row.pk)
    if connection.vendor != "postgresql":
        model.objects.bulk_update(rows, list(columns), batch_size=1000)
        return
    table = model._meta.db_table
    names = ", ".join(columns)
    arrays = ", ".join(["%s::bigint[]", *(f"%s::{kind}[]" for kind in columns.values())])
    assignments = ", ".join(f"{column} = v.{column}" for column in columns)
    params = [[row.pk for row in rows], *([getattr(row, column) for row in rows] for column in columns)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS t SET {assignments} FROM unnest({arrays}) AS v(id, {names}) "  # noqa: S608
            "WHERE t.id = v.id",
            params,
        )


def gateway_clock_record(*, name: str, recording_since: datetime, at: datetime) -> None:
    """Note that gateway `name` has recorded heartbeats without a gap from `recording_since` until `at`."""
    GatewayClock.objects.update_or_create(name=name, defaults={"recording_since": recording_since, "recorded_at": at})


def _silence_proves_loss(now: datetime) -> bool:
    """Return whether a gateway has recorded heartbeats long enough, up to now, for silence to mean loss."""
    clocks = list(GatewayClock.objects.values_list("recording_since", "recorded_at"))
    if not clocks:
        return True  # no gateway ever ran here (tests of the services, the embedded default)
    start_grace = timedelta(seconds=settings.NODE_GATEWAY_START_GRACE_SECONDS)
    # A gateway flushes every AGENT_HEARTBEAT_FLUSH_SECONDS; missing three flushes means it is not recording.
    stale_after = timedelta(seconds=3 * settings.AGENT_HEARTBEAT_FLUSH_SECONDS + 0.5)
    latest_since = max(since for since, _ in clocks)
    latest_recorded = max(recorded for _, recorded in clocks)
    return now - latest_recorded <= stale_after and now - latest_since >= start_grace


def node_mark_stale_offline(*, now: datetime | None = None) -> list[int]:
    """Move nodes with no heartbeat for NODE_HEARTBEAT_GRACE_SECONDS offline with their vGPUs; return their ids.

    Only time the gateway could record counts: within NODE_GATEWAY_START_GRACE_SECONDS of a gateway (re)start
    or of its database coming back, and while no gateway records at all, nobody is declared lost.
    """
    now = now or timezone.now()
    grace = settings.NODE_HEARTBEAT_GRACE_SECONDS
    if not _silence_proves_loss(now):
        return []
    cutoff = now - timedelta(seconds=grace)
    stale = Q(last_seen_at__lt=cutoff) | Q(last_seen_at__isnull=True)
    moved = []
    with transaction.atomic():
        for node in (
            Node.objects.select_for_update(skip_locked=True)
            .filter(stale, state__in=[NodeState.ONLINE, NodeState.DRAINING], deleted_at__isnull=True)
            .order_by("pk")
        ):
            node_transition(node=node, to_state=NodeState.OFFLINE, reason=f"No heartbeat for {grace:g} s")
            moved.append(node.pk)
    if moved:
        AGENT_LOG.info("nodes went offline (no heartbeat for %g s): %s", grace, moved)
    return moved


def _owned_placement_for_update(*, node_id: int, placement_id: str) -> NodePlacement:
    placement = NodePlacement.objects.select_for_update().filter(node_id=node_id, placement_id=placement_id).first()
    if placement is None:
        raise ValidationFailed(f"Node {node_id} was never sent placement {placement_id!r}.", code="placement_not_owned")
    return placement


def placement_status_record(*, node_id: int, status: PlacementStatusReport) -> NodePlacement:
    """Store what the node says about one of its placements, along the transition table only."""
    check_text(status.placement_id, field="placement_id", max_length=128)
    with transaction.atomic():
        placement = _owned_placement_for_update(node_id=node_id, placement_id=status.placement_id)
        if not placement_may_become(placement.state, status.state):
            if placement.state in PLACEMENT_FINAL_STATES:
                return placement  # a repeated or late report about an ended placement: nothing to undo
            raise AgentMessageInvalid(
                f"Placement {status.placement_id} is {placement.state} and cannot become {status.state}.",
                code="placement_transition_invalid",
            )
        placement.state = status.state
        placement.exit_code = status.exit_code
        placement.message = status.message[:500]
        placement.reported_at = timezone.now()
        fields = ["state", "exit_code", "message", "reported_at"]
        if status.state == "running":
            placement.limits_not_enforced = status.limits_not_enforced[:300]
            fields.append("limits_not_enforced")
        if status.state in PLACEMENT_FINAL_STATES and placement.stopped_at is None:
            placement.stopped_at = placement.reported_at
            fields.append("stopped_at")
        placement.save(update_fields=fields)
    return placement


def placement_stopped(*, placement_ids: list[int], at: datetime) -> int:
    """Record the platform's end of placements (by NodePlacement pk) it settled; usage after it is refused."""
    return NodePlacement.objects.filter(pk__in=placement_ids, stopped_at__isnull=True).update(stopped_at=at)


MAX_LOG_LINE_CHARS = 16 * 1024
MAX_LOG_LINES_PER_CHUNK = 1000


def placement_logs_append(*, node_id: int, chunk: LogChunkReport) -> int:
    """Store a chunk of numbered log lines within the placement's quota, dropping numbers already held.

    Return how many lines were new. Lines beyond the quota (lines or bytes) are dropped and the placement
    is marked truncated: a chatty workload is not an attack, so this costs its sender no strike.
    """
    if chunk.seq < 1 or chunk.stream not in LOG_STREAMS:
        raise ValidationFailed("Log lines are numbered from 1 on stdout or stderr.", code="log_chunk_invalid")
    check_int(chunk.seq, field="seq", high=INT64_MAX - MAX_LOG_LINES_PER_CHUNK)
    check_int(len(chunk.lines), field="the number of lines in a chunk", high=MAX_LOG_LINES_PER_CHUNK)
    check_text(chunk.placement_id, field="placement_id", max_length=128)
    with transaction.atomic():
        placement = _owned_placement_for_update(node_id=node_id, placement_id=chunk.placement_id)
        lines_left = settings.AGENT_LOG_LINES_PER_PLACEMENT - placement.log_lines_stored
        bytes_left = settings.AGENT_LOG_BYTES_PER_PLACEMENT - placement.log_bytes_stored
        lines, size = [], 0
        for offset, text in enumerate(chunk.lines):
            text = text[:MAX_LOG_LINE_CHARS].replace("\x00", "")
            encoded = len(text.encode())
            if len(lines) >= lines_left or size + encoded > bytes_left:
                break
            lines.append(PlacementLogLine(placement=placement, seq=chunk.seq + offset, stream=chunk.stream, text=text))
            size += encoded
        truncated = len(lines) < len(chunk.lines)
        if lines:
            PlacementLogLine.objects.bulk_create(lines, ignore_conflicts=True)
        changes = {
            "log_lines_stored": F("log_lines_stored") + len(lines),
            "log_bytes_stored": F("log_bytes_stored") + size,
        }
        if truncated:
            changes["logs_truncated"] = True
        NodePlacement.objects.filter(pk=placement.pk).update(**changes)
        return len(lines)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _offline_periods(*, node_id: int, since: datetime, now: datetime) -> list[tuple[int, int]]:
    """Return the [start, end) milliseconds in which the platform held the node offline since `since`."""
    periods, start = [], None
    events = NodeEvent.objects.filter(node_id=node_id, at__gte=since).order_by("at", "pk").values_list("to_state", "at")
    for to_state, at in events:
        if to_state in (NodeState.OFFLINE, NodeState.QUARANTINED):
            start = start if start is not None else at
        elif start is not None:
            periods.append((_ms(start), _ms(at)))
            start = None
    if start is not None:
        periods.append((_ms(start), _ms(now)))
    return periods


def _usage_check_ranges(report: UsageReportIn) -> None:
    check_int(report.seq, field="seq", low=1)
    check_int(report.interval_start_ms, field="interval_start_ms")
    check_int(report.interval_end_ms, field="interval_end_ms")
    check_int(report.vgpu_count, field="vgpu_count", low=1, high=INT32_MAX)
    check_int(report.vgpu_milliseconds, field="vgpu_milliseconds")
    check_text(report.placement_id, field="placement_id", max_length=128)
    if len(report.signature) > 256:
        raise AgentMessageInvalid("The signature is longer than any ECDSA P-256 signature.")


class UsageRefused(ValidationFailed):
    """A usage report the platform's records contradict: never stored, acknowledged as rejected."""

    code = "usage_report_refused"


def usage_report_record(*, node_id: int, report: UsageReportIn) -> bool:
    """Verify a signed usage report against the platform's records and store it once.

    Return False when it was already stored (ack it again). The interval must lie within the placement's
    life as the platform saw it (from the queued StartPlacement to the platform's stop, or now) and outside
    any time the platform held the node offline; the vGPU count must be what was allocated.
    """
    from agent.signing import usage_is_consistent, verify_usage_report

    _usage_check_ranges(report)
    with transaction.atomic():
        placement = _owned_placement_for_update(node_id=node_id, placement_id=report.placement_id)
        node = Node.objects.only("certificate_pem").get(pk=node_id)
        if not usage_is_consistent(report):
            raise ValidationFailed(
                "A usage report needs seq >= 1, a positive interval and vgpu_milliseconds = vgpu_count * its length.",
                code="usage_report_inconsistent",
            )
        if not verify_usage_report(node.certificate_pem, report):
            raise ValidationFailed("The usage report's signature does not verify.", code="usage_report_bad_signature")
        existing = UsageReport.objects.filter(placement=placement, seq=report.seq).first()
        if existing is not None:
            same = (existing.interval_start_ms, existing.interval_end_ms, existing.vgpu_count) == (
                report.interval_start_ms,
                report.interval_end_ms,
                report.vgpu_count,
            )
            if not same:
                raise ValidationFailed(
                    f"Usage report {report.seq} differs from the one already stored.", code="usage_report_conflict"
                )
            return False
        allocated = len(placement.vgpu_local_ids)
        if report.vgpu_count != allocated:
            raise UsageRefused(
                f"The placement was allocated {allocated} vGPU(s), not {report.vgpu_count}.",
                code="usage_report_too_many_vgpus",
            )
        now = timezone.now()
        tolerance_ms = settings.AGENT_USAGE_START_TOLERANCE_SECONDS * 1000
        born_ms = _ms(placement.created_at) - tolerance_ms
        if placement.stopped_at is not None:
            end_ms = _ms(placement.stopped_at) + tolerance_ms
        else:
            end_ms = _ms(now) + settings.AGENT_USAGE_MAX_CLOCK_SKEW_SECONDS * 1000
        if report.interval_end_ms > end_ms and placement.stopped_at is None:
            raise UsageRefused("The usage interval ends in the future.", code="usage_report_in_future")
        if report.interval_start_ms < born_ms or report.interval_end_ms > end_ms:
            raise UsageRefused(
                "The usage interval lies outside the placement's life as the platform recorded it.",
                code="usage_report_outside_placement",
            )
        for off_start, off_end in _offline_periods(node_id=node_id, since=placement.created_at, now=now):
            if report.interval_start_ms < off_end and report.interval_end_ms > off_start:
                raise UsageRefused(
                    "The usage interval covers time the platform held the node offline.",
                    code="usage_report_while_offline",
                )
        if UsageReport.objects.filter(
            placement=placement,
            interval_start_ms__lt=report.interval_end_ms,
            interval_end_ms__gt=report.interval_start_ms,
        ).exists():
            raise ValidationFailed("The usage interval overlaps one already reported.", code="usage_report_overlaps")
        UsageReport.objects.create(
            placement=placement,
            seq=report.seq,
            interval_start_ms=report.interval_start_ms,
            interval_end_ms=report.interval_end_ms,
            vgpu_count=report.vgpu_count,
            vgpu_milliseconds=report.vgpu_milliseconds,
            signature=bytes(report.signature),
        )
    return True


def _control_message(message) -> tuple[str, dict]:
    from google.protobuf import json_format

    from agent.proto.gen.janction.agent.v1 import agent_pb2

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
        if node.state not in (NodeState.ONLINE, NodeState.DRAINING):
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
