"""The podman runtime and the docker runtime (against podman's Docker-compatible API) on real containers."""

from __future__ import annotations

import subprocess

import pytest

from agent.runtime.base import PlacementSpec, WorkloadState, container_name
from agent.runtime.docker import DockerRuntime
from agent.runtime.podman import PodmanRuntime
from agent.slicing import ContainerGpuSettings
from tests.agent.conftest import requires_podman
from tests.agent.support import Recorder

pytestmark = requires_podman

FAKE_GPU = ContainerGpuSettings({"NVIDIA_VISIBLE_DEVICES": "GPU-fake"}, ("GPU-fake",), fake=True, uses_mps=False)
LOCKDOWN_PROBE = """
id -u; id -g
cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes
cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max
ls /sys/class/net
touch /probe 2>/dev/null && echo root-writable || echo root-read-only
touch /tmp/probe && echo tmp-writable
grep CapEff /proc/self/status
echo "env $NVIDIA_VISIBLE_DEVICES $GREETING"
"""


@pytest.fixture(params=["podman", "docker"])
def runtime(request, test_image):
    if request.param == "podman":
        return PodmanRuntime()
    return DockerRuntime(socket_path=request.getfixturevalue("docker_socket"))


@pytest.fixture
def fresh_runtime(runtime):
    """Return another instance of the same runtime, as a restarted agent would create."""
    if isinstance(runtime, DockerRuntime):
        return DockerRuntime(socket_path=runtime._socket_path)
    return PodmanRuntime()


def _spec(placement_id: str, image: str, script: str, **fields) -> PlacementSpec:
    return PlacementSpec(placement_id, image, ("sh", "-c", script), fields.pop("env", {}), FAKE_GPU, **fields)


def _placement_id(request, name: str) -> str:
    return f"{name}-{request.node.callspec.id}"


def test_runtime_is_available(runtime):
    runtime.check_available()


def test_runs_a_command_with_logs_and_exit_code(runtime, test_image, request):
    placement_id = _placement_id(request, "echo")
    events = Recorder()
    runtime.start(_spec(placement_id, test_image, "echo hello; echo oops >&2; echo world; exit 3"), events)
    finished = events.wait_finished()
    try:
        assert [change.state for change in events.changes] == [WorkloadState.RUNNING, WorkloadState.EXITED]
        assert finished.exit_code == 3
        assert events.texts("stdout") == ["hello", "world"]
        assert events.texts("stderr") == ["oops"]
        assert all(line.cursor.isdigit() for line in events.lines)
    finally:
        runtime.remove(placement_id)
    assert placement_id not in [workload.placement_id for workload in runtime.list_workloads()]


def test_container_is_locked_down(runtime, test_image, request):
    placement_id = _placement_id(request, "lockdown")
    events = Recorder()
    spec = _spec(placement_id, test_image, LOCKDOWN_PROBE, env={"GREETING": "hi there"},
                 memory_limit_bytes=96 * 1024 * 1024, pids_limit=64)  # fmt: skip
    runtime.start(spec, events)
    try:
        assert events.wait_finished().exit_code == 0, events.texts()
    finally:
        runtime.remove(placement_id)
    assert events.texts("stdout") == [
        "65534",
        "65534",
        str(96 * 1024 * 1024),
        "64",
        "lo",
        "root-read-only",
        "tmp-writable",
        "CapEff:\t0000000000000000",
        "env GPU-fake hi there",
    ]


def test_a_missing_command_fails_the_placement(runtime, test_image, request):
    placement_id = _placement_id(request, "missing")
    events = Recorder()
    runtime.start(PlacementSpec(placement_id, test_image, ("/no/such/binary",), {}, FAKE_GPU), events)
    try:
        change = events.wait_finished()
    finally:
        runtime.remove(placement_id)
    assert change.state == WorkloadState.FAILED or change.exit_code != 0
    diagnostics = " ".join([change.message, *events.texts("stderr")])
    assert "no/such/binary" in diagnostics or "No such file" in diagnostics


def test_stop_ends_a_running_container(runtime, test_image, request):
    placement_id = _placement_id(request, "stop")
    events = Recorder()
    runtime.start(_spec(placement_id, test_image, "echo up; sleep 600"), events)
    try:
        events.wait(lambda r: "up" in r.texts())
        runtime.stop(placement_id, grace_seconds=1)
        finished = events.wait_finished(timeout=20)
    finally:
        runtime.remove(placement_id)
    assert finished.state == WorkloadState.EXITED and finished.exit_code in (137, 143)


def test_a_restarted_agent_finds_and_follows_its_container_by_label(runtime, test_image, request):
    placement_id = _placement_id(request, "reattach")
    first = Recorder()
    runtime.start(_spec(placement_id, test_image, "echo zero; sleep 1; echo one; sleep 2; echo two"), first)
    try:
        first.wait(lambda r: "one" in r.texts())
        cursor = next(line.cursor for line in first.lines if line.text == "one")

        restarted = type(runtime)(
            **({"socket_path": runtime._socket_path} if isinstance(runtime, DockerRuntime) else {})
        )
        (workload,) = [w for w in restarted.list_workloads() if w.placement_id == placement_id]
        assert workload.running
        second = Recorder()
        restarted.attach(placement_id, second, cursor)
        finished = second.wait_finished()
    finally:
        runtime.remove(placement_id)
    assert finished.exit_code == 0
    assert "two" in second.texts() and "zero" not in second.texts()


@pytest.mark.parametrize("image", ["--user=0", "--volume=/:/host"])
def test_a_flag_as_image_is_never_read_as_a_flag_even_without_validation(runtime, test_image, request, image):
    """The runtime is handed the image directly (the session's validation bypassed): nothing runs."""
    placement_id = _placement_id(request, f"flag-{image[2:6]}")
    events = Recorder()
    runtime.start(PlacementSpec(placement_id, image, (test_image, "id", "-u"), {}, FAKE_GPU), events)
    finished = events.wait_finished()
    assert finished.state == WorkloadState.FAILED
    assert "reference" in finished.message.lower() or "invalid" in finished.message.lower(), finished.message
    assert events.texts() == [], "no container ran"


def test_a_container_removed_under_the_workload_is_lost_not_failed(runtime, test_image, request):
    placement_id = _placement_id(request, "removed")
    events = Recorder()
    runtime.start(_spec(placement_id, test_image, "echo up; sleep 600"), events)
    events.wait(lambda r: "up" in r.texts())
    subprocess.run(["podman", "rm", "--force", "--time", "0", container_name(placement_id)], check=True, timeout=60)
    finished = events.wait_finished()
    assert finished.state == WorkloadState.LOST and "disappeared" in finished.message, finished
