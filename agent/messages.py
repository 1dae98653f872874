"""Conversions between the agent's records and the protocol's messages."""

from __future__ import annotations

from agent.nvml.base import GpuInfo, GpuTelemetry
from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.runtime.base import (
    DEFAULT_CPU_MILLICORES,
    DEFAULT_MEMORY_BYTES,
    DEFAULT_PIDS_LIMIT,
    PlacementSpec,
    PortSpec,
    WorkloadState,
)
from agent.slicing import ContainerGpuSettings, VGpuPlan
from agent.state import PlacementRecord, UsageRecord
from agent.validation import validate_start

STATE_TO_PROTO = {
    WorkloadState.STARTING: pb.PLACEMENT_STATE_STARTING,
    WorkloadState.RUNNING: pb.PLACEMENT_STATE_RUNNING,
    WorkloadState.EXITED: pb.PLACEMENT_STATE_EXITED,
    WorkloadState.FAILED: pb.PLACEMENT_STATE_FAILED,
    WorkloadState.LOST: pb.PLACEMENT_STATE_LOST,
    WorkloadState.PAUSED: pb.PLACEMENT_STATE_PAUSED,
}
STREAM_TO_PROTO = {"stdout": pb.LOG_STREAM_STDOUT, "stderr": pb.LOG_STREAM_STDERR}


def gpu_message(gpu: GpuInfo) -> pb.Gpu:
    """Return the Hello entry of a GPU."""
    return pb.Gpu(
        index=gpu.index,
        uuid=gpu.uuid,
        name=gpu.name,
        memory_bytes=gpu.memory_bytes,
        compute_capability=gpu.compute_capability_text,
        architecture=gpu.architecture,
        driver_version=gpu.driver_version,
        cuda_version=gpu.cuda_version,
        mig_capable=gpu.mig_capable,
        mig_enabled=gpu.mig_enabled,
        fake=gpu.fake,
        mig_profiles=[
            pb.MigProfile(
                name=profile.name,
                memory_bytes=profile.memory_bytes,
                slice_count=profile.slice_count,
                max_instances=profile.max_instances,
            )
            for profile in gpu.mig_profiles
        ],
    )


def vgpu_message(vgpu: VGpuPlan) -> pb.VGpu:
    """Return the Hello entry of a vGPU."""
    return pb.VGpu(
        local_id=vgpu.local_id,
        gpu_uuid=vgpu.gpu_uuid,
        memory_bytes=vgpu.memory_bytes,
        compute_share_percent=vgpu.compute_share_percent,
        pool=vgpu.pool,
        enforcement_env=vgpu.enforcement_env,
        enforcement=vgpu.enforcement,
        mig_device_uuid=vgpu.device_uuid if vgpu.enforcement == "mig" else "",
        fake=vgpu.fake,
    )


def running_placement_message(record: PlacementRecord) -> pb.RunningPlacement:
    """Return the Hello entry of a placement the agent still runs."""
    return pb.RunningPlacement(
        placement_id=record.placement_id,
        state=STATE_TO_PROTO[WorkloadState(record.state)],
        vgpu_local_ids=record.vgpu_local_ids,
        started_at_ms=record.started_at_ms,
        last_usage_seq=record.usage_seq,
        last_log_seq=record.log_seq,
        paused_at_ms=record.paused_at_ms if record.state == WorkloadState.PAUSED else 0,
    )


def status_message(record: PlacementRecord, at_ms: int) -> pb.AgentMessage:
    """Return a PlacementStatus with the record's current state."""
    status = pb.PlacementStatus(
        placement_id=record.placement_id,
        state=STATE_TO_PROTO[WorkloadState(record.state)],
        message=record.message,
        at_ms=at_ms,
        limits_not_enforced=record.limits_not_enforced,
    )
    if record.exit_code is not None:
        status.exit_code = record.exit_code
    return pb.AgentMessage(placement_status=status)


def owner_activity_message(*, active: bool, at_ms: int, reason: str) -> pb.AgentMessage:
    """Return an OwnerActivity claim."""
    return pb.AgentMessage(owner_activity=pb.OwnerActivity(active=active, at_ms=at_ms, reason=reason[:300]))


def usage_message(report: UsageRecord) -> pb.AgentMessage:
    """Return the UsageReport message of a signed report."""
    return pb.AgentMessage(
        usage_report=pb.UsageReport(
            placement_id=report.placement_id,
            seq=report.seq,
            interval_start_ms=report.interval_start_ms,
            interval_end_ms=report.interval_end_ms,
            vgpu_count=report.vgpu_count,
            vgpu_milliseconds=report.vgpu_milliseconds,
            signature=report.signature,
        )
    )


def log_messages(placement_id: str, lines: list[tuple[int, str, str]]) -> list[pb.AgentMessage]:
    """Group consecutive (seq, stream, text) lines of one stream into LogChunk messages."""
    messages: list[pb.AgentMessage] = []
    chunk: pb.LogChunk | None = None
    for seq, stream, text in lines:
        proto_stream = STREAM_TO_PROTO[stream]
        if chunk is None or chunk.stream != proto_stream or chunk.seq + len(chunk.lines) != seq:
            message = pb.AgentMessage()
            chunk = message.log_chunk
            chunk.placement_id, chunk.seq, chunk.stream = placement_id, seq, proto_stream
            messages.append(message)
        chunk.lines.append(text)
    return messages


def heartbeat_message(
    samples: list[GpuTelemetry], *, at_ms: int, ping_nonce: int, draining: bool, running: int, overlay_rtt_us: int = 0
) -> pb.AgentMessage:
    """Return a Heartbeat with one sample per GPU."""
    return pb.AgentMessage(
        heartbeat=pb.Heartbeat(
            sent_at_ms=at_ms,
            ping_nonce=ping_nonce,
            draining=draining,
            running_placements=running,
            overlay_rtt_us=min(max(overlay_rtt_us, 0), 2**32 - 1),
            gpus=[
                pb.GpuSample(
                    index=sample.index,
                    uuid=sample.uuid,
                    utilization_percent=sample.utilization_percent,
                    memory_used_bytes=sample.memory_used_bytes,
                    temperature_celsius=sample.temperature_celsius,
                    power_milliwatts=sample.power_milliwatts,
                    compute_processes=len(sample.compute_pids),
                    fake=sample.fake,
                )
                for sample in samples
            ],
        )
    )


def placement_spec(start: pb.StartPlacement, gpu: ContainerGpuSettings) -> PlacementSpec:
    """Return the runtime spec of a StartPlacement, validating every field (see agent.validation)."""
    validate_start(start)
    env = dict(start.env)
    env["JANCTION_PLACEMENT_ID"] = start.placement_id
    if start.peers:
        env["JANCTION_PEERS"] = ",".join(f"{peer.address}:{peer.port}" for peer in start.peers)
    if start.role:
        env["JANCTION_ROLE"] = start.role
        env["JANCTION_INDEX"] = str(start.placement_index)
        env["JANCTION_PLACEMENTS"] = str(start.placement_count)
    return PlacementSpec(
        placement_id=start.placement_id,
        image=start.image,
        command=tuple(start.command),
        env=env,
        gpu=gpu,
        memory_limit_bytes=start.memory_limit_bytes or DEFAULT_MEMORY_BYTES,
        cpu_millicores=start.cpu_millicores or DEFAULT_CPU_MILLICORES,
        pids_limit=start.pids_limit or DEFAULT_PIDS_LIMIT,
        network_allowed=start.network_allowed,
        ports=tuple(PortSpec(port.container_port, port.host_port, port.protocol or "tcp") for port in start.ports),
    )
