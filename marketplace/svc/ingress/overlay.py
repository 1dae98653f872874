"""The ingress's way to a container over the overlay (docs/overlay.md, "The service endpoint").

On a rental's service segment the hub is a member (host .1 of the segment); the ingress runs where the hub's
segment links are (its host, or the hub's network namespace given as `--overlay-netns`) and opens a plain TCP
connection from that address to the container's segment address and exposed port. The socket is bound to the
hub's segment address before it connects, so it can only leave through that segment's link: where the hub has
not built the link (yet), the bind fails at once and the ingress takes the agent's tunnel instead.

`OverlayConnection` has the interface of a tunnel (`send`, `receive`, `close`, `closed`), so the proxy's
HTTP handling, limits and header rules are the same whichever way a request travels.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import socket
import threading
import time

from marketplace.svc.ingress.tunnels import TunnelClosed

READ_BYTES = 64 * 1024
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int


class OverlayRefused(Exception):
    """The container answered the connection with a reset: nothing listens on the port."""


class OverlayUnavailable(Exception):
    """The overlay path is not up for this placement (no link, no route, no answer in time)."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def socket_in(netns: str | None) -> socket.socket:
    """Return a TCP socket made in the network namespace at `netns` (this one when None).

    A short-lived thread enters the namespace for the socket(2) call only; a socket stays in the namespace it
    was made in. Needs CAP_SYS_ADMIN when `netns` is given.
    """
    if not netns:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    made: list = []

    def make() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(netns, os.O_RDONLY)
            try:
                _setns(target)
                try:
                    made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                finally:
                    _setns(own)  # if this fails the thread ends here, and the namespace with it
            finally:
                os.close(target)
        except OSError as exc:
            made.append(exc)
        finally:
            os.close(own)

    thread = threading.Thread(target=make, name="ingress-overlay-socket", daemon=True)
    thread.start()
    thread.join()
    if not made or isinstance(made[0], OSError):
        raise OverlayUnavailable(f"cannot open a socket in {netns}: {made[0] if made else 'no socket'}")
    return made[0]


class OverlayConnection:
    """One TCP connection to a container over its segment, with the interface of a `Tunnel`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, placement_id: str) -> None:
        self.placement_id = placement_id
        self._reader, self._writer = reader, writer
        self.closed = asyncio.Event()
        self.error: TunnelClosed | None = None

    async def send(self, data: bytes) -> None:
        if self.closed.is_set():
            raise self.error or TunnelClosed()
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError:
            self.error = TunnelClosed("tunnel_lost", "the connection over the overlay was lost")
            self.close()
            raise self.error from None

    async def receive(self) -> bytes:
        """Return the next bytes from the container; b"" at the end. Raises TunnelClosed when it failed."""
        if self.error is not None:
            raise self.error
        try:
            return await self._reader.read(READ_BYTES)
        except OSError:
            self.error = TunnelClosed("tunnel_lost", "the connection over the overlay was lost")
            self.close()
            raise self.error from None

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self._writer.close()


class OverlayDialer:
    """Opens connections over the overlay; remembers placements whose path failed, to skip them for a while."""

    def __init__(self, *, netns: str | None, connect_seconds: float, down_seconds: float) -> None:
        self.netns = netns or None
        self.connect_seconds = connect_seconds
        self.down_seconds = down_seconds
        self._down: dict[str, float] = {}

    def is_down(self, placement_id: str) -> bool:
        until = self._down.get(placement_id)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self._down[placement_id]
            return False
        return True

    def mark_down(self, placement_id: str) -> None:
        if len(self._down) > 10_000:
            self._down.clear()
        self._down[placement_id] = time.monotonic() + self.down_seconds

    async def connect(self, *, placement_id: str, source: str, address: str, port: int) -> OverlayConnection:
        """Return a connection from `source` to address:port; raise OverlayRefused or OverlayUnavailable."""
        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(None, socket_in, self.netns) if self.netns else socket_in(None)
        try:
            sock.setblocking(False)
            sock.bind((source, 0))  # EADDRNOTAVAIL where the hub has no link on this segment: not up here
            await asyncio.wait_for(loop.sock_connect(sock, (address, port)), self.connect_seconds)
            reader, writer = await asyncio.open_connection(sock=sock, limit=READ_BYTES)
        except ConnectionRefusedError:
            sock.close()
            raise OverlayRefused(f"{address}:{port} refused the connection") from None
        except (OSError, TimeoutError) as exc:
            sock.close()
            reason = errno.errorcode.get(getattr(exc, "errno", None) or 0, type(exc).__name__)
            raise OverlayUnavailable(f"{address}:{port} from {source}: {reason}") from None
        return OverlayConnection(reader, writer, placement_id)
