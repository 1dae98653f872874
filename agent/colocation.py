"""Colocation: notice the owner's own use of the GPUs, so the agent can step aside.

The owner is active when a GPU lists a process (compute or graphics, NVML's process lists) that is not
one of the agent's placements, or when a GPU's utilisation or memory is above what the placements running
on it can account for by more than a threshold. A process is the agent's when its cgroup (read from
/proc/<pid>/cgroup) belongs to one of the runtime's workloads (podman: the container's `libpod-<id>`
scope; sandbox: the workload's own groups). A process the agent cannot see (another PID namespace, or
gone between the two reads) counts as the owner's: the owner comes first.

The owner is back at once; the owner is gone only after `grace_seconds` without any sign of them.
Interactive use of the host (keyboard, mouse) is not watched: see docs/colocation.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.nvml.base import GpuBackend, GpuProcess

log = logging.getLogger(__name__)

DEFAULT_UTILIZATION_PERCENT = 30
DEFAULT_MEMORY_PERCENT = 10
DEFAULT_GRACE_SECONDS = 30
DEFAULT_INTERVAL_SECONDS = 0.25


@dataclass(frozen=True)
class WatchPolicy:
    """What the platform told the agent about the node's availability policy (the Colocation message)."""

    watch: bool = False
    # How far above the placements' share a GPU's utilisation / memory (percent of the GPU) may go.
    utilization_percent: int = DEFAULT_UTILIZATION_PERCENT
    memory_percent: int = DEFAULT_MEMORY_PERCENT
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    # The schedule gives the GPUs to the owner now, whatever the readings say.
    owner_time: bool = False


@dataclass(frozen=True)
class Share:
    """What the agent's placements may use of one GPU: compute share (percent) and memory (bytes)."""

    compute_percent: int = 0
    memory_bytes: int = 0


@dataclass
class Verdict:
    """The watch's reading: whether the owner is active, and the evidence."""

    active: bool
    reason: str = ""
    foreign_pids: list[int] = field(default_factory=list)


def cgroup_of(pid: int, proc_root: Path = Path("/proc")) -> str | None:
    """Return the text of /proc/<pid>/cgroup, or None when the process cannot be seen from here."""
    try:
        return (proc_root / str(pid) / "cgroup").read_text()
    except OSError:
        return None


class OwnerWatch:
    """Samples the GPUs and decides whether the owner is using them."""

    def __init__(
        self,
        *,
        backend: GpuBackend,
        owns_process: Callable[[int, str], str | None],
        policy: WatchPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        proc_root: Path = Path("/proc"),
        interval: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self._backend = backend
        self._owns_process = owns_process
        self.policy = policy or WatchPolicy()
        self._clock = clock
        self._proc_root = proc_root
        self.interval = interval
        self._last_sample = float("-inf")
        self._last_seen = float("-inf")
        self.active = False
        self.reason = ""
        self._memory = {gpu.uuid: gpu.memory_bytes for gpu in backend.gpus()}

    def due(self) -> bool:
        """Return whether a new sample is due."""
        wanted = self.policy.watch or self.policy.owner_time or self.active
        return wanted and self._clock() - self._last_sample >= self.interval

    def classify(self, processes: list[GpuProcess]) -> tuple[list[GpuProcess], dict[str, str]]:
        """Split GPU processes into foreign ones and the agent's own (pid -> placement id)."""
        foreign, own = [], {}
        for process in processes:
            text = cgroup_of(process.pid, self._proc_root)
            placement_id = self._owns_process(process.pid, text) if text is not None else None
            if placement_id is None:
                foreign.append(process)
            else:
                own[str(process.pid)] = placement_id
        return foreign, own

    def evidence(self, shares: dict[str, Share]) -> Verdict:
        """Return one reading of the GPUs against the placements' shares (by GPU uuid)."""
        foreign, _ = self.classify(self._backend.processes())
        if foreign:
            first = foreign[0]
            return Verdict(
                True,
                f"{len(foreign)} GPU process(es) the agent did not start, e.g. pid {first.pid} ({first.kind})",
                [process.pid for process in foreign],
            )
        policy = self.policy
        for sample in self._backend.telemetry():
            share = shares.get(sample.uuid, Share())
            if sample.utilization_percent > share.compute_percent + policy.utilization_percent:
                return Verdict(
                    True,
                    f"GPU {sample.index} is {sample.utilization_percent}% busy; the placements account for "
                    f"{share.compute_percent}%",
                )
            total = self._memory.get(sample.uuid, 0)
            if total and sample.memory_used_bytes > share.memory_bytes + total * policy.memory_percent // 100:
                return Verdict(
                    True,
                    f"GPU {sample.index} uses {sample.memory_used_bytes // 2**20} MiB; the placements account for "
                    f"{share.memory_bytes // 2**20} MiB",
                )
        return Verdict(False)

    def observe(self, shares: dict[str, Share]) -> bool | None:
        """Take a sample; return True when the owner just came, False when they just left, else None."""
        now = self._clock()
        self._last_sample = now
        if self.policy.owner_time:
            return self._set(True, "outside the node's scheduled hours") if not self.active else None
        if not self.policy.watch:
            return self._set(False, "the node's policy gives the GPUs back") if self.active else None
        verdict = self.evidence(shares)
        if verdict.active:
            self._last_seen = now
            self.reason = verdict.reason
            return self._set(True, verdict.reason) if not self.active else None
        if self.active and now - self._last_seen >= self.policy.grace_seconds:
            return self._set(False, f"no sign of the owner for {self.policy.grace_seconds} s")
        return None

    def _set(self, active: bool, reason: str) -> bool:
        self.active = active
        self.reason = reason
        log.info("owner %s: %s", "active" if active else "gone", reason)
        return active
