"""Whole-workload limits for the sandbox runtime, written straight into the cgroup controllers.

No systemd is needed (it may not be PID 1): the agent finds where each controller is mounted from
/proc/self/mountinfo and its own place in each hierarchy from /proc/self/cgroup, then creates one
group per workload under a `janction` group beside itself. Controllers may be split between cgroup
v1 hierarchies and the v2 unified one (a "hybrid" host); each of pids, memory and cpu is taken from
a v1 hierarchy that has it, else from v2 when v2 offers it.

A workload enters its groups before it runs anything (see `entry_command`), so every process it
forks is counted and none escapes. When the agent cannot create or write the groups (not root, no
delegation), `CgroupUnavailable` says why and the sandbox runs without them, labelled as such.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CONTROLLERS = ("pids", "memory", "cpu")
GROUP_DIRECTORY = "janction"
CPU_PERIOD_US = 100_000
# A leftover group (from an agent that crashed) is only removed once it is this old and empty, so a
# group another agent has just created for a workload that has not entered it yet is left alone.
STALE_GROUP_SECONDS = 120


class CgroupUnavailable(RuntimeError):
    """The agent cannot enforce limits through cgroups here; the message says why."""


@dataclass(frozen=True)
class Hierarchy:
    """Where one controller lives: its version and the agent's own group's directory in it."""

    controller: str
    version: int
    own_directory: Path


def _mounts(mountinfo: str) -> list[tuple[str, Path, str, set[str]]]:
    """Return (root, mount point, fs type, super options) of each cgroup mount."""
    mounts = []
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        mount_point = Path(fields[4].replace("\\040", " "))
        mounts.append((fields[3], mount_point, tail[0], set(tail[2].split(","))))
    return mounts


def _own_paths(proc_cgroup: str) -> tuple[dict[str, str], str | None]:
    """Return the agent's v1 group path per controller and its v2 path (None without a v2 line)."""
    v1: dict[str, str] = {}
    v2 = None
    for line in proc_cgroup.splitlines():
        number, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if number == "0" and names == "":
            v2 = path
        else:
            for name in names.split(","):
                v1[name] = path
    return v1, v2


def _under(mount_root: str, mount_point: Path, path: str) -> Path | None:
    """Return where group `path` appears under a mount of `mount_root`, or None when it is outside it."""
    root = Path(mount_root)
    group = Path(path)
    if group != root and root not in group.parents:
        return None
    return mount_point / group.relative_to(root)


def find_hierarchies(
    mountinfo: str, proc_cgroup: str, controllers: tuple[str, ...] = CONTROLLERS
) -> dict[str, Hierarchy]:
    """Return, per controller found, the hierarchy to use: v1 when a v1 hierarchy has it, else v2."""
    own_v1, own_v2 = _own_paths(proc_cgroup)
    found: dict[str, Hierarchy] = {}
    mounts = _mounts(mountinfo)
    for root, mount_point, kind, options in mounts:
        if kind != "cgroup":
            continue
        for controller in controllers:
            if controller in options and controller in own_v1 and controller not in found:
                directory = _under(root, mount_point, own_v1[controller])
                if directory is not None:
                    found[controller] = Hierarchy(controller, 1, directory)
    for root, mount_point, kind, _ in mounts:
        if kind != "cgroup2" or own_v2 is None:
            continue
        directory = _under(root, mount_point, own_v2)
        if directory is None:
            continue
        try:
            available = set((directory / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        for controller in controllers:
            if controller in available and controller not in found:
                found[controller] = Hierarchy(controller, 2, directory)
    return found


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _pids_of(directory: Path) -> set[int]:
    try:
        return {int(line) for line in (directory / "cgroup.procs").read_text().split()}
    except OSError:
        return set()


@dataclass
class WorkloadGroups:
    """The groups of one workload: one directory per hierarchy used."""

    directories: list[Path] = field(default_factory=list)

    def procs_files(self) -> list[str]:
        """Return the cgroup.procs files a workload writes its pid into before it runs."""
        return [str(directory / "cgroup.procs") for directory in self.directories]

    def pids(self) -> set[int]:
        """Return every process in the workload's groups."""
        return set().union(*(_pids_of(directory) for directory in self.directories)) if self.directories else set()

    def signal_all(self, signum: int, *, spare: int | None = None) -> None:
        """Send a signal to every process of the workload, except `spare`."""
        for pid in self.pids() - {spare}:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left and remove the groups (v1 and v2 groups can only be removed once empty)."""
        deadline = time.monotonic() + timeout
        for directory in self.directories:
            while directory.exists():
                self.signal_all(signal.SIGKILL)
                try:
                    directory.rmdir()
                except OSError as exc:
                    if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                        log.warning("could not remove cgroup %s: %s", directory, exc)
                        break
                    time.sleep(0.05)


class CgroupLimiter:
    """Creates per-workload groups with pids, memory and CPU limits."""

    def __init__(
        self,
        *,
        mountinfo_path: str = "/proc/self/mountinfo",
        proc_cgroup_path: str = "/proc/self/cgroup",
    ) -> None:
        self._mountinfo_path = mountinfo_path
        self._proc_cgroup_path = proc_cgroup_path
        self._hierarchies: dict[str, Hierarchy] | None = None
        self._problem = ""

    def _find(self) -> dict[str, Hierarchy]:
        if self._hierarchies is None:
            try:
                mountinfo = Path(self._mountinfo_path).read_text()
                proc_cgroup = Path(self._proc_cgroup_path).read_text()
            except OSError as exc:
                self._hierarchies, self._problem = {}, f"cgroups cannot be read ({exc})"
                return {}
            self._hierarchies = find_hierarchies(mountinfo, proc_cgroup)
            missing = [c for c in CONTROLLERS if c not in self._hierarchies]
            if missing:
                self._problem = f"no usable cgroup controller for {', '.join(missing)}"
        return self._hierarchies

    def describe(self) -> str:
        """Return which hierarchy serves each controller, e.g. "pids v1, memory v1, cpu v1"."""
        return ", ".join(f"{h.controller} v{h.version}" for h in self._find().values())

    def _parent(self, hierarchy: Hierarchy) -> Path:
        """Return (creating it) the `janction` group beside the agent, with the controllers delegated on v2."""
        parent = hierarchy.own_directory / GROUP_DIRECTORY
        parent.mkdir(exist_ok=True)
        if hierarchy.version == 2:
            # v2 allows controllers below a group only when they are enabled in its parent's subtree_control.
            for directory in (hierarchy.own_directory, parent):
                enabled = set((directory / "cgroup.subtree_control").read_text().split())
                if hierarchy.controller not in enabled:
                    try:
                        _write(directory / "cgroup.subtree_control", f"+{hierarchy.controller}")
                    except OSError as exc:
                        if exc.errno != errno.EBUSY or directory != hierarchy.own_directory:
                            raise
                        self._vacate(directory)
                        _write(directory / "cgroup.subtree_control", f"+{hierarchy.controller}")
        return parent

    @staticmethod
    def _vacate(directory: Path) -> None:
        """Move the processes of the agent's own v2 group into a leaf `agent` group below it.

        v2 refuses to delegate controllers from a group that holds processes (a service's own group
        usually holds the agent), so the agent steps down into a leaf first, as container engines do.
        """
        leaf = directory / "agent"
        leaf.mkdir(exist_ok=True)
        for pid in sorted(_pids_of(directory)):
            try:
                _write(leaf / "cgroup.procs", str(pid))
            except ProcessLookupError:
                continue

    def create(self, name: str, *, pids_limit: int, memory_bytes: int, cpu_millicores: int) -> WorkloadGroups:
        """Create the workload's groups with its limits; raise CgroupUnavailable (leaving nothing) when it cannot."""
        hierarchies = self._find()
        if self._problem:
            raise CgroupUnavailable(self._problem)
        groups = WorkloadGroups()
        unique = f"{name}-{secrets.token_hex(4)}"
        try:
            by_directory: dict[Path, list[Hierarchy]] = {}
            for hierarchy in hierarchies.values():
                directory = self._parent(hierarchy) / unique
                by_directory.setdefault(directory, []).append(hierarchy)
            for directory, members in by_directory.items():
                directory.mkdir()
                groups.directories.append(directory)
                for hierarchy in members:
                    self._limit(directory, hierarchy, pids_limit, memory_bytes, cpu_millicores)
        except OSError as exc:
            groups.remove()
            reason = "the agent is not root" if os.geteuid() != 0 else f"{exc.strerror}: {exc.filename}"
            raise CgroupUnavailable(f"cannot create cgroups ({reason})") from exc
        return groups

    @staticmethod
    def _limit(directory: Path, hierarchy: Hierarchy, pids_limit: int, memory_bytes: int, cpu_millicores: int) -> None:
        quota = max(1000, cpu_millicores * CPU_PERIOD_US // 1000)
        if hierarchy.controller == "pids":
            _write(directory / "pids.max", str(pids_limit))
        elif hierarchy.controller == "memory" and hierarchy.version == 1:
            _write(directory / "memory.limit_in_bytes", str(memory_bytes))
            if (directory / "memory.memsw.limit_in_bytes").exists():
                _write(directory / "memory.memsw.limit_in_bytes", str(memory_bytes))
        elif hierarchy.controller == "memory":
            _write(directory / "memory.max", str(memory_bytes))
            if (directory / "memory.swap.max").exists():
                _write(directory / "memory.swap.max", "0")
        elif hierarchy.version == 1:
            _write(directory / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(directory / "cpu.cfs_quota_us", str(quota))
        else:
            _write(directory / "cpu.max", f"{quota} {CPU_PERIOD_US}")

    def remove_stale(self) -> int:
        """Remove empty groups that crashed agents left behind; return how many."""
        removed = 0
        now = time.time()
        for hierarchy in self._find().values():
            parent = hierarchy.own_directory / GROUP_DIRECTORY
            if not parent.is_dir():
                continue
            for directory in parent.iterdir():
                try:
                    if directory.is_dir() and now - directory.stat().st_mtime > STALE_GROUP_SECONDS:
                        if not _pids_of(directory):
                            directory.rmdir()
                            removed += 1
                except OSError:
                    continue
        return removed


def entry_command(procs_files: list[str]) -> list[str]:
    """Return a prefix that moves the process into the given groups, then execs the rest of the command.

    The shell writes its own pid (which the exec keeps) while it is still root; a failed write stops
    the workload with status 125 rather than running it outside its limits.
    """
    script = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
    return ["/bin/sh", "-c", script, "janction-cgroup-entry", str(len(procs_files)), *procs_files]
