"""The AgentGateway servicer: translates gRPC messages into calls of nodes.services, nothing more."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
from django.utils import timezone

from agent.proto.gen.janction.agent.v1 import agent_pb2 as pb
from agent.proto.gen.janction.agent.v1 import agent_pb2_grpc
from janction.errors import ApplicationError
from nodes.gateway import convert
from nodes.gateway.core import StreamSession
from nodes.services import (
    node_authenticate,
    node_enroll,
    node_hello,
    placement_logs_append,
    placement_status_record,
    usage_report_record,
)

if TYPE_CHECKING:
    from nodes.gateway.server import Gateway

log = logging.getLogger("nodes.gateway")

# A safety net only: closing a session (also on RPC termination, via add_callback) wakes its sender at once.
IDLE_CHECK_SECONDS = 5.0
# ApplicationError codes that mean "we know who you are, and no".
REFUSED_CODES = {"node_deleted", "node_quarantined"}


def _status_for(error: ApplicationError) -> grpc.StatusCode:
    if error.code in REFUSED_CODES:
        return grpc.StatusCode.PERMISSION_DENIED
    if error.status in (401, 403):
        return grpc.StatusCode.UNAUTHENTICATED
    if error.status == 404:
        return grpc.StatusCode.NOT_FOUND
    return grpc.StatusCode.INVALID_ARGUMENT


class AgentGatewayServicer(agent_pb2_grpc.AgentGatewayServicer):
    """Enroll and Connect; every database call runs on the gateway's database workers."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def Enroll(self, request: pb.EnrollRequest, context: grpc.ServicerContext) -> pb.EnrollResponse:
        """Exchange a one-time token and a CSR for a client certificate."""
        try:
            enrollment = self._gateway.db.run(
                node_enroll, token=request.enrollment_token, csr_pem=request.csr_pem, hostname=request.hostname
            )
        except ApplicationError as error:
            log.warning("enrollment refused (%s) from %s: %s", error.code, context.peer(), error.message)
            context.abort(_status_for(error), error.message)
        return pb.EnrollResponse(
            certificate_pem=enrollment.certificate_pem,
            ca_certificate_pem=enrollment.ca_certificate_pem,
            node_id=str(enrollment.node.pk),
            connect_address=self._gateway.connect_address,
        )

    def Connect(
        self, request_iterator: Iterator[pb.AgentMessage], context: grpc.ServicerContext
    ) -> Iterator[pb.ControlMessage]:
        """Identify the node from its certificate, take its Hello, then stream both ways."""
        certificates = context.auth_context().get("x509_pem_cert", [])
        if not certificates:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "Connect needs the client certificate issued at enrollment (mutual TLS on the connect port).",
            )
        try:
            node = self._gateway.db.run(node_authenticate, certificate_pem=certificates[0])
        except ApplicationError as error:
            log.warning("refused a stream (%s) from %s: %s", error.code, context.peer(), error.message)
            context.abort(_status_for(error), error.message)
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("payload") != "hello":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "The first message on a stream must be Hello.")
        try:
            gpu_ids = self._gateway.db.run(node_hello, node_id=node.pk, hello=convert.hello_report(first.hello))
        except ApplicationError as error:
            context.abort(_status_for(error), error.message)
        session = StreamSession(node_id=node.pk, gpu_ids=gpu_ids)
        context.add_callback(session.close)
        self._gateway.dispatcher.register(session)
        log.info("node %s connected from %s", node.pk, context.peer())
        reader = threading.Thread(
            target=self._read, args=(session, request_iterator), name=f"gateway-read-{node.pk}", daemon=True
        )
        reader.start()
        try:
            while context.is_active() and not session.closed.is_set():
                try:
                    item = session.outbox.get(timeout=IDLE_CHECK_SECONDS)
                except queue.Empty:
                    continue
                if item is None:
                    break
                command_id, message = item
                yield message
                if command_id is not None:
                    self._gateway.dispatcher.delivered(command_id)
        finally:
            self._gateway.dispatcher.unregister(session)
            log.info("node %s disconnected", node.pk)

    def _read(self, session: StreamSession, request_iterator: Iterator[pb.AgentMessage]) -> None:
        try:
            for message in request_iterator:
                self._handle(session, message)
        except grpc.RpcError:
            pass  # the stream was cancelled or the server is stopping
        except Exception:
            log.exception("node %s: stream reader failed", session.node_id)
        finally:
            session.close()

    def _handle(self, session: StreamSession, message: pb.AgentMessage) -> None:
        kind = message.WhichOneof("payload")
        node_id, db = session.node_id, self._gateway.db
        try:
            if kind == "heartbeat":
                self._gateway.heartbeats.add(
                    convert.node_heartbeat(
                        node_id=node_id, gpu_ids=session.gpu_ids, heartbeat=message.heartbeat, at=timezone.now()
                    )
                )
            elif kind == "usage_report":
                db.run(usage_report_record, node_id=node_id, report=convert.usage_report_in(message.usage_report))
                session.send(convert.usage_ack(message.usage_report))
            elif kind == "placement_status":
                status = convert.placement_status_report(message.placement_status)
                db.run(placement_status_record, node_id=node_id, status=status)
            elif kind == "log_chunk":
                db.run(placement_logs_append, node_id=node_id, chunk=convert.log_chunk_report(message.log_chunk))
            elif kind == "hello":
                session.gpu_ids = db.run(node_hello, node_id=node_id, hello=convert.hello_report(message.hello))
            else:
                log.warning("node %s sent an empty or unknown message; ignored", node_id)
        except ApplicationError as error:
            log.warning("node %s: rejected %s (%s): %s", node_id, kind, error.code, error.message)
