"""The HTTP side of the ingress: /svc/<slug>/<port name>/<path> proxied to the container, streaming both ways.

HTTP/1.1 is parsed with h11 on both sides (the caller's connection and the container's, through a tunnel), so
bodies stream chunk by chunk (server-sent events arrive event by event), a websocket upgrade becomes a plain byte
pipe, and a caller's keep-alive connection keeps its tunnel for the next request to the same port.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from janction.errors import ApplicationError
from marketplace.svc.ingress.overlay import OverlayConnection, OverlayDialer, OverlayRefused, OverlayUnavailable
from marketplace.svc.ingress.stats import StatsBuffer
from marketplace.svc.ingress.tunnels import Tunnel, TunnelClosed, TunnelRegistry
from marketplace.svc.services import ServiceTarget, service_authorize

log = logging.getLogger("marketplace.svc.ingress")

READ_BYTES = 64 * 1024
IDLE_SECONDS = 60.0
HEADER_SECONDS = 30.0
# Request headers never forwarded: the site's credentials and cookies, hop-by-hop headers, what the ingress sets.
DROP_REQUEST = frozenset(
    {
        b"cookie",
        b"cookie2",
        b"authorization",
        b"proxy-authorization",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"x-csrftoken",
    }
)
# Response headers a service may not send: cookies on the site's domain, and headers that act on the whole site.
DROP_RESPONSE = frozenset(
    {
        b"set-cookie",
        b"set-cookie2",
        b"strict-transport-security",
        b"clear-site-data",
        b"public-key-pins",
        b"alt-svc",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"trailer",
        b"upgrade",
    }
)
# Closing a tunnel tells us why; each reason gets its own status and words.
TUNNEL_ERRORS = {
    "container_not_listening": (502, "The service's container does not accept connections on this port (yet)."),
    "connect_timed_out": (504, "The service's container did not accept the connection in time."),
    "placement_not_running": (503, "The service's container is not running on its node right now; retry shortly."),
    "service_connections_unavailable": (503, "The provider's agent cannot reach containers; retry later."),
    "port_not_exposed": (502, "The provider's agent refused this port."),
    "tunnel_lost": (502, "The connection to the provider's node was lost."),
}


def _authorize_in_thread(**kwargs) -> ServiceTarget:
    # The executor's threads keep their connections: drop one that is broken or past CONN_MAX_AGE first.
    close_old_connections()
    return service_authorize(**kwargs)


class IngressError(Exception):
    def __init__(self, status: int, code: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.close = status, code, message, close


@dataclass
class Upstream:
    """A taken tunnel (or a connection over the overlay) and the HTTP/1.1 client state of the container's side."""

    key: tuple[int, str]
    tunnel: Tunnel | OverlayConnection
    conn: h11.Connection
    overlay: bool = False

    async def next_event(self, timeout: float | None = None):
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise IngressError(
                    502, "bad_upstream_response", f"The service answered with bad HTTP: {exc}", close=True
                ) from None
            if event is not h11.NEED_DATA:
                return event
            try:
                data = (
                    await asyncio.wait_for(self.tunnel.receive(), timeout) if timeout else await self.tunnel.receive()
                )
            except TunnelClosed as closed:
                status, message = TUNNEL_ERRORS.get(closed.code, (502, "The service's connection failed."))
                raise IngressError(status, closed.code or "upstream_failed", message, close=True) from None
            self.conn.receive_data(data)


def _parse_target(raw: bytes) -> tuple[str, str, str]:
    """Return (slug, port name, path for the container) of /svc/<slug>/<port>/<rest>, or raise a 404."""
    target = raw.decode("ascii", "replace")
    path, _, query = target.partition("?")
    parts = path.split("/", 4)
    if len(parts) < 4 or parts[0] != "" or parts[1] != "svc" or not parts[2] or not parts[3]:
        raise IngressError(404, "not_found", "Service URLs look like /svc/<service>/<port name>/<path>.")
    rest = "/" + (parts[4] if len(parts) == 5 else "")
    return parts[2], parts[3], rest + (f"?{query}" if query else "")


def _header(headers, name: bytes) -> bytes:
    for key, value in headers:
        if key == name:
            return value
    return b""


class Proxy:
    """Serves callers' HTTP connections: authorises, takes a tunnel, relays, counts."""

    def __init__(self, registry: TunnelRegistry, stats: StatsBuffer, overlay: OverlayDialer | None = None) -> None:
        self.registry = registry
        self.stats = stats
        self.overlay = overlay
        self.inflight: dict[int, int] = {}
        # Recent authorisations (only successes): (slug, port, credential hash) -> (when, target).
        self._authorized: dict[tuple, tuple[float, ServiceTarget]] = {}
        self._round_robin = 0
        self.origin_host = urlsplit(settings.SERVICE_ORIGIN).netloc.lower().encode() if settings.SERVICE_ORIGIN else b""

    # -- the caller's connection -------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=settings.SERVICE_HEADER_MAX_BYTES)
        peer = writer.get_extra_info("peername")
        upstream: Upstream | None = None
        try:
            while True:
                try:
                    event = await self._client_event(conn, reader, IDLE_SECONDS)
                except TimeoutError:
                    break
                if not isinstance(event, h11.Request):
                    break
                try:
                    upstream = await self._exchange(conn, reader, writer, event, upstream, peer)
                except IngressError as error:
                    if upstream is not None and error.close:
                        upstream.tunnel.close()
                        upstream = None
                    if not await self._send_error(conn, writer, error):
                        break
                if conn.our_state is h11.SWITCHED_PROTOCOL:
                    break
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                else:
                    break
        except h11.RemoteProtocolError as exc:
            await self._send_error(conn, writer, IngressError(exc.error_status_hint, "bad_request", str(exc)))
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the caller went away, or the ingress is stopping
        except Exception:
            log.exception("the ingress failed on a connection from %s", peer)
        finally:
            if upstream is not None:
                upstream.tunnel.close()
            writer.close()

    async def _client_event(self, conn: h11.Connection, reader: asyncio.StreamReader, timeout: float | None):
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = (
                await asyncio.wait_for(reader.read(READ_BYTES), timeout) if timeout else await reader.read(READ_BYTES)
            )
            conn.receive_data(data)

    async def _send_error(self, conn: h11.Connection, writer: asyncio.StreamWriter, error: IngressError) -> bool:
        """Answer with the ingress's own JSON error if no response has begun; return whether to keep going."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False
        body = json.dumps({"code": error.code, "message": error.message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"content-security-policy", settings.SERVICE_CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"cache-control", b"no-store"),
        ]
        if error.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="janction-service"'))
        if error.status == 503:
            headers.append((b"retry-after", b"2"))
        keep = not error.close and conn.their_state is h11.DONE
        if not keep:
            headers.append((b"connection", b"close"))
        try:
            writer.write(conn.send(h11.Response(status_code=error.status, headers=headers)))
            writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        except (h11.LocalProtocolError, ConnectionError):
            return False
        return keep

    # -- one request -------------------------------------------------------------------------------------------

    async def _authorize(self, request: h11.Request) -> tuple[ServiceTarget, str]:
        if self.origin_host and _header(request.headers, b"host").lower() != self.origin_host:
            raise IngressError(404, "not_found", f"Services are served at {settings.SERVICE_ORIGIN}.")
        slug, port_name, path = _parse_target(request.target)
        scheme, _, credential = _header(request.headers, b"authorization").decode("latin-1").partition(" ")
        credential = credential.strip() if scheme.lower() == "bearer" else ""
        key = (slug, port_name, hashlib.sha256(credential.encode()).digest())
        ttl = settings.SERVICE_AUTH_CACHE_SECONDS
        cached = self._authorized.get(key)
        if cached is not None and time.monotonic() - cached[0] < ttl:
            return cached[1], path
        try:
            target = await sync_to_async(_authorize_in_thread, thread_sensitive=False)(
                slug=slug, port_name=port_name, credential=credential
            )
        except ApplicationError as error:
            raise IngressError(error.status, error.code, error.message) from None
        if ttl > 0:
            if len(self._authorized) > 10_000:
                self._authorized.clear()
            self._authorized[key] = (time.monotonic(), target)
        return target, path

    def _request_headers(self, request: h11.Request, target: ServiceTarget, peer, upgrade: bool) -> list:
        headers = [(k, v) for k, v in request.headers if k not in DROP_REQUEST]
        if upgrade:
            headers += [(b"connection", b"upgrade"), (b"upgrade", _header(request.headers, b"upgrade"))]
        host = peer[0] if isinstance(peer, tuple) else "unknown"
        headers += [
            (b"x-forwarded-for", host.encode()),
            (b"x-forwarded-proto", b"https" if settings.SERVICE_ORIGIN.startswith("https") else b"http"),
            (b"x-forwarded-prefix", f"/svc/{request.target.decode('ascii').split('/')[2]}/{target.port_name}".encode()),
        ]
        return headers

    async def _take(self, target: ServiceTarget, upstream: Upstream | None) -> Upstream:
        key = (target.rental_id, target.port_name)
        if upstream is not None:
            if upstream.key == key and not upstream.tunnel.closed.is_set():
                return upstream
            upstream.tunnel.close()
        self._round_robin += 1
        if self.overlay is not None and target.overlay_addresses:
            over = await self._take_overlay(target, key)
            if over is not None:
                return over
        try:
            tunnel = await self.registry.take(
                target.placement_ids,
                target.container_port,
                settings.SERVICE_TUNNEL_WAIT_SECONDS,
                start=self._round_robin,
            )
        except TimeoutError:
            raise IngressError(
                503,
                "service_starting",
                "The service's container is not reachable yet (starting, or its node is reconnecting); retry shortly.",
            ) from None
        return Upstream(key=key, tunnel=tunnel, conn=h11.Connection(h11.CLIENT))

    async def _take_overlay(self, target: ServiceTarget, key: tuple[int, str]) -> Upstream | None:
        """Connect over the overlay to one of the placements (round robin); None when that path is not up."""
        candidates = [(pid, a) for pid, a in target.overlay_addresses if not self.overlay.is_down(pid)]
        if not candidates:
            return None
        placement_id, address = candidates[self._round_robin % len(candidates)]
        try:
            connection = await self.overlay.connect(
                placement_id=placement_id, source=target.overlay_source, address=address, port=target.container_port
            )
        except OverlayRefused:
            status, message = TUNNEL_ERRORS["container_not_listening"]
            raise IngressError(status, "container_not_listening", message, close=True) from None
        except OverlayUnavailable as exc:
            log.info("overlay path to %s not up (%s); using the agent's tunnel", placement_id, exc)
            self.overlay.mark_down(placement_id)
            return None
        return Upstream(key=key, tunnel=connection, conn=h11.Connection(h11.CLIENT), overlay=True)

    async def _exchange(self, conn, reader, writer, request: h11.Request, upstream: Upstream | None, peer):
        """Relay one request and its response; return the upstream to keep for the next request, or None."""
        started = time.monotonic()
        target, path = await self._authorize(request)
        length = _header(request.headers, b"content-length")
        limit = settings.SERVICE_REQUEST_MAX_BYTES
        if length.isdigit() and int(length) > limit:
            raise IngressError(413, "request_too_large", f"Request bodies may be at most {limit} bytes.", close=True)
        rental = target.rental_id
        if self.inflight.get(rental, 0) >= settings.SERVICE_MAX_CONCURRENT_REQUESTS:
            raise IngressError(
                429,
                "too_many_requests",
                f"This service has {settings.SERVICE_MAX_CONCURRENT_REQUESTS} requests in flight; retry shortly.",
            )
        self.inflight[rental] = self.inflight.get(rental, 0) + 1
        counts = {"bytes_in": 0, "bytes_out": 0, "status": 0, "latency_ms": 0, "overlay": False}
        try:
            async with asyncio.timeout(settings.SERVICE_REQUEST_MAX_SECONDS):
                upstream = await self._take(target, upstream)
                counts["overlay"] = upstream.overlay
                upstream = await self._relay(
                    conn, reader, writer, request, upstream, target, path, peer, started, counts
                )
            return upstream
        except TimeoutError:
            if upstream is not None:
                upstream.tunnel.close()
            counts["status"] = counts["status"] or 504
            raise IngressError(
                504,
                "request_timed_out",
                f"Requests may take at most {settings.SERVICE_REQUEST_MAX_SECONDS} s.",
                close=True,
            ) from None
        except IngressError as error:
            counts["status"] = counts["status"] or error.status
            raise
        finally:
            self.inflight[rental] -= 1
            if not self.inflight[rental]:
                del self.inflight[rental]
            self.stats.add(
                rental_id=rental,
                port_name=target.port_name,
                status=counts["status"] or 499,
                bytes_in=counts["bytes_in"],
                bytes_out=counts["bytes_out"],
                latency_ms=counts["latency_ms"] or int((time.monotonic() - started) * 1000),
                overlay=counts["overlay"],
            )

    async def _relay(self, conn, reader, writer, request, upstream: Upstream, target, path, peer, started, counts):
        upgrade = b"upgrade" in _header(request.headers, b"connection").lower() and bool(
            _header(request.headers, b"upgrade")
        )
        head = h11.Request(
            method=request.method,
            target=path.encode(),
            headers=self._request_headers(request, target, peer, upgrade),
        )
        tunnel = upstream.tunnel
        await tunnel.send(upstream.conn.send(head))
        body = asyncio.ensure_future(self._forward_body(conn, reader, upstream, counts))
        try:
            event = await self._head(upstream, body)
            while isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                writer.write(conn.send(h11.InformationalResponse(status_code=event.status_code, headers=[])))
                event = await self._head(upstream, body)
        except TimeoutError:
            raise IngressError(
                504,
                "service_timed_out",
                f"The service sent no response within {settings.SERVICE_RESPONSE_TIMEOUT_SECONDS} s.",
                close=True,
            ) from None
        except BaseException:
            body.cancel()
            await asyncio.gather(body, return_exceptions=True)
            raise
        counts["status"] = event.status_code
        counts["latency_ms"] = int((time.monotonic() - started) * 1000)
        headers = [(k, v) for k, v in event.headers if k not in DROP_RESPONSE]
        headers += [
            (b"content-security-policy", settings.SERVICE_CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        if isinstance(event, h11.InformationalResponse):  # 101: a websocket (or other upgrade) becomes a byte pipe
            await body
            headers += [(b"connection", b"upgrade"), (b"upgrade", _header(event.headers, b"upgrade"))]
            writer.write(conn.send(h11.InformationalResponse(status_code=101, headers=headers, reason=event.reason)))
            await writer.drain()
            await self._pipe(conn, reader, writer, upstream, counts)
            return None
        writer.write(conn.send(h11.Response(status_code=event.status_code, headers=headers, reason=event.reason)))
        await writer.drain()
        while True:
            event = await upstream.next_event()
            if isinstance(event, h11.Data):
                counts["bytes_out"] += len(event.data)
                writer.write(conn.send(h11.Data(data=event.data)))
                await writer.drain()
            elif isinstance(event, h11.EndOfMessage):
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                break
            else:  # ConnectionClosed mid-body
                raise IngressError(
                    502, "upstream_closed", "The service closed the connection mid-response.", close=True
                )
        if not body.done():  # the service answered before reading the whole request: this connection ends
            body.cancel()
            await asyncio.gather(body, return_exceptions=True)
            upstream.tunnel.close()
            raise _Finished
        await body
        if upstream.conn.our_state is h11.DONE and upstream.conn.their_state is h11.DONE:
            upstream.conn.start_next_cycle()
            return upstream
        upstream.tunnel.close()
        return None

    async def _head(self, upstream: Upstream, body: asyncio.Future):
        """Return the next response head event; a failure of the request body (too large, caller gone) wins."""
        head = asyncio.ensure_future(upstream.next_event(timeout=settings.SERVICE_RESPONSE_TIMEOUT_SECONDS))
        try:
            await asyncio.wait([head, body], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            head.cancel()
            raise
        if body.done() and not body.cancelled() and body.exception() is not None and not head.done():
            head.cancel()
            await asyncio.gather(head, return_exceptions=True)
            error = body.exception()
            if isinstance(error, IngressError):
                error.close = True
            raise error
        return await head

    async def _forward_body(self, conn, reader, upstream: Upstream, counts) -> None:
        limit = settings.SERVICE_REQUEST_MAX_BYTES
        while True:
            event = await self._client_event(conn, reader, HEADER_SECONDS)
            if isinstance(event, h11.Data):
                counts["bytes_in"] += len(event.data)
                if counts["bytes_in"] > limit:
                    raise IngressError(413, "request_too_large", f"Request bodies may be at most {limit} bytes.")
                await upstream.tunnel.send(upstream.conn.send(h11.Data(data=event.data)))
            elif isinstance(event, h11.EndOfMessage):
                await upstream.tunnel.send(upstream.conn.send(h11.EndOfMessage()))
                return
            else:
                raise ConnectionError("the caller went away mid-request")

    async def _pipe(self, conn, reader, writer, upstream: Upstream, counts) -> None:
        """Copy bytes both ways after a 101 until either side ends."""
        tunnel = upstream.tunnel
        client_rest, _ = conn.trailing_data
        upstream_rest, _ = upstream.conn.trailing_data

        async def up() -> None:
            if client_rest:
                await tunnel.send(client_rest)
            while data := await reader.read(READ_BYTES):
                counts["bytes_in"] += len(data)
                await tunnel.send(data)

        async def down() -> None:
            if upstream_rest:
                writer.write(upstream_rest)
            try:
                while data := await tunnel.receive():
                    counts["bytes_out"] += len(data)
                    writer.write(data)
                    await writer.drain()
            except TunnelClosed:
                pass

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            tunnel.close()


class _Finished(IngressError):
    def __init__(self) -> None:
        super().__init__(0, "", "", close=True)
