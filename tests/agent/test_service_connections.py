"""Runtime.open_connection: the agent reaches a port inside a workload that has no network (issue 15).

Real podman (`--runtime runc`), podman's Docker-compatible API and bubblewrap, with the pyservice image
(scripts/build-service-image.sh). Every placement id is unique and removed afterwards.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from agent.runtime import (
    ContainerNotListening,
    PlacementNotRunning,
    PlacementPaused,
    ServiceConnectionsUnavailable,
)
from agent.runtime.base import PlacementSpec, Runtime, WorkloadState, container_name
from agent.runtime.docker import DockerRuntime
from agent.runtime.netns import NamespaceTarget, connect_in_namespace, namespace_inode, process_start_time
from agent.runtime.podman import PodmanRuntime
from agent.runtime.sandbox import SandboxRuntime
from agent.slicing import ContainerGpuSettings
from tests.agent.conftest import REPO
from tests.agent.support import Recorder
from tests.service_image import SERVER_SOURCE

FAKE_GPU = ContainerGpuSettings({"NVIDIA_VISIBLE_DEVICES": "GPU-fake"}, ("GPU-fake",), fake=True, uses_mps=False)
TIMEOUT = 5.0


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: apt-get install {package} (or bash scripts/install-system-deps.sh)")


def _unique(name: str) -> str:
    return f"svcimg-{name}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["podman", "docker"])
def runtime(request, pyservice_image) -> Runtime:
    _require("podman", "podman runc")
    if request.param == "podman":
        return PodmanRuntime()
    return DockerRuntime(socket_path=request.getfixturevalue("docker_socket"))


def _get(sock: socket.socket, path: str) -> tuple[int, bytes]:
    """Send a GET over a connected socket and return the status and body (Connection: close)."""
    with sock:
        sock.settimeout(TIMEOUT)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: service\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _start_service(runtime: Runtime, image: str, placement_id: str, env: dict | None = None, **fields) -> Recorder:
    events = Recorder()
    spec = PlacementSpec(placement_id, image, (), {"JANCTION_ROLE": "api", **(env or {})}, FAKE_GPU, **fields)
    runtime.start(spec, events)
    events.wait(lambda r: any("pyservice listening" in text for text in r.texts()) or _finished(r))
    assert events.changes[0].state == WorkloadState.RUNNING, events.changes
    return events


def _finished(events: Recorder) -> bool:
    return any(change.state.finished for change in events.changes)


def test_connects_into_a_container_that_has_no_network(runtime, pyservice_image):
    placement_id = _unique("hello")
    try:
        _start_service(runtime, pyservice_image, placement_id, env={"PORT": "8000,8001"})
        status, body = _get(runtime.open_connection(placement_id, 8000, TIMEOUT), "/hello")
        assert status == 200
        hello = json.loads(body)
        assert hello["role"] == "api" and hello["port"] == 8000
        assert _get(runtime.open_connection(placement_id, 8001, TIMEOUT), "/hello")[0] == 200
        # Nothing was published on the host and the container has no interface but loopback.
        inspected = subprocess.run(
            ["podman", "container", "inspect", container_name(placement_id)], capture_output=True, text=True
        )
        settings = json.loads(inspected.stdout)[0]["NetworkSettings"]
        assert not settings.get("Ports") and not settings.get("Networks")
        with pytest.raises(ContainerNotListening, match="nothing listens on port 8002"):
            runtime.open_connection(placement_id, 8002, TIMEOUT)
    finally:
        runtime.remove(placement_id)


def test_refuses_after_stop_and_after_remove(runtime, pyservice_image):
    placement_id = _unique("stop")
    try:
        events = _start_service(runtime, pyservice_image, placement_id)
        _get(runtime.open_connection(placement_id, 8000, TIMEOUT), "/hello")  # caches the container's process
        runtime.stop(placement_id, grace_seconds=5)
        events.wait_finished()
        with pytest.raises(PlacementNotRunning, match="has stopped"):
            runtime.open_connection(placement_id, 8000, TIMEOUT)
    finally:
        runtime.remove(placement_id)
    with pytest.raises(PlacementNotRunning, match="does not run on this agent"):
        runtime.open_connection(placement_id, 8000, TIMEOUT)


def test_another_agents_or_an_unknown_placement_is_refused(runtime, pyservice_image):
    placement_id = _unique("other").replace("-", "_", 1)
    other_agent = PodmanRuntime() if isinstance(runtime, PodmanRuntime) else DockerRuntime(
        socket_path=runtime._socket_path)  # fmt: skip
    try:
        _start_service(runtime, pyservice_image, placement_id)
        with pytest.raises(PlacementNotRunning, match="does not run on this agent"):
            other_agent.open_connection(placement_id, 8000, TIMEOUT)
        with pytest.raises(PlacementNotRunning, match="does not run on this agent"):
            runtime.open_connection(_unique("unknown"), 8000, TIMEOUT)
        # A look-alike id whose container name is the same ("/" and "_" both become "_") is another placement.
        lookalike = placement_id.replace("_", "/", 1)
        assert container_name(lookalike) == container_name(placement_id)
        with pytest.raises(PlacementNotRunning, match="does not run on this agent"):
            runtime.open_connection(lookalike, 8000, TIMEOUT)
        # The same agent after a restart re-attaches to its container and reaches it again.
        other_agent.attach(placement_id, Recorder())
        assert _get(other_agent.open_connection(placement_id, 8000, TIMEOUT), "/hello")[0] == 200
    finally:
        runtime.remove(placement_id)


def test_podman_restart_and_pause(pyservice_image):
    _require("podman", "podman runc")
    runtime = PodmanRuntime()
    placement_id = _unique("restart")
    try:
        _start_service(runtime, pyservice_image, placement_id)
        seeded = runtime._service_targets().targets.get(placement_id)  # cached at start: no inspect on first use
        _get(runtime.open_connection(placement_id, 8000, TIMEOUT), "/hello")
        cached = runtime._service_targets().targets[placement_id]
        assert seeded == cached and cached.pid > 0
        # Restarted under the agent: the cached process is gone, a new one is found.
        restarted = subprocess.run(["podman", "restart", "--time", "1", container_name(placement_id)],
                                   capture_output=True, text=True)  # fmt: skip
        assert restarted.returncode == 0, restarted.stderr
        _wait_listening(runtime, placement_id)
        assert runtime._service_targets().targets[placement_id] != cached
        assert runtime.pause(placement_id)
        with pytest.raises(PlacementPaused, match="paused while the node's owner uses the GPU"):
            runtime.open_connection(placement_id, 8000, TIMEOUT)
        assert runtime.resume(placement_id)
        assert _get(runtime.open_connection(placement_id, 8000, TIMEOUT), "/hello")[0] == 200
    finally:
        runtime.remove(placement_id)


def _wait_listening(runtime: Runtime, placement_id: str, port: int = 8000) -> None:
    """Wait until the service accepts connections (it starts after the container does)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            _get(runtime.open_connection(placement_id, port, TIMEOUT), "/hello")
            return
        except (ContainerNotListening, PlacementNotRunning):
            assert time.monotonic() < deadline, "the service did not listen within 30 s"
            time.sleep(0.1)


def test_a_service_that_is_still_starting(pyservice_image):
    _require("podman", "podman runc")
    runtime = PodmanRuntime()
    placement_id = _unique("slow")
    try:
        events = Recorder()
        spec = PlacementSpec(placement_id, pyservice_image, (), {"PYSERVICE_START_DELAY": "2"}, FAKE_GPU)
        runtime.start(spec, events)
        events.wait(lambda r: bool(r.changes))
        with pytest.raises(ContainerNotListening):
            runtime.open_connection(placement_id, 8000, TIMEOUT)
        _wait_listening(runtime, placement_id)
    finally:
        runtime.remove(placement_id)


def test_many_connections_at_once_leave_the_agent_in_its_own_namespace(pyservice_image):
    _require("podman", "podman runc")
    runtime = PodmanRuntime()
    placement_id = _unique("many")
    own = namespace_inode("thread-self")
    results: list[int] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(_get(runtime.open_connection(placement_id, 8000, TIMEOUT), "/hello")[0])
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    try:
        _start_service(runtime, pyservice_image, placement_id)
        threads = [threading.Thread(target=call) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        runtime.remove(placement_id)
    assert not errors and results == [200] * 32
    assert namespace_inode("thread-self") == own == namespace_inode("self")
    # The agent's own sockets still reach the host's loopback (nothing of the container leaked into it).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        socket.create_connection(listener.getsockname(), timeout=TIMEOUT).close()


def test_sandbox_service(tmp_path):
    _require("bwrap", "bubblewrap")
    runtime = SandboxRuntime()
    placement_id = _unique("sandbox")
    # The sandbox hides the agent's working directory (the repository): the server comes inline.
    command = ("python3", "-c", SERVER_SOURCE.read_text())
    events = Recorder()
    runtime.start(PlacementSpec(placement_id, "recorded/only:1", command, {"PORT": "8000"}, FAKE_GPU), events)
    try:
        events.wait(lambda r: any("pyservice listening" in text for text in r.texts()))
        status, body = _get(runtime.open_connection(placement_id, 8000, TIMEOUT), "/hello")
        assert status == 200 and json.loads(body)["port"] == 8000
        with pytest.raises(ContainerNotListening):
            runtime.open_connection(placement_id, 8001, TIMEOUT)
        # The sandbox's loopback is its own: nothing listens on the host's port 8000 through it, and the host's
        # listener is not reachable from the sandbox's namespace.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            with pytest.raises(ContainerNotListening):
                runtime.open_connection(placement_id, listener.getsockname()[1], TIMEOUT)
        assert runtime.pause(placement_id)
        with pytest.raises(PlacementPaused):
            runtime.open_connection(placement_id, 8000, TIMEOUT)
        assert runtime.resume(placement_id)
    finally:
        runtime.stop(placement_id, grace_seconds=2)
    events.wait_finished()
    with pytest.raises(PlacementNotRunning, match="does not run on this agent"):
        runtime.open_connection(placement_id, 8000, TIMEOUT)


@pytest.mark.parametrize("port", [0, -1, 65536, True, "8000", 80.0, None])
def test_bad_ports_are_refused(port):
    with pytest.raises(ValueError, match="container port must be an integer from 1 to 65535"):
        PodmanRuntime().open_connection("any", port, TIMEOUT)


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, "5", None])
def test_bad_timeouts_are_refused(timeout):
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        PodmanRuntime().open_connection("any", 8000, timeout)


def test_never_connects_into_the_agents_own_namespace():
    """A workload sharing the host's network (or a forged pid) must not let a tunnel reach the host's loopback."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        me = NamespaceTarget(os.getpid(), process_start_time(os.getpid()))
        with pytest.raises(ServiceConnectionsUnavailable, match="shares the agent's network namespace"):
            connect_in_namespace(me, listener.getsockname()[1], TIMEOUT)


def test_a_reused_pid_is_not_trusted():
    me = NamespaceTarget(os.getpid(), process_start_time(os.getpid()) + 1)
    with pytest.raises(PlacementNotRunning, match="process is gone"):
        connect_in_namespace(me, 8000, TIMEOUT)
    with pytest.raises(PlacementNotRunning, match="process is gone"):
        connect_in_namespace(NamespaceTarget(2**22 + 1, 1), 8000, TIMEOUT)


def test_runtime_without_connections_says_so():
    class Bare(SandboxRuntime):
        supports_service_connections = False

    with pytest.raises(ServiceConnectionsUnavailable, match="cannot open connections"):
        Bare().check_service_connections()


def test_check_passes_as_root_and_names_what_is_missing_without_it():
    PodmanRuntime().check_service_connections()
    probe = "from agent.runtime.netns import check_namespace_entry as c\ntry:\n c()\nexcept Exception as e:\n print(e)"
    _require("setpriv", "util-linux")
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
         sys.executable, "-c", probe],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60,
    )  # fmt: skip
    assert "lacks CAP_SYS_ADMIN and CAP_SYS_PTRACE" in result.stdout, result.stdout + result.stderr
    assert "run the agent as root" in result.stdout
