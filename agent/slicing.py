"""Slicing planner: divide GPUs into equal vGPUs and derive the settings that enforce a slice.

Pure computation, no I/O. A GPU becomes one whole vGPU, 2 or 4 equal MPS slices, or (when MIG
is enabled) one vGPU per MIG device of the chosen profile. Pools are named by architecture
family and vGPU memory in GiB, rounded to the nearest integer: an RTX 4090 (Ada, 24 GiB) in
halves is "ada-12g", an H100 80GB in quarters "hopper-20g".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.nvml.base import GpuInfo

GIB = 1024**3
MIB = 1024**2
ALLOWED_SLICES = (1, 2, 4)
MIG_PROFILE_PATTERN = re.compile(r"^\d+g\.\d+gb(\+\w+)?$")
WHOLE, MPS, MIG = "whole", "mps", "mig"

Slicing = int | str


class SlicingError(ValueError):
    """A slicing request the GPUs cannot satisfy."""


@dataclass(frozen=True)
class VGpuPlan:
    """One vGPU of the plan."""

    local_id: str
    gpu_index: int
    gpu_uuid: str
    memory_bytes: int
    compute_share_percent: int
    pool: str
    enforcement: str
    device_uuid: str
    fake: bool
    enforcement_env: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ContainerGpuSettings:
    """What a runtime applies to give a container its vGPUs."""

    env: dict[str, str]
    device_uuids: tuple[str, ...]
    fake: bool
    uses_mps: bool
    # Fake GPUs only: what a stand-in nvidia-smi in the container prints ("name, memory MiB" per GPU), as the
    # NVIDIA toolkit's real one would for real GPUs (GpuBackend.container_view); empty: none is provided.
    nvidia_smi_lines: tuple[str, ...] = ()


def parse_slicing(text: str) -> Slicing:
    """Parse a --slices value: 1, 2, 4 or a MIG profile name such as "1g.10gb"."""
    value = text.strip()
    if value.isdigit():
        slices = int(value)
        if slices not in ALLOWED_SLICES:
            raise SlicingError(f"slices must be 1, 2 or 4, or a MIG profile such as 1g.10gb; got {value}")
        return slices
    if MIG_PROFILE_PATTERN.match(value.lower()):
        return value.lower()
    raise SlicingError(f"slices must be 1, 2 or 4, or a MIG profile such as 1g.10gb; got {text!r}")


def pool_name(architecture: str, memory_bytes: int) -> str:
    """Return the pool of a vGPU: architecture family and memory in whole GiB."""
    gib = max(1, math.floor(memory_bytes / GIB + 0.5))
    return f"{architecture}-{gib}g"


def mps_memory_limit(memory_bytes: int) -> str:
    """Return an MPS pinned-memory limit value in whole MiB, e.g. "12282M"."""
    return f"{memory_bytes // MIB}M"


def plan_gpu(gpu: GpuInfo, slicing: Slicing) -> list[VGpuPlan]:
    """Return the vGPUs of one GPU."""
    if gpu.mig_enabled:
        return _plan_mig(gpu, slicing if isinstance(slicing, str) else None)
    if isinstance(slicing, str):
        if gpu.mig_capable:
            raise SlicingError(
                f"GPU {gpu.index} ({gpu.name}) supports MIG but it is not enabled; enable it "
                f"(nvidia-smi -i {gpu.index} -mig 1), create {slicing} instances, or use --slices 1, 2 or 4"
            )
        raise SlicingError(f"GPU {gpu.index} ({gpu.name}) does not support MIG; use --slices 1, 2 or 4")
    if slicing not in ALLOWED_SLICES:
        raise SlicingError(f"slices must be 1, 2 or 4, got {slicing}")
    memory = (gpu.memory_bytes // slicing // MIB) * MIB if slicing > 1 else gpu.memory_bytes
    share = 100 // slicing
    enforcement = WHOLE if slicing == 1 else MPS
    plans = []
    for index in range(slicing):
        env = {"NVIDIA_VISIBLE_DEVICES": gpu.uuid}
        if enforcement == MPS:
            env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(share)
            env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={mps_memory_limit(memory)}"
        plans.append(
            VGpuPlan(
                local_id=f"{gpu.index}:{index}",
                gpu_index=gpu.index,
                gpu_uuid=gpu.uuid,
                memory_bytes=memory,
                compute_share_percent=share,
                pool=pool_name(gpu.architecture, memory),
                enforcement=enforcement,
                device_uuid=gpu.uuid,
                fake=gpu.fake,
                enforcement_env=env,
            )
        )
    return plans


def _plan_mig(gpu: GpuInfo, profile: str | None) -> list[VGpuPlan]:
    supported = [p.name for p in gpu.mig_profiles]
    if profile is not None and supported and profile not in supported:
        raise SlicingError(
            f"GPU {gpu.index} ({gpu.name}) has no MIG profile {profile}; it supports {', '.join(supported)}"
        )
    devices = [device for device in gpu.mig_devices if profile is None or device.profile == profile]
    if not devices:
        wanted = f"{profile} " if profile else ""
        raise SlicingError(
            f"GPU {gpu.index} ({gpu.name}) has MIG enabled but no {wanted}MIG devices; create them with "
            f"nvidia-smi mig -i {gpu.index} -cgi <profile> -C"
        )
    return [
        VGpuPlan(
            local_id=f"{gpu.index}:mig{device.index}",
            gpu_index=gpu.index,
            gpu_uuid=gpu.uuid,
            memory_bytes=device.memory_bytes,
            compute_share_percent=device.slice_count * 100 // gpu.total_mig_slices,
            pool=pool_name(gpu.architecture, device.memory_bytes),
            enforcement=MIG,
            device_uuid=device.uuid,
            fake=gpu.fake,
            enforcement_env={"NVIDIA_VISIBLE_DEVICES": device.uuid},
        )
        for device in devices
    ]


def plan_node(gpus: Iterable[GpuInfo], slicing: Slicing) -> list[VGpuPlan]:
    """Return the vGPUs of every GPU of a node."""
    return [vgpu for gpu in gpus for vgpu in plan_gpu(gpu, slicing)]


def container_gpu_settings(vgpus: list[VGpuPlan]) -> ContainerGpuSettings:
    """Return the environment and devices that give one container these vGPUs."""
    if not vgpus:
        return ContainerGpuSettings(env={}, device_uuids=(), fake=False, uses_mps=False)
    ids = [vgpu.local_id for vgpu in vgpus]
    if len(set(ids)) != len(ids):
        raise SlicingError(f"a placement lists a vGPU twice: {', '.join(ids)}")
    kinds = {vgpu.enforcement for vgpu in vgpus}
    if len(kinds) > 1:
        raise SlicingError(f"a placement cannot mix {' and '.join(sorted(kinds))} vGPUs")
    kind = kinds.pop()
    fake = any(vgpu.fake for vgpu in vgpus)
    if kind != MPS:
        devices = tuple(dict.fromkeys(vgpu.device_uuid for vgpu in vgpus))
        return ContainerGpuSettings({"NVIDIA_VISIBLE_DEVICES": ",".join(devices)}, devices, fake, uses_mps=False)
    memory: dict[str, int] = {}
    share: dict[str, int] = {}
    for vgpu in vgpus:
        memory[vgpu.gpu_uuid] = memory.get(vgpu.gpu_uuid, 0) + vgpu.memory_bytes
        share[vgpu.gpu_uuid] = share.get(vgpu.gpu_uuid, 0) + vgpu.compute_share_percent
    devices = tuple(memory)
    env = {
        "NVIDIA_VISIBLE_DEVICES": ",".join(devices),
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(min(100, max(share.values()))),
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": ",".join(
            f"{ordinal}={mps_memory_limit(memory[uuid])}" for ordinal, uuid in enumerate(devices)
        ),
    }
    return ContainerGpuSettings(env, devices, fake, uses_mps=True)
