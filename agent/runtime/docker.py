"""Docker runtime: the same locked-down containers through the Docker Engine HTTP API on a unix socket."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import socket
import struct
import urllib.parse
from collections.abc import Callable
from typing import Any

from agent.runtime.base import (
    CONTAINER_TMP,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_TMPFS_BYTES,
    LABEL_MANAGED,
    LABEL_PLACEMENT,
    MAX_LINE_BYTES,
    MPS_PIPE_DIRECTORY,
    UNPRIVILEGED_USER,
    PlacementSpec,
    Runtime,
    RuntimeEvents,
    RuntimeUnavailable,
    StateChange,
    WorkloadInfo,
    WorkloadState,
    container_name,
    container_ulimits,
    now_ms,
    start_thread,
)
from agent.runtime.disk import DiskQuotaExceeded, ImageDiskQuota, ImageStore, StoredImage
from agent.runtime.logs import NANOS, TimestampedLogForwarder, cursor_ns, timestamp_ms
from agent.runtime.netns import NamespaceTarget, PlacementNotRunning, running_container_target

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/run/docker.sock"
REQUEST_TIMEOUT_SECONDS = 60
PULL_TIMEOUT_SECONDS = 1800
STREAMS = {1: "stdout", 2: "stderr"}


class DockerApiError(RuntimeError):
    """The engine answered a request with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock


def _query(**params: object) -> str:
    return "?" + urllib.parse.urlencode({key: value for key, value in params.items() if value is not None})


class DockerRuntime(Runtime):
    """Containers through the Docker Engine API (Docker, or podman's Docker-compatible service)."""

    name = "docker"

    def __init__(
        self,
        *,
        socket_path: str = DEFAULT_SOCKET,
        tmpfs_bytes: int = DEFAULT_TMPFS_BYTES,
        mps_pipe_directory: str = MPS_PIPE_DIRECTORY,
        disk_quota: ImageDiskQuota | None = None,
    ) -> None:
        self._socket_path = socket_path
        self._tmpfs_bytes = tmpfs_bytes
        self._mps_pipe_directory = mps_pipe_directory
        self.disk_quota = disk_quota or ImageDiskQuota()
        self._images = _DockerImages(self)
        # Container id -> placement id of the containers this agent started or re-attached to.
        self._container_ids: dict[str, str] = {}

    def _open(self, method: str, path: str, body: Any = None, timeout: float | None = REQUEST_TIMEOUT_SECONDS):
        connection = _UnixConnection(self._socket_path, timeout)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        if response.status >= 400:
            text = response.read().decode(errors="replace")
            connection.close()
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise DockerApiError(response.status, message.strip())
        return connection, response

    def _call(self, method: str, path: str, body: Any = None, timeout: float | None = REQUEST_TIMEOUT_SECONDS) -> Any:
        connection, response = self._open(method, path, body, timeout)
        with contextlib.closing(connection):
            data = response.read()
        return json.loads(data) if data.strip() else None

    def check_available(self) -> None:
        """Raise RuntimeUnavailable unless the engine answers on the socket."""
        if not os.path.exists(self._socket_path):
            raise RuntimeUnavailable(
                f"no Docker socket at {self._socket_path}; start Docker, pass --docker-socket, "
                "or use --runtime podman or sandbox"
            )
        try:
            self._call("GET", "/version")
        except (OSError, DockerApiError) as exc:
            raise RuntimeUnavailable(f"the Docker engine at {self._socket_path} does not answer: {exc}") from exc

    def create_body(self, spec: PlacementSpec) -> dict[str, Any]:
        """Return the /containers/create request body for a placement."""
        env = {**spec.env, **spec.gpu.env}
        host: dict[str, Any] = {
            "Init": True,
            "ReadonlyRootfs": True,
            "Tmpfs": {CONTAINER_TMP: f"rw,nosuid,nodev,size={self._tmpfs_bytes},mode=1777"},
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "Memory": spec.memory_limit_bytes,
            "MemorySwap": spec.memory_limit_bytes,
            "PidsLimit": spec.pids_limit,
            "Ulimits": [{"Name": name, "Soft": limit, "Hard": limit} for name, limit in container_ulimits()],
        }
        if spec.cpu_millicores:
            host["NanoCpus"] = spec.cpu_millicores * 1_000_000
        body: dict[str, Any] = {
            "Image": spec.image,
            "Labels": {LABEL_PLACEMENT: spec.placement_id, LABEL_MANAGED: "true"},
            "User": UNPRIVILEGED_USER,
        }
        if spec.command:
            body["Cmd"] = list(spec.command)
        # No network and nothing published: internet egress needs the podman runtime (agent.runtime.egress).
        host["NetworkMode"] = "none"
        if not spec.gpu.fake and spec.gpu.device_uuids:
            device_ids = [f"nvidia.com/gpu={uuid}" for uuid in spec.gpu.device_uuids]
            host["DeviceRequests"] = [{"Driver": "cdi", "DeviceIDs": device_ids}]
            if spec.gpu.uses_mps:
                pipe = self._mps_pipe_directory
                host["IpcMode"] = "host"
                host["Binds"] = [f"{pipe}:{pipe}"]
                env["CUDA_MPS_PIPE_DIRECTORY"] = pipe
        body["Env"] = [f"{key}={value}" for key, value in env.items()]
        body["HostConfig"] = host
        return body

    def start(self, spec: PlacementSpec, events: RuntimeEvents) -> None:
        """Create and start the container in the background, then follow it."""
        start_thread(self._start_and_follow, spec, events, name=f"docker-{spec.placement_id}")

    def _start_and_follow(self, spec: PlacementSpec, events: RuntimeEvents) -> None:
        name = spec.container_name
        if spec.network_allowed:
            message = "the docker runtime gives containers no network; internet egress needs --runtime podman"
            events.on_state(StateChange(spec.placement_id, WorkloadState.FAILED, now_ms(), message=message))
            return
        try:
            self._delete(name)
            with self.disk_quota.reserved(self._images, spec.image):
                self._call("POST", f"/containers/create{_query(name=name)}", self.create_body(spec))
            self._call("POST", f"/containers/{name}/start")
            info = self._call("GET", f"/containers/{name}/json")
        except DiskQuotaExceeded as exc:
            # The provider's limit, not the buyer's fault: LOST lets the platform requeue the rental elsewhere.
            events.on_state(StateChange(spec.placement_id, WorkloadState.LOST, now_ms(), message=str(exc)))
            return
        except (OSError, RuntimeError) as exc:
            self._delete(name)
            events.on_state(StateChange(spec.placement_id, WorkloadState.FAILED, now_ms(), message=str(exc)))
            return
        if info.get("Id"):
            self._container_ids[info["Id"]] = spec.placement_id
        self._service_seed(spec.placement_id, info.get("State") or {})
        started = timestamp_ms(info["State"].get("StartedAt", "")) or now_ms()
        events.on_state(StateChange(spec.placement_id, WorkloadState.RUNNING, started))
        self._follow(spec.placement_id, events, "")

    def _follow(self, placement_id: str, events: RuntimeEvents, cursor: str) -> None:
        name = container_name(placement_id)
        since = cursor_ns(cursor) // NANOS if cursor else None
        forwarder = TimestampedLogForwarder(placement_id, events, cursor)
        path = f"/containers/{name}/logs{_query(follow=1, stdout=1, stderr=1, timestamps=1, since=since)}"
        try:
            connection, response = self._open("GET", path, timeout=None)
            with contextlib.closing(connection):
                _demultiplex(response, forwarder.forward)
        except (OSError, DockerApiError) as exc:
            log.warning("log stream of %s ended: %s", name, exc)
        self._report_exit(placement_id, events)

    def _report_exit(self, placement_id: str, events: RuntimeEvents) -> None:
        name = container_name(placement_id)
        try:
            waited = self._call("POST", f"/containers/{name}/wait", timeout=None)
            state = self._call("GET", f"/containers/{name}/json")["State"]
        except (OSError, DockerApiError) as exc:
            # Removed under the workload on the host: the provider's side, not the workload's.
            message = f"container {name} disappeared: {exc}"
            events.on_state(StateChange(placement_id, WorkloadState.LOST, now_ms(), message=message))
            return
        exit_code = int(state.get("ExitCode", waited.get("StatusCode", -1)))
        finished = timestamp_ms(state.get("FinishedAt", "")) or now_ms()
        events.on_state(StateChange(placement_id, WorkloadState.EXITED, finished, exit_code=exit_code))

    def stop(self, placement_id: str, grace_seconds: int = DEFAULT_GRACE_SECONDS) -> None:
        """Stop the container in the background; its follower reports the exit."""
        start_thread(self._stop, placement_id, grace_seconds, name=f"docker-stop-{placement_id}")

    def _stop(self, placement_id: str, grace_seconds: int) -> None:
        path = f"/containers/{container_name(placement_id)}/stop{_query(t=grace_seconds)}"
        try:
            self._call("POST", path, timeout=grace_seconds + REQUEST_TIMEOUT_SECONDS)
        except (OSError, DockerApiError) as exc:
            log.warning("stopping %s failed: %s", placement_id, exc)

    def list_workloads(self) -> list[WorkloadInfo]:
        """Return the agent's containers, running or exited, found by label."""
        filters = json.dumps({"label": [f"{LABEL_MANAGED}=true"]})
        try:
            entries = self._call("GET", f"/containers/json{_query(all=1, filters=filters)}") or []
        except (OSError, DockerApiError) as exc:
            raise RuntimeUnavailable(f"listing containers failed: {exc}") from exc
        workloads = []
        for entry in entries:
            placement_id = (entry.get("Labels") or {}).get(LABEL_PLACEMENT)
            if not placement_id:
                continue
            if entry.get("State") == "running":
                workloads.append(WorkloadInfo(placement_id, running=True))
                continue
            try:
                state = self._call("GET", f"/containers/{entry['Id']}/json")["State"]
            except DockerApiError as exc:
                if exc.status == 404:
                    continue
                raise RuntimeUnavailable(f"inspecting container {entry['Id']} failed: {exc}") from exc
            workloads.append(
                WorkloadInfo(
                    placement_id,
                    running=False,
                    exit_code=int(state.get("ExitCode", -1)),
                    finished_at_ms=timestamp_ms(state.get("FinishedAt", "")),
                )
            )
        return workloads

    def attach(self, placement_id: str, events: RuntimeEvents, log_cursor: str = "") -> None:
        """Follow a container that outlived an agent restart."""
        with contextlib.suppress(OSError, RuntimeError):
            info = self._call("GET", f"/containers/{container_name(placement_id)}/json")
            if info.get("Id"):
                self._container_ids[info["Id"]] = placement_id
        start_thread(self._follow, placement_id, events, log_cursor, name=f"docker-attach-{placement_id}")

    def remove(self, placement_id: str) -> None:
        """Delete the placement's container."""
        self._service_forget(placement_id)
        self._delete(container_name(placement_id))

    supports_service_connections = True

    def service_target(self, placement_id: str) -> NamespaceTarget:
        """Return the container's init process (the engine must be local: its pids are this host's)."""
        try:
            info = self._call("GET", f"/containers/{container_name(placement_id)}/json")
        except (OSError, RuntimeError) as exc:
            raise PlacementNotRunning(f"placement {placement_id} does not run on this agent") from exc
        if self._container_ids.get(info.get("Id", "")) != placement_id:
            raise PlacementNotRunning(f"placement {placement_id} does not run on this agent")
        return running_container_target(placement_id, info.get("State") or {})

    def _delete(self, name: str) -> None:
        try:
            self._call("DELETE", f"/containers/{name}{_query(force=1)}")
        except DockerApiError as exc:
            if exc.status != 404:
                raise


def _demultiplex(response: http.client.HTTPResponse, emit: Callable[[str, str], None]) -> None:
    """Split Docker's multiplexed log stream into lines and emit (stream, line) pairs."""
    partial = {"stdout": b"", "stderr": b""}
    while header := response.read(8):
        if len(header) < 8:
            break
        stream = STREAMS.get(header[0], "stdout")
        (size,) = struct.unpack(">I", header[4:8])
        data = partial[stream] + response.read(size)
        *lines, rest = data.split(b"\n")
        for line in lines:
            emit(stream, line.decode("utf-8", errors="replace").rstrip("\r"))
        if len(rest) > MAX_LINE_BYTES:
            emit(stream, rest.decode("utf-8", errors="replace"))
            rest = b""
        partial[stream] = rest
    for stream, rest in partial.items():
        if rest:
            emit(stream, rest.decode("utf-8", errors="replace"))


class _DockerImages(ImageStore):
    """The Docker Engine's image store, as the disk quota sees it."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self._runtime = runtime

    def local_image(self, reference: str) -> StoredImage | None:
        try:
            info = self._runtime._call("GET", f"/images/{urllib.parse.quote(reference, safe='')}/json")
        except DockerApiError as exc:
            if exc.status == 404:
                return None
            raise
        return StoredImage(info["Id"], int(info.get("Size", 0)))

    def images(self) -> dict[str, int]:
        return {entry["Id"]: int(entry.get("Size", 0)) for entry in self._runtime._call("GET", "/images/json") or []}

    def images_in_use(self) -> set[str]:
        return {entry.get("ImageID", "") for entry in self._runtime._call("GET", f"/containers/json{_query(all=1)}")}

    def agent_container_bytes(self) -> int:
        filters = json.dumps({"label": [f"{LABEL_MANAGED}=true"]})
        entries = self._runtime._call("GET", f"/containers/json{_query(all=1, size=1, filters=filters)}") or []
        return sum(int(entry.get("SizeRw") or 0) for entry in entries)

    def remove_image(self, image_id: str) -> bool:
        try:
            self._runtime._call("DELETE", f"/images/{image_id}")
        except DockerApiError:
            return False
        return True

    def remote_size(self, reference: str) -> int | None:
        return None  # the Engine API reports only the manifest's size before a pull, not the layers'

    def pull(self, reference: str) -> None:
        connection, response = self._runtime._open(
            "POST", f"/images/create{_query(fromImage=reference)}", None, PULL_TIMEOUT_SECONDS
        )
        with contextlib.closing(connection):
            for line in response:
                error = json.loads(line).get("error") if line.strip() else None
                if error:
                    raise DockerApiError(500, error)
