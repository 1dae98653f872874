"""Node writes: creation and enrollment tokens, the provider's controls, the node and vGPU state machines."""

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from janction.errors import Conflict, ValidationFailed
from nodes.ca import platform_ca
from nodes.errors import EnrollmentRefused, InvalidNodeTransition, NodeBusy, NodeNameTaken, NodeNotFound
from nodes.models import (
    Gpu,
    Node,
    NodeCommand,
    NodeEvent,
    NodePlacement,
    NodeState,
    PlacementLogLine,
    Pool,
    UsageReport,
    VGpu,
    VGpuState,
)

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
    common_names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    node = Node.objects.filter(certificate_serial=serial).order_by("pk").first()
    if node is None or not common_names or common_names[0].value != str(node.pk):
        raise EnrollmentRefused("No node holds this certificate; enroll the agent again.", code="certificate_unknown")
    if node.deleted_at is not None:
        raise EnrollmentRefused("This node was deleted; its certificate is no longer accepted.", code="node_deleted")
    if node.state == NodeState.QUARANTINED:
        raise EnrollmentRefused("This node is quarantined; contact support.", code="node_quarantined")
    return node


def _pool_for(report: VGpuReport, architecture: str) -> Pool:
    pool, _ = Pool.objects.get_or_create(
        name=report.pool, defaults={"architecture": architecture, "memory_gib": round(report.memory_bytes / 2**30)}
    )
    return pool


def node_hello(*, node_id: int, hello: HelloReport) -> dict[int, int]:
    """Record a node's inventory and slicing plan, bring it online and return its GPU ids by index."""
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(pk=node_id, deleted_at__isnull=True).first()
        if node is None:
            raise NodeNotFound(f"Node {node_id} does not exist.")
        node.hostname = hello.hostname[:255]
        node.agent_version = hello.agent_version[:40]
        node.runtime = hello.runtime[:20]
        node.network_unsupported = hello.network_unsupported
        node.has_fake_gpus = any(gpu.fake for gpu in hello.gpus) or any(vgpu.fake for vgpu in hello.vgpus)
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
        for report in hello.gpus:
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
                    "fake": report.fake,
                },
            )
            gpus[report.uuid] = gpu
        planned = []
        for report in hello.vgpus:
            gpu = gpus.get(report.gpu_uuid)
            if gpu is None:
                AGENT_LOG.warning("node %s: vGPU %s names an unknown GPU; ignored", node_id, report.local_id)
                continue
            VGpu.objects.update_or_create(
                node=node,
                local_id=report.local_id,
                defaults={
                    "gpu": gpu,
                    "pool": _pool_for(report, gpu.architecture),
                    "memory_bytes": report.memory_bytes,
                    "compute_share_percent": report.compute_share_percent,
                    "enforcement": report.enforcement,
                    "enforcement_env": dict(report.enforcement_env),
                    "mig_device_uuid": report.mig_device_uuid,
                    "fake": report.fake,
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


def _placements_reattach(*, node: Node, reports: list[RunningPlacementReport]) -> None:
    known = {p.placement_id: p for p in NodePlacement.objects.select_for_update().filter(node=node).order_by("pk")}
    now = timezone.now()
    for report in reports:
        placement = known.get(report.placement_id)
        if placement is None:
            AGENT_LOG.warning("node %s reports placement %r it was never sent; ignored", node.pk, report.placement_id)
            continue
        placement.state = report.state
        placement.vgpu_local_ids = list(report.vgpu_local_ids)
        placement.started_at_ms = report.started_at_ms
        placement.last_usage_seq = report.last_usage_seq
        placement.last_log_seq = report.last_log_seq
        placement.reported_at = now
        placement.save(
            update_fields=["state", "vgpu_local_ids", "started_at_ms", "last_usage_seq", "last_log_seq", "reported_at"]
        )


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


def node_mark_stale_offline(*, now: datetime | None = None) -> list[int]:
    """Move nodes with no heartbeat for NODE_HEARTBEAT_GRACE_SECONDS offline with their vGPUs; return their ids."""
    grace = settings.NODE_HEARTBEAT_GRACE_SECONDS
    cutoff = (now or timezone.now()) - timedelta(seconds=grace)
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
    """Store what the node says about one of its placements; a final state is never undone."""
    with transaction.atomic():
        placement = _owned_placement_for_update(node_id=node_id, placement_id=status.placement_id)
        if placement.state in PLACEMENT_FINAL_STATES and status.state not in PLACEMENT_FINAL_STATES:
            return placement
        placement.state = status.state
        placement.exit_code = status.exit_code
        placement.message = status.message[:500]
        placement.reported_at = timezone.now()
        fields = ["state", "exit_code", "message", "reported_at"]
        if status.state == "running":
            placement.limits_not_enforced = status.limits_not_enforced[:300]
            fields.append("limits_not_enforced")
        placement.save(update_fields=fields)
    return placement


def placement_logs_append(*, node_id: int, chunk: LogChunkReport) -> int:
    """Store a chunk of numbered log lines, dropping numbers already held; return how many were new."""
    if chunk.seq < 1 or chunk.stream not in LOG_STREAMS:
        raise ValidationFailed("Log lines are numbered from 1 on stdout or stderr.", code="log_chunk_invalid")
    with transaction.atomic():
        placement = _owned_placement_for_update(node_id=node_id, placement_id=chunk.placement_id)
        lines = [
            PlacementLogLine(placement=placement, seq=chunk.seq + offset, stream=chunk.stream, text=text)
            for offset, text in enumerate(chunk.lines)
        ]
        before = PlacementLogLine.objects.filter(placement=placement).count()
        PlacementLogLine.objects.bulk_create(lines, ignore_conflicts=True)
        return PlacementLogLine.objects.filter(placement=placement).count() - before


def usage_report_record(*, node_id: int, report: UsageReportIn) -> bool:
    """Verify and store a signed usage report once; return False when it was already stored (ack it again)."""
    from agent.signing import usage_is_consistent, verify_usage_report

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
        if placement.vgpu_local_ids and report.vgpu_count != len(placement.vgpu_local_ids):
            raise ValidationFailed(
                f"The placement runs on {len(placement.vgpu_local_ids)} vGPU(s), not {report.vgpu_count}.",
                code="usage_report_too_many_vgpus",
            )
        horizon_ms = int(timezone.now().timestamp() * 1000) + settings.AGENT_USAGE_MAX_CLOCK_SKEW_SECONDS * 1000
        if report.interval_end_ms > horizon_ms:
            raise ValidationFailed("The usage interval ends in the future.", code="usage_report_in_future")
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
