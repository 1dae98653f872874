"""Gateway ingestion: a node's Hello (inventory and pools), its heartbeats, and the offline sweep."""

import logging
import math
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from nodes.availability import availability_on_hello, placement_pause_reattach
from nodes.checks import (
    MAX_GPU_INDEX,
    MAX_GPU_MEMORY_BYTES,
    MAX_GPUS_PER_HELLO,
    MAX_PLACEMENTS_PER_HELLO,
    MAX_VGPUS_PER_HELLO,
    AgentMessageInvalid,
    check_int,
    check_text,
)
from nodes.errors import NodeNotFound
from nodes.models import (
    PLACEMENT_FINAL_STATES,
    GatewayClock,
    Gpu,
    Node,
    NodeCommand,
    NodePlacement,
    NodeState,
    Pool,
    VGpu,
    VGpuState,
)
from nodes.services.flags import node_flag
from nodes.services.lifecycle import node_transition
from nodes.services.overlay import overlay_on_hello, overlay_rtt_record
from nodes.services.placements import placement_may_become
from nodes.services.reports import HelloReport, NodeHeartbeat, RunningPlacementReport, VGpuReport
from nodes.telemetry import gpu_telemetry_record

AGENT_LOG = logging.getLogger("nodes.agent")

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
        node.egress_allowed = hello.egress_allowed
        node.has_fake_gpus = fake
        node.last_seen_at = timezone.now()
        node.save(
            update_fields=[
                "hostname",
                "agent_version",
                "runtime",
                "network_unsupported",
                "egress_allowed",
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
        availability_on_hello(node=node)  # colocation: the agent hears the node's policy after every Hello
        overlay_on_hello(node=node, public_key=hello.overlay_public_key)
    return {gpu.index: gpu.pk for gpu in gpus.values()}


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
        placement_pause_reattach(placement=placement, state=report.state, paused_at_ms=report.paused_at_ms)
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
        overlay_rtt_record(samples={beat.node_id: beat.overlay_rtt_us for beat in heartbeats if beat.overlay_rtt_us})
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
