"""The agent process stops gracefully on SIGTERM and waits out an overloaded gateway instead of exiting."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import grpc

from agent.client import AgentClient, Backoff, enroll
from agent.identity import mutual_tls_credentials
from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.state import StateStore
from tests.agent.conftest import REPO, requires_bwrap
from tests.agent.gateway import ENROLL_TOKEN, FakeGateway
from tests.agent.support import FakeRuntime, build_session, start_message


class OverloadedGateway(FakeGateway):
    """Answers the first few Enroll calls with RESOURCE_EXHAUSTED, as a gateway full of streams does."""

    def __init__(self, pki, *, refusals: int) -> None:
        super().__init__(pki)
        self.refusals = refusals
        self.enroll_calls = 0

    def Enroll(self, request, context):
        """Refuse while overloaded, then enroll."""
        self.enroll_calls += 1
        if self.enroll_calls <= self.refusals:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many concurrent streams")
        return super().Enroll(request, context)


def test_enrollment_retries_resource_exhausted_with_backoff_instead_of_giving_up(tmp_path, pki):
    gateway = OverloadedGateway(pki, refusals=3)
    gateway.start()
    try:
        store = StateStore(tmp_path / "state")
        enroll(
            store=store,
            state=store.load(),
            gateway=f"localhost:{gateway.enroll_port}",
            token=ENROLL_TOKEN,
            ca_pem=pki.ca_pem,
            hostname="test-host",
            backoff=Backoff(base=0.01, cap=0.05),
        )
    finally:
        gateway.stop()
    assert gateway.enroll_calls == 4 and store.enrolled


def _agent(gateway, state_dir, ca_path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "agent", "--gateway", f"localhost:{gateway.enroll_port}", "--state-dir",
            str(state_dir), "--ca-cert", str(ca_path), "--fake-gpus", "RTX 4090:1", "--runtime", "sandbox",
            "--heartbeat-interval", "1", "--usage-interval", "60", "--enroll-token", ENROLL_TOKEN]  # fmt: skip
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kind(kind: str):
    return lambda message: message.WhichOneof("payload") == kind


@requires_bwrap
def test_sigterm_stops_workloads_gracefully_reports_them_lost_with_usage_and_says_goodbye(tmp_path, gateway, pki):
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(pki.ca_pem)
    process = _agent(gateway, tmp_path / "state", ca_path)
    try:
        gateway.wait_for(_kind("hello"), timeout=30)
        # The workload traps TERM, says so, and exits 7: the graceful path ran, not a SIGKILL.
        script = "trap 'echo got-term; exit 7' TERM; echo up; while :; do sleep 0.1; done"
        gateway.send(start_message("p-term", ["sh", "-c", script]))
        gateway.wait_for(lambda m: m.WhichOneof("payload") == "log_chunk" and "up" in m.log_chunk.lines)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=40)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    lost = gateway.wait_for(
        lambda m: m.WhichOneof("payload") == "placement_status" and m.placement_status.state == pb.PLACEMENT_STATE_LOST
    ).placement_status
    assert lost.placement_id == "p-term" and lost.exit_code == 7 and "shut down" in lost.message
    assert any("got-term" in chunk.lines for chunk in gateway.messages("log_chunk"))
    (usage,) = gateway.messages("usage_report")
    assert usage.placement_id == "p-term" and usage.interval_end_ms > usage.interval_start_ms
    kinds = [message.WhichOneof("payload") for message in gateway.received]
    assert kinds[-1] == "goodbye", kinds
    assert kinds.index("usage_report") < kinds.index("goodbye")


class FullGateway(FakeGateway):
    """Refuses the first few Connect streams with RESOURCE_EXHAUSTED, as a gateway out of stream slots does."""

    def __init__(self, pki, *, refusals: int) -> None:
        super().__init__(pki)
        self.refusals = refusals
        self.connect_calls = 0

    def Connect(self, request_iterator, context):
        """Refuse while full, then serve the stream."""
        self.connect_calls += 1
        if self.connect_calls <= self.refusals:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many concurrent streams")
        yield from super().Connect(request_iterator, context)


def test_the_stream_is_retried_after_resource_exhausted_until_the_gateway_has_room(tmp_path, pki):
    gateway = FullGateway(pki, refusals=3)
    gateway.start()
    client = None
    try:
        store = StateStore(tmp_path / "state")
        enroll(store=store, state=store.load(), gateway=f"localhost:{gateway.enroll_port}", token=ENROLL_TOKEN,
               ca_pem=pki.ca_pem, hostname="test-host")  # fmt: skip
        credentials = mutual_tls_credentials(
            key_pem=store.key_path.read_bytes(), certificate_pem=store.cert_path.read_bytes(), trusted_ca_pem=pki.ca_pem
        )
        session = build_session(store.directory, FakeRuntime())
        client = AgentClient(
            session=session,
            address=store.load().connect_address,
            credentials=credentials,
            backoff=Backoff(base=0.02, cap=0.1),
        )
        thread = threading.Thread(target=client.run, daemon=True)
        thread.start()
        gateway.wait_for(_kind("hello"), timeout=20)
        assert gateway.connect_calls == 4 and thread.is_alive()
    finally:
        if client is not None:
            client.shutdown()
        gateway.stop()
