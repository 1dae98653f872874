"""The sandbox runtime's whole-workload limits (pids, total memory, CPU) in cgroups, or a "not enforced" label."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from agent.runtime import cgroups
from agent.runtime.base import PlacementSpec, WorkloadState
from agent.runtime.cgroups import CgroupLimiter, find_hierarchies
from agent.runtime.sandbox import SandboxRuntime
from agent.slicing import ContainerGpuSettings
from tests.agent.conftest import requires_bwrap
from tests.agent.support import Recorder

GPU = ContainerGpuSettings({"NVIDIA_VISIBLE_DEVICES": "GPU-fake"}, ("GPU-fake",), fake=True, uses_mps=False)
GIB = 1024**3


def _cgroups_writable() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        groups = CgroupLimiter().create("probe", pids_limit=64, memory_bytes=GIB, cpu_millicores=1000)
    except Exception:
        return False
    groups.remove()
    return True


requires_cgroups = pytest.mark.skipif(not _cgroups_writable(), reason="needs root and writable cgroup controllers")

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n"


def _run(runtime: SandboxRuntime, script: str, timeout: float = 120, **fields) -> Recorder:
    events = Recorder()
    spec = PlacementSpec(f"limits-{os.getpid()}", "recorded/only:1", ("sh", "-c", script), {}, GPU, **fields)
    runtime.start(spec, events)
    events.wait_finished(timeout=timeout)
    return events


def test_a_hybrid_host_takes_each_controller_from_its_v1_hierarchy():
    found = find_hierarchies(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    assert {name: (h.version, str(h.own_directory)) for name, h in found.items()} == {
        "pids": (1, "/sys/fs/cgroup/pids"),
        "memory": (1, "/sys/fs/cgroup/memory/process_api/abc"),
        "cpu": (1, "/sys/fs/cgroup/cpu"),
    }


def test_a_pure_v2_host_uses_the_unified_hierarchy_for_the_controllers_it_offers(tmp_path):
    own = tmp_path / "agent.slice"
    own.mkdir()
    (own / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    mountinfo = f"30 23 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw,nsdelegate\n"
    found = find_hierarchies(mountinfo, "0::/agent.slice\n")
    assert {name: (h.version, h.own_directory) for name, h in found.items()} == {
        name: (2, own) for name in ("pids", "memory", "cpu")
    }
    (own / "cgroup.controllers").write_text("cpu\n")
    assert set(find_hierarchies(mountinfo, "0::/agent.slice\n")) == {"cpu"}
    # A group outside the mounted subtree (a container's view) is not used.
    assert find_hierarchies(f"30 23 0:26 /other {tmp_path} rw - cgroup2 cgroup2 rw\n", "0::/agent.slice\n") == {}


def test_v2_limits_are_written_into_the_unified_files(tmp_path):
    own = tmp_path / "agent"
    own.mkdir()
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.subtree_control").write_text("")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"30 23 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw\n")
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("0::/agent\n")
    (own / "janction").mkdir()
    (own / "janction" / "cgroup.subtree_control").write_text("")
    limiter = CgroupLimiter(mountinfo_path=str(mountinfo), proc_cgroup_path=str(proc_cgroup))
    groups = limiter.create("p", pids_limit=100, memory_bytes=GIB, cpu_millicores=1500)
    (directory,) = groups.directories
    assert directory.parent == own / "janction"
    assert (directory / "pids.max").read_text() == "100"
    assert (directory / "memory.max").read_text() == str(GIB)
    assert (directory / "cpu.max").read_text() == "150000 100000"
    assert groups.procs_files() == [str(directory / "cgroup.procs")]


def test_on_v2_the_agent_steps_into_a_leaf_when_its_own_group_holds_processes(tmp_path, monkeypatch):
    own = tmp_path / "agent.service"
    own.mkdir()
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.subtree_control").write_text("")
    (own / "cgroup.procs").write_text("101\n102\n")
    (own / "janction").mkdir()
    (own / "janction" / "cgroup.subtree_control").write_text("")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"30 23 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw\n")
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("0::/agent.service\n")
    moved: list[str] = []
    real_write = cgroups._write

    def write(path, value):
        if path == own / "cgroup.subtree_control" and not moved:
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        if path == own / "agent" / "cgroup.procs":
            moved.append(value)
        real_write(path, value)

    monkeypatch.setattr(cgroups, "_write", write)
    limiter = CgroupLimiter(mountinfo_path=str(mountinfo), proc_cgroup_path=str(proc_cgroup))
    limiter.create("p", pids_limit=100, memory_bytes=GIB, cpu_millicores=1000)
    assert moved == ["101", "102"]
    assert (own / "cgroup.subtree_control").read_text() == "+cpu"


@requires_bwrap
def test_without_usable_cgroups_the_workload_runs_labelled_limits_not_enforced(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n")
    limiter = CgroupLimiter(mountinfo_path=str(mountinfo))
    events = _run(SandboxRuntime(limiter=limiter), "echo ran")
    running = events.changes[0]
    assert running.state == WorkloadState.RUNNING
    assert "not enforced" in running.limits_not_enforced and "pids" in running.limits_not_enforced
    assert events.texts("stdout") == ["ran"]


@requires_bwrap
@requires_cgroups
def test_enforced_limits_carry_no_label():
    events = _run(SandboxRuntime(), "true")
    assert events.changes[0].state == WorkloadState.RUNNING and events.changes[0].limits_not_enforced == ""


@requires_bwrap
@requires_cgroups
def test_fork_bomb_stops_at_the_pids_limit_for_the_whole_workload():
    fork = (
        "import os, time\n"
        "started = 0\n"
        "try:\n"
        "    for _ in range(1000):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        started += 1\n"
        "except OSError as error:\n"
        "    print('refused', error.errno)\n"
        "print('started', started)\n"
    )
    script = f'python3 -c "{fork}"'
    events = _run(SandboxRuntime(), script, pids_limit=512)
    (line,) = [text for text in events.texts("stdout") if text.startswith("started")]
    started = int(line.split()[1])
    assert started < 512, f"{started} processes started under a pids limit of 512"
    assert started > 400, "the limit, not something else, stopped the forks"
    assert "refused 11" in events.texts("stdout"), "fork failed with EAGAIN"


@requires_bwrap
@requires_cgroups
def test_three_processes_of_1_2_gib_each_do_not_fit_in_2_gib():
    allocate = "import time; b = bytearray(1200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)"
    script = f"""
for n in 1 2 3; do python3 -c "{allocate}" & done
codes=""
for job in 1 2 3; do wait %$job; codes="$codes $?"; done
echo codes$codes
"""
    events = _run(SandboxRuntime(), script, memory_limit_bytes=2 * GIB)
    finished = events.changes[-1]
    codes = [text for text in events.texts("stdout") if text.startswith("codes")]
    # Each process alone is under the per-process limit; together they pass the workload's limit and the
    # kernel kills at least one (or the whole sandbox).
    killed = finished.exit_code == 137 or (codes and any(code != "0" for code in codes[0].split()[1:]))
    assert killed, (codes, finished)


@requires_bwrap
@requires_cgroups
def test_cpu_time_is_capped_by_the_cpu_limit():
    script = "timeout 3 sh -c 'while :; do :; done'; times"
    events = _run(SandboxRuntime(), script, cpu_millicores=50)
    user, system = events.texts("stdout")[-1].split()  # the children's times
    seconds = sum(int(part.split("m")[0]) * 60 + float(part.split("m")[1].rstrip("s")) for part in (user, system))
    assert seconds < 0.45, f"{seconds:.2f} s of CPU in 3 s under a limit of a twentieth of a core"


@requires_cgroups
def test_groups_are_removed_when_the_workload_ends():
    limiter = CgroupLimiter()
    groups = limiter.create("cleanup", pids_limit=64, memory_bytes=GIB, cpu_millicores=500)
    directories = list(groups.directories)
    assert all(Path(d).is_dir() for d in directories)
    groups.remove()
    assert not any(Path(d).exists() for d in directories)
