"""The runtime interface: start, watch, stop and re-attach to placements' workloads."""

from __future__ import annotations

import abc
import enum
import logging
import math
import os
import resource
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

from agent.runtime.netns import (
    NamespaceTarget,
    PlacementNotRunning,
    PlacementPaused,
    ServiceConnectionsUnavailable,
    check_namespace_entry,
    connect_in_namespace,
    running_container_target,
)
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


class _ServiceTargets:
    """Per runtime: the cached namespace process of each placement, and the placements now frozen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.targets: dict[str, NamespaceTarget] = {}
        self.paused: set[str] = set()


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
    # Whether a placement may ask for internet egress on this node (see agent.runtime.egress).
    egress_allowed: bool = False

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

    # -- connections into workloads (service rentals; see agent.runtime.netns) ------------------------------

    supports_service_connections: bool = False

    def service_target(self, placement_id: str) -> NamespaceTarget:
        """Return a process of the placement's running workload (its network namespace is the workload's).

        Raise PlacementNotRunning when this runtime did not start (or re-attach to) the placement, or it
        does not run.
        """
        raise ServiceConnectionsUnavailable(f"the {self.name} runtime cannot open connections into workloads")

    def check_service_connections(self) -> None:
        """Raise ServiceConnectionsUnavailable, saying what to do, unless open_connection can work here."""
        if not self.supports_service_connections:
            raise ServiceConnectionsUnavailable(f"the {self.name} runtime cannot open connections into workloads")
        check_namespace_entry()

    def open_connection(self, placement_id: str, container_port: int, timeout: float) -> socket.socket:
        """Return a blocking TCP socket connected to 127.0.0.1:container_port inside the placement's workload.

        The workload has no network of its own to the host: the socket is created in its network namespace.
        Raises ValueError for a port outside 1..65535 or a timeout that is not a positive number, and a
        ServiceConnectError subclass otherwise: PlacementNotRunning (unknown, another agent's, stopped),
        PlacementPaused, ContainerNotListening, ConnectTimedOut or ServiceConnectionsUnavailable.
        """
        if isinstance(container_port, bool) or not isinstance(container_port, int) or not 1 <= container_port <= 65535:
            raise ValueError(f"container port must be an integer from 1 to 65535, not {container_port!r}")
        if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        services = self._service_targets()
        with services.lock:
            cached = services.targets.get(placement_id)
            paused = placement_id in services.paused
        if paused:
            raise PlacementPaused(f"placement {placement_id} is paused while the node's owner uses the GPU")
        if cached is not None:
            try:
                return connect_in_namespace(cached, container_port, timeout)
            except PlacementNotRunning:
                with services.lock:
                    if services.targets.get(placement_id) == cached:
                        del services.targets[placement_id]
        target = self.service_target(placement_id)
        with services.lock:
            services.targets[placement_id] = target
        return connect_in_namespace(target, container_port, timeout)

    def _service_targets(self) -> _ServiceTargets:
        # Created on first use, so that runtimes need no __init__ call for it; setdefault keeps one per runtime.
        state = self.__dict__.get("_service_state")
        if state is None:
            state = self.__dict__.setdefault("_service_state", _ServiceTargets())
        return state

    def _service_seed(self, placement_id: str, state: dict) -> None:
        """Cache the process of a container just started (its inspected State), so the first connection is quick."""
        try:
            target = running_container_target(placement_id, state)
        except PlacementNotRunning:
            return  # not running (yet): open_connection looks it up
        services = self._service_targets()
        with services.lock:
            services.targets[placement_id] = target

    def _service_paused(self, placement_id: str, paused: bool) -> None:
        """Record that a placement was frozen or thawed (open_connection refuses a frozen one)."""
        services = self._service_targets()
        with services.lock:
            if paused:
                services.paused.add(placement_id)
            else:
                services.paused.discard(placement_id)

    def _service_forget(self, placement_id: str) -> None:
        """Drop what open_connection cached for a placement that ended or was removed."""
        services = self._service_targets()
        with services.lock:
            services.targets.pop(placement_id, None)
            services.paused.discard(placement_id)


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


FAKE_NVIDIA_SMI = "nvidia-smi"


def write_fake_nvidia_smi(directory: str, lines: tuple[str, ...]) -> str:
    """Write a stand-in nvidia-smi for fake GPUs into `directory` and return its path.

    It prints the "name, memory MiB" lines whatever it is asked (what `--query-gpu=name,memory.total
    --format=csv,noheader,nounits` prints on a real GPU); everyone may read and run it, so a workload running
    as nobody can. The lines come from the agent's own model table (agent.nvml.fake), never from the platform.
    """
    for line in lines:
        if not all(char.isalnum() or char in " ,.-_()" for char in line):
            raise ValueError(f"unexpected character in a fake GPU's description {line!r}")
    path = os.path.join(directory, FAKE_NVIDIA_SMI)
    body = "".join(f"echo '{line}'\n" for line in lines)
    with open(path, "w") as script:
        script.write(f"#!/bin/sh\n# A fake GPU's nvidia-smi (janction agent --fake-gpus).\n{body}")
    os.chmod(directory, 0o755)  # noqa: S103 - the workload (nobody) must reach it
    os.chmod(path, 0o755)  # noqa: S103 - and run it
    return path


def container_ulimits() -> list[tuple[str, int]]:
    """Return the nofile and nproc limits for containers, within what this host permits."""
    limits = []
    for name, which, wanted in (("nofile", resource.RLIMIT_NOFILE, 65536), ("nproc", resource.RLIMIT_NPROC, 16384)):
        _, hard = resource.getrlimit(which)
        limits.append((name, wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)))
    return limits
