"""The full client against an in-test gateway over (mutual) TLS."""

from __future__ import annotations

import itertools
import random
import stat
import threading
import time

import grpc
import pytest
from cryptography import x509

from agent.client import AgentClient, Backoff, EnrollmentError, enroll, resolve_connect_address
from agent.identity import load_private_key, mutual_tls_credentials
from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.protocol.signing import verify_usage_report
from agent.runtime.sandbox import SandboxRuntime
from agent.state import StateStore
from tests.agent.conftest import requires_bwrap
from tests.agent.gateway import ENROLL_TOKEN, NODE_ID, FakeGateway
from tests.agent.support import build_session, start_message


def _enroll(tmp_path, gateway: FakeGateway, pki) -> StateStore:
    store = StateStore(tmp_path / "state")
    state = store.load()
    enroll(
        store=store,
        state=state,
        gateway=f"localhost:{gateway.enroll_port}",
        token=ENROLL_TOKEN,
        ca_pem=pki.ca_pem,
        hostname="test-host",
    )
    return store


def test_enroll_stores_a_certificate_for_the_node_key_with_private_permissions(tmp_path, gateway, pki):
    store = _enroll(tmp_path, gateway, pki)

    certificate = x509.load_pem_x509_certificate(store.cert_path.read_bytes())
    assert certificate.public_key() == load_private_key(store.key_path).public_key()
    assert certificate.subject.rfc4514_string() == f"CN={NODE_ID}"
    assert store.ca_path.read_bytes() == pki.ca_pem
    state = store.load()
    assert state.node_id == NODE_ID
    assert state.connect_address == f"localhost:{gateway.connect_port}"
    for path in (store.key_path, store.cert_path, store.ca_path, store.state_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700


def test_enroll_with_a_wrong_token_fails_clearly(tmp_path, gateway, pki):
    store = StateStore(tmp_path / "state")
    with pytest.raises(EnrollmentError, match="UNAUTHENTICATED"):
        enroll(
            store=store,
            state=store.load(),
            gateway=f"localhost:{gateway.enroll_port}",
            token="wrong",
            ca_pem=pki.ca_pem,
            hostname="h",
        )
    assert not store.enrolled


def test_enroll_refuses_a_gateway_signed_by_an_untrusted_ca(tmp_path, gateway):
    from tests.agent.pki import make_pki

    store = StateStore(tmp_path / "state")
    with pytest.raises(EnrollmentError, match=r"does not match the CA this agent trusts \(TLS verification failed\)"):
        enroll(
            store=store,
            state=store.load(),
            gateway=f"localhost:{gateway.enroll_port}",
            token=ENROLL_TOKEN,
            ca_pem=make_pki().ca_pem,
            hostname="h",
            backoff=Backoff(base=0.01, cap=0.02),
        )


def test_connect_port_rejects_an_agent_without_a_client_certificate(gateway, pki):
    channel = grpc.secure_channel(f"localhost:{gateway.connect_port}", grpc.ssl_channel_credentials(pki.ca_pem))
    stub = __import__("agent.protocol.gen.janction.agent.v1.agent_pb2_grpc", fromlist=["x"]).AgentGatewayStub(channel)
    with pytest.raises(grpc.RpcError) as failure:
        list(stub.Connect(iter([pb.AgentMessage(hello=pb.Hello())]), timeout=5))
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()


def test_resolve_connect_address():
    assert resolve_connect_address("gw.example:7000", "") == "gw.example:7000"
    assert resolve_connect_address("gw.example:7000", ":7001") == "gw.example:7001"
    assert resolve_connect_address("[::1]:7000", ":7001") == "[::1]:7001"
    assert resolve_connect_address("gw.example:7000", "other:9") == "other:9"


def test_backoff_uses_full_jitter_under_a_growing_capped_ceiling():
    backoff = Backoff(base=1.0, cap=8.0, rng=random.Random(7))
    ceilings = [1, 2, 4, 8, 8, 8]
    delays = [backoff.next_delay() for _ in ceilings]
    assert all(0 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)
    many = [Backoff(base=1.0, cap=8.0, rng=random.Random(seed), attempt=10).next_delay() for seed in range(200)]
    assert min(many) < 1.0 and max(many) > 7.0
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def _is(kind: str):
    return lambda message: message.WhichOneof("payload") == kind


def _status(placement_id: str, state: int):
    def matches(message: pb.AgentMessage) -> bool:
        status = message.placement_status
        return (
            message.WhichOneof("payload") == "placement_status"
            and status.placement_id == placement_id
            and status.state == state
        )

    return matches


@requires_bwrap
def test_client_runs_a_placement_and_survives_a_gateway_restart(tmp_path, gateway, pki):
    store = _enroll(tmp_path, gateway, pki)
    state = store.load()
    key = load_private_key(store.key_path)
    runtime = SandboxRuntime(hidden_paths=(str(store.directory),))
    session = build_session(store.directory, runtime, usage_interval_ms=500, heartbeat_interval=0.3, key=key)
    credentials = mutual_tls_credentials(
        key_pem=store.key_path.read_bytes(), certificate_pem=store.cert_path.read_bytes(), trusted_ca_pem=pki.ca_pem
    )
    client = AgentClient(
        session=session,
        address=state.connect_address,
        credentials=credentials,
        backoff=Backoff(base=0.05, cap=0.3),
        tick_interval=0.05,
    )
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    try:
        hello = gateway.wait_for(_is("hello")).hello
        assert hello.runtime == "sandbox" and hello.network_unsupported
        assert [gpu.fake for gpu in hello.gpus] == [True]
        assert [(vgpu.local_id, vgpu.pool, vgpu.fake) for vgpu in hello.vgpus] == [
            ("0:0", "ada-12g", True),
            ("0:1", "ada-12g", True),
        ]
        assert x509.load_pem_x509_certificate(gateway.peer_certificates[0]).subject.rfc4514_string() == f"CN={NODE_ID}"
        gateway.wait_for(_is("heartbeat"))

        command = ["sh", "-c", "echo hello; echo oops >&2; sleep 2.5; echo bye"]
        gateway.send(start_message("p-1", command))
        gateway.wait_for(_status("p-1", pb.PLACEMENT_STATE_RUNNING))
        gateway.wait_for(lambda m: m.WhichOneof("payload") == "log_chunk" and "hello" in m.log_chunk.lines)
        gateway.wait_for(_is("usage_report"))

        gateway.stop()
        gateway.start()

        gateway.wait_for(lambda m: m.WhichOneof("payload") == "hello" and m.hello.placements)
        rehello = next(h for h in gateway.messages("hello") if h.placements)
        assert [(p.placement_id, p.state) for p in rehello.placements] == [("p-1", pb.PLACEMENT_STATE_RUNNING)]
        exited = gateway.wait_for(_status("p-1", pb.PLACEMENT_STATE_EXITED), timeout=20).placement_status
        assert exited.HasField("exit_code") and exited.exit_code == 0
        # The last usage report is acked a moment after the exit status: give it time before shutting down.
        deadline = time.monotonic() + 10
        while session.placements and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        client.shutdown()
        thread.join(timeout=10)

    assert gateway.connections >= 2
    lines = {}
    for chunk in gateway.messages("log_chunk"):
        for offset, line in enumerate(chunk.lines):
            lines[chunk.seq + offset] = (chunk.stream, line)
    assert sorted(lines) == list(range(1, len(lines) + 1))
    stdout, stderr = pb.LOG_STREAM_STDOUT, pb.LOG_STREAM_STDERR
    assert {(stdout, "hello"), (stderr, "oops"), (stdout, "bye")} <= set(lines.values())

    reports = {report.seq: report for report in gateway.messages("usage_report")}
    assert all(gateway.usage_verified) and len(gateway.usage_verified) >= 2
    assert sorted(reports) == list(range(1, len(reports) + 1))
    ordered = [reports[seq] for seq in sorted(reports)]
    for earlier, later in itertools.pairwise(ordered):
        assert later.interval_start_ms == earlier.interval_end_ms
    running_ms = ordered[-1].interval_end_ms - ordered[0].interval_start_ms
    assert 2500 <= running_ms < 6000
    assert sum(report.vgpu_milliseconds for report in ordered) == running_ms
    certificate = store.cert_path.read_bytes()
    assert all(verify_usage_report(certificate, report) for report in ordered)
    assert session.placements == {}, "acknowledged, finished placements are forgotten"
