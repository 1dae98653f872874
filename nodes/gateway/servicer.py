"""The AgentGateway servicer: translates gRPC messages into calls of nodes.services, nothing more."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
from django.utils import timezone

from agent.proto.gen.janction.agent.v1 import agent_pb2 as pb
from agent.proto.gen.janction.agent.v1 import agent_pb2_grpc
from janction.errors import ApplicationError
from nodes.commands import node_goodbye
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
    """Enroll and Connect on the gateway's event loop; every database call runs on its database workers."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def Enroll(self, request: pb.EnrollRequest, context: grpc.aio.ServicerContext) -> pb.EnrollResponse:
        """Exchange a one-time token and a CSR for a client certificate."""
        try:
            enrollment = await self._gateway.db.arun(
                node_enroll, token=request.enrollment_token, csr_pem=request.csr_pem, hostname=request.hostname
            )
        except ApplicationError as error:
            log.warning("enrollment refused (%s) from %s: %s", error.code, context.peer(), error.message)
            await context.abort(_status_for(error), error.message)
        return pb.EnrollResponse(
            certificate_pem=enrollment.certificate_pem,
            ca_certificate_pem=enrollment.ca_certificate_pem,
            node_id=str(enrollment.node.pk),
            connect_address=self._gateway.connect_address,
        )

    async def Connect(
        self, request_iterator: AsyncIterator[pb.AgentMessage], context: grpc.aio.ServicerContext
    ) -> None:
        """Identify the node from its certificate, take its Hello, then stream both ways.

        Messages are read with `context.read()` by a reader task and written with `context.write()` by
        this coroutine; a command counts as delivered once gRPC has taken it.
        """
        certificates = context.auth_context().get("x509_pem_cert", [])
        if not certificates:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "Connect needs the client certificate issued at enrollment (mutual TLS on the connect port).",
            )
        db = self._gateway.db
        try:
            node = await db.arun(node_authenticate, certificate_pem=certificates[0])
        except ApplicationError as error:
            log.warning("refused a stream (%s) from %s: %s", error.code, context.peer(), error.message)
            await context.abort(_status_for(error), error.message)
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("payload") != "hello":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "The first message on a stream must be Hello.")
        try:
            gpu_ids = await db.arun(node_hello, node_id=node.pk, hello=convert.hello_report(first.hello))
        except ApplicationError as error:
            await context.abort(_status_for(error), error.message)
        session = StreamSession(node_id=node.pk, gpu_ids=gpu_ids)
        dispatcher = self._gateway.dispatcher
        dispatcher.register(session)
        log.info("node %s connected from %s", node.pk, context.peer())
        reader = asyncio.create_task(self._read(session, context), name=f"gateway-read-{node.pk}")
        try:
            while (item := await session.outbox.get()) is not None:
                command_id, message = item
                await context.write(message)
                if command_id is not None:
                    dispatcher.delivered(command_id)
        finally:
            session.close()
            dispatcher.unregister(session)
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            log.info("node %s disconnected", node.pk)

    async def _read(self, session: StreamSession, context: grpc.aio.ServicerContext) -> None:
        try:
            while (message := await context.read()) is not grpc.aio.EOF:
                await self._handle(session, message)
        except asyncio.CancelledError:
            raise
        except (grpc.RpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            pass  # the stream was cancelled or the server is stopping
        except Exception:
            log.exception("node %s: stream reader failed", session.node_id)
        finally:
            session.close()

    async def _handle(self, session: StreamSession, message: pb.AgentMessage) -> None:
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
                report = convert.usage_report_in(message.usage_report)
                await db.arun(usage_report_record, node_id=node_id, report=report)
                session.send(convert.usage_ack(message.usage_report))
            elif kind == "placement_status":
                status = convert.placement_status_report(message.placement_status)
                await db.arun(placement_status_record, node_id=node_id, status=status)
            elif kind == "log_chunk":
                chunk = convert.log_chunk_report(message.log_chunk)
                await db.arun(placement_logs_append, node_id=node_id, chunk=chunk)
            elif kind == "goodbye":
                self._gateway.heartbeats.discard(node_id)
                await db.arun(node_goodbye, node_id=node_id, reason=message.goodbye.reason)
                session.close()
            elif kind == "hello":
                session.gpu_ids = await db.arun(node_hello, node_id=node_id, hello=convert.hello_report(message.hello))
            else:
                log.warning("node %s sent an empty or unknown message; ignored", node_id)
        except ApplicationError as error:
            log.warning("node %s: rejected %s (%s): %s", node_id, kind, error.code, error.message)
