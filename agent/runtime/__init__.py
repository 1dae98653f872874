"""Container runtimes behind one interface: podman, docker (Engine API) and the bubblewrap sandbox."""

from pathlib import Path

from agent.runtime.base import (
    LogLine,
    PlacementSpec,
    PortSpec,
    Runtime,
    RuntimeEvents,
    RuntimeUnavailable,
    StateChange,
    WorkloadInfo,
    WorkloadState,
)
from agent.runtime.disk import DEFAULT_IMAGE_DISK_QUOTA_BYTES, ImageDiskQuota, ImageLedger
from agent.runtime.docker import DockerRuntime
from agent.runtime.egress import EgressPolicy
from agent.runtime.netns import (
    ConnectTimedOut,
    ContainerNotListening,
    PlacementNotRunning,
    PlacementPaused,
    ServiceConnectError,
    ServiceConnectionsUnavailable,
)
from agent.runtime.podman import PodmanRuntime
from agent.runtime.sandbox import SandboxRuntime

RUNTIME_NAMES = ("podman", "docker", "sandbox")


def make_runtime(
    name: str,
    *,
    hidden_paths: tuple[str, ...] = (),
    docker_socket: str | None = None,
    oci_runtime: str | None = "runc",
    image_disk_quota: int = DEFAULT_IMAGE_DISK_QUOTA_BYTES,
    image_ledger: Path | None = None,
    allow_egress: bool = False,
) -> Runtime:
    """Return the runtime called `name`; container runtimes keep their images within `image_disk_quota` bytes."""
    quota = ImageDiskQuota(image_disk_quota, ImageLedger(image_ledger))
    if name == "podman":
        egress = EgressPolicy() if allow_egress else None
        return PodmanRuntime(oci_runtime=oci_runtime, disk_quota=quota, egress=egress)
    if name == "docker":
        return (
            DockerRuntime(socket_path=docker_socket, disk_quota=quota)
            if docker_socket
            else DockerRuntime(disk_quota=quota)
        )
    if name == "sandbox":
        return SandboxRuntime(hidden_paths=hidden_paths)
    raise ValueError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIME_NAMES)}")


__all__ = [
    "RUNTIME_NAMES",
    "ConnectTimedOut",
    "ContainerNotListening",
    "DockerRuntime",
    "LogLine",
    "PlacementNotRunning",
    "PlacementPaused",
    "PlacementSpec",
    "PodmanRuntime",
    "PortSpec",
    "Runtime",
    "RuntimeEvents",
    "RuntimeUnavailable",
    "SandboxRuntime",
    "ServiceConnectError",
    "ServiceConnectionsUnavailable",
    "StateChange",
    "WorkloadInfo",
    "WorkloadState",
    "make_runtime",
]
