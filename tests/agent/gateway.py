"""A fake of the agent gateway for the agent's own tests: Enroll over TLS, Connect over mutual TLS."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.protocol.gen.janction.agent.v1 import agent_pb2_grpc
from agent.protocol.signing import verify_usage_report
from tests.agent.pki import ThrowawayPki

NODE_ID = "node-test-1"
ENROLL_TOKEN = "enroll-me"


class FakeGateway(agent_pb2_grpc.AgentGatewayServicer):
    """Records what agents send, verifies usage signatures with the caller's certificate, acks usage."""

    def __init__(self, pki: ThrowawayPki, *, token: str = ENROLL_TOKEN) -> None:
        self.pki = pki
        self.token = token
        self.enroll_port = 0
        self.connect_port = 0
        self.received: list[pb.AgentMessage] = []
        self.usage_verified: list[bool] = []
        self.peer_certificates: list[bytes] = []
        self.connections = 0
        self._condition = threading.Condition()
        self._outbox: queue.Queue[pb.ControlMessage] | None = None
        self._server: grpc.Server | None = None

    # -- servicer -------------------------------------------------------------------------------

    def Enroll(self, request: pb.EnrollRequest, context: grpc.ServicerContext) -> pb.EnrollResponse:
        """Issue a certificate for a valid token."""
        if request.enrollment_token != self.token:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or used enrollment token")
        return pb.EnrollResponse(
            certificate_pem=self.pki.sign_csr(request.csr_pem.encode(), NODE_ID).decode(),
            ca_certificate_pem=self.pki.ca_pem.decode(),
            node_id=NODE_ID,
            connect_address=f":{self.connect_port}",
        )

    def Connect(self, request_iterator, context: grpc.ServicerContext):
        """Record the agent's messages and send it whatever the test queues."""
        certificates = context.auth_context().get("x509_pem_cert", [])
        if not certificates:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
        outbox: queue.Queue[pb.ControlMessage] = queue.Queue()
        with self._condition:
            self._outbox = outbox
            self.connections += 1
            self.peer_certificates.append(certificates[0])
        reader = threading.Thread(target=self._read, args=(request_iterator, certificates[0], outbox), daemon=True)
        reader.start()
        while context.is_active():
            try:
                yield outbox.get(timeout=0.05)
            except queue.Empty:
                continue

    def _read(self, request_iterator, certificate: bytes, outbox: queue.Queue[pb.ControlMessage]) -> None:
        try:
            for message in request_iterator:
                with self._condition:
                    if message.WhichOneof("payload") == "usage_report":
                        report = message.usage_report
                        self.usage_verified.append(verify_usage_report(certificate, report))
                        ack = pb.UsageAck(placement_id=report.placement_id, seq=report.seq)
                        outbox.put(pb.ControlMessage(usage_ack=ack))
                    self.received.append(message)
                    self._condition.notify_all()
        except grpc.RpcError:
            return

    # -- test helpers ---------------------------------------------------------------------------

    def send(self, message: pb.ControlMessage) -> None:
        """Queue a control message on the current connection."""
        with self._condition:
            assert self._outbox is not None, "no agent is connected"
            self._outbox.put(message)

    def wait_for(self, predicate: Callable[[pb.AgentMessage], bool], timeout: float = 15.0) -> pb.AgentMessage:
        """Return the first received message matching predicate, waiting for it if needed."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for message in self.received:
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    kinds = [message.WhichOneof("payload") for message in self.received]
                    raise AssertionError(f"no matching message within {timeout}s; received {kinds}")
                self._condition.wait(remaining)

    def messages(self, kind: str) -> list:
        """Return the payloads of one kind received so far."""
        with self._condition:
            return [getattr(m, kind) for m in self.received if m.WhichOneof("payload") == kind]

    def clear(self) -> None:
        """Forget what was received."""
        with self._condition:
            self.received.clear()

    def start(self) -> None:
        """Serve Enroll (TLS) and Connect (mutual TLS) on two ports, reusing earlier ports on restart."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        agent_pb2_grpc.add_AgentGatewayServicer_to_server(self, server)
        pairs = [(self.pki.server_key_pem, self.pki.server_cert_pem)]
        self.enroll_port = server.add_secure_port(f"127.0.0.1:{self.enroll_port}", grpc.ssl_server_credentials(pairs))
        self.connect_port = server.add_secure_port(
            f"127.0.0.1:{self.connect_port}",
            grpc.ssl_server_credentials(pairs, root_certificates=self.pki.ca_pem, require_client_auth=True),
        )
        server.start()
        self._server = server

    def stop(self) -> None:
        """Stop serving and drop the connection."""
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        with self._condition:
            self._outbox = None
