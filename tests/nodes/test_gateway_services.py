"""The gateway's services without a server: heartbeat batches, offline detection, node_send, the CA."""

from __future__ import annotations

import stat
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agent.identity import build_csr_pem, generate_private_key
from janction.errors import ApplicationError
from nodes.ca import CertificateRequestInvalid, _ca_from, platform_ca
from nodes.gateway.core import HeartbeatBuffer
from nodes.models import Gpu, Node, NodeCommand, NodePlacement, NodeState, VGpu
from nodes.services import (
    GpuReport,
    GpuSampleReport,
    HelloReport,
    NodeHeartbeat,
    RunningPlacementReport,
    VGpuReport,
    node_create,
    node_hello,
    node_send,
    node_transition,
)
from nodes.tasks import node_mark_stale_offline_task
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import *  # noqa: F403

pytestmark = pytest.mark.django_db


def _online_node(name: str = "rig", gpus: int = 1) -> tuple[Node, dict[int, int]]:
    node = node_create(owner=UserFactory(), name=name).node
    hello = HelloReport(
        agent_version="t",
        runtime="sandbox",
        hostname="h",
        network_unsupported=True,
        gpus=[
            GpuReport(i, f"GPU-{name}-{i}", "RTX 4090", 24 * 2**30, "8.9", "ada", "", "", False, False, True)
            for i in range(gpus)
        ],
        vgpus=[
            VGpuReport(f"{i}:0", f"GPU-{name}-{i}", 24 * 2**30, 100, "ada-24g", "whole", {}, "", True)
            for i in range(gpus)
        ],
        placements=[],
    )
    gpu_ids = node_hello(node_id=node.pk, hello=hello)
    node.refresh_from_db()
    return node, gpu_ids


def _sample(index: int, utilization: int) -> GpuSampleReport:
    return GpuSampleReport(index, utilization, 2**30, 50 + utilization % 10, 100_000, 1)


def test_hello_creates_pools_gpus_and_free_vgpus_and_brings_the_node_online():
    node, gpu_ids = _online_node(gpus=2)
    assert node.state == NodeState.ONLINE and node.has_fake_gpus and node.last_seen_at is not None
    assert sorted(gpu_ids) == [0, 1]
    assert set(VGpu.objects.filter(node=node).values_list("pool__name", "state")) == {("ada-24g", "free")}
    assert node.events.get().to_state == NodeState.ONLINE


def test_heartbeats_are_written_in_one_bulk_update_per_flush(gateway_settings):
    first, first_gpus = _online_node("a", gpus=2)
    second, second_gpus = _online_node("b")
    buffer = HeartbeatBuffer()
    moment = timezone.now()
    for utilization in range(30):
        for node, gpus in ((first, first_gpus), (second, second_gpus)):
            samples = {gpu_id: _sample(index, utilization) for index, gpu_id in gpus.items()}
            buffer.add(NodeHeartbeat(node.pk, moment + timedelta(milliseconds=utilization), samples))

    with CaptureQueriesContext(connection) as queries:
        assert buffer.flush() == 2

    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 2, "one UPDATE for the nodes, one for their GPUs, whatever the number of heartbeats"
    assert (buffer.received, buffer.flushes) == (60, 1)
    assert set(Gpu.objects.values_list("utilization_percent", flat=True)) == {29}
    first.refresh_from_db()
    assert first.last_seen_at == moment + timedelta(milliseconds=29)
    assert buffer.flush() == 0 and buffer.flushes == 1


def test_a_silent_node_goes_offline_with_its_vgpus_and_comes_back_with_heartbeats(gateway_settings):
    silent, _ = _online_node("silent")
    fresh, _ = _online_node("fresh")
    Node.objects.filter(pk=silent.pk).update(last_seen_at=timezone.now() - timedelta(seconds=3))

    assert node_mark_stale_offline_task() == [silent.pk]  # grace is 2 s in these tests

    silent.refresh_from_db()
    assert silent.state == NodeState.OFFLINE
    assert set(VGpu.objects.filter(node=silent).values_list("state", flat=True)) == {"offline"}
    assert Node.objects.get(pk=fresh.pk).state == NodeState.ONLINE
    assert node_mark_stale_offline_task() == []

    buffer = HeartbeatBuffer()
    buffer.add(NodeHeartbeat(silent.pk, timezone.now(), {}))
    buffer.flush()
    assert Node.objects.get(pk=silent.pk).state == NodeState.ONLINE
    assert set(VGpu.objects.filter(node=silent).values_list("state", flat=True)) == {"free"}


def test_a_second_hello_reattaches_reported_placements_and_ignores_unknown_ones():
    node, _ = _online_node()
    start = {"placement_id": "p-1", "image": "busybox", "vgpu_local_ids": ["0:0"]}
    node_send(node_id=node.pk, message={"start_placement": start})
    running = [
        RunningPlacementReport("p-1", "running", ["0:0"], 1_000, 4, 17),
        RunningPlacementReport("stranger", "running", ["0:0"], 1_000, 1, 1),
    ]
    gpu = GpuReport(0, "GPU-rig-0", "RTX 4090", 24 * 2**30, "8.9", "ada", "", "", False, False, True)
    vgpu = VGpuReport("0:0", "GPU-rig-0", 24 * 2**30, 100, "ada-24g", "whole", {}, "", True)
    node_hello(node_id=node.pk, hello=HelloReport("t", "sandbox", "h", True, [gpu], [vgpu], running))

    placement = node.placements.get()
    assert (placement.state, placement.started_at_ms, placement.last_usage_seq, placement.last_log_seq) == (
        "running",
        1_000,
        4,
        17,
    )
    assert not NodePlacement.objects.filter(placement_id="stranger").exists()


def test_node_send_queues_commands_in_order_for_an_online_node():
    node, _ = _online_node()
    start = {"placement_id": "p-1", "image": "busybox", "vgpu_local_ids": ["0:0"]}
    first = node_send(node_id=node.pk, message={"start_placement": start})
    second = node_send(node_id=node.pk, message={"stopPlacement": {"placementId": "p-1", "graceSeconds": 3}})
    queued = list(NodeCommand.objects.filter(node=node, delivered_at__isnull=True).order_by("pk"))
    assert [command.pk for command in queued] == [first.pk, second.pk]
    assert queued[1].message == {"stop_placement": {"placement_id": "p-1", "grace_seconds": 3}}
    assert node.placements.get().placement_id == "p-1"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"usage_ack": {"placement_id": "p", "seq": 1}}, "command_invalid"),
        ({"no_such_field": {}}, "command_invalid"),
        ({"start_placement": {"placement_id": "p", "vgpu_local_ids": ["9:9"]}}, "command_invalid"),
        ({"stop_placement": {"placement_id": "never-sent"}}, "placement_not_on_node"),
    ],
)
def test_node_send_refuses_bad_commands(message, code):
    node, _ = _online_node()
    with pytest.raises(ApplicationError) as refused:
        node_send(node_id=node.pk, message=message)
    assert refused.value.code == code
    assert not NodeCommand.objects.exists()


def test_node_send_refuses_a_node_that_is_not_connected_and_another_nodes_placement():
    node, _ = _online_node("a")
    other, _ = _online_node("b")
    start = {"placement_id": "p-1", "image": "busybox", "vgpu_local_ids": ["0:0"]}
    node_send(node_id=node.pk, message={"start_placement": start})
    with pytest.raises(ApplicationError) as taken:
        node_send(node_id=other.pk, message={"start_placement": start})
    assert taken.value.code == "placement_on_other_node"
    node_transition(node=other, to_state=NodeState.OFFLINE, reason="test")
    with pytest.raises(ApplicationError) as offline:
        node_send(node_id=other.pk, message={"ping": {"nonce": 1}})
    assert offline.value.code == "node_not_connected" and "offline" in offline.value.message
    with pytest.raises(ApplicationError) as missing:
        node_send(node_id=10**9, message={"ping": {"nonce": 1}})
    assert missing.value.status == 404


def test_the_embedded_default_generates_its_ca_once_with_a_private_key(settings, tmp_path):
    settings.AGENT_CA_CERT_PEM = settings.AGENT_CA_KEY_PEM = ""
    settings.AGENT_CA_CERT_FILE = settings.AGENT_CA_KEY_FILE = ""
    settings.VAR_DIR = tmp_path
    settings.JANCTION_EMBEDDED = False
    with pytest.raises(ImproperlyConfigured, match="No agent CA is configured"):
        platform_ca()

    settings.JANCTION_EMBEDDED = True
    ca = platform_ca()
    key_path = tmp_path / "ca" / "ca.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    _ca_from.cache_clear()
    assert platform_ca().certificate == ca.certificate, "the generated CA is read back, not replaced"
    settings.JANCTION_EMBEDDED = False
    settings.AGENT_CA_CERT_FILE, settings.AGENT_CA_KEY_FILE = str(tmp_path / "ca" / "ca.pem"), str(key_path)
    assert platform_ca().certificate == ca.certificate, "real mode reads the files it is given"


def test_the_ca_refuses_csrs_with_other_keys_or_bad_signatures(gateway_settings):
    ca = platform_ca()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    rsa_csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(rsa_key, hashes.SHA256())
    with pytest.raises(CertificateRequestInvalid, match="P-256"):
        ca.issue_client_certificate(csr_pem=rsa_csr.public_bytes(serialization.Encoding.PEM), node_id=1)

    good = build_csr_pem(generate_private_key(), "h").decode()
    lines = good.splitlines()
    body = "".join(lines[1:-1])
    flipped = body[:-8] + ("A" if body[-8] != "A" else "B") + body[-7:]
    broken = "\n".join([lines[0], *[flipped[i : i + 64] for i in range(0, len(flipped), 64)], lines[-1]])
    with pytest.raises(CertificateRequestInvalid):
        ca.issue_client_certificate(csr_pem=broken, node_id=1)
    issued = ca.issue_client_certificate(csr_pem=good, node_id=7)
    assert x509.load_pem_x509_certificate(issued.pem.encode()).subject.rfc4514_string() == "CN=7"
