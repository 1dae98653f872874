"""What an agent reports, as plain values the gateway converts protobuf messages into."""

from dataclasses import dataclass
from datetime import datetime


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
    paused_at_ms: int = 0  # colocation: when it was frozen, while PAUSED


@dataclass(frozen=True)
class HelloReport:
    agent_version: str
    runtime: str
    hostname: str
    network_unsupported: bool
    gpus: list[GpuReport]
    vgpus: list[VGpuReport]
    placements: list[RunningPlacementReport]
    egress_allowed: bool = False
    overlay_public_key: str = ""  # the agent's WireGuard key when it runs the overlay (docs/overlay.md)


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
    overlay_rtt_us: int = 0


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
