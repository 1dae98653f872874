"""Declared fake GPUs (--fake-gpus) for hosts without NVIDIA hardware."""

from __future__ import annotations

import os
import random
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from agent.nvml.base import GpuBackend, GpuInfo, GpuProcess, GpuTelemetry, MigProfile, architecture_for

MIB = 1024 * 1024
FAKE_DRIVER_VERSION = "550.54.15"
FAKE_CUDA_VERSION = "12.4"
MAX_FAKE_GPUS = 16
MAX_FAKE_PROCESSES = 64
# What one listed process adds to a fake GPU's readings, so utilisation and memory thresholds see it too.
FAKE_PROCESS_UTILIZATION = 70
FAKE_PROCESS_MEMORY_BYTES = 2 * 1024**3
UUID_NAMESPACE = uuid.UUID("5b0f7c1e-6a43-4c3e-9f0a-3f1d7b8e2a10")


@dataclass(frozen=True)
class GpuModel:
    """A GPU model the fake backend can imitate."""

    key: str
    name: str
    memory_mib: int
    compute_capability: tuple[int, int]
    tdp_watts: int
    mig_profiles: tuple[MigProfile, ...] = ()


def _mig(*profiles: tuple[str, int, int, int]) -> tuple[MigProfile, ...]:
    return tuple(MigProfile(name, mib * MIB, slices, count) for name, mib, slices, count in profiles)


A100_40_MIG = _mig(
    ("1g.5gb", 4864, 1, 7),
    ("2g.10gb", 9856, 2, 3),
    ("3g.20gb", 19968, 3, 2),
    ("4g.20gb", 19968, 4, 1),
    ("7g.40gb", 40192, 7, 1),
)
A100_80_MIG = _mig(
    ("1g.10gb", 9728, 1, 7),
    ("2g.20gb", 19968, 2, 3),
    ("3g.40gb", 40192, 3, 2),
    ("4g.40gb", 40192, 4, 1),
    ("7g.80gb", 80384, 7, 1),
)
H100_80_MIG = _mig(
    ("1g.10gb", 9856, 1, 7),
    ("1g.20gb", 19968, 1, 4),
    ("2g.20gb", 19968, 2, 3),
    ("3g.40gb", 40192, 3, 2),
    ("4g.40gb", 40192, 4, 1),
    ("7g.80gb", 80384, 7, 1),
)
H200_MIG = _mig(
    ("1g.18gb", 16384, 1, 7),
    ("1g.35gb", 32768, 1, 4),
    ("2g.35gb", 32768, 2, 3),
    ("3g.71gb", 69632, 3, 2),
    ("4g.71gb", 69632, 4, 1),
    ("7g.141gb", 143360, 7, 1),
)

KNOWN_MODELS: tuple[GpuModel, ...] = (
    GpuModel("T4", "Tesla T4", 15360, (7, 5), 70),
    GpuModel("V100-32GB", "Tesla V100-SXM2-32GB", 32768, (7, 0), 300),
    GpuModel("RTX 3090", "NVIDIA GeForce RTX 3090", 24576, (8, 6), 350),
    GpuModel("A10", "NVIDIA A10", 23028, (8, 6), 150),
    GpuModel("A100-40GB", "NVIDIA A100-SXM4-40GB", 40960, (8, 0), 400, A100_40_MIG),
    GpuModel("A100-80GB", "NVIDIA A100-SXM4-80GB", 81920, (8, 0), 400, A100_80_MIG),
    GpuModel("RTX 4080", "NVIDIA GeForce RTX 4080", 16376, (8, 9), 320),
    GpuModel("RTX 4090", "NVIDIA GeForce RTX 4090", 24564, (8, 9), 450),
    GpuModel("L4", "NVIDIA L4", 23034, (8, 9), 72),
    GpuModel("L40S", "NVIDIA L40S", 46068, (8, 9), 350),
    GpuModel("H100-80GB", "NVIDIA H100 80GB HBM3", 81559, (9, 0), 700, H100_80_MIG),
    GpuModel("H200", "NVIDIA H200", 143771, (9, 0), 700, H200_MIG),
    GpuModel("RTX 5090", "NVIDIA GeForce RTX 5090", 32607, (12, 0), 575),
)


class FakeGpuSpecError(ValueError):
    """A --fake-gpus value that cannot be parsed."""


def _normalise(model: str) -> str:
    return re.sub(r"[\s_-]+", "", model).lower()


_MODELS_BY_KEY = {_normalise(model.key): model for model in KNOWN_MODELS}


def known_model_names() -> list[str]:
    """Return the model names --fake-gpus accepts."""
    return [model.key for model in KNOWN_MODELS]


def parse_fake_gpu_spec(spec: str) -> list[GpuModel]:
    """Parse "RTX 4090:2,A100-80GB:1" into one model entry per GPU."""
    models: list[GpuModel] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            raise FakeGpuSpecError(f"empty entry in {spec!r}; expected MODEL[:COUNT] separated by commas")
        name, _, count_text = item.partition(":")
        model = _MODELS_BY_KEY.get(_normalise(name))
        if model is None:
            raise FakeGpuSpecError(
                f"unknown GPU model {name.strip()!r}; known models: {', '.join(known_model_names())}"
            )
        count_text = count_text.strip() or "1"
        if not count_text.isdigit() or int(count_text) < 1:
            raise FakeGpuSpecError(f"count for {model.key} must be a positive integer, got {count_text!r}")
        models.extend([model] * int(count_text))
    if len(models) > MAX_FAKE_GPUS:
        raise FakeGpuSpecError(f"at most {MAX_FAKE_GPUS} fake GPUs per host, got {len(models)}")
    return models


def fake_gpu_uuid(seed: str, index: int, model: GpuModel) -> str:
    """Return the deterministic UUID of fake GPU `index` of a node seeded with `seed`."""
    return f"GPU-{uuid.uuid5(UUID_NAMESPACE, f'{seed}/{index}/{model.key}')}"


# --fake-gpu-fault: how a faulty or fraudulent card shows inside the container (a test flag; see container_view).
FAULT_MODEL = "model"  # the container sees another, cheaper model than the one the node declares (a relabelled card)
FAULT_MEMORY = "memory"  # the container sees half the declared memory (a failed memory bank, a smaller card sold big)
FAULTS = (FAULT_MODEL, FAULT_MEMORY)
# What a relabelled card really is: a T4 behind any other model, an RTX 3090 behind a claimed T4.
_RELABELLED = {"T4": "RTX 3090"}


class FakeGpuBackend(GpuBackend):
    """GPUs declared on the command line; every record is flagged fake."""

    fake = True

    def __init__(
        self, models: list[GpuModel], *, seed: str, processes_file: Path | None = None, fault: str | None = None
    ) -> None:
        if fault is not None and fault not in FAULTS:
            raise FakeGpuSpecError(f"unknown fake GPU fault {fault!r}; known faults: {', '.join(FAULTS)}")
        self._models = models
        self._fault = fault
        # A file of "PID[:GPU_INDEX]" lines: the live processes among them are what the fake GPUs list as
        # running on them (NVML's process lists), so a test or a demo declares a real host process "on the GPU".
        self._processes_file = processes_file
        self._gpus = [
            GpuInfo(
                index=index,
                uuid=fake_gpu_uuid(seed, index, model),
                name=model.name,
                memory_bytes=model.memory_mib * MIB,
                compute_capability=model.compute_capability,
                architecture=architecture_for(model.compute_capability),
                driver_version=FAKE_DRIVER_VERSION,
                cuda_version=FAKE_CUDA_VERSION,
                mig_capable=bool(model.mig_profiles),
                mig_enabled=False,
                mig_profiles=model.mig_profiles,
                fake=True,
            )
            for index, model in enumerate(models)
        ]
        self._rngs = [random.Random(gpu.uuid) for gpu in self._gpus]
        self._load = [rng.uniform(0, 30) for rng in self._rngs]

    def gpus(self) -> list[GpuInfo]:
        """Return the declared GPUs."""
        return list(self._gpus)

    def processes(self) -> list[GpuProcess]:
        """Return the live processes the processes file declares, each on its GPU (0 unless given)."""
        if self._processes_file is None:
            return []
        try:
            lines = self._processes_file.read_text().splitlines()[:MAX_FAKE_PROCESSES]
        except OSError:
            return []
        found = []
        for line in lines:
            pid_text, _, index_text = line.strip().partition(":")
            if not pid_text.isdigit() or not (index_text or "0").isdigit():
                continue
            pid, index = int(pid_text), int(index_text or "0")
            if index < len(self._gpus) and _alive(pid):
                found.append(GpuProcess(self._gpus[index].uuid, pid, "compute", FAKE_PROCESS_MEMORY_BYTES))
        return found

    def telemetry(self) -> list[GpuTelemetry]:
        """Return readings that wander like a lightly used GPU's, plus what the listed processes use."""
        listed: dict[str, list[int]] = {}
        busy_pids: dict[str, int] = {}
        for process in self.processes():
            listed.setdefault(process.gpu_uuid, []).append(process.pid)
            # A stopped or frozen process (a paused placement) keeps its GPU memory but computes nothing.
            busy_pids[process.gpu_uuid] = busy_pids.get(process.gpu_uuid, 0) + (_state(process.pid) not in "TtD")
        samples = []
        for index, (gpu, model, rng) in enumerate(zip(self._gpus, self._models, self._rngs, strict=True)):
            # With a processes file the idle wander stays low, so only the declared processes load the GPU.
            ceiling = 30.0 if self._processes_file is not None else 100.0
            load = min(ceiling, max(0.0, self._load[index] + rng.uniform(-8, 8)))
            self._load[index] = load
            pids = tuple(listed.get(gpu.uuid, ()))
            busy = min(100.0, load + FAKE_PROCESS_UTILIZATION * busy_pids.get(gpu.uuid, 0))
            # Likewise the idle memory stays at 2% then: only the declared processes hold GPU memory.
            idle_memory = 0.02 if self._processes_file is not None else 0.02 + load / 250
            memory = int(gpu.memory_bytes * idle_memory) + FAKE_PROCESS_MEMORY_BYTES * len(pids)
            idle_watts = model.tdp_watts * 0.12
            samples.append(
                GpuTelemetry(
                    index=gpu.index,
                    uuid=gpu.uuid,
                    utilization_percent=round(busy),
                    memory_used_bytes=min(memory, gpu.memory_bytes),
                    temperature_celsius=round(32 + busy * 0.45 + rng.uniform(-1, 1)),
                    power_milliwatts=int((idle_watts + (model.tdp_watts - idle_watts) * busy / 100) * 1000),
                    compute_pids=pids,
                    fake=True,
                )
            )
        return samples

    def container_view(self, device_uuids: tuple[str, ...]) -> tuple[str, ...]:
        """Return the "name, memory MiB" lines a container given these fake GPUs sees through nvidia-smi.

        Honest: the declared model and memory, exactly what Hello reported. With a fault the card inside the
        container is not what the node declares, as with a broken or relabelled card; the platform's checks
        (reputation.challenges) see it the way they would see a real one.
        """
        lines = []
        for gpu, model in zip(self._gpus, self._models, strict=True):
            if gpu.uuid not in device_uuids:
                continue
            name, memory_mib = model.name, model.memory_mib
            if self._fault == FAULT_MODEL:
                actual = _MODELS_BY_KEY[_normalise(_RELABELLED.get(model.key, "T4"))]
                name, memory_mib = actual.name, actual.memory_mib
            elif self._fault == FAULT_MEMORY:
                memory_mib //= 2
            lines.append(f"{name}, {memory_mib}")
        return tuple(lines)

    def close(self) -> None:
        """Release nothing: declared GPUs hold no resources."""


def _state(pid: int) -> str:
    """Return a process's state letter from /proc (R, S, D, T, Z, ...), or "" when it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return ""


def _alive(pid: int) -> bool:
    """Return whether a process exists and is not a zombie."""
    state = _state(pid)
    if not state:
        return pid > 0 and _signal_zero(pid)
    return state != "Z"


def _signal_zero(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
