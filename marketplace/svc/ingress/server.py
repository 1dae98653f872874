"""The ingress process: the HTTP listener, the tunnel gRPC server (mutual TLS) and their background loops.

Both servers share one asyncio event loop run by its own thread, behind a synchronous facade (`start`, `stop`,
`wait`) like the agent gateway's, so `manage.py service_ingress`, `make run` and tests drive it from plain threads.
Several ingress processes may run: each records its tunnel address in the cache, and agents keep tunnels to all.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import grpc
from django.conf import settings
from django.db import close_old_connections, connections

from agent.protocol.gen.janction.agent.v1 import agent_pb2_grpc
from marketplace.svc.ingress.overlay import OverlayDialer
from marketplace.svc.ingress.proxy import Proxy
from marketplace.svc.ingress.stats import StatsBuffer
from marketplace.svc.ingress.tunnels import ServiceTunnelServicer, TunnelRegistry
from marketplace.svc.selectors import service_ingress_register
from nodes.ca import platform_ca

log = logging.getLogger("marketplace.svc.ingress")

REGISTER_SECONDS = 10.0
SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 30_000),
    ("grpc.max_receive_message_length", 1024 * 1024),
]


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Ingress:
    """The service endpoint's HTTP server and the agents' tunnel server, on one event loop."""

    def __init__(
        self,
        *,
        listen: str | None = None,
        tunnel_listen: str | None = None,
        advertise: str = "",
        overlay: bool | None = None,
        overlay_netns: str | None = None,
    ) -> None:
        """`overlay`: reach containers on service segments over the overlay first (docs/overlay.md); the hub's
        segment links are in this network namespace, or in the one at `overlay_netns`."""
        self.listen = listen or settings.SERVICE_INGRESS_LISTEN
        self.overlay = settings.SERVICE_INGRESS_OVERLAY if overlay is None else overlay
        self.overlay_netns = overlay_netns if overlay_netns is not None else settings.SERVICE_INGRESS_OVERLAY_NETNS
        self.tunnel_listen = tunnel_listen or settings.SERVICE_INGRESS_TUNNEL_LISTEN
        self._advertise = advertise
        self.port = 0
        self.tunnel_port = 0
        self.stats = StatsBuffer()
        self.registry: TunnelRegistry | None = None
        self.proxy: Proxy | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http: asyncio.base_events.Server | None = None
        self._stop = threading.Event()
        self._background: threading.Thread | None = None

    @property
    def tunnel_address(self) -> str:
        """Where agents dial this ingress's tunnels."""
        if self._advertise:
            return self._advertise
        host, _ = _split(self.tunnel_listen)
        return f"{host or '127.0.0.1'}:{self.tunnel_port}"

    def start(self) -> None:
        """Bind both ports and start serving."""
        ca = platform_ca()
        tunnel_host, _ = _split(self.tunnel_listen)
        names = ["localhost", "127.0.0.1", tunnel_host, *settings.AGENT_GATEWAY_TLS_NAMES]
        if self._advertise:
            names.append(_split(self._advertise)[0])
        key_pem, certificate_pem = ca.issue_server_certificate(names=[name for name in names if name])
        credentials = grpc.ssl_server_credentials(
            [(key_pem, certificate_pem + ca.certificate_pem.encode())],
            root_certificates=ca.certificate_pem.encode(),
            require_client_auth=True,
        )
        self._stop.clear()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="ingress-aio", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(credentials), self._loop).result()
        self._background = threading.Thread(target=self._background_loop, name="ingress-background", daemon=True)
        self._background.start()
        log.info("service ingress: HTTP on port %s, tunnels (mutual TLS) on port %s", self.port, self.tunnel_port)

    async def _serve(self, credentials: grpc.ServerCredentials) -> None:
        self.registry = TunnelRegistry()
        dialer = None
        if self.overlay:
            dialer = OverlayDialer(
                netns=self.overlay_netns or None,
                connect_seconds=settings.SERVICE_OVERLAY_CONNECT_SECONDS,
                down_seconds=settings.SERVICE_OVERLAY_DOWN_SECONDS,
            )
        self.proxy = Proxy(self.registry, self.stats, dialer)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        agent_pb2_grpc.add_ServiceTunnelServicer_to_server(ServiceTunnelServicer(self.registry), server)
        self.tunnel_port = server.add_secure_port(self.tunnel_listen, credentials)
        await server.start()
        self._grpc = server
        host, port = _split(self.listen)
        self._http = await asyncio.start_server(self.proxy.handle, host or None, port, limit=64 * 1024, backlog=512)
        self.port = self._http.sockets[0].getsockname()[1]

    def _run_loop(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()

    def _background_loop(self) -> None:
        """Flush counters every SERVICE_STATS_FLUSH_SECONDS; say where this ingress's tunnels are every 10 s."""
        since_register = REGISTER_SECONDS
        try:
            while True:
                close_old_connections()
                if since_register >= REGISTER_SECONDS:
                    since_register = 0.0
                    try:
                        service_ingress_register(self.tunnel_address)
                    except Exception:
                        log.exception("recording this ingress's tunnel address failed")
                try:
                    self.stats.flush()
                except Exception:
                    log.exception("writing service counters failed; kept for the next flush")
                    connections.close_all()
                if self._stop.wait(settings.SERVICE_STATS_FLUSH_SECONDS):
                    break
                since_register += settings.SERVICE_STATS_FLUSH_SECONDS
        finally:
            connections.close_all()

    def stop(self, grace: float = 1.0) -> None:
        """Stop accepting, end the tunnels and connections, write the last counters."""
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop_serving(grace), self._loop).result()
        self._stop.set()
        if self._background is not None:
            self._background.join(timeout=30)
        try:
            self.stats.flush()
        except Exception:
            log.exception("writing the last service counters failed")
        connections.close_all()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop = None
        log.info("service ingress stopped")

    async def _stop_serving(self, grace: float) -> None:
        if self._http is not None:
            self._http.close()
        if self._grpc is not None:
            await self._grpc.stop(grace)

    def wait(self) -> None:
        """Block until the ingress stops."""
        if self._thread is not None:
            self._thread.join()
