"""Enrollment and the mutual-TLS stream against bad input: tokens, certificates, usage reports."""

from __future__ import annotations

import datetime
import queue
import threading
import time

import grpc
import pytest
from cryptography import x509
from django.utils import timezone

from agent.client import EnrollmentError
from agent.identity import (
    build_csr_pem,
    generate_private_key,
    load_private_key,
    mutual_tls_credentials,
    private_key_pem,
)
from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.protocol.gen.janction.agent.v1.agent_pb2_grpc import AgentGatewayStub
from agent.protocol.signing import sign_usage_report
from nodes.ca import ca_generate
from nodes.models import Node, NodeState, UsageReport
from nodes.services import node_create, node_delete, node_send, node_transition
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import *  # noqa: F403
from tests.nodes.gateway_fixtures import enrolled_identity, gateway_ca_pem, mutual_stub, wait_until


def _ticket(name: str = "rig"):
    return node_create(owner=UserFactory(), name=name)


def _hello() -> pb.AgentMessage:
    gpu = pb.Gpu(index=0, uuid="GPU-x", name="RTX 4090", memory_bytes=24 * 2**30, architecture="ada", fake=True)
    vgpu = pb.VGpu(local_id="0:0", gpu_uuid="GPU-x", memory_bytes=24 * 2**30, pool="ada-24g", fake=True)
    return pb.AgentMessage(hello=pb.Hello(agent_version="t", runtime="sandbox", gpus=[gpu], vgpus=[vgpu]))


class RawStream:
    """A hand-driven Connect stream: the test decides every message (a misbehaving agent)."""

    def __init__(self, stub: AgentGatewayStub, timeout: float = 30) -> None:
        self._requests: queue.Queue[pb.AgentMessage | None] = queue.Queue()
        self.received: list[pb.ControlMessage] = []
        self.error: grpc.RpcError | None = None
        self._call = stub.Connect(iter(self._requests.get, None), timeout=timeout)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self._call:
                self.received.append(message)
        except grpc.RpcError as exc:
            self.error = exc

    def send(self, message: pb.AgentMessage) -> None:
        self._requests.put(message)

    def acks(self) -> list[tuple[str, int]]:
        return [
            (m.usage_ack.placement_id, m.usage_ack.seq)
            for m in self.received
            if m.HasField("usage_ack") and not m.usage_ack.rejected
        ]

    def nacks(self) -> list[tuple[str, int, str]]:
        return [
            (m.usage_ack.placement_id, m.usage_ack.seq, m.usage_ack.code)
            for m in self.received
            if m.HasField("usage_ack") and m.usage_ack.rejected
        ]

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()
        self._reader.join(timeout=5)

    def failure(self) -> grpc.RpcError:
        self._reader.join(timeout=10)
        assert self.error is not None, f"the stream did not fail; received {self.received}"
        return self.error


def test_enroll_with_a_valid_token_issues_a_certificate_of_the_platform_ca(gateway, tmp_path):
    ticket = _ticket()
    store = enrolled_identity(gateway, ticket.token, tmp_path / "agent")

    node = Node.objects.get(pk=ticket.node.pk)
    certificate = x509.load_pem_x509_certificate(store.cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(gateway_ca_pem())
    certificate.verify_directly_issued_by(ca)
    assert certificate.subject.rfc4514_string() == f"CN={node.pk}"
    assert certificate.public_key() == load_private_key(store.key_path).public_key()
    assert format(certificate.serial_number, "x") == node.certificate_serial
    assert node.certificate_pem == store.cert_path.read_text() and node.enrolled_at is not None
    validity = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=364) < validity <= datetime.timedelta(days=365)
    assert store.load().connect_address == f"127.0.0.1:{gateway.port}"
    assert store.load().node_id == str(node.pk)


def test_a_used_an_expired_and_an_unknown_token_are_refused_clearly(gateway, tmp_path):
    used = _ticket("used")
    enrolled_identity(gateway, used.token, tmp_path / "first")
    with pytest.raises(EnrollmentError, match="UNAUTHENTICATED: This enrollment token was already used"):
        enrolled_identity(gateway, used.token, tmp_path / "second")

    expired = _ticket("expired")
    Node.objects.filter(pk=expired.node.pk).update(enrollment_expires_at=timezone.now() - datetime.timedelta(seconds=1))
    with pytest.raises(EnrollmentError, match="UNAUTHENTICATED: This enrollment token has expired"):
        enrolled_identity(gateway, expired.token, tmp_path / "third")
    assert Node.objects.get(pk=expired.node.pk).enrolled_at is None

    with pytest.raises(EnrollmentError, match="UNAUTHENTICATED: Unknown enrollment token"):
        enrolled_identity(gateway, "jne_not-a-token", tmp_path / "fourth")


def test_enroll_refuses_a_csr_that_is_not_one_and_keeps_the_token(gateway):
    ticket = _ticket()
    channel = grpc.secure_channel(f"127.0.0.1:{gateway.enroll_port}", grpc.ssl_channel_credentials(gateway_ca_pem()))
    with pytest.raises(grpc.RpcError) as refused:
        AgentGatewayStub(channel).Enroll(pb.EnrollRequest(enrollment_token=ticket.token, csr_pem="nope"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "certificate signing request" in refused.value.details()
    channel.close()
    assert Node.objects.get(pk=ticket.node.pk).enrolled_at is None


def test_connect_without_a_client_certificate_is_refused_on_either_port(gateway):
    for port, code in ((gateway.port, grpc.StatusCode.UNAVAILABLE), (gateway.enroll_port, None)):
        channel = grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(gateway_ca_pem()))
        with pytest.raises(grpc.RpcError) as refused:
            list(AgentGatewayStub(channel).Connect(iter([_hello()]), timeout=5))
        # The connect port fails the TLS handshake; the enrollment port has no client certificate to read.
        assert refused.value.code() == (code or grpc.StatusCode.UNAUTHENTICATED)
        channel.close()


def test_connect_with_a_certificate_of_another_ca_fails_the_handshake(gateway):
    rogue = ca_generate()
    key = generate_private_key()
    issued = rogue.issue_client_certificate(csr_pem=build_csr_pem(key, "h"), node_id=1)
    credentials = mutual_tls_credentials(
        key_pem=private_key_pem(key), certificate_pem=issued.pem.encode(), trusted_ca_pem=gateway_ca_pem()
    )
    channel = grpc.secure_channel(f"127.0.0.1:{gateway.port}", credentials)
    with pytest.raises(grpc.RpcError) as refused:
        list(AgentGatewayStub(channel).Connect(iter([_hello()]), timeout=5))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()


@pytest.mark.parametrize("fate", ["deleted", "quarantined"])
def test_a_certificate_of_a_deleted_or_quarantined_node_is_refused(gateway, tmp_path, fate):
    ticket = _ticket()
    store = enrolled_identity(gateway, ticket.token, tmp_path / "agent")
    if fate == "deleted":
        node_delete(owner=ticket.node.owner, node_id=ticket.node.pk)
    else:
        node_transition(node=Node.objects.get(pk=ticket.node.pk), to_state=NodeState.QUARANTINED, reason="test")
    channel, stub = mutual_stub(gateway, store)
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Connect(iter([_hello()]), timeout=5))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert fate in refused.value.details()
    channel.close()
    assert Node.objects.get(pk=ticket.node.pk).state != NodeState.ONLINE


def test_the_first_message_must_be_hello(gateway, tmp_path):
    store = enrolled_identity(gateway, _ticket().token, tmp_path / "agent")
    channel, stub = mutual_stub(gateway, store)
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Connect(iter([pb.AgentMessage(heartbeat=pb.Heartbeat())]), timeout=5))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    channel.close()


def _report(placement_id: str, seq: int, start_ms: int, key, *, vgpus: int = 1, length_ms: int = 1000):
    report = pb.UsageReport(
        placement_id=placement_id,
        seq=seq,
        interval_start_ms=start_ms,
        interval_end_ms=start_ms + length_ms,
        vgpu_count=vgpus,
        vgpu_milliseconds=vgpus * length_ms,
    )
    report.signature = sign_usage_report(key, report)
    return report


def test_usage_reports_are_verified_stored_once_and_acked_again_while_bad_ones_are_not(gateway, tmp_path):
    ticket = _ticket()
    store = enrolled_identity(gateway, ticket.token, tmp_path / "agent")
    key = load_private_key(store.key_path)
    channel, stub = mutual_stub(gateway, store)
    stream = RawStream(stub)
    stream.send(_hello())
    wait_until(lambda: Node.objects.get(pk=ticket.node.pk).state == NodeState.ONLINE, what="node online")
    start = {"placement_id": "p-1", "image": "busybox", "vgpu_local_ids": ["0:0"]}
    node_send(node_id=ticket.node.pk, message={"start_placement": start})
    wait_until(lambda: any(m.HasField("start_placement") for m in stream.received), what="StartPlacement delivered")
    now = int(time.time() * 1000) + 6000  # the intervals below start after the placement was queued

    good = _report("p-1", 1, now - 5000, key)
    stream.send(pb.AgentMessage(usage_report=good))
    stream.send(pb.AgentMessage(usage_report=good))  # resent: the ack was lost
    tampered = _report("p-1", 2, now - 4000, key)
    tampered.vgpu_milliseconds, tampered.vgpu_count, tampered.interval_end_ms = 4000, 2, now - 2000
    stream.send(pb.AgentMessage(usage_report=tampered))
    stream.send(pb.AgentMessage(usage_report=_report("p-1", 2, now - 4500, key)))  # overlaps seq 1
    stream.send(pb.AgentMessage(usage_report=_report("p-1", 2, now + 3_600_000, key)))  # in the future
    stream.send(pb.AgentMessage(usage_report=_report("p-1", 2, now - 4000, key, vgpus=3)))  # more vGPUs than it has
    stream.send(pb.AgentMessage(usage_report=_report("not-mine", 1, now - 5000, key)))  # never sent to this node
    stream.send(pb.AgentMessage(usage_report=_report("p-1", 3, now - 3000, key)))  # the stream is still usable

    wait_until(lambda: ("p-1", 3) in stream.acks(), what="the last good report's ack")
    assert stream.acks() == [("p-1", 1), ("p-1", 1), ("p-1", 3)]
    assert [code for _, _, code in stream.nacks()] == [
        "usage_report_bad_signature",
        "usage_report_overlaps",
        "usage_report_in_future",
        "usage_report_too_many_vgpus",
        "placement_not_owned",
    ]
    stored = list(UsageReport.objects.filter(placement__placement_id="p-1").order_by("seq"))
    assert [(r.seq, r.vgpu_milliseconds) for r in stored] == [(1, 1000), (3, 1000)]
    assert bytes(stored[0].signature) == good.signature
    stream.close()
    channel.close()
