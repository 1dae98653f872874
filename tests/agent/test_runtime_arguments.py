"""How the container runtimes translate a placement into engine arguments (no engine needed)."""

from __future__ import annotations

import pytest

from agent.runtime.base import PlacementSpec, PortSpec, container_name
from agent.runtime.docker import DockerRuntime
from agent.runtime.egress import EgressPolicy
from agent.runtime.podman import PodmanRuntime, env_file_text
from agent.runtime.sandbox import SandboxRuntime
from agent.slicing import ContainerGpuSettings

REAL_MPS = ContainerGpuSettings(
    {"NVIDIA_VISIBLE_DEVICES": "GPU-a", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50"}, ("GPU-a",), False, True
)
FAKE = ContainerGpuSettings({"NVIDIA_VISIBLE_DEVICES": "GPU-f"}, ("GPU-f",), True, False)


def _spec(gpu: ContainerGpuSettings, **fields) -> PlacementSpec:
    return PlacementSpec("p/1", "img:1", ("run", "it"), {"A": "1"}, gpu, **fields)


def _pairs(args: list[str], flag: str) -> list[str]:
    return [args[index + 1] for index, arg in enumerate(args) if arg == flag]


def test_podman_locks_the_container_down_and_labels_it():
    args = PodmanRuntime().run_arguments(
        _spec(FAKE, memory_limit_bytes=1 << 30, pids_limit=99, cpu_millicores=1500), "f"
    )
    assert args[-3:] == ["img:1", "run", "it"]
    assert {"--read-only", "--init", "--detach"} <= set(args)
    assert _pairs(args, "--name") == ["janction-p_1"]
    assert _pairs(args, "--label") == ["io.janction.placement-id=p/1", "io.janction.managed=true"]
    assert _pairs(args, "--user") == ["65534:65534"]
    assert _pairs(args, "--cap-drop") == ["ALL"]
    assert _pairs(args, "--security-opt") == ["no-new-privileges"]
    assert _pairs(args, "--network") == ["none"]
    assert _pairs(args, "--memory") == [str(1 << 30)] and _pairs(args, "--pids-limit") == ["99"]
    assert _pairs(args, "--cpus") == ["1.5"]
    assert _pairs(args, "--tmpfs")[0].startswith("/tmp:rw,nosuid,nodev")
    assert "--device" not in args, "fake GPUs get no device"


def test_podman_gives_real_vgpus_through_cdi_and_mps_and_never_publishes_ports():
    ports = (PortSpec(8888), PortSpec(53, 5353, "udp"))
    args = PodmanRuntime().run_arguments(_spec(REAL_MPS, network_allowed=True, ports=ports), "f")
    assert _pairs(args, "--device") == ["nvidia.com/gpu=GPU-a"]
    assert _pairs(args, "--ipc") == ["host"]
    assert _pairs(args, "--volume") == ["/tmp/nvidia-mps:/tmp/nvidia-mps"]
    assert "--publish" not in args
    # Asked for egress on a node that does not allow it: still no network (the start fails before this).
    assert _pairs(args, "--network") == ["none"]


def test_podman_egress_uses_the_placements_own_network_and_public_resolvers():
    runtime = PodmanRuntime(egress=EgressPolicy(dns=("192.0.2.53",)))
    assert runtime.egress_allowed and not PodmanRuntime().egress_allowed
    args = runtime.run_arguments(_spec(FAKE, network_allowed=True, ports=(PortSpec(8000),)), "f")
    assert _pairs(args, "--network") == ["janction-p_1"]
    assert _pairs(args, "--dns") == ["192.0.2.53"]
    assert "--publish" not in args
    assert _pairs(runtime.run_arguments(_spec(FAKE), "f"), "--network") == ["none"]


def test_docker_body_matches_the_podman_lockdown():
    body = DockerRuntime().create_body(_spec(REAL_MPS, memory_limit_bytes=1 << 30, pids_limit=99, cpu_millicores=250))
    host = body["HostConfig"]
    assert body["User"] == "65534:65534" and body["Cmd"] == ["run", "it"]
    assert body["Labels"] == {"io.janction.placement-id": "p/1", "io.janction.managed": "true"}
    assert "A=1" in body["Env"] and "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50" in body["Env"]
    assert (host["ReadonlyRootfs"], host["CapDrop"], host["SecurityOpt"]) == (True, ["ALL"], ["no-new-privileges"])
    assert (host["Memory"], host["MemorySwap"], host["PidsLimit"], host["NanoCpus"]) == (
        1 << 30,
        1 << 30,
        99,
        250_000_000,
    )
    assert host["NetworkMode"] == "none" and host["Init"] is True
    assert host["DeviceRequests"] == [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=GPU-a"]}]
    assert host["IpcMode"] == "host"


def test_docker_body_never_has_a_network_or_published_ports():
    body = DockerRuntime().create_body(_spec(FAKE, network_allowed=True, ports=(PortSpec(80, 8080),)))
    host = body["HostConfig"]
    assert "DeviceRequests" not in host and host["NetworkMode"] == "none"
    assert "ExposedPorts" not in body and "PortBindings" not in host


def test_sandbox_command_drops_privileges_limits_memory_and_unshares_everything():
    line = SandboxRuntime().command_line(_spec(FAKE, memory_limit_bytes=1 << 30))
    assert line[line.index("prlimit") + 1] == f"--as={1 << 30}"
    assert {"--unshare-all", "--die-with-parent", "--new-session"} <= set(line)
    assert line[-3:] == ["--", "run", "it"]


def test_env_file_refuses_newlines():
    assert env_file_text({"A": "1", "B": "x y"}) == "A=1\nB=x y\n"
    with pytest.raises(ValueError, match="newline"):
        env_file_text({"A": "1\n2"})


def test_container_names_are_safe():
    assert container_name("abc-1.2_3") == "janction-abc-1.2_3"
    assert container_name("a b/c") == "janction-a_b_c"
