"""Service tunnels (issue 15): idle streams the agent dials out to each ingress, one per future TCP connection.

For every exposed port of a running placement and every ingress address, a pool keeps `size` ServiceTunnel
streams open and idle (each begins with a TunnelFrame.offer). When the ingress takes one (its first frame
arrives), the agent connects to the container's port through the runtime (`open_connection`, inside the
container's network namespace: the container keeps `--network none`), copies bytes both ways until either side
closes, and the pool dials a replacement. The agent dials out, so providers behind NAT need no open port.
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.protocol.gen.janction.agent.v1.agent_pb2_grpc import ServiceTunnelStub

log = logging.getLogger(__name__)

FRAME_BYTES = 64 * 1024
DEFAULT_POOL_SIZE = 4
CONNECT_TIMEOUT_SECONDS = 5.0
# Frames queued towards the ingress per tunnel: the socket reader waits when the stream is slower (backpressure).
SEND_QUEUE_FRAMES = 32
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_receive_message_length", 1024 * 1024),
]


@dataclass(frozen=True)
class ServicePort:
    name: str
    container_port: int


def _error_code(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    if isinstance(exc, ConnectionRefusedError):
        return "container_not_listening"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "connect_timed_out"
    return "connect_failed"


class _Pool:
    """Keeps `size` idle tunnels from one placement port to one ingress, replacing each one taken."""

    def __init__(self, manager: TunnelManager, placement_id: str, port: ServicePort, address: str, size: int) -> None:
        self.manager = manager
        self.placement_id = placement_id
        self.port = port
        self.address = address
        self.size = size
        self.idle = 0
        self.failures = 0
        self.closed = False
        self.calls: set = set()
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name=f"tunnel-pool-{placement_id}-{port.name}", daemon=True)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.closed and self.idle >= self.size:
                    self.cond.wait()
                if self.closed:
                    return
                failures = self.failures
            if failures:
                # The ingress is away or refuses: back off (full jitter, at most 30 s) before dialling again.
                delay = random.uniform(0, min(30.0, 0.2 * 2 ** min(failures, 8)))
                with self.cond:
                    self.cond.wait_for(lambda: self.closed, timeout=delay)
                    if self.closed:
                        return
            with self.cond:
                self.idle += 1
            threading.Thread(target=self._tunnel, name=f"tunnel-{self.placement_id}", daemon=True).start()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            calls = list(self.calls)
            self.cond.notify_all()
        for call in calls:
            call.cancel()

    def _taken(self) -> None:
        with self.cond:
            self.idle -= 1
            self.failures = 0
            self.cond.notify_all()

    def _failed(self) -> None:
        with self.cond:
            self.idle -= 1
            self.failures += 1
            self.cond.notify_all()

    def _tunnel(self) -> None:
        """Run one tunnel: offer it, wait to be taken, then carry one TCP connection."""
        frames: queue.Queue = queue.Queue(maxsize=SEND_QUEUE_FRAMES)
        frames.put(
            pb.TunnelFrame(
                offer=pb.TunnelOffer(placement_id=self.placement_id, container_port=self.port.container_port)
            )
        )

        def requests() -> Iterator[pb.TunnelFrame]:
            while (frame := frames.get()) is not None:
                yield frame

        stub = ServiceTunnelStub(self.manager.channel(self.address))
        call = stub.Tunnel(requests())
        with self.cond:
            if self.closed:
                call.cancel()
            self.calls.add(call)
        taken = failed = False
        sock: socket.socket | None = None
        try:
            for frame in call:
                kind = frame.WhichOneof("payload")
                if not taken:
                    taken = True
                    self._taken()
                    if kind != "data":
                        break
                    try:
                        sock = self.manager.connect(self.placement_id, self.port.container_port)
                    except Exception as exc:  # the container does not listen, is frozen, or is gone
                        code = _error_code(exc)
                        log.info("tunnel to %s:%s: %s (%s)", self.placement_id, self.port.container_port, code, exc)
                        frames.put(pb.TunnelFrame(close=pb.TunnelClose(error=code, message=str(exc)[:300])))
                        _put_end(frames)
                        failed = True
                        continue  # until the ingress ends the stream: cancelling could drop the close frame
                    threading.Thread(target=_pump, args=(sock, frames), name="tunnel-pump", daemon=True).start()
                if failed:
                    continue
                if kind == "data":
                    sock.sendall(frame.data)
                elif kind == "close":
                    break
        except grpc.RpcError as exc:
            if not taken and not self.closed:
                log.info("tunnel to %s refused or lost: %s: %s", self.address, exc.code().name, exc.details())
        except OSError as exc:  # the container closed its side while bytes were on the way
            log.debug("tunnel socket error: %s", exc)
        finally:
            if not taken:
                self._failed()
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            _put_end(frames)
            with self.cond:
                self.calls.discard(call)
            call.cancel()


def _put_end(frames: queue.Queue) -> None:
    """End the request stream without blocking on a full queue (the reader may be gone)."""
    while True:
        try:
            frames.put_nowait(None)
            return
        except queue.Full:
            try:
                frames.get_nowait()
            except queue.Empty:
                pass


def _pump(sock: socket.socket, frames: queue.Queue) -> None:
    """Copy what the container sends into the tunnel; at its end, close the tunnel."""
    try:
        while data := sock.recv(FRAME_BYTES):
            frames.put(pb.TunnelFrame(data=data))
    except OSError:
        pass
    try:
        frames.put(pb.TunnelFrame(close=pb.TunnelClose()), timeout=5)
    except queue.Full:
        pass
    _put_end(frames)


class TunnelManager:
    """The tunnel pools of every running service placement on this node."""

    def __init__(self, *, runtime, credentials: grpc.ChannelCredentials, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self._runtime = runtime
        self._credentials = credentials
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._pools: dict[str, list[_Pool]] = {}
        self._ports: dict[str, set[int]] = {}

    def channel(self, address: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = grpc.secure_channel(address, self._credentials, CHANNEL_OPTIONS)
                self._channels[address] = channel
            return channel

    def connect(self, placement_id: str, container_port: int) -> socket.socket:
        """Return a socket connected to the container's port; only ports the platform asked to expose."""
        with self._lock:
            allowed = self._ports.get(placement_id, set())
        if container_port not in allowed:
            raise PortNotExposed(f"port {container_port} of placement {placement_id} is not exposed")
        sock = self._runtime.open_connection(placement_id, container_port, CONNECT_TIMEOUT_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def open(self, placement_id: str, ports: list[ServicePort], addresses: list[str], pool_size: int = 0) -> None:
        """Start the pools of a placement that runs (again); a second call for the same placement does nothing."""
        if not ports or not addresses:
            return
        with self._lock:
            if placement_id in self._pools:
                return
            size = pool_size or self._pool_size
            pools = [_Pool(self, placement_id, port, address, size) for port in ports for address in addresses]
            self._pools[placement_id] = pools
            self._ports[placement_id] = {port.container_port for port in ports}
        for pool in pools:
            pool.thread.start()
        log.info(
            "placement %s: %d idle tunnel(s) per port to %s for %s",
            placement_id,
            size,
            ", ".join(addresses),
            ", ".join(f"{p.name}={p.container_port}" for p in ports),
        )

    def close(self, placement_id: str) -> None:
        """Stop a placement's pools and end its idle tunnels (connections in flight end with the container)."""
        with self._lock:
            pools = self._pools.pop(placement_id, [])
            self._ports.pop(placement_id, None)
        for pool in pools:
            pool.close()

    def close_all(self) -> None:
        with self._lock:
            placement_ids = list(self._pools)
        for placement_id in placement_ids:
            self.close(placement_id)
        with self._lock:
            channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()


class PortNotExposed(RuntimeError):
    code = "port_not_exposed"
