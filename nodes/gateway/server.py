"""Bootstrap of the agent gateway: TLS ports, health checking, background loops and graceful stop.

The gRPC server is a `grpc.aio` server on one asyncio event loop, run by its own thread behind a
synchronous facade (`start`, `stop`, `wait`), so management commands and tests drive it from plain
threads. Database work never runs on the loop: it goes to the `DbWorkers` threads.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from dataclasses import dataclass

import grpc
from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent.protocol.gen.janction.agent.v1 import agent_pb2, agent_pb2_grpc
from nodes.ca import platform_ca
from nodes.gateway.core import CommandDispatcher, DbWorkers, HeartbeatBuffer, NodeGuard
from nodes.gateway.servicer import AgentGatewayServicer
from nodes.services import gateway_clock_record, node_mark_stale_offline

log = logging.getLogger("nodes.gateway")

# Collections of the middle generation between two full (generation 2) collections; CPython's default is 10.
FULL_COLLECTION_THRESHOLD = 100
SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentGateway"].full_name
# Keepalive pings agents send (every 300 s, see agent/client.py) are welcome.
SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 60_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


def _host_of(address: str) -> str:
    host = address.rsplit(":", 1)[0]
    return host.strip("[]")


@dataclass
class GatewayConfig:
    """Where the gateway listens and how often its loops run (defaults from settings)."""

    listen: str
    enroll_listen: str
    connect_address: str = ""
    flush_seconds: float = 2.0
    poll_seconds: float = 0.25
    offline_check_seconds: float = 10.0
    max_streams: int = 1000
    db_workers: int = 8
    max_unauthenticated: int = 64
    first_message_seconds: float = 10.0
    database_retry_max_seconds: float = 5.0
    streams_per_certificate: int = 3
    messages_per_second: float = 50.0
    messages_burst: int = 500
    bad_messages_max: int = 20
    bad_window_seconds: float = 60.0
    penalty_seconds: float = 60.0
    name: str = "gateway"

    @classmethod
    def from_settings(cls, *, listen: str | None = None, enroll_listen: str | None = None) -> GatewayConfig:
        """Return the configuration of settings, with optional address overrides."""
        return cls(
            listen=listen or settings.AGENT_GATEWAY_LISTEN,
            enroll_listen=enroll_listen or settings.AGENT_GATEWAY_ENROLL_LISTEN,
            connect_address=settings.AGENT_GATEWAY_CONNECT_ADDRESS,
            flush_seconds=settings.AGENT_HEARTBEAT_FLUSH_SECONDS,
            poll_seconds=settings.AGENT_COMMAND_POLL_SECONDS,
            offline_check_seconds=settings.NODE_OFFLINE_CHECK_INTERVAL_SECONDS,
            max_streams=settings.AGENT_GATEWAY_MAX_STREAMS,
            db_workers=settings.AGENT_GATEWAY_DB_WORKERS,
            max_unauthenticated=settings.AGENT_GATEWAY_MAX_UNAUTHENTICATED,
            first_message_seconds=settings.AGENT_FIRST_MESSAGE_SECONDS,
            database_retry_max_seconds=settings.AGENT_DATABASE_RETRY_MAX_SECONDS,
            streams_per_certificate=settings.AGENT_STREAMS_PER_CERTIFICATE,
            messages_per_second=settings.AGENT_MESSAGES_PER_SECOND,
            messages_burst=settings.AGENT_MESSAGES_BURST,
            bad_messages_max=settings.AGENT_BAD_MESSAGES_MAX,
            bad_window_seconds=settings.AGENT_BAD_MESSAGES_WINDOW_SECONDS,
            penalty_seconds=settings.AGENT_PENALTY_SECONDS,
        )


class Gateway:
    """The gRPC server with Connect on a mutual-TLS port and Enroll (and health) on a server-TLS port."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.heartbeats = HeartbeatBuffer()
        self.dispatcher = CommandDispatcher()
        self.guard = NodeGuard(
            streams_per_certificate=config.streams_per_certificate,
            messages_per_second=config.messages_per_second,
            burst=config.messages_burst,
            bad_messages_max=config.bad_messages_max,
            bad_window_seconds=config.bad_window_seconds,
            penalty_seconds=config.penalty_seconds,
        )
        # Start of the current gap-free stretch of recorded heartbeats (None: not recording yet).
        self.recording_since = None
        self.health: health.aio.HealthServicer | None = None
        self.db: DbWorkers | None = None
        self.port = 0
        self.enroll_port = 0
        self.connect_address = config.connect_address
        self._server: grpc.aio.Server | None = None
        self._enroll_server: grpc.aio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loops: list[threading.Thread] = []

    def start(self) -> None:
        """Bind both ports, start serving and start the background loops."""
        ca = platform_ca()
        names = [
            "localhost",
            "127.0.0.1",
            _host_of(self.config.listen),
            _host_of(self.config.enroll_listen),
            _host_of(settings.AGENT_GATEWAY_PUBLIC_ADDRESS),
            *settings.AGENT_GATEWAY_TLS_NAMES,
        ]
        key_pem, certificate_pem = ca.issue_server_certificate(names=[name for name in names if name])
        # The chain includes the CA, so an agent that pins the CA's fingerprint can find it (agent/pinning.py).
        pairs = [(key_pem, certificate_pem + ca.certificate_pem.encode())]
        mutual = grpc.ssl_server_credentials(
            pairs, root_certificates=ca.certificate_pem.encode(), require_client_auth=True
        )
        server_tls = grpc.ssl_server_credentials(pairs)
        self.db = DbWorkers(self.config.db_workers)
        self._stop.clear()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._run_event_loop, name="gateway-aio", daemon=True)
        self._loop_thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(mutual, server_tls), self._loop).result()
        except BaseException:
            self._end_event_loop()
            self.db.stop()
            raise
        if not self.connect_address:
            self.connect_address = f":{self.port}"
        self._loops = [
            threading.Thread(target=self._maintenance_loop, name="gateway-maintenance", daemon=True),
            threading.Thread(target=self._dispatch_loop, name="gateway-dispatch", daemon=True),
        ]
        for loop in self._loops:
            loop.start()
        # Everything loaded so far (Django, gRPC, the app) lives as long as the process: keep it out of the
        # cyclic collector, so full collections (which hold the GIL and stall the event loop) stay short,
        # and run them less often: with thousands of streams each one pauses every stream for a while.
        gc.freeze()
        young, middle, old = gc.get_threshold()
        gc.set_threshold(young, middle, max(old, FULL_COLLECTION_THRESHOLD))
        log.info("agent gateway: Connect (mutual TLS) on port %s, Enroll (TLS) on port %s", self.port, self.enroll_port)

    async def _serve(self, mutual: grpc.ServerCredentials, server_tls: grpc.ServerCredentials) -> None:
        """Create, bind and start the aio servers on the gateway's event loop.

        Two servers, so each port has its own concurrency limit: unauthenticated callers of the enrollment
        port (Enroll, health checks) cannot take the slots of the nodes' streams, nor the other way round.
        """
        self.health = health.aio.HealthServicer()
        servicer = AgentGatewayServicer(self)
        server = grpc.aio.server(options=SERVER_OPTIONS, maximum_concurrent_rpcs=self.config.max_streams + 8)
        agent_pb2_grpc.add_AgentGatewayServicer_to_server(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self.port = server.add_secure_port(self.config.listen, mutual)
        enroll_server = grpc.aio.server(options=SERVER_OPTIONS, maximum_concurrent_rpcs=self.config.max_unauthenticated)
        agent_pb2_grpc.add_AgentGatewayServicer_to_server(servicer, enroll_server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, enroll_server)
        self.enroll_port = enroll_server.add_secure_port(self.config.enroll_listen, server_tls)
        await server.start()
        await enroll_server.start()
        self._server, self._enroll_server = server, enroll_server
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)

    def _run_event_loop(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def _end_event_loop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=30)

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, end the streams, stop within `grace` seconds and flush buffered heartbeats."""
        if self._server is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop_serving(grace), self._loop).result()
        finally:
            self._stop.set()
            for loop in self._loops:
                loop.join(timeout=30)
            self._flush()
            self._mark_delivered()
            if self.db is not None:
                self.db.stop()
            connections.close_all()
            self._server = None
            self._end_event_loop()
            log.info("agent gateway stopped")

    async def _stop_serving(self, grace: float | None) -> None:
        await self.health.enter_graceful_shutdown()
        stopping = [asyncio.ensure_future(server.stop(grace)) for server in (self._server, self._enroll_server)]
        await asyncio.sleep(0)  # the servers refuse new calls from here on
        self.dispatcher.close_all()  # ends open streams cleanly; the agents reconnect with backoff
        await asyncio.gather(*stopping)

    def wait(self) -> None:
        """Block until the server stops."""
        thread = self._loop_thread
        if self._server is not None and thread is not None:
            thread.join()

    def _flush(self) -> bool:
        """Write buffered heartbeats and note the gateway's recording clock; return whether it worked."""
        try:
            self.heartbeats.flush()
            now = timezone.now()
            if self.recording_since is None:
                self.recording_since = now
            gateway_clock_record(name=self.config.name, recording_since=self.recording_since, at=now)
            return True
        except Exception:
            # The database is away (or refused the batch): the gap ends the stretch of recorded time,
            # so nodes get a fresh grace period once it comes back. A dead connection is closed here.
            self.recording_since = None
            log.exception("flushing heartbeats failed; retrying at the next flush")
            connections.close_all()
            return False

    def _mark_delivered(self) -> None:
        try:
            self.dispatcher.poll()
        except Exception:
            log.exception("command delivery failed; retrying")
            connections.close_all()  # a dead connection would fail every later poll

    def _maintenance_loop(self) -> None:
        """Flush heartbeats every flush interval; move silent nodes offline every check interval."""
        next_check = time.monotonic() + self.config.offline_check_seconds
        try:
            while not self._stop.wait(self.config.flush_seconds):
                close_old_connections()
                if not self._flush():
                    continue  # no sweep over time the gateway could not record
                try:
                    self.dispatcher.end_revoked()
                    self.dispatcher.end_quarantined()
                except Exception:
                    log.exception("looking for revoked certificates and quarantined nodes failed")
                    connections.close_all()
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.config.offline_check_seconds
                    try:
                        node_mark_stale_offline()
                    except Exception:
                        log.exception("the offline sweep failed")
                        connections.close_all()
        finally:
            connections.close_all()

    def _dispatch_loop(self) -> None:
        try:
            while not self._stop.wait(self.config.poll_seconds):
                close_old_connections()
                self._mark_delivered()
        finally:
            connections.close_all()
