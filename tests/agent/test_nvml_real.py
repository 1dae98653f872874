"""The NVML backend's real code path, against an injected pynvml-shaped module."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.nvml.base import NvmlUnavailable
from agent.nvml.real import NvmlBackend
from agent.slicing import plan_node

MIB = 1024 * 1024


class NVMLError(Exception):
    """Stand-in for pynvml.NVMLError."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


NOT_SUPPORTED, NOT_FOUND, LIBRARY_NOT_FOUND = 3, 6, 12


class FakeNvml:
    """A pynvml look-alike: an RTX 4090, and an A100 with MIG on and two 1g.10gb devices."""

    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = 0
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_GPU_INSTANCE_PROFILE_1_SLICE = 0
    NVML_GPU_INSTANCE_PROFILE_2_SLICE = 1
    NVML_GPU_INSTANCE_PROFILE_7_SLICE = 4

    def __init__(self, *, fail_init: int | None = None, count: int = 2) -> None:
        self.fail_init = fail_init
        self.count = count
        self.calls: list[str] = []
        self.devices = {
            "gpu0": dict(uuid=b"GPU-4090", name=b"NVIDIA GeForce RTX 4090", total=24564 * MIB, used=900 * MIB,
                         cc=(8, 9), mig=None, util=37, temp=61, power=123_456, pids=[4242]),
            "gpu1": dict(uuid="GPU-A100", name="NVIDIA A100-SXM4-80GB", total=81920 * MIB, used=0, cc=(8, 0),
                         mig=[1, 1], util=None, temp=40, power=None, pids=[]),
            "mig0": dict(uuid="MIG-1111", name="NVIDIA A100-SXM4-80GB MIG 1g.10gb", total=9728 * MIB, slices=1),
            "mig2": dict(uuid="MIG-2222", name="NVIDIA A100-SXM4-80GB MIG 1g.10gb", total=9728 * MIB, slices=1),
        }  # fmt: skip

    def nvmlInit(self):
        self.calls.append("init")
        if self.fail_init is not None:
            raise NVMLError(self.fail_init)

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self):
        return b"550.54.15"

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index):
        return f"gpu{index}"

    def nvmlDeviceGetUUID(self, handle):
        return self.devices[handle]["uuid"]

    def nvmlDeviceGetName(self, handle):
        return self.devices[handle]["name"]

    def nvmlDeviceGetMemoryInfo(self, handle):
        device = self.devices[handle]
        return SimpleNamespace(total=device["total"], used=device.get("used", 0), free=0)

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        return self.devices[handle]["cc"]

    def nvmlDeviceGetMigMode(self, handle):
        mode = self.devices[handle]["mig"]
        if mode is None:
            raise NVMLError(NOT_SUPPORTED)
        return mode

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle, profile):
        table = {0: (1, 7, 9728, b"MIG 1g.10gb"), 1: (2, 3, 19968, b""), 4: (7, 1, 80384, b"MIG 7g.80gb")}
        slices, count, memory, name = table[profile]
        info = SimpleNamespace(sliceCount=slices, instanceCount=count, memorySizeMB=memory)
        if name:
            info.name = name
        return info

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        return 3

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle, index):
        if f"mig{index}" not in self.devices:
            raise NVMLError(NOT_FOUND)
        return f"mig{index}"

    def nvmlDeviceGetAttributes(self, handle):
        return SimpleNamespace(gpuInstanceSliceCount=self.devices[handle]["slices"])

    def nvmlDeviceGetUtilizationRates(self, handle):
        util = self.devices[handle]["util"]
        if util is None:
            raise NVMLError(NOT_SUPPORTED)
        return SimpleNamespace(gpu=util, memory=10)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self.devices[handle]["temp"]

    def nvmlDeviceGetPowerUsage(self, handle):
        power = self.devices[handle]["power"]
        if power is None:
            raise NVMLError(NOT_SUPPORTED)
        return power

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid, usedGpuMemory=1) for pid in self.devices[handle]["pids"]]


def test_discovers_gpus_mig_profiles_and_mig_devices():
    gpus = NvmlBackend(FakeNvml()).gpus()

    ada, ampere = gpus
    assert (ada.index, ada.uuid, ada.name, ada.memory_bytes) == (0, "GPU-4090", "NVIDIA GeForce RTX 4090", 24564 * MIB)
    assert (ada.compute_capability, ada.architecture) == ((8, 9), "ada")
    assert (ada.driver_version, ada.cuda_version) == ("550.54.15", "12.4")
    assert (ada.mig_capable, ada.mig_enabled, ada.fake) == (False, False, False)
    assert (ampere.architecture, ampere.mig_capable, ampere.mig_enabled) == ("ampere", True, True)
    assert [(p.name, p.slice_count, p.max_instances) for p in ampere.mig_profiles] == [
        ("1g.10gb", 1, 7),
        ("2g.20gb", 2, 3),
        ("7g.80gb", 7, 1),
    ]
    assert [(d.index, d.uuid, d.profile, d.slice_count) for d in ampere.mig_devices] == [
        (0, "MIG-1111", "1g.10gb", 1),
        (2, "MIG-2222", "1g.10gb", 1),
    ]


def test_plan_over_real_discovery_uses_mps_on_plain_gpus_and_mig_devices_on_mig_gpus():
    vgpus = plan_node(NvmlBackend(FakeNvml()).gpus(), 2)
    assert [(v.local_id, v.enforcement, v.pool) for v in vgpus] == [
        ("0:0", "mps", "ada-12g"),
        ("0:1", "mps", "ada-12g"),
        ("1:mig0", "mig", "ampere-10g"),
        ("1:mig2", "mig", "ampere-10g"),
    ]


def test_telemetry_reads_every_gpu_and_zeroes_unsupported_readings():
    first, second = NvmlBackend(FakeNvml()).telemetry()
    assert (first.uuid, first.utilization_percent, first.memory_used_bytes) == ("GPU-4090", 37, 900 * MIB)
    assert (first.temperature_celsius, first.power_milliwatts, first.compute_pids) == (61, 123_456, (4242,))
    assert (second.utilization_percent, second.power_milliwatts, second.compute_pids) == (0, 0, ())
    assert not first.fake


def test_missing_library_becomes_nvml_unavailable_with_a_fake_gpu_hint():
    with pytest.raises(NvmlUnavailable, match=r"install the NVIDIA driver.*--fake-gpus"):
        NvmlBackend(FakeNvml(fail_init=LIBRARY_NOT_FOUND))


def test_a_host_without_gpus_is_unavailable_and_nvml_is_shut_down():
    nvml = FakeNvml(count=0)
    with pytest.raises(NvmlUnavailable, match="no NVIDIA GPU"):
        NvmlBackend(nvml)
    assert nvml.calls == ["init", "shutdown"]


def test_close_shuts_nvml_down():
    nvml = FakeNvml()
    NvmlBackend(nvml).close()
    assert nvml.calls == ["init", "shutdown"]


def test_the_real_pynvml_on_this_host_either_works_or_says_what_to_do():
    try:
        backend = NvmlBackend()
    except NvmlUnavailable as exc:
        assert "--fake-gpus" in str(exc)
    else:
        assert all(gpu.uuid for gpu in backend.gpus())
        backend.close()
