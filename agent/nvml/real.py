"""GPU discovery and telemetry through NVML (the nvidia-ml-py `pynvml` module)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from agent.nvml.base import (
    GpuBackend,
    GpuInfo,
    GpuProcess,
    GpuTelemetry,
    MigDevice,
    MigProfile,
    NvmlUnavailable,
    architecture_for,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
FAKE_HINT = (
    "install the NVIDIA driver (it provides libnvidia-ml.so.1) or declare fake GPUs with --fake-gpus 'RTX 4090:1'"
)
PROFILE_CONSTANTS = (
    "NVML_GPU_INSTANCE_PROFILE_1_SLICE",
    "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1",
    "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2",
    "NVML_GPU_INSTANCE_PROFILE_2_SLICE",
    "NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1",
    "NVML_GPU_INSTANCE_PROFILE_3_SLICE",
    "NVML_GPU_INSTANCE_PROFILE_4_SLICE",
    "NVML_GPU_INSTANCE_PROFILE_6_SLICE",
    "NVML_GPU_INSTANCE_PROFILE_7_SLICE",
    "NVML_GPU_INSTANCE_PROFILE_8_SLICE",
)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _mig_profile_name(name: str | bytes) -> str:
    """Return "1g.10gb" from an NVML name such as "NVIDIA A100-SXM4-80GB MIG 1g.10gb"."""
    text = _text(name)
    return text.rsplit("MIG ", 1)[-1].strip()


class NvmlBackend(GpuBackend):
    """Real GPUs seen through NVML; `nvml` may be any module with pynvml's functions."""

    def __init__(self, nvml: ModuleType | Any | None = None) -> None:
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError as exc:
                raise NvmlUnavailable(f"the nvidia-ml-py package is missing: pip install it, or {FAKE_HINT}") from exc
        self._nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise NvmlUnavailable(f"NVML is not available on this host ({exc}); {FAKE_HINT}") from exc
        if nvml.nvmlDeviceGetCount() == 0:
            nvml.nvmlShutdown()
            raise NvmlUnavailable(f"NVML found no NVIDIA GPU on this host; {FAKE_HINT}")

    def _handles(self) -> list[Any]:
        nvml = self._nvml
        return [nvml.nvmlDeviceGetHandleByIndex(index) for index in range(nvml.nvmlDeviceGetCount())]

    def _read(self, default: T, query: Callable[..., T], *args: Any) -> T:
        """Return query(*args), or default when the GPU does not support the query."""
        try:
            return query(*args)
        except self._nvml.NVMLError as exc:
            log.debug("NVML %s failed: %s", getattr(query, "__name__", query), exc)
            return default

    def gpus(self) -> list[GpuInfo]:
        """Return every GPU NVML reports."""
        nvml = self._nvml
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = nvml.nvmlSystemGetCudaDriverVersion()
        cuda_version = f"{cuda // 1000}.{cuda % 1000 // 10}"
        gpus = []
        for index, handle in enumerate(self._handles()):
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            mig_mode = self._read(None, nvml.nvmlDeviceGetMigMode, handle)
            mig_capable = mig_mode is not None
            mig_enabled = mig_capable and mig_mode[0] == nvml.NVML_DEVICE_MIG_ENABLE
            gpus.append(
                GpuInfo(
                    index=index,
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                    compute_capability=(int(major), int(minor)),
                    architecture=architecture_for((int(major), int(minor))),
                    driver_version=driver,
                    cuda_version=cuda_version,
                    mig_capable=mig_capable,
                    mig_enabled=mig_enabled,
                    mig_profiles=self._mig_profiles(handle) if mig_capable else (),
                    mig_devices=self._mig_devices(handle) if mig_enabled else (),
                )
            )
        return gpus

    def _mig_profiles(self, handle: Any) -> tuple[MigProfile, ...]:
        nvml = self._nvml
        profiles: dict[str, MigProfile] = {}
        for constant in PROFILE_CONSTANTS:
            profile_id = getattr(nvml, constant, None)
            if profile_id is None:
                continue
            info = self._read(None, nvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, profile_id)
            if info is None or not info.instanceCount:
                continue
            memory_mib = int(info.memorySizeMB)
            name = getattr(info, "name", b"")
            name = _mig_profile_name(name) if name else f"{info.sliceCount}g.{math.ceil(memory_mib / 1024)}gb"
            profiles[name] = MigProfile(name, memory_mib * 1024 * 1024, int(info.sliceCount), int(info.instanceCount))
        return tuple(profiles.values())

    def _mig_devices(self, handle: Any) -> tuple[MigDevice, ...]:
        nvml = self._nvml
        devices = []
        for mig_index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            mig = self._read(None, nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, mig_index)
            if mig is None:
                continue
            attributes = nvml.nvmlDeviceGetAttributes(mig)
            devices.append(
                MigDevice(
                    index=mig_index,
                    uuid=_text(nvml.nvmlDeviceGetUUID(mig)),
                    profile=_mig_profile_name(nvml.nvmlDeviceGetName(mig)),
                    memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(mig).total),
                    slice_count=int(attributes.gpuInstanceSliceCount),
                )
            )
        return tuple(devices)

    def telemetry(self) -> list[GpuTelemetry]:
        """Return utilisation, memory, temperature, power and compute processes per GPU."""
        nvml = self._nvml
        samples = []
        for index, handle in enumerate(self._handles()):
            utilization = self._read(None, nvml.nvmlDeviceGetUtilizationRates, handle)
            memory = self._read(None, nvml.nvmlDeviceGetMemoryInfo, handle)
            temperature = self._read(0, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            processes = self._read([], nvml.nvmlDeviceGetComputeRunningProcesses, handle)
            samples.append(
                GpuTelemetry(
                    index=index,
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    utilization_percent=int(utilization.gpu) if utilization is not None else 0,
                    memory_used_bytes=int(memory.used) if memory is not None else 0,
                    temperature_celsius=int(temperature),
                    power_milliwatts=int(self._read(0, nvml.nvmlDeviceGetPowerUsage, handle)),
                    compute_pids=tuple(int(process.pid) for process in processes),
                )
            )
        return samples

    def processes(self) -> list[GpuProcess]:
        """Return the compute and graphics processes on every GPU (nvmlDeviceGet*RunningProcesses)."""
        nvml = self._nvml
        found = []
        for handle in self._handles():
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            for kind, query in (
                ("compute", nvml.nvmlDeviceGetComputeRunningProcesses),
                ("graphics", nvml.nvmlDeviceGetGraphicsRunningProcesses),
            ):
                for process in self._read([], query, handle):
                    memory = getattr(process, "usedGpuMemory", None)
                    # NVML reports "not available" (e.g. without the right to see another user's memory) as None.
                    found.append(GpuProcess(uuid, int(process.pid), kind, int(memory) if memory else 0))
        return found

    def close(self) -> None:
        """Shut NVML down."""
        self._read(None, self._nvml.nvmlShutdown)
