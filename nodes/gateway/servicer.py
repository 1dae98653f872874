"""The AgentGateway servicer: translates gRPC messages into calls of nodes.services, nothing more.

Every message is the sender's claim: a refused one gets a typed error (a rejected UsageAck for usage)
and a strike; too many strikes end the stream and refuse reconnects for a while. Internal errors are
logged, never shown to the client. While the database is away a stream stays open and its message is
retried (nothing is acknowledged before it is stored).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from django.utils import timezone

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.protocol.gen.janction.agent.v1 import agent_pb2_grpc
from janction.errors import ApplicationError
from nodes.availability import owner_activity_record
from nodes.gateway import convert, metrics
from nodes.gateway.core import DATABASE_AWAY, StreamSession
from nodes.services import (
    node_authenticate,
    node_enroll,
    node_goodbye,
    node_hello,
    placement_logs_append,
    placement_status_record,
    usage_report_record,
)

if TYPE_CHECKING:
    from nodes.gateway.server import Gateway

log = logging.getLogger("nodes.gateway")

# ApplicationError codes that mean "we know who you are, and no".
REFUSED_CODES = {"node_deleted", "node_quarantined", "node_revoked"}
# Refusals where the platform's records disagree with an agent that may be honest (its node was held
# offline, its clock drifted): the rejected ack stops the resending, but they cost no strike.
HONEST_CODES = {"usage_report_while_offline", "usage_report_outside_placement"}
INTERNAL_MESSAGE = "The gateway could not process this message; the error was logged."


def _status_for(error: ApplicationError) -> grpc.StatusCode:
    if error.code in REFUSED_CODES:
        return grpc.StatusCode.PERMISSION_DENIED
    if error.status in (401, 403):
        return grpc.StatusCode.UNAUTHENTICATED
    if error.status == 404:
        return grpc.StatusCode.NOT_FOUND
    return grpc.StatusCode.INVALID_ARGUMENT


class DatabaseAway(Exception):
    """The database did not answer; the caller keeps the message and tries later."""


class AgentGatewayServicer(agent_pb2_grpc.AgentGatewayServicer):
    """Enroll and Connect on the gateway's event loop; every database call runs on its database workers."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def _call_or_abort(self, context: grpc.aio.ServicerContext, what: str, function: Any, **kwargs: Any) -> Any:
        """Run a service on a database worker; answer its failure as a typed status (never an internal error)."""
        try:
            return await self._gateway.db.arun(function, **kwargs)
        except ApplicationError as error:
            log.warning("refused a %s (%s) from %s: %s", what, error.code, context.peer(), error.message)
            failure = (_status_for(error), error.message)
        except DATABASE_AWAY:
            failure = (grpc.StatusCode.UNAVAILABLE, "The platform's database is unavailable; try again shortly.")
        except Exception:
            log.exception("a %s from %s failed", what, context.peer())
            failure = (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        await context.abort(*failure)

    async def Enroll(self, request: pb.EnrollRequest, context: grpc.aio.ServicerContext) -> pb.EnrollResponse:
        """Exchange a one-time token and a CSR for a client certificate."""
        enrollment = await self._call_or_abort(
            context,
            "enrollment",
            node_enroll,
            token=request.enrollment_token,
            csr_pem=request.csr_pem,
            hostname=request.hostname,
        )
        return pb.EnrollResponse(
            certificate_pem=enrollment.certificate_pem,
            ca_certificate_pem=enrollment.ca_certificate_pem,
            node_id=str(enrollment.node.pk),
            connect_address=self._gateway.connect_address,
        )

    async def Connect(
        self, request_iterator: AsyncIterator[pb.AgentMessage], context: grpc.aio.ServicerContext
    ) -> None:
        """Identify the node from its certificate, take its Hello, then stream both ways."""
        certificates = context.auth_context().get("x509_pem_cert", [])
        if not certificates:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "Connect needs the client certificate issued at enrollment (mutual TLS on the connect port).",
            )
        guard = self._gateway.guard
        key = hashlib.sha256(certificates[0]).hexdigest()
        if not guard.stream_open(key):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"This certificate holds {guard.streams_per_certificate} streams already; close one first.",
            )
        try:
            await self._connect(context, certificates[0])
        finally:
            guard.stream_closed(key)

    async def _connect(self, context: grpc.aio.ServicerContext, certificate: bytes) -> None:
        db, guard = self._gateway.db, self._gateway.guard
        node = await self._call_or_abort(context, "stream", node_authenticate, certificate_pem=certificate)
        if (left := guard.penalty_left(node.pk)) > 0:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Too many refused messages from this node; reconnect in {left:.0f} s.",
            )
        deadline = self._gateway.config.first_message_seconds
        try:
            first = await asyncio.wait_for(context.read(), timeout=deadline)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"Send Hello within {deadline:g} s of connecting.")
        if first is grpc.aio.EOF or first.WhichOneof("payload") != "hello":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "The first message on a stream must be Hello.")
        failure = None
        try:
            gpu_ids = await db.arun(node_hello, node_id=node.pk, hello=convert.hello_report(first.hello))
        except ApplicationError as error:
            log.warning("node %s: Hello refused (%s): %s", node.pk, error.code, error.message)
            if guard.strike(node.pk):
                log.warning("node %s: too many refused messages; penalised", node.pk)
            failure = (_status_for(error), error.message)
        except DATABASE_AWAY:
            failure = (grpc.StatusCode.UNAVAILABLE, "The platform's database is unavailable; reconnect shortly.")
        except Exception:
            log.exception("node %s: Hello failed", node.pk)
            failure = (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        if failure is not None:
            await context.abort(*failure)
        session = StreamSession(node_id=node.pk, gpu_ids=gpu_ids)
        dispatcher = self._gateway.dispatcher
        dispatcher.register(session)
        metrics.STREAMS.labels("opened").inc()
        log.info("node %s connected from %s", node.pk, context.peer())
        reader = asyncio.create_task(self._read(session, context), name=f"gateway-read-{node.pk}")
        try:
            while (item := await session.outbox.get()) is not None:
                command_id, message = item
                await context.write(message)
                if command_id is not None:
                    dispatcher.delivered(command_id)
                    metrics.COMMANDS.inc()
        finally:
            metrics.STREAMS.labels("closed").inc()
            session.close()
            dispatcher.unregister(session)
            guard.forget(node.pk)
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            log.info("node %s disconnected", node.pk)
        if session.end_status is not None:
            await context.abort(*session.end_status)

    async def _read(self, session: StreamSession, context: grpc.aio.ServicerContext) -> None:
        try:
            while (message := await context.read()) is not grpc.aio.EOF:
                if session.closed.is_set():
                    break  # superseded by a newer stream, or ended: what is still queued is not processed
                await self._handle(session, message)
        except asyncio.CancelledError:
            raise
        except (grpc.RpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            pass  # the stream was cancelled or the server is stopping
        except Exception:
            log.exception("node %s: stream reader failed", session.node_id)
            session.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        finally:
            session.close()

    def _strike(self, session: StreamSession, what: str, reason: str) -> None:
        guard = self._gateway.guard
        metrics.REFUSED.labels(what).inc()
        log.warning("node %s: refused %s: %s", session.node_id, what, reason)
        if guard.strike(session.node_id):
            log.warning("node %s: too many refused messages; disconnected", session.node_id)
            session.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Too many refused messages; reconnect in {guard.penalty_seconds:g} s. Last: {reason}",
            )

    async def _db(self, session: StreamSession, function: Any, **kwargs: Any) -> Any:
        """Run a service on a database worker; while the database is away, retry (the stream stays open)."""
        delay, longest = 0.25, self._gateway.config.database_retry_max_seconds
        while True:
            try:
                return await self._gateway.db.arun(function, **kwargs)
            except DATABASE_AWAY:
                if session.closed.is_set():
                    raise DatabaseAway from None
                log.warning("node %s: the database is away; retrying in %.2f s", session.node_id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)

    async def _handle(self, session: StreamSession, message: pb.AgentMessage) -> None:
        kind = message.WhichOneof("payload")
        metrics.MESSAGES.labels(kind or "empty").inc()
        node_id = session.node_id
        if not self._gateway.guard.allow(node_id):
            self._strike(session, kind or "a message", "more messages than the node's rate allows")
            return
        try:
            if kind == "heartbeat":
                heartbeat, problems = convert.node_heartbeat(
                    node_id=node_id, gpu_ids=session.gpu_ids, heartbeat=message.heartbeat, at=timezone.now()
                )
                self._gateway.heartbeats.add(heartbeat)
                for problem in problems:
                    self._strike(session, "a telemetry sample", problem)
            elif kind == "usage_report":
                await self._usage(session, message.usage_report)
            elif kind == "placement_status":
                status = convert.placement_status_report(message.placement_status)
                await self._db(session, placement_status_record, node_id=node_id, status=status)
            elif kind == "log_chunk":
                chunk = convert.log_chunk_report(message.log_chunk)
                await self._db(session, placement_logs_append, node_id=node_id, chunk=chunk)
            elif kind == "goodbye":
                self._gateway.heartbeats.discard(node_id)
                await self._db(session, node_goodbye, node_id=node_id, reason=message.goodbye.reason)
                session.close()
            elif kind == "owner_activity":
                activity = message.owner_activity
                await self._db(
                    session,
                    owner_activity_record,
                    node_id=node_id,
                    active=activity.active,
                    at_ms=activity.at_ms,
                    reason=activity.reason,
                )
            elif kind == "hello":
                hello = convert.hello_report(message.hello)
                session.gpu_ids = await self._db(session, node_hello, node_id=node_id, hello=hello)
            else:
                self._strike(session, "a message", "empty or unknown message")
        except DatabaseAway:
            return
        except ApplicationError as error:
            self._strike(session, kind, f"{error.code}: {error.message}")
        except Exception:
            log.exception("node %s: %s failed", node_id, kind)
            self._strike(session, kind, "internal error")

    async def _usage(self, session: StreamSession, report: pb.UsageReport) -> None:
        try:
            await self._db(
                session, usage_report_record, node_id=session.node_id, report=convert.usage_report_in(report)
            )
        except ApplicationError as error:
            session.send(convert.usage_nack(report, code=error.code, reason=error.message))
            if error.code in HONEST_CODES:
                log.info("node %s: usage report %s refused: %s", session.node_id, report.seq, error.message)
            else:
                self._strike(session, "a usage report", f"{error.code}: {error.message}")
            return
        except DatabaseAway:
            raise
        except Exception:
            log.exception("node %s: usage report %s could not be stored", session.node_id, report.seq)
            session.send(convert.usage_nack(report, code="usage_report_invalid", reason="It could not be stored."))
            self._strike(session, "a usage report", "internal error")
            return
        session.send(convert.usage_ack(report))
