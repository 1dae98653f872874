"""The runtime interface: start, watch, stop and re-attach to placements' workloads."""

from __future__ import annotations

import abc
import enum
import logging
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

from agent.slicing import ContainerGpuSettings


def now_ms() -> int:
    """Return the wall-clock time in Unix milliseconds (what state changes are stamped with)."""
    return int(time.time() * 1000)


log = logging.getLogger(__name__)

LABEL_PLACEMENT = "io.janction.placement-id"
LABEL_MANAGED = "io.janction.managed"
CONTAINER_PREFIX = "janction-"
DEFAULT_MEMORY_BYTES = 2 * 1024**3
DEFAULT_PIDS_LIMIT = 512
# Two cores when the platform sends no CPU limit: a workload never gets the whole host by default.
DEFAULT_CPU_MILLICORES = 2000
DEFAULT_TMPFS_BYTES = 256 * 1024**2
DEFAULT_GRACE_SECONDS = 10
MAX_LINE_BYTES = 16 * 1024
UNPRIVILEGED_USER = "65534:65534"
CONTAINER_TMP = "/tmp"  # noqa: S108 - the container's private tmpfs, not a host path
MPS_PIPE_DIRECTORY = "/tmp/nvidia-mps"  # noqa: S108 - NVIDIA's default MPS pipe directory on the host


class WorkloadState(enum.StrEnum):
    """Life-cycle states of a placement's workload."""

    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"
    FAILED = "failed"
    # Gone for a reason on the provider's side (the agent restarted or shut down under it), not the workload's.
    LOST = "lost"
    # Frozen while the node's owner uses the GPU (agent.colocation); not finished.
    PAUSED = "paused"

    @property
    def finished(self) -> bool:
        """Return whether the workload will not run again."""
        return self in (WorkloadState.EXITED, WorkloadState.FAILED, WorkloadState.LOST)


class RuntimeUnavailable(RuntimeError):
    """The runtime's engine is not installed or not reachable."""


@dataclass(frozen=True)
class PortSpec:
    """A container port to publish."""

    container_port: int
    host_port: int = 0
    protocol: str = "tcp"


@dataclass(frozen=True)
class PlacementSpec:
    """Everything a runtime needs to start one placement."""

    placement_id: str
    image: str
    command: tuple[str, ...]
    env: dict[str, str]
    gpu: ContainerGpuSettings
    memory_limit_bytes: int = DEFAULT_MEMORY_BYTES
    cpu_millicores: int = DEFAULT_CPU_MILLICORES
    pids_limit: int = DEFAULT_PIDS_LIMIT
    network_allowed: bool = False
    ports: tuple[PortSpec, ...] = ()
    # Overlay segment (docs/overlay.md): run in this prepared network namespace, with these names in /etc/hosts.
    netns_path: str = ""
    hosts: tuple[tuple[str, str], ...] = ()

    @property
    def container_name(self) -> str:
        """Return the container name derived from the placement id."""
        return container_name(self.placement_id)


def container_name(placement_id: str) -> str:
    """Return the container name of a placement."""
    safe = "".join(char if char.isalnum() or char in "_.-" else "_" for char in placement_id)
    return f"{CONTAINER_PREFIX}{safe}"


@dataclass(frozen=True)
class LogLine:
    """One line a workload wrote; `cursor` lets a re-attached runtime resume after it."""

    placement_id: str
    stream: str
    text: str
    cursor: str = ""


@dataclass(frozen=True)
class StateChange:
    """A workload's transition to a new state."""

    placement_id: str
    state: WorkloadState
    at_ms: int
    exit_code: int | None = None
    message: str = ""
    # With RUNNING: which limits the runtime could not enforce and why; empty when all are enforced.
    limits_not_enforced: str = ""


@dataclass(frozen=True)
class WorkloadInfo:
    """A workload the runtime still knows about (for re-attaching after an agent restart)."""

    placement_id: str
    running: bool
    exit_code: int | None = None
    finished_at_ms: int = 0


class RuntimeEvents(Protocol):
    """Receiver of a runtime's log lines and state changes."""

    def on_log(self, line: LogLine) -> None:
        """Take one log line."""

    def on_state(self, change: StateChange) -> None:
        """Take one state change."""


class Runtime(abc.ABC):
    """Runs placements as isolated workloads and reports on them."""

    name: str = ""
    supports_network: bool = True

    @abc.abstractmethod
    def check_available(self) -> None:
        """Raise RuntimeUnavailable with a helpful message when the engine cannot be used."""

    @abc.abstractmethod
    def start(self, spec: PlacementSpec, events: RuntimeEvents) -> None:
        """Launch the workload in the background; report RUNNING, logs, then EXITED or FAILED."""

    @abc.abstractmethod
    def stop(self, placement_id: str, grace_seconds: int = DEFAULT_GRACE_SECONDS) -> None:
        """Ask the workload to stop without waiting: SIGTERM, then SIGKILL after the grace period."""

    @abc.abstractmethod
    def list_workloads(self) -> list[WorkloadInfo]:
        """Return the agent's workloads the engine still holds, running or exited."""

    @abc.abstractmethod
    def attach(self, placement_id: str, events: RuntimeEvents, log_cursor: str = "") -> None:
        """Follow a running workload again (after an agent restart), from after log_cursor."""

    @abc.abstractmethod
    def remove(self, placement_id: str) -> None:
        """Delete an exited workload's leftovers."""

    # -- colocation (see agent.colocation); a runtime that cannot pause says so and is stopped instead ------

    supports_pause: bool = False

    def pause(self, placement_id: str) -> bool:
        """Freeze the workload (its processes stop, its memory and GPU memory stay); return whether it is frozen."""
        return False

    def resume(self, placement_id: str) -> bool:
        """Thaw a frozen workload; return whether it runs again."""
        return False

    def placement_of_process(self, pid: int, cgroup: str) -> str | None:
        """Return the placement whose workload the process belongs to (from its /proc cgroup text), or None."""
        return None


def pump_lines(pipe: IO[bytes], emit: Callable[[str], None]) -> None:
    """Read a binary pipe to its end and emit each line without its newline."""
    with pipe:
        while chunk := pipe.readline(MAX_LINE_BYTES):
            emit(chunk.decode("utf-8", errors="replace").rstrip("\r\n"))


def start_thread(target: Callable[..., None], *args: object, name: str) -> threading.Thread:
    """Start a daemon thread that logs instead of dying silently."""

    def run() -> None:
        try:
            target(*args)
        except Exception:
            log.exception("thread %s failed", name)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def container_ulimits() -> list[tuple[str, int]]:
    """Return the nofile and nproc limits for containers, within what this host permits."""
    limits = []
    for name, which, wanted in (("nofile", resource.RLIMIT_NOFILE, 65536), ("nproc", resource.RLIMIT_NPROC, 16384)):
        _, hard = resource.getrlimit(which)
        limits.append((name, wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)))
    return limits
