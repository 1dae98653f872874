"""Colocation on the agent: the owner's GPU processes found through the (fake) NVML lists, then pause and resume."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from agent.colocation import OwnerWatch, Share, WatchPolicy
from agent.identity import generate_private_key
from agent.nvml.fake import FakeGpuBackend, parse_fake_gpu_spec
from agent.nvml.real import NvmlBackend
from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.runtime.base import StateChange, WorkloadState
from agent.runtime.podman import PodmanRuntime
from tests.agent.support import FakeRuntime, build_session, drain, of_kind, start_message
from tests.agent.test_nvml_real import FakeNvml

WATCH = WatchPolicy(watch=True, utilization_percent=30, memory_percent=10, grace_seconds=5)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def owner_process():
    """A real host process, standing for the owner's game; killed after the test."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def _backend(tmp_path):
    processes = tmp_path / "gpu-processes"
    processes.write_text("")
    return FakeGpuBackend(parse_fake_gpu_spec("RTX 4090:1"), seed="s", processes_file=processes), processes


def test_the_fake_gpu_lists_a_live_host_process_and_forgets_it_once_it_ends(tmp_path, owner_process):
    backend, processes = _backend(tmp_path)
    processes.write_text(f"{owner_process.pid}\n999999999\nnot-a-pid\n{owner_process.pid}:7\n")
    listed = backend.processes()
    assert [(p.pid, p.gpu_uuid) for p in listed] == [(owner_process.pid, backend.gpus()[0].uuid)]
    assert backend.telemetry()[0].compute_pids == (owner_process.pid,)
    owner_process.kill()
    owner_process.wait()
    assert backend.processes() == []


def test_a_process_the_agent_did_not_start_makes_the_owner_active_until_the_grace_period_passes(
    tmp_path, owner_process
):
    backend, processes = _backend(tmp_path)
    clock = Clock()
    watch = OwnerWatch(backend=backend, owns_process=lambda pid, cgroup: None, policy=WATCH, clock=clock)
    assert watch.observe({}) is None and not watch.active
    processes.write_text(f"{owner_process.pid}\n")
    assert watch.observe({}) is True
    assert f"pid {owner_process.pid}" in watch.reason
    owner_process.kill()
    owner_process.wait()
    clock.now += 4
    assert watch.observe({}) is None and watch.active  # within the grace period
    clock.now += 1
    assert watch.observe({}) is False and not watch.active


def test_the_agents_own_gpu_processes_are_told_apart_by_their_cgroup(tmp_path, owner_process):
    """A pid whose cgroup is one of the runtime's containers is the agent's; the same listing otherwise is not."""
    backend, processes = _backend(tmp_path)
    proc = tmp_path / "proc"
    container_id = "a" * 64
    (proc / str(owner_process.pid)).mkdir(parents=True)
    (proc / str(owner_process.pid) / "cgroup").write_text(f"0::/libpod_parent/libpod-{container_id}\n")
    runtime = PodmanRuntime()
    watch = OwnerWatch(backend=backend, owns_process=runtime.placement_of_process, policy=WATCH, proc_root=proc)
    processes.write_text(f"{owner_process.pid}\n")
    foreign, own = watch.classify(backend.processes())
    assert [p.pid for p in foreign] == [owner_process.pid] and own == {}
    runtime._container_ids[container_id] = "p-1"  # what start/attach record from `podman inspect`
    foreign, own = watch.classify(backend.processes())
    assert foreign == [] and own == {str(owner_process.pid): "p-1"}
    # The placement's own process loads the GPU within its share: the owner is not active.
    gpu = backend.gpus()[0].uuid
    assert not watch.evidence({gpu: Share(compute_percent=100, memory_bytes=backend.gpus()[0].memory_bytes)}).active


def test_a_process_the_agent_cannot_see_counts_as_the_owners(tmp_path):
    backend, processes = _backend(tmp_path)
    watch = OwnerWatch(backend=backend, owns_process=lambda pid, cgroup: "p-1", policy=WATCH, proc_root=tmp_path)
    processes.write_text(f"{subprocess.os.getpid()}\n")
    foreign, _ = watch.classify(backend.processes())
    assert [p.pid for p in foreign] == [subprocess.os.getpid()]


def test_utilisation_and_memory_above_the_placements_share_count():
    backend = NvmlBackend(FakeNvml(count=1))
    backend.processes = lambda: []  # no process listed: only the readings speak
    watch = OwnerWatch(backend=backend, owns_process=lambda pid, cgroup: None, policy=WATCH)
    # GPU 0 is 37% busy with 900 MiB used (FakeNvml): above a 30% threshold with no placement on it.
    verdict = watch.evidence({})
    assert verdict.active and "37% busy" in verdict.reason
    assert not watch.evidence({"GPU-4090": Share(compute_percent=50, memory_bytes=0)}).active
    tight = OwnerWatch(
        backend=backend,
        owns_process=lambda pid, cgroup: None,
        policy=WatchPolicy(watch=True, utilization_percent=100, memory_percent=1),
    )
    assert "MiB" in tight.evidence({}).reason


def test_real_nvml_lists_compute_and_graphics_processes():
    nvml = FakeNvml(count=1)
    nvml.nvmlDeviceGetGraphicsRunningProcesses = lambda handle: [SimpleNamespace(pid=77, usedGpuMemory=None)]
    listed = NvmlBackend(nvml).processes()
    assert [(p.pid, p.kind, p.gpu_uuid) for p in listed] == [
        (4242, "compute", "GPU-4090"),
        (77, "graphics", "GPU-4090"),
    ]


class PausingRuntime(FakeRuntime):
    supports_pause = True

    def __init__(self) -> None:
        super().__init__()
        self.paused: list[str] = []
        self.resumed: list[str] = []

    def pause(self, placement_id: str) -> bool:
        self.paused.append(placement_id)
        return True

    def resume(self, placement_id: str) -> bool:
        self.resumed.append(placement_id)
        return True


def test_the_session_freezes_a_pausable_placement_stops_the_other_and_meters_no_frozen_time(tmp_path, owner_process):
    clock, runtime = Clock(), PausingRuntime()
    session = build_session(tmp_path / "state", runtime, slices=2, usage_interval_ms=10_000, clock=clock)
    backend, processes = _backend(tmp_path)
    session._backend = backend
    session._watch = OwnerWatch(backend=backend, owns_process=lambda pid, cgroup: None, clock=clock)
    _, outbox = session.on_connected()
    session.handle(
        pb.ControlMessage(
            colocation=pb.Colocation(
                watch_owner=True, utilization_threshold_percent=30, memory_threshold_percent=10, grace_seconds=5
            )
        )
    )
    session.handle(start_message("p-pause", ["sleep", "1"], vgpus=("0:0",), pausable=True))
    session.handle(start_message("p-stop", ["sleep", "1"], vgpus=("0:1",)))
    start_ms = int(clock.now * 1000)
    for placement_id in ("p-pause", "p-stop"):
        session.on_state(StateChange(placement_id, WorkloadState.RUNNING, start_ms))
    drain(outbox)
    clock.now += 3
    processes.write_text(f"{owner_process.pid}\n")
    session.tick()
    messages = drain(outbox)
    assert [a.active for a in of_kind(messages, "owner_activity")] == [True]
    assert runtime.paused == ["p-pause"] and [s for s, _ in runtime.stopped] == ["p-stop"]
    assert [(s.placement_id, s.state) for s in of_kind(messages, "placement_status")] == [
        ("p-pause", pb.PLACEMENT_STATE_PAUSED)
    ]
    cut = of_kind(messages, "usage_report")
    assert [(u.placement_id, u.interval_start_ms, u.interval_end_ms) for u in cut] == [
        ("p-pause", start_ms, start_ms + 3000)
    ]
    # The stopped one is the provider's loss (requeued elsewhere), not the workload's exit.
    session.on_state(StateChange("p-stop", WorkloadState.EXITED, start_ms + 3500, exit_code=143))
    stopped = of_kind(drain(outbox), "placement_status")
    assert [(s.state, s.message) for s in stopped] == [
        (pb.PLACEMENT_STATE_LOST, "stopped: the node's owner is using the GPU")
    ]
    # A start while the owner is active is refused as the provider's loss.
    session.handle(start_message("p-new", ["sleep", "1"], vgpus=("0:1",)))
    assert [s.state for s in of_kind(drain(outbox), "placement_status")] == [pb.PLACEMENT_STATE_LOST]
    # Frozen for a minute: no usage report falls due.
    clock.now += 60
    session.tick()
    assert of_kind(drain(outbox), "usage_report") == []
    owner_process.kill()
    owner_process.wait()
    clock.now += 1
    session.tick()
    clock.now += 5
    session.tick()
    messages = drain(outbox)
    assert runtime.resumed == ["p-pause"]
    assert [a.active for a in of_kind(messages, "owner_activity")] == [False]
    resumed_ms = int(clock.now * 1000)
    assert [(s.state, s.at_ms) for s in of_kind(messages, "placement_status")] == [
        (pb.PLACEMENT_STATE_RUNNING, resumed_ms)
    ]
    clock.now += 10
    session.tick()
    after = of_kind(drain(outbox), "usage_report")
    assert [(u.interval_start_ms, u.interval_end_ms) for u in after] == [(resumed_ms, resumed_ms + 10_000)]


def test_a_restarted_agent_keeps_the_owner_active_and_the_policy_without_the_gateway(tmp_path, owner_process):
    clock, runtime = Clock(), PausingRuntime()
    session = build_session(tmp_path / "state", runtime, clock=clock, key=generate_private_key())
    session.handle(pb.ControlMessage(colocation=pb.Colocation(watch_owner=True, grace_seconds=600)))
    session._state.owner_active = True
    session._save()
    again = build_session(tmp_path / "state", runtime, clock=clock)
    backend, _ = _backend(tmp_path)
    watch = OwnerWatch(backend=backend, owns_process=lambda pid, cgroup: None, clock=clock)
    again = type(again)(
        store=again._store,
        state=again._store.load(),
        backend=backend,
        plan=list(again._plan.values()),
        runtime=runtime,
        meter=again._meter,
        hostname="h",
        clock=clock,
        watch=watch,
    )
    assert watch.active and watch.policy.watch and watch.policy.grace_seconds == 600
    initial, _ = again.on_connected()
    assert [a.active for a in of_kind(initial, "owner_activity")] == [True]


def test_an_idle_fake_gpu_with_a_processes_file_never_looks_busy(tmp_path):
    backend, _ = _backend(tmp_path)
    watch = OwnerWatch(backend=backend, owns_process=lambda pid, cgroup: None, policy=WATCH)
    assert not any(watch.evidence({}).active for _ in range(500))


def test_outside_its_schedule_the_node_steps_aside_and_comes_back_when_the_window_opens(tmp_path):
    clock, runtime = Clock(), PausingRuntime()
    session = build_session(tmp_path / "state", runtime, clock=clock)
    backend, _ = _backend(tmp_path)
    session._watch = OwnerWatch(backend=backend, owns_process=lambda pid, cgroup: None, clock=clock)
    _, outbox = session.on_connected()
    session.handle(start_message("p-1", ["sleep", "1"], vgpus=("0:0",), pausable=True))
    session.on_state(StateChange("p-1", WorkloadState.RUNNING, int(clock.now * 1000)))
    session.handle(pb.ControlMessage(colocation=pb.Colocation(owner_time=True)))
    clock.now += 1
    session.tick()
    assert runtime.paused == ["p-1"]
    assert [a.reason for a in of_kind(drain(outbox), "owner_activity")] == ["outside the node's scheduled hours"]
    session.handle(pb.ControlMessage(colocation=pb.Colocation(owner_time=False)))
    clock.now += 1
    session.tick()
    assert runtime.resumed == ["p-1"]
