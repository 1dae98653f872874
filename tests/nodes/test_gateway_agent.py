"""The gateway with the real agent process (fake GPUs, sandbox runtime) over mutual TLS."""

from __future__ import annotations

import itertools
import shutil
from types import SimpleNamespace

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.protocol.signing import verify_usage_report
from nodes.models import Gpu, NodeCommand, NodePlacement, NodeState, PlacementLogLine, Pool, UsageReport, VGpu
from nodes.services import node_create, node_send
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import *  # noqa: F403
from tests.nodes.gateway_fixtures import GRACE_SECONDS, gateway_ca_pem, wait_until

USAGE_FIELDS = ("seq", "interval_start_ms", "interval_end_ms", "vgpu_count", "vgpu_milliseconds")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="the sandbox runtime needs bubblewrap"),
]


def _node(name: str = "rig"):
    ticket = node_create(owner=UserFactory(), name=name)
    return ticket.node, ticket.token


def _refreshed(node):
    node.refresh_from_db()
    return node


def test_agent_enrolls_says_hello_runs_a_placement_and_goes_offline_when_killed(gateway, start_agent):
    node, token = _node()
    agent = start_agent(gateway, token)

    wait_until(lambda: _refreshed(node).state == NodeState.ONLINE, what=f"node online; agent said:\n{agent.output()}")
    certificate = x509.load_pem_x509_certificate(node.certificate_pem.encode())
    assert certificate.subject.rfc4514_string() == f"CN={node.pk}"
    assert format(certificate.serial_number, "x") == node.certificate_serial
    assert node.enrolled_at is not None and node.has_fake_gpus and node.runtime == "sandbox"
    gpu = Gpu.objects.get(node=node)
    assert (gpu.name, gpu.fake, gpu.architecture) == ("NVIDIA GeForce RTX 4090", True, "ada")
    vgpus = list(VGpu.objects.filter(node=node).order_by("local_id"))
    assert [(v.local_id, v.pool.name, v.state, v.fake) for v in vgpus] == [
        ("0:0", "ada-12g", "free", True),
        ("0:1", "ada-12g", "free", True),
    ]
    assert Pool.objects.filter(name="ada-12g", architecture="ada", memory_gib=12).exists()

    # Heartbeats (one a second) reach the GPU's telemetry through batched flushes.
    wait_until(lambda: Gpu.objects.get(pk=gpu.pk).telemetry_at is not None, what="GPU telemetry")
    assert Gpu.objects.get(pk=gpu.pk).utilization_percent is not None

    command = ["sh", "-c", "echo hello; echo oops >&2; sleep 1.5; echo bye"]
    start = {"placement_id": "p-1", "image": "busybox", "command": command, "vgpu_local_ids": ["0:0"]}
    sent = node_send(node_id=node.pk, message={"start_placement": start})

    placement = NodePlacement.objects.get(placement_id="p-1")
    wait_until(lambda: _refreshed(placement).state == "exited", timeout=20, what="placement exited")
    assert placement.exit_code == 0 and placement.node_id == node.pk
    wait_until(lambda: NodeCommand.objects.get(pk=sent.pk).delivered_at is not None, what="command marked delivered")

    lines = list(PlacementLogLine.objects.filter(placement=placement).order_by("seq"))
    assert [line.seq for line in lines] == list(range(1, len(lines) + 1))
    assert {("stdout", "hello"), ("stderr", "oops"), ("stdout", "bye")} <= {(ln.stream, ln.text) for ln in lines}

    # The agent sends a placement's last usage report and log lines before its final status.
    reports = list(UsageReport.objects.filter(placement=placement).order_by("seq"))
    assert [report.seq for report in reports] == list(range(1, len(reports) + 1))
    for earlier, later in itertools.pairwise(reports):
        assert later.interval_start_ms == earlier.interval_end_ms
    for report in reports:
        fields = {name: getattr(report, name) for name in USAGE_FIELDS}
        signed = SimpleNamespace(**fields, placement_id="p-1", signature=bytes(report.signature))
        assert verify_usage_report(node.certificate_pem, signed)
    running_ms = reports[-1].interval_end_ms - reports[0].interval_start_ms
    assert 1500 <= running_ms < 6000

    agent.kill()
    wait_until(lambda: _refreshed(node).state == NodeState.OFFLINE, timeout=GRACE_SECONDS + 5, what="node offline")
    assert set(VGpu.objects.filter(node=node).values_list("state", flat=True)) == {"offline"}
    assert node.events.filter(to_state=NodeState.OFFLINE, reason__startswith="No heartbeat").exists()


def test_health_reports_serving_on_the_enrollment_port_without_a_client_certificate(gateway):
    channel = grpc.secure_channel(f"127.0.0.1:{gateway.enroll_port}", grpc.ssl_channel_credentials(gateway_ca_pem()))
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "janction.agent.v1.AgentGateway"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    channel.close()


def test_graceful_stop_flushes_buffered_heartbeats_and_refuses_new_calls(gateway, gateway_settings, start_agent):
    gateway.config.flush_seconds = 3600  # only the stop flushes
    node, token = _node()
    start_agent(gateway, token)
    wait_until(lambda: _refreshed(node).state == NodeState.ONLINE, what="node online")
    wait_until(lambda: gateway.heartbeats.received >= 1, what="a heartbeat")
    assert Gpu.objects.get(node=node).telemetry_at is None, "heartbeats wait in the buffer"

    gateway.stop(grace=1)

    assert Gpu.objects.get(node=node).telemetry_at is not None
    channel = grpc.secure_channel(f"127.0.0.1:{gateway.enroll_port}", grpc.ssl_channel_credentials(gateway_ca_pem()))
    with pytest.raises(grpc.RpcError) as refused:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()
