"""GPU backend interface and the records it returns."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used on this host."""


@dataclass(frozen=True)
class MigProfile:
    """A MIG GPU-instance profile a GPU supports."""

    name: str
    memory_bytes: int
    slice_count: int
    max_instances: int


@dataclass(frozen=True)
class MigDevice:
    """A MIG device that exists on a GPU (an instance the host admin created)."""

    index: int
    uuid: str
    profile: str
    memory_bytes: int
    slice_count: int


@dataclass(frozen=True)
class GpuInfo:
    """Static facts about one physical GPU."""

    index: int
    uuid: str
    name: str
    memory_bytes: int
    compute_capability: tuple[int, int]
    architecture: str
    driver_version: str
    cuda_version: str
    mig_capable: bool = False
    mig_enabled: bool = False
    mig_profiles: tuple[MigProfile, ...] = ()
    mig_devices: tuple[MigDevice, ...] = ()
    fake: bool = False

    @property
    def compute_capability_text(self) -> str:
        """Return the compute capability as "major.minor"."""
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    @property
    def total_mig_slices(self) -> int:
        """Return the number of compute slices the GPU divides into under MIG."""
        return max((profile.slice_count for profile in self.mig_profiles), default=7)


@dataclass(frozen=True)
class GpuTelemetry:
    """One sample of a GPU's live readings."""

    index: int
    uuid: str
    utilization_percent: int
    memory_used_bytes: int
    temperature_celsius: int
    power_milliwatts: int
    compute_pids: tuple[int, ...] = field(default=())
    fake: bool = False


@dataclass(frozen=True)
class GpuProcess:
    """A process NVML lists on a GPU: compute (CUDA) or graphics (a game, a desktop session)."""

    gpu_uuid: str
    pid: int
    kind: str  # "compute" or "graphics"
    used_memory_bytes: int = 0


class GpuBackend(abc.ABC):
    """Source of GPU inventory and telemetry."""

    fake: bool = False

    def processes(self) -> list[GpuProcess]:
        """Return every process on the host's GPUs (compute and graphics), as NVML lists them."""
        return [GpuProcess(sample.uuid, pid, "compute") for sample in self.telemetry() for pid in sample.compute_pids]

    @abc.abstractmethod
    def gpus(self) -> list[GpuInfo]:
        """Return the host's GPUs in index order."""

    @abc.abstractmethod
    def telemetry(self) -> list[GpuTelemetry]:
        """Return a fresh sample for every GPU."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend's resources."""

    def container_view(self, device_uuids: tuple[str, ...]) -> tuple[str, ...]:
        """Return what `nvidia-smi --query-gpu=name,memory.total` shows inside a container given these GPUs.

        One "name, memory MiB" line per GPU, for a runtime to put a stand-in nvidia-smi in the container; empty
        when the GPU stack provides the real one (NVML GPUs: the NVIDIA container toolkit mounts it).
        """
        return ()


ARCHITECTURE_BY_CC_MAJOR = {
    3: "kepler",
    5: "maxwell",
    6: "pascal",
    8: "ampere",
    9: "hopper",
    10: "blackwell",
    11: "blackwell",
    12: "blackwell",
}


def architecture_for(compute_capability: tuple[int, int]) -> str:
    """Return the architecture family of a compute capability."""
    major, minor = compute_capability
    if major == 7:
        return "turing" if minor >= 5 else "volta"
    if major == 8 and minor == 9:
        return "ada"
    return ARCHITECTURE_BY_CC_MAJOR.get(major, f"sm{major}{minor}")
