"""The agent checks every StartPlacement itself (defence in depth): a hostile command is refused with a reason."""

from __future__ import annotations

import pytest

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.runtime.base import DEFAULT_CPU_MILLICORES, PlacementSpec
from agent.runtime.podman import PodmanRuntime
from agent.slicing import ContainerGpuSettings
from agent.validation import CLOCK_SKEW_MS, ExpiredCommand, InvalidPlacement, validate_start
from tests.agent.support import build_session, drain, of_kind, start_message

FAKE = ContainerGpuSettings({"NVIDIA_VISIBLE_DEVICES": "GPU-f"}, ("GPU-f",), True, False)
NOW_MS = 1_800_000_000_000


def _start(**fields) -> pb.StartPlacement:
    fields.setdefault("placement_id", "p-1")
    fields.setdefault("image", "docker.io/library/python:3.12")
    fields.setdefault("vgpu_local_ids", ["0:0"])
    return pb.StartPlacement(**fields)


@pytest.mark.parametrize(
    "image",
    [
        "docker.io/library/python:3.12",
        "busybox",
        "localhost/janction-test-busybox:latest",
        "registry.example.com:5000/team/app@sha256:" + "a" * 64,
        "[::1]:5000/app:v1",
    ],
)
def test_oci_references_are_accepted(image):
    validate_start(_start(image=image), NOW_MS)


@pytest.mark.parametrize(
    "image",
    [
        "--user=0",
        "--volume=/:/host",
        "-v/:/host",
        "--privileged",
        "busybox --privileged",
        "Busybox",
        "busybox:",
        "a" * 256,
        "busybox\n",
        "büsybox",
        "",
    ],
)
def test_images_that_are_not_references_are_refused(image):
    with pytest.raises(InvalidPlacement):
        validate_start(_start(image=image), NOW_MS)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"command": ["x"] * 257}, "257 arguments"),
        ({"command": ["x" * 70_000]}, "bytes"),
        ({"command": ["a\0b"]}, "NUL"),
        ({"env": {f"V{n}": "1" for n in range(257)}}, "257 variables"),
        ({"env": {"A": "x" * 70_000}}, "bytes"),
        ({"env": {"A" * 129: "1"}}, "invalid environment variable name"),
        ({"env": {"1A": "1"}}, "invalid environment variable name"),
        ({"env": {"JANCTION_PLACEMENT_ID": "other"}}, "reserved"),
        ({"env": {"A": "1\nB=2"}}, "line break"),
        ({"memory_limit_bytes": 1}, "memory_limit_bytes"),
        ({"memory_limit_bytes": 2**63}, "memory_limit_bytes"),
        ({"cpu_millicores": 1}, "cpu_millicores"),
        ({"cpu_millicores": 2**32 - 1}, "cpu_millicores"),
        ({"pids_limit": 1}, "pids_limit"),
        ({"pids_limit": 10_000_000}, "pids_limit"),
        ({"ports": [pb.PortMapping(container_port=0)]}, "between 1 and 65535"),
        ({"ports": [pb.PortMapping(container_port=70_000)]}, "between 1 and 65535"),
        ({"ports": [pb.PortMapping(container_port=80, host_port=22)]}, "host ports"),
        ({"ports": [pb.PortMapping(container_port=80, protocol="sctp")]}, "tcp or udp"),
        ({"ports": [pb.PortMapping(container_port=80), pb.PortMapping(container_port=80)]}, "twice"),
        ({"ports": [pb.PortMapping(container_port=n + 1) for n in range(17)]}, "at most 16"),
        ({"peers": [pb.Peer(placement_id="q", address="a,b", port=1)]}, "not a host name"),
        ({"peers": [pb.Peer(placement_id="q", address="-x", port=1)]}, "not a host name"),
        ({"peers": [pb.Peer(placement_id="q", address="h", port=0)]}, "not a host name"),
        ({"vgpu_local_ids": ["0:0"] * 65}, "at most 64"),
        ({"placement_id": "x" * 129}, "printable"),
    ],
)
def test_out_of_range_commands_are_refused_with_a_reason(fields, reason):
    with pytest.raises(InvalidPlacement, match=reason):
        validate_start(_start(**fields), NOW_MS)


def test_limits_inside_the_range_and_zero_defaults_are_accepted():
    validate_start(_start(memory_limit_bytes=2 << 30, cpu_millicores=1500, pids_limit=512), NOW_MS)
    validate_start(_start(), NOW_MS)


def test_an_expired_command_is_refused_but_clock_skew_is_tolerated():
    validate_start(_start(expires_at_ms=NOW_MS - CLOCK_SKEW_MS), NOW_MS)
    validate_start(_start(expires_at_ms=0), NOW_MS)
    with pytest.raises(ExpiredCommand, match="issued for rental state 'allocated'"):
        validate_start(_start(expires_at_ms=NOW_MS - CLOCK_SKEW_MS - 1, issued_for_state="allocated"), NOW_MS)


@pytest.mark.parametrize("image", ["--user=0", "--volume=/:/host"])
def test_the_session_refuses_a_flag_as_image_and_reports_failed_with_the_reason(tmp_path, image):
    from tests.agent.support import FakeRuntime

    runtime = FakeRuntime()
    session = build_session(tmp_path, runtime)
    _, outbox = session.on_connected()
    session.handle(start_message("p-1", ["id"], image=image))
    (status,) = of_kind(drain(outbox), "placement_status")
    assert status.state == pb.PLACEMENT_STATE_FAILED and "not an OCI image reference" in status.message
    assert runtime.started == [] and session.placements == {}


def test_podman_puts_a_double_dash_before_the_image_so_it_is_never_a_flag():
    spec = PlacementSpec("p-1", "--user=0", ("id", "-u"), {}, FAKE)
    args = PodmanRuntime().run_arguments(spec, "envfile")
    assert args[-4:] == ["--", "--user=0", "id", "-u"]
    assert args.index("--") == len(args) - 4, "every option comes before the --"


def test_the_default_cpu_limit_is_never_unlimited():
    spec = PlacementSpec("p-1", "busybox", ("true",), {}, FAKE)
    assert spec.cpu_millicores == DEFAULT_CPU_MILLICORES > 0
    args = PodmanRuntime().run_arguments(spec, "envfile")
    assert args[args.index("--cpus") + 1] == f"{DEFAULT_CPU_MILLICORES / 1000:g}"
