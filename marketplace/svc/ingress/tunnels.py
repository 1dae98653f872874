"""The ServiceTunnel gRPC servicer and the registry of idle tunnels the agents keep open.

An agent opens a stream with TunnelFrame.offer (placement id, container port). The node comes from the verified
client certificate, and the platform checks that the node runs that placement and its rental exposes that port
before the stream is listed as idle. A request takes an idle stream; from then on the stream is one TCP connection
to the container: `send` writes bytes, `receive` reads them, `close` ends it.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time

import grpc
from asgiref.sync import sync_to_async

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.protocol.gen.janction.agent.v1 import agent_pb2_grpc
from janction.errors import ApplicationError
from marketplace.svc.services import tunnel_authorize

log = logging.getLogger("marketplace.svc.ingress")

FRAME_BYTES = 64 * 1024
# What an agent's check for one (certificate, placement, port) stays good for: each pool refill needs no query.
AUTHORIZATION_CACHE_SECONDS = 10.0
# Idle tunnels one (placement, port) may park here: a node cannot hold unbounded streams open.
MAX_IDLE_PER_PORT = 64
OFFER_TIMEOUT_SECONDS = 10.0
INBOX_HIGH = 16


class TunnelClosed(Exception):
    """The tunnel ended; `code` says why when the agent reported an error."""

    def __init__(self, code: str = "", message: str = "") -> None:
        super().__init__(message or code or "the tunnel closed")
        self.code = code
        self.message = message


class Tunnel:
    """One agent stream: idle until taken, then one TCP connection to a container port."""

    def __init__(self, placement_id: str, container_port: int, rental_id: int) -> None:
        self.placement_id = placement_id
        self.container_port = container_port
        self.rental_id = rental_id
        # Unbounded, but the reader waits for `drained` past INBOX_HIGH frames (backpressure to the agent).
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.drained = asyncio.Event()
        self.outbox: asyncio.Queue = asyncio.Queue(maxsize=16)
        self.taken = False
        self.closed = asyncio.Event()
        self.error: TunnelClosed | None = None

    async def send(self, data: bytes) -> None:
        """Queue bytes for the container (waits while the stream is slower: backpressure)."""
        if self.closed.is_set():
            raise self.error or TunnelClosed()
        for start in range(0, len(data), FRAME_BYTES):
            await self.outbox.put(data[start : start + FRAME_BYTES])

    async def receive(self) -> bytes:
        """Return the next bytes from the container; b"" at the end. Raises TunnelClosed when it failed."""
        item = await self.inbox.get()
        if self.inbox.qsize() < INBOX_HIGH // 2:
            self.drained.set()
        if isinstance(item, TunnelClosed):
            if item.code:
                raise item
            return b""
        return item

    def close(self) -> None:
        """End the connection and the stream."""
        if not self.closed.is_set():
            self.closed.set()
            while True:  # what is still queued for the container is dropped: the connection ends
                try:
                    self.outbox.put_nowait(None)
                    return
                except asyncio.QueueFull:
                    self.outbox.get_nowait()


class TunnelRegistry:
    """Idle tunnels by (placement id, container port), on the ingress's event loop."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], collections.deque[Tunnel]] = collections.defaultdict(collections.deque)
        self._arrived = asyncio.Condition()

    def idle_count(self, placement_id: str, container_port: int) -> int:
        return len(self._idle.get((placement_id, container_port), ()))

    async def add(self, tunnel: Tunnel) -> bool:
        key = (tunnel.placement_id, tunnel.container_port)
        if len(self._idle[key]) >= MAX_IDLE_PER_PORT:
            return False
        self._idle[key].append(tunnel)
        async with self._arrived:
            self._arrived.notify_all()
        return True

    def discard(self, tunnel: Tunnel) -> None:
        key = (tunnel.placement_id, tunnel.container_port)
        idle = self._idle.get(key)
        if idle is not None and tunnel in idle:
            idle.remove(tunnel)
            if not idle:
                del self._idle[key]

    def _take_now(self, placement_ids: tuple[str, ...], container_port: int, start: int) -> Tunnel | None:
        count = len(placement_ids)
        for offset in range(count):
            key = (placement_ids[(start + offset) % count], container_port)
            idle = self._idle.get(key)
            while idle:
                tunnel = idle.popleft()
                if not tunnel.closed.is_set():
                    tunnel.taken = True
                    return tunnel
        return None

    async def take(self, placement_ids: tuple[str, ...], container_port: int, wait: float, start: int = 0) -> Tunnel:
        """Return an idle tunnel to one of the placements (round robin from `start`), waiting up to `wait` s."""
        deadline = time.monotonic() + wait
        while True:
            tunnel = self._take_now(placement_ids, container_port, start)
            if tunnel is not None:
                return tunnel
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            async with self._arrived:
                try:
                    await asyncio.wait_for(self._arrived.wait(), timeout=left)
                except TimeoutError:
                    pass


class ServiceTunnelServicer(agent_pb2_grpc.ServiceTunnelServicer):
    """Accepts agents' tunnel streams (mutual TLS) after checking the node runs the placement it offers."""

    def __init__(self, registry: TunnelRegistry) -> None:
        self.registry = registry
        self._authorized: dict[tuple[str, str, int], tuple[float, int]] = {}

    async def _authorize(self, certificate: bytes, placement_id: str, container_port: int) -> int:
        key = (hashlib.sha256(certificate).hexdigest(), placement_id, container_port)
        cached = self._authorized.get(key)
        if cached is not None and time.monotonic() - cached[0] < AUTHORIZATION_CACHE_SECONDS:
            return cached[1]
        rental_id = await sync_to_async(tunnel_authorize, thread_sensitive=False)(
            certificate_pem=certificate, placement_id=placement_id, container_port=container_port
        )
        if len(self._authorized) > 10_000:
            self._authorized.clear()
        self._authorized[key] = (time.monotonic(), rental_id)
        return rental_id

    async def Tunnel(self, request_iterator, context: grpc.aio.ServicerContext) -> None:
        certificates = context.auth_context().get("x509_pem_cert", [])
        if not certificates:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "Tunnels need the node's client certificate.")
        try:
            first = await asyncio.wait_for(context.read(), timeout=OFFER_TIMEOUT_SECONDS)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Send TunnelFrame.offer first.")
        if first is grpc.aio.EOF or first.WhichOneof("payload") != "offer":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "The first frame of a tunnel must be an offer.")
        offer = first.offer
        try:
            rental_id = await self._authorize(certificates[0], offer.placement_id, offer.container_port)
        except ApplicationError as error:
            log.info("refused a tunnel for %r:%s: %s", offer.placement_id[:128], offer.container_port, error.message)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, error.message)
        tunnel = Tunnel(offer.placement_id, offer.container_port, rental_id)
        if not await self.registry.add(tunnel):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"At most {MAX_IDLE_PER_PORT} idle tunnels a port.")
        reader = asyncio.ensure_future(self._read(tunnel, context))
        try:
            while (data := await tunnel.outbox.get()) is not None:
                await context.write(pb.TunnelFrame(data=data))
            if not reader.done():
                await context.write(pb.TunnelFrame(close=pb.TunnelClose()))
        finally:
            tunnel.close()
            self.registry.discard(tunnel)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, tunnel: Tunnel, context: grpc.aio.ServicerContext) -> None:
        """Move the agent's frames to the tunnel's inbox; at the end, close the tunnel."""
        end = TunnelClosed()
        try:
            while True:
                frame = await context.read()
                if frame is grpc.aio.EOF:
                    break
                kind = frame.WhichOneof("payload")
                if kind == "data" and tunnel.taken:
                    tunnel.inbox.put_nowait(frame.data)
                    if tunnel.inbox.qsize() >= INBOX_HIGH:
                        tunnel.drained.clear()
                        await tunnel.drained.wait()
                elif kind == "close":
                    end = TunnelClosed(frame.close.error[:64], frame.close.message[:300])
                    break
                else:
                    end = TunnelClosed("protocol_error", "the agent sent data on an idle tunnel")
                    break
        except (grpc.RpcError, asyncio.CancelledError, Exception) as exc:  # the agent went away
            if isinstance(exc, asyncio.CancelledError):
                raise
            end = TunnelClosed("tunnel_lost", "the agent's tunnel was lost")
        finally:
            self.registry.discard(tunnel)
            tunnel.error = end
            tunnel.inbox.put_nowait(end)
            tunnel.close()
