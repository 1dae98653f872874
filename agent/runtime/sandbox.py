"""Sandbox runtime: bubblewrap (`bwrap`) on the host's read-only root, for hosts without a container engine.

The image is recorded but never pulled: the command runs with the host's own binaries. The
workload gets a private /tmp, no network, a fresh PID namespace, no capabilities, uid 65534,
an address-space limit (prlimit --as) per process, and dies with the agent. Home directories,
/root, /run, /var, the agent's state directory and working directory are hidden.

When the agent runs as root, the whole workload also gets its own cgroups with its pids, memory
and CPU limits (see agent.runtime.cgroups). Where it cannot create them, the workload still runs
and its RUNNING state carries a "limits not enforced" note that the platform shows to the buyer.
It is meant for development and the embedded default, not for renting out a machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import threading
from pathlib import Path

from agent.runtime.base import (
    CONTAINER_TMP,
    DEFAULT_CPU_MILLICORES,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_TMPFS_BYTES,
    LogLine,
    PlacementSpec,
    Runtime,
    RuntimeEvents,
    RuntimeUnavailable,
    StateChange,
    WorkloadInfo,
    WorkloadState,
    now_ms,
    pump_lines,
    start_thread,
)
from agent.runtime.cgroups import CgroupLimiter, CgroupUnavailable, WorkloadGroups, entry_command
from agent.runtime.netns import NamespaceTarget, PlacementNotRunning, namespace_inode, target_of

NOBODY = 65534
HIDDEN_PATHS = ("/home", "/root", "/run", "/var", "/mnt", "/media", "/srv")
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SandboxRuntime(Runtime):
    """Workloads as bubblewrap sandboxes that are children of the agent."""

    name = "sandbox"
    supports_network = False

    def __init__(
        self,
        *,
        hidden_paths: tuple[str, ...] = (),
        binary: str = "bwrap",
        tmpfs_bytes: int = DEFAULT_TMPFS_BYTES,
        limiter: CgroupLimiter | None = None,
    ) -> None:
        self._binary = binary
        self._limiter = limiter or CgroupLimiter()
        self._tmpfs_bytes = tmpfs_bytes
        paths = {Path(path).resolve() for path in (*HIDDEN_PATHS, *hidden_paths, os.getcwd())} - {Path("/")}
        self._hidden = tuple(
            str(path)
            for path in sorted(paths)
            if not any(path != other and path.is_relative_to(other) for other in paths)
        )
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._groups: dict[str, WorkloadGroups] = {}
        self._stopping: set[str] = set()
        self._lock = threading.Lock()

    def check_available(self) -> None:
        """Raise RuntimeUnavailable unless bwrap, prlimit and setpriv can start a sandbox."""
        for tool in (self._binary, "prlimit", "setpriv"):
            if shutil.which(tool) is None:
                raise RuntimeUnavailable(
                    f"{tool} is not installed; install it (apt-get install bubblewrap util-linux) "
                    "or use --runtime podman"
                )
        probe = subprocess.run(
            [*self._drop_root(), *self._bwrap_arguments(), "--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode != 0:
            raise RuntimeUnavailable(
                f"bwrap cannot create a sandbox here ({probe.stderr.strip()[-300:]}); unprivileged user "
                "namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1)"
            )
        self._limiter.remove_stale()

    def _bwrap_arguments(self) -> list[str]:
        args = [self._binary, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        for path in self._hidden:
            if self._needs_hiding(path):
                args += ["--tmpfs", path]
        args += ["--size", str(self._tmpfs_bytes), "--tmpfs", CONTAINER_TMP, "--chdir", CONTAINER_TMP]
        args += ["--unshare-all", "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
        args += ["--cap-drop", "ALL", "--die-with-parent", "--new-session", "--hostname", "janction-sandbox"]
        return args

    @staticmethod
    def _needs_hiding(path: str) -> bool:
        """Return whether the sandbox could see `path` (a directory outside /tmp) unless it is hidden.

        Run as nobody (the agent is root), the sandbox cannot reach a directory behind one that others
        may not enter, and bwrap could not mount over it either.
        """
        location = Path(path)
        if not location.is_dir() or location.is_relative_to(CONTAINER_TMP):
            return False
        if os.geteuid() != 0:
            return True
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in (location, *location.parents))

    @staticmethod
    def _drop_root() -> list[str]:
        """Return a prefix that runs bwrap as nobody when the agent is root, so the sandbox owns nothing.

        setpriv (not Popen's user=) keeps subprocess on its vfork path: a plain fork() in a process
        with gRPC threads can crash the child.
        """
        if os.geteuid() == 0:
            return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
        return []

    def command_line(self, spec: PlacementSpec, groups: WorkloadGroups | None = None) -> list[str]:
        """Return the full command line that runs a placement (entering its cgroups first, as root)."""
        enter = entry_command(groups.procs_files()) if groups is not None else []
        limit = ["prlimit", f"--as={spec.memory_limit_bytes}", "--"]
        return [*enter, *self._drop_root(), *limit, *self._bwrap_arguments(), "--", *spec.command]

    def _limits(self, spec: PlacementSpec) -> tuple[WorkloadGroups | None, str]:
        """Return the workload's cgroups, or None and the "limits not enforced" note saying why."""
        try:
            groups = self._limiter.create(
                spec.container_name,
                pids_limit=spec.pids_limit,
                memory_bytes=spec.memory_limit_bytes,
                cpu_millicores=spec.cpu_millicores or DEFAULT_CPU_MILLICORES,
            )
        except CgroupUnavailable as exc:
            note = (
                f"pids, total memory and CPU limits are not enforced ({exc}); "
                "only a per-process address-space limit applies"
            )
            return None, note
        return groups, ""

    def start(self, spec: PlacementSpec, events: RuntimeEvents) -> None:
        """Start the sandbox and follow it in the background."""
        start_thread(self._start_and_follow, spec, events, name=f"sandbox-{spec.placement_id}")

    def _start_and_follow(self, spec: PlacementSpec, events: RuntimeEvents) -> None:
        placement_id = spec.placement_id
        if not spec.command:
            message = "the sandbox runtime runs a command on the host and cannot run an image's default command"
            events.on_state(StateChange(placement_id, WorkloadState.FAILED, now_ms(), message=message))
            return
        if spec.network_allowed:
            message = "the sandbox runtime has no network; run this node with --runtime podman or docker"
            events.on_state(StateChange(placement_id, WorkloadState.FAILED, now_ms(), message=message))
            return
        env = {"PATH": SANDBOX_PATH, "HOME": CONTAINER_TMP, **spec.env, **spec.gpu.env}
        groups, note = self._limits(spec)
        try:
            process = subprocess.Popen(
                self.command_line(spec, groups),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            if groups is not None:
                groups.remove()
            events.on_state(StateChange(placement_id, WorkloadState.FAILED, now_ms(), message=str(exc)))
            return
        with self._lock:
            self._processes[placement_id] = process
            if groups is not None:
                self._groups[placement_id] = groups
        events.on_state(StateChange(placement_id, WorkloadState.RUNNING, now_ms(), limits_not_enforced=note))
        assert process.stdout is not None and process.stderr is not None
        readers = [
            start_thread(
                pump_lines,
                pipe,
                lambda text, stream=stream: events.on_log(LogLine(placement_id, stream, text)),
                name=f"sandbox-{stream}",
            )
            for stream, pipe in (("stdout", process.stdout), ("stderr", process.stderr))
        ]
        for reader in readers:
            reader.join()
        code = process.wait()
        if groups is not None:
            groups.remove()
        with self._lock:
            self._processes.pop(placement_id, None)
            self._groups.pop(placement_id, None)
            self._stopping.discard(placement_id)
        exit_code = 128 - code if code < 0 else code
        events.on_state(StateChange(placement_id, WorkloadState.EXITED, now_ms(), exit_code=exit_code))

    def stop(self, placement_id: str, grace_seconds: int = DEFAULT_GRACE_SECONDS) -> None:
        """Terminate the sandbox (its workload dies with it), killing it after the grace period."""
        with self._lock:
            process = self._processes.get(placement_id)
            if process is None or placement_id in self._stopping:
                return
            self._stopping.add(placement_id)
            groups = self._groups.get(placement_id)
        start_thread(self._terminate, process, groups, grace_seconds, name=f"sandbox-stop-{placement_id}")

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes], groups: WorkloadGroups | None, grace_seconds: int) -> None:
        """Send SIGTERM to the workload's processes, then SIGKILL to all of them after the grace period.

        bwrap itself does not pass SIGTERM on, and its init in the new PID namespace ignores it, so TERM
        goes to every process below bwrap; bwrap ends when the workload does.
        """
        for pid in _descendants(process.pid):
            try:
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)  # a paused (SIGSTOPped) workload must see its SIGTERM
            except ProcessLookupError:
                pass
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for pid in _descendants(process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if groups is not None:
                groups.signal_all(signal.SIGKILL)

    supports_pause = True

    def _workload_pids(self, placement_id: str) -> list[int]:
        with self._lock:
            process = self._processes.get(placement_id)
            groups = self._groups.get(placement_id)
        if process is None:
            return []
        pids = set(_descendants(process.pid))
        if groups is not None:
            pids |= groups.pids()
        return sorted(pids)

    def _signal_workload(self, placement_id: str, signum: int) -> bool:
        pids = self._workload_pids(placement_id)
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        return bool(pids)

    def pause(self, placement_id: str) -> bool:
        """Stop every process of the sandbox with SIGSTOP (it cannot be caught); memory stays."""
        paused = self._signal_workload(placement_id, signal.SIGSTOP)
        if paused:
            self._service_paused(placement_id, True)
        return paused

    def resume(self, placement_id: str) -> bool:
        """Continue the sandbox's processes with SIGCONT."""
        resumed = self._signal_workload(placement_id, signal.SIGCONT)
        if resumed:
            self._service_paused(placement_id, False)
        return resumed

    supports_service_connections = True

    def service_target(self, placement_id: str) -> NamespaceTarget:
        """Return the first process below bwrap that is in the sandbox's own network namespace."""
        with self._lock:
            process = self._processes.get(placement_id)
        if process is None or process.returncode is not None:
            raise PlacementNotRunning(f"placement {placement_id} does not run on this agent")
        own = namespace_inode("self")
        for pid in _descendants(process.pid):
            inode = namespace_inode(pid)
            target = target_of(pid) if inode is not None and inode != own else None
            if target is not None:
                return target
        raise PlacementNotRunning(f"placement {placement_id} is still starting its sandbox")

    def placement_of_process(self, pid: int, cgroup: str) -> str | None:
        """Return the placement whose sandbox the process runs in (its groups, else its process tree)."""
        with self._lock:
            placements = list(self._processes)
        for placement_id in placements:
            if pid in self._workload_pids(placement_id):
                return placement_id
        return None

    def limits_description(self) -> str:
        """Return how the sandbox enforces whole-workload limits here, for the agent's start-up log."""
        described = self._limiter.describe()
        return f"cgroups ({described})" if described else "per-process limits only"

    def list_workloads(self) -> list[WorkloadInfo]:
        """Return the sandboxes this agent process started and still runs."""
        with self._lock:
            return [WorkloadInfo(placement_id, running=True) for placement_id in self._processes]

    def attach(self, placement_id: str, events: RuntimeEvents, log_cursor: str = "") -> None:
        """Fail: a sandbox dies with the agent, so there is nothing to re-attach to."""
        message = "the sandbox ended when the agent stopped (sandboxes do not outlive the agent)"
        events.on_state(StateChange(placement_id, WorkloadState.LOST, now_ms(), message=message))

    def remove(self, placement_id: str) -> None:
        """Forget nothing: an exited sandbox leaves nothing behind."""


def _descendants(pid: int) -> list[int]:
    """Return every descendant of a process, parents before children (read from /proc)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.append(child)
                    pending.append(child)
    return found
