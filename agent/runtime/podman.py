"""Podman runtime: one rootful, locked-down container per placement, driven through the podman CLI."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile

from agent.runtime.base import (
    CONTAINER_TMP,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_TMPFS_BYTES,
    LABEL_MANAGED,
    LABEL_PLACEMENT,
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
    pump_lines,
    start_thread,
    write_fake_nvidia_smi,
)
from agent.runtime.disk import DiskQuotaExceeded, ImageDiskQuota, ImageStore, StoredImage
from agent.runtime.egress import EgressPolicy, EgressRules, EgressUnavailable
from agent.runtime.logs import TimestampedLogForwarder, cursor_ns, format_timestamp_ns, timestamp_ms
from agent.runtime.netns import NamespaceTarget, PlacementNotRunning, running_container_target

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 1800
PULL_TIMEOUT_SECONDS = 1800
COMMAND_TIMEOUT_SECONDS = 60
# A container's cgroup under the cgroupfs and systemd managers: .../libpod-<64 hex>[.scope].
# Where a fake GPU's stand-in nvidia-smi appears in the container (where the NVIDIA toolkit mounts the real one).
FAKE_NVIDIA_SMI_PATH = "/usr/bin/nvidia-smi"
LIBPOD_SCOPE = re.compile(r"libpod-(?P<id>[0-9a-f]{64})")


def env_file_text(env: dict[str, str]) -> str:
    """Return the --env-file contents for env; values may not contain newlines."""
    for key, value in env.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"environment variable {key} contains a newline")
    return "".join(f"{key}={value}\n" for key, value in env.items())


class PodmanRuntime(Runtime):
    """Containers through the podman CLI (`--runtime runc` by default)."""

    name = "podman"

    def __init__(
        self,
        *,
        binary: str = "podman",
        oci_runtime: str | None = "runc",
        tmpfs_bytes: int = DEFAULT_TMPFS_BYTES,
        mps_pipe_directory: str = MPS_PIPE_DIRECTORY,
        disk_quota: ImageDiskQuota | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self._binary = binary
        # None: the node does not allow internet egress, and a placement that asks for it fails.
        self.egress_rules = EgressRules(egress) if egress is not None else None
        self._oci_runtime = oci_runtime
        self._tmpfs_bytes = tmpfs_bytes
        self._mps_pipe_directory = mps_pipe_directory
        self.disk_quota = disk_quota or ImageDiskQuota()
        self._images = _PodmanImages(self)
        # Container id -> placement id of the containers this agent started or re-attached to (colocation).
        self._container_ids: dict[str, str] = {}

    def _command(self, *args: str) -> list[str]:
        runtime = ["--runtime", self._oci_runtime] if self._oci_runtime else []
        return [self._binary, *runtime, *args]

    def _run(self, *args: str, timeout: float = COMMAND_TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._command(*args), capture_output=True, text=True, timeout=timeout, check=False)

    def check_available(self) -> None:
        """Raise RuntimeUnavailable unless podman runs."""
        if shutil.which(self._binary) is None:
            raise RuntimeUnavailable(
                f"{self._binary} is not installed; install podman and runc (apt-get install podman runc) "
                "or use --runtime sandbox"
            )
        result = self._run("info", "--format", "{{.Host.OCIRuntime.Name}}")
        if result.returncode != 0:
            raise RuntimeUnavailable(f"podman does not work here: {result.stderr.strip()[-500:]}")

    def run_arguments(self, spec: PlacementSpec, env_file: str, nvidia_smi: str | None = None) -> list[str]:
        """Return the `podman run` arguments (after the global flags) for a placement.

        `nvidia_smi`: a fake GPU's stand-in nvidia-smi on the host, mounted where the NVIDIA toolkit puts the real one.
        """
        args = [
            "run",
            "--detach",
            # The quota pulled (or refused) the image already: podman must never pull behind its back.
            "--pull",
            "never",
            "--init",
            "--name",
            spec.container_name,
            "--label",
            f"{LABEL_PLACEMENT}={spec.placement_id}",
            "--label",
            f"{LABEL_MANAGED}=true",
            "--user",
            UNPRIVILEGED_USER,
            "--read-only",
            "--tmpfs",
            f"{CONTAINER_TMP}:rw,nosuid,nodev,notmpcopyup,size={self._tmpfs_bytes},mode=1777",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--memory",
            str(spec.memory_limit_bytes),
            "--memory-swap",
            str(spec.memory_limit_bytes),
            "--pids-limit",
            str(spec.pids_limit),
            "--env-file",
            env_file,
        ]
        for name, limit in container_ulimits():
            args += ["--ulimit", f"{name}={limit}:{limit}"]
        if spec.cpu_millicores:
            args += ["--cpus", f"{spec.cpu_millicores / 1000:g}"]
        # Nothing is ever published: the agent reaches services through the namespace (agent.runtime.netns).
        if spec.netns_path:
            # The overlay prepared the namespace (its only link is the segment's eth0): nothing else to reach.
            args += ["--network", f"ns:{spec.netns_path}"]
            for name, address in spec.hosts:
                args += ["--add-host", f"{name}:{address}"]
        elif spec.network_allowed and self.egress_rules is not None:
            args += ["--network", spec.container_name]
            for server in self.egress_rules.policy.dns:
                args += ["--dns", server]
        else:
            args += ["--network", "none"]
        if nvidia_smi:
            args += ["--volume", f"{nvidia_smi}:{FAKE_NVIDIA_SMI_PATH}:ro"]
        if not spec.gpu.fake:
            for uuid in spec.gpu.device_uuids:
                args += ["--device", f"nvidia.com/gpu={uuid}"]
            if spec.gpu.uses_mps:
                pipe = self._mps_pipe_directory
                args += ["--ipc", "host", "--volume", f"{pipe}:{pipe}", "--env", f"CUDA_MPS_PIPE_DIRECTORY={pipe}"]
        # "--" ends the options: whatever the image reference says, podman reads it as the image.
        return [*args, "--", spec.image, *spec.command]

    def start(self, spec: PlacementSpec, events: RuntimeEvents) -> None:
        """Create and start the container in the background, then follow it."""
        start_thread(self._start_and_follow, spec, events, name=f"podman-{spec.placement_id}")

    @property
    def egress_allowed(self) -> bool:
        """Return whether a placement may ask for internet egress here (the agent's --allow-egress)."""
        return self.egress_rules is not None

    def _start_and_follow(self, spec: PlacementSpec, events: RuntimeEvents) -> None:
        self._run("rm", "--force", "--ignore", spec.container_name)
        if spec.network_allowed:
            if self.egress_rules is None:
                message = (
                    "this node does not allow internet egress (its agent runs without --allow-egress); "
                    "the rental must run without network access or on another node"
                )
                events.on_state(StateChange(spec.placement_id, WorkloadState.FAILED, now_ms(), message=message))
                return
            try:
                self._create_egress_network(spec.placement_id)
            except EgressUnavailable as exc:
                # The provider's side: LOST lets the platform place the rental elsewhere.
                self._remove_egress_network(spec.placement_id)
                message = f"internet egress could not be set up safely: {exc}"
                events.on_state(StateChange(spec.placement_id, WorkloadState.LOST, now_ms(), message=message))
                return
        try:
            env_text = env_file_text({**spec.env, **spec.gpu.env})
        except ValueError as exc:
            events.on_state(StateChange(spec.placement_id, WorkloadState.FAILED, now_ms(), message=str(exc)))
            return
        try:
            with (
                self.disk_quota.reserved(self._images, spec.image),
                tempfile.NamedTemporaryFile("w", prefix="janction-env-", suffix=".env") as env_file,
                tempfile.TemporaryDirectory(prefix="janction-gpu-") as gpu_tools,
            ):
                env_file.write(env_text)
                env_file.flush()
                # Mounted when the container starts (podman run returns after that), so the file may go after.
                nvidia_smi = None
                if spec.gpu.fake and spec.gpu.nvidia_smi_lines:
                    nvidia_smi = write_fake_nvidia_smi(gpu_tools, spec.gpu.nvidia_smi_lines)
                arguments = self.run_arguments(spec, env_file.name, nvidia_smi)
                try:
                    result = self._run(*arguments, timeout=START_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    result = subprocess.CompletedProcess([], 1, "", "podman run timed out")
        except DiskQuotaExceeded as exc:
            # The provider's limit, not the buyer's fault: LOST lets the platform requeue the rental elsewhere.
            events.on_state(StateChange(spec.placement_id, WorkloadState.LOST, now_ms(), message=str(exc)))
            return
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            events.on_state(StateChange(spec.placement_id, WorkloadState.FAILED, now_ms(), message=str(exc)))
            return
        if result.returncode != 0:
            self._run("rm", "--force", "--ignore", spec.container_name)
            self._remove_egress_network(spec.placement_id)
            message = result.stderr.strip()[-1000:] or f"podman run exited with {result.returncode}"
            events.on_state(StateChange(spec.placement_id, WorkloadState.FAILED, now_ms(), message=message))
            return
        info = self._inspect(spec.container_name) or {}
        if info.get("Id"):
            self._container_ids[info["Id"]] = spec.placement_id
        self._service_seed(spec.placement_id, info.get("State") or {})
        started = timestamp_ms(info.get("State", {}).get("StartedAt", "")) or now_ms()
        events.on_state(StateChange(spec.placement_id, WorkloadState.RUNNING, started))
        self._follow(spec.placement_id, events, "")

    def _follow(self, placement_id: str, events: RuntimeEvents, cursor: str) -> None:
        name = container_name(placement_id)
        since = ["--since", format_timestamp_ns(cursor_ns(cursor))] if cursor else []
        forwarder = TimestampedLogForwarder(placement_id, events, cursor)
        process = subprocess.Popen(
            self._command("logs", "--follow", "--timestamps", *since, name),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        readers = [
            start_thread(pump_lines, pipe, lambda raw, stream=stream: forwarder.forward(stream, raw), name=stream)
            for stream, pipe in (("stdout", process.stdout), ("stderr", process.stderr))
        ]
        for reader in readers:
            reader.join()
        process.wait()
        self._report_exit(placement_id, events)

    def _report_exit(self, placement_id: str, events: RuntimeEvents) -> None:
        name = container_name(placement_id)
        waited = self._run("wait", name, timeout=None)
        info = self._inspect(name)
        if waited.returncode != 0 or info is None:
            # Removed under the workload on the host: the provider's side, not the workload's.
            message = f"container {name} disappeared: {waited.stderr.strip()[-500:]}"
            events.on_state(StateChange(placement_id, WorkloadState.LOST, now_ms(), message=message))
            return
        state = info.get("State", {})
        exit_code = int(state.get("ExitCode", waited.stdout.strip() or -1))
        finished = timestamp_ms(state.get("FinishedAt", "")) or now_ms()
        events.on_state(StateChange(placement_id, WorkloadState.EXITED, finished, exit_code=exit_code))

    def _inspect(self, name: str) -> dict | None:
        result = self._run("container", "inspect", name)
        if result.returncode != 0:
            return None
        data = json.loads(result.stdout or "[]")
        return data[0] if data else None

    def stop(self, placement_id: str, grace_seconds: int = DEFAULT_GRACE_SECONDS) -> None:
        """Stop the container in the background (thawing it first if frozen); its follower reports the exit."""
        start_thread(self._stop, placement_id, grace_seconds, name=f"podman-stop-{placement_id}")

    def _stop(self, placement_id: str, grace_seconds: int) -> None:
        name = container_name(placement_id)
        # podman refuses to stop a paused container: thaw it so it gets SIGTERM and its grace period.
        self._run("unpause", name)
        self._run("stop", "--time", str(grace_seconds), name)

    supports_pause = True

    def pause(self, placement_id: str) -> bool:
        """Freeze the container with the cgroup freezer (`podman pause`)."""
        result = self._run("pause", container_name(placement_id))
        if result.returncode != 0:
            log.warning("podman pause %s failed: %s", placement_id, result.stderr.strip()[-300:])
        else:
            self._service_paused(placement_id, True)
        return result.returncode == 0

    def resume(self, placement_id: str) -> bool:
        """Thaw the container (`podman unpause`)."""
        result = self._run("unpause", container_name(placement_id))
        if result.returncode != 0:
            log.warning("podman unpause %s failed: %s", placement_id, result.stderr.strip()[-300:])
        else:
            self._service_paused(placement_id, False)
        return result.returncode == 0

    def placement_of_process(self, pid: int, cgroup: str) -> str | None:
        """Return the placement of a process in one of this agent's containers (cgroup `libpod-<id>`)."""
        for match in LIBPOD_SCOPE.finditer(cgroup):
            placement_id = self._container_ids.get(match["id"])
            if placement_id is not None:
                return placement_id
        return None

    def list_workloads(self) -> list[WorkloadInfo]:
        """Return the agent's containers, running or exited, found by label."""
        result = self._run("ps", "--all", "--filter", f"label={LABEL_MANAGED}=true", "--format", "json")
        if result.returncode != 0:
            raise RuntimeUnavailable(f"podman ps failed: {result.stderr.strip()[-500:]}")
        workloads = []
        for entry in json.loads(result.stdout or "[]"):
            placement_id = (entry.get("Labels") or {}).get(LABEL_PLACEMENT)
            if not placement_id:
                continue
            # A frozen (paused) container still runs: the colocation watch thaws it when the owner leaves.
            running = entry.get("State") in ("running", "paused")
            workloads.append(
                WorkloadInfo(
                    placement_id=placement_id,
                    running=running,
                    exit_code=None if running else int(entry.get("ExitCode", -1)),
                    finished_at_ms=0 if running else max(0, int(entry.get("ExitedAt", 0))) * 1000,
                )
            )
        return workloads

    def attach(self, placement_id: str, events: RuntimeEvents, log_cursor: str = "") -> None:
        """Follow a container that outlived an agent restart."""
        info = self._inspect(container_name(placement_id)) or {}
        if info.get("Id"):
            self._container_ids[info["Id"]] = placement_id
        self._restore_egress(placement_id)
        start_thread(self._follow, placement_id, events, log_cursor, name=f"podman-attach-{placement_id}")

    def remove(self, placement_id: str) -> None:
        """Delete the placement's container (and its egress network, if it had one)."""
        self._service_forget(placement_id)
        self._run("rm", "--force", "--ignore", container_name(placement_id))
        self._remove_egress_network(placement_id)

    def _network_interface(self, network: str) -> str | None:
        result = self._run("network", "inspect", network)
        if result.returncode != 0:
            return None
        data = json.loads(result.stdout or "[]")
        return (data[0].get("network_interface") or None) if data else None

    def _create_egress_network(self, placement_id: str) -> None:
        """Create the placement's own bridge network and cover it with the egress rules before anything uses it."""
        assert self.egress_rules is not None
        name = container_name(placement_id)
        self._remove_egress_network(placement_id)
        created = self._run(
            "network", "create", "--disable-dns",
            "--label", f"{LABEL_PLACEMENT}={placement_id}", "--label", f"{LABEL_MANAGED}=true",
            name,
        )  # fmt: skip
        if created.returncode != 0:
            raise EgressUnavailable(f"podman network create failed: {created.stderr.strip()[-500:]}")
        interface = self._network_interface(name)
        if interface is None:
            raise EgressUnavailable(f"podman network {name} has no bridge interface")
        self.egress_rules.allow_bridge(interface)

    def _restore_egress(self, placement_id: str) -> None:
        """Cover a re-attached container's bridge again (the rules vanish with a reboot), or cut it off."""
        name = container_name(placement_id)
        interface = self._network_interface(name)
        if interface is None:
            return
        if self.egress_rules is not None:
            try:
                self.egress_rules.allow_bridge(interface)
                return
            except EgressUnavailable as exc:
                log.error("placement %s: cannot restore the egress rules: %s", placement_id, exc)
        # Egress is no longer allowed here, or not safely: the container keeps no network.
        self._run("network", "disconnect", "--force", name, name)

    def _remove_egress_network(self, placement_id: str) -> None:
        name = container_name(placement_id)
        interface = self._network_interface(name)
        if interface is None:
            return
        self._run("network", "rm", "--force", name)
        if self.egress_rules is not None:
            self.egress_rules.forget_bridge(interface)

    supports_service_connections = True

    def service_target(self, placement_id: str) -> NamespaceTarget:
        """Return the container's init process, if this agent started (or re-attached to) the running container."""
        info = self._inspect(container_name(placement_id))
        # The container id, not the name: another agent on this host may run a container of the same name.
        if info is None or self._container_ids.get(info.get("Id", "")) != placement_id:
            raise PlacementNotRunning(f"placement {placement_id} does not run on this agent")
        return running_container_target(placement_id, info.get("State") or {})


class _PodmanImages(ImageStore):
    """The podman image store, as the disk quota sees it."""

    def __init__(self, runtime: PodmanRuntime) -> None:
        self._runtime = runtime

    def _json(self, *args: str) -> list[dict]:
        result = self._runtime._run(*args)
        if result.returncode != 0:
            raise RuntimeError(f"podman {args[0]} failed: {result.stderr.strip()[-500:]}")
        return json.loads(result.stdout or "[]") or []

    def local_image(self, reference: str) -> StoredImage | None:
        result = self._runtime._run("image", "inspect", "--format", "json", "--", reference)
        data = json.loads(result.stdout or "[]") if result.returncode == 0 else []
        return StoredImage(data[0]["Id"], int(data[0].get("Size", 0))) if data else None

    def images(self) -> dict[str, int]:
        return {entry["Id"]: int(entry.get("Size", 0)) for entry in self._json("images", "--format", "json")}

    def images_in_use(self) -> set[str]:
        return {entry.get("ImageID", "") for entry in self._json("ps", "--all", "--format", "json")}

    def agent_container_bytes(self) -> int:
        managed = self._json("ps", "--all", "--size", "--filter", f"label={LABEL_MANAGED}=true", "--format", "json")
        return sum(int((entry.get("Size") or {}).get("rwSize", 0)) for entry in managed)

    def remove_image(self, image_id: str) -> bool:
        return self._runtime._run("rmi", "--", image_id).returncode == 0

    def remote_size(self, reference: str) -> int | None:
        result = self._runtime._run("manifest", "inspect", "--", reference)
        if result.returncode != 0:
            return None
        try:
            layers = json.loads(result.stdout).get("layers") or []
            return sum(int(layer["size"]) for layer in layers) or None  # compressed: a lower bound
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def pull(self, reference: str) -> None:
        result = self._runtime._run("pull", "--quiet", "--", reference, timeout=PULL_TIMEOUT_SECONDS)
        if result.returncode != 0:
            raise RuntimeError(result.stderr.strip()[-1000:] or f"podman pull exited with {result.returncode}")
