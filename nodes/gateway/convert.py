"""Translations between the agent protocol's messages and the inputs of nodes.services."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import json_format

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from nodes.checks import sample_problem
from nodes.models import PlacementState
from nodes.services import (
    GpuReport,
    GpuSampleReport,
    HelloReport,
    LogChunkReport,
    NodeHeartbeat,
    PlacementStatusReport,
    RunningPlacementReport,
    UsageReportIn,
    VGpuReport,
)

PLACEMENT_STATES = {
    pb.PLACEMENT_STATE_STARTING: PlacementState.STARTING,
    pb.PLACEMENT_STATE_RUNNING: PlacementState.RUNNING,
    pb.PLACEMENT_STATE_EXITED: PlacementState.EXITED,
    pb.PLACEMENT_STATE_FAILED: PlacementState.FAILED,
    pb.PLACEMENT_STATE_LOST: PlacementState.LOST,
    pb.PLACEMENT_STATE_PAUSED: PlacementState.PAUSED,
}
LOG_STREAMS = {pb.LOG_STREAM_STDOUT: "stdout", pb.LOG_STREAM_STDERR: "stderr"}


def hello_report(hello: pb.Hello) -> HelloReport:
    """Return the service input of a Hello."""
    return HelloReport(
        agent_version=hello.agent_version,
        runtime=hello.runtime,
        hostname=hello.hostname,
        network_unsupported=hello.network_unsupported,
        egress_allowed=hello.egress_allowed,
        overlay_public_key=hello.overlay.public_key[:64] if hello.HasField("overlay") else "",
        gpus=[
            GpuReport(
                index=gpu.index,
                uuid=gpu.uuid,
                name=gpu.name,
                memory_bytes=gpu.memory_bytes,
                compute_capability=gpu.compute_capability,
                architecture=gpu.architecture,
                driver_version=gpu.driver_version,
                cuda_version=gpu.cuda_version,
                mig_capable=gpu.mig_capable,
                mig_enabled=gpu.mig_enabled,
                fake=gpu.fake,
            )
            for gpu in hello.gpus
        ],
        vgpus=[
            VGpuReport(
                local_id=vgpu.local_id,
                gpu_uuid=vgpu.gpu_uuid,
                memory_bytes=vgpu.memory_bytes,
                compute_share_percent=vgpu.compute_share_percent,
                pool=vgpu.pool,
                enforcement=vgpu.enforcement,
                enforcement_env=dict(vgpu.enforcement_env),
                mig_device_uuid=vgpu.mig_device_uuid,
                fake=vgpu.fake,
            )
            for vgpu in hello.vgpus
        ],
        placements=[
            RunningPlacementReport(
                placement_id=placement.placement_id,
                state=PLACEMENT_STATES.get(placement.state, PlacementState.STARTING),
                vgpu_local_ids=list(placement.vgpu_local_ids),
                started_at_ms=placement.started_at_ms,
                last_usage_seq=placement.last_usage_seq,
                last_log_seq=placement.last_log_seq,
                paused_at_ms=placement.paused_at_ms,
            )
            for placement in hello.placements
        ],
    )


def node_heartbeat(
    *, node_id: int, gpu_ids: dict[int, int], heartbeat: pb.Heartbeat, at: datetime
) -> tuple[NodeHeartbeat, list[str]]:
    """Return a buffered heartbeat with the in-range samples of the GPUs the node's Hello declared, and the problems.

    The heartbeat still proves the node alive; a sample with a value out of range is dropped, never stored.
    """
    samples: dict[int, GpuSampleReport] = {}
    problems = []
    for sample in heartbeat.gpus:
        if sample.index not in gpu_ids:
            continue
        if problem := sample_problem(sample):
            problems.append(problem)
            continue
        samples[gpu_ids[sample.index]] = GpuSampleReport(
            index=sample.index,
            utilization_percent=sample.utilization_percent,
            memory_used_bytes=sample.memory_used_bytes,
            temperature_celsius=sample.temperature_celsius,
            power_milliwatts=sample.power_milliwatts,
            compute_processes=sample.compute_processes,
        )
    rtt_us = heartbeat.overlay_rtt_us
    report = NodeHeartbeat(node_id=node_id, received_at=at, gpu_samples=samples, overlay_rtt_us=rtt_us)
    return report, problems


def placement_status_report(status: pb.PlacementStatus) -> PlacementStatusReport:
    """Return the service input of a PlacementStatus."""
    return PlacementStatusReport(
        placement_id=status.placement_id,
        state=PLACEMENT_STATES.get(status.state, PlacementState.FAILED),
        exit_code=status.exit_code if status.HasField("exit_code") else None,
        message=status.message,
        at_ms=status.at_ms,
        limits_not_enforced=status.limits_not_enforced,
    )


def log_chunk_report(chunk: pb.LogChunk) -> LogChunkReport:
    """Return the service input of a LogChunk."""
    return LogChunkReport(
        placement_id=chunk.placement_id,
        seq=chunk.seq,
        stream=LOG_STREAMS.get(chunk.stream, ""),
        lines=list(chunk.lines),
    )


def usage_report_in(report: pb.UsageReport) -> UsageReportIn:
    """Return the service input of a UsageReport."""
    return UsageReportIn(
        placement_id=report.placement_id,
        seq=report.seq,
        interval_start_ms=report.interval_start_ms,
        interval_end_ms=report.interval_end_ms,
        vgpu_count=report.vgpu_count,
        vgpu_milliseconds=report.vgpu_milliseconds,
        signature=report.signature,
    )


def control_message(stored: dict) -> pb.ControlMessage:
    """Return the ControlMessage of a queued NodeCommand."""
    return json_format.ParseDict(stored, pb.ControlMessage())


def usage_ack(report: pb.UsageReport) -> pb.ControlMessage:
    """Return the acknowledgement of a stored usage report."""
    return pb.ControlMessage(usage_ack=pb.UsageAck(placement_id=report.placement_id, seq=report.seq))


def usage_nack(report: pb.UsageReport, *, code: str, reason: str) -> pb.ControlMessage:
    """Return the negative acknowledgement of a refused usage report: the agent stops resending it."""
    return pb.ControlMessage(
        usage_ack=pb.UsageAck(
            placement_id=report.placement_id, seq=report.seq, rejected=True, code=code, reason=reason[:500]
        )
    )
