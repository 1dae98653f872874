"""GPU discovery: NVML for real GPUs, a declared fake backend for hosts without them."""

from agent.nvml.base import GpuBackend, GpuInfo, GpuTelemetry, MigDevice, MigProfile, NvmlUnavailable
from agent.nvml.fake import FakeGpuBackend, FakeGpuSpecError, parse_fake_gpu_spec
from agent.nvml.real import NvmlBackend

__all__ = [
    "FakeGpuBackend",
    "FakeGpuSpecError",
    "GpuBackend",
    "GpuInfo",
    "GpuTelemetry",
    "MigDevice",
    "MigProfile",
    "NvmlBackend",
    "NvmlUnavailable",
    "parse_fake_gpu_spec",
]
