"""A small HTTP service for testing the service endpoint: pure standard library (asyncio), Python 3.11+.

It runs in the `localhost/janction-pyservice:<hash>` image (scripts/build-service-image.sh) and, unchanged,
anywhere a python3 is (the sandbox runtime, a developer's shell). Endpoints:

  GET  /hello            JSON: role and index from the environment, every JANCTION_* variable, the request's
                         method, path, query and headers exactly as received (so a test can see what the proxy strips)
  GET  /events?n=K&id=S  server-sent events; with an id, event k+1 is sent only after POST /ack?id=S&k=k arrived
  POST /ack?id=S&k=K     acknowledges event K of stream S (204; 404 unknown stream; 409 not the last event sent)
  POST /echo             streams each chunk of the request body back as soon as it arrives (chunked response)
  GET  /ws               websocket echo (RFC 6455: text, binary, fragmentation, ping, close)
  GET  /bytes?n=N        N bytes, streamed
  GET  /set-cookie       answers with Set-Cookie headers (a proxy must drop them)
  GET  /slow?seconds=S   answers after S seconds
  GET  /status?code=C    answers with status C

Environment: PORT (default 8000; "8000,8001" listens on several), PYSERVICE_HOST (default 0.0.0.0),
PYSERVICE_START_DELAY (seconds to wait before listening, to imitate a slow start).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import struct
import sys
import time
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
MAX_PLAIN_BODY = 1024 * 1024
MAX_WS_MESSAGE = 16 * 1024 * 1024
MAX_BYTES = 64 * 1024**3
MAX_EVENTS = 1_000_000
MAX_SLOW_SECONDS = 3600.0
CHUNK = 64 * 1024
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ZEROS = bytes(CHUNK)


class BadRequest(Exception):
    """The client sent something this server will not parse; answer 400 and close."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Request:
    """One parsed request head; the body is read by the handler."""

    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        split = urlsplit(target)
        self.path = split.path
        self.query = {key: values[-1] for key, values in parse_qs(split.query, keep_blank_values=True).items()}
        self.raw_query = split.query

    def header(self, name: str) -> str:
        """Return the last value of a header (case-insensitive), or ""."""
        lowered = name.lower()
        found = ""
        for key, value in self.headers:
            if key.lower() == lowered:
                found = value
        return found

    @property
    def chunked(self) -> bool:
        return "chunked" in self.header("transfer-encoding").lower()

    @property
    def content_length(self) -> int:
        raw = self.header("content-length").strip()
        if not raw:
            return 0
        if not raw.isdigit():
            raise BadRequest("Content-Length must be a non-negative integer")
        return int(raw)

    @property
    def keep_alive(self) -> bool:
        connection = self.header("connection").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class Streams:
    """The acknowledged event streams (GET /events with an id), shared by every connection."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.acked: dict[str, int] = {}
        self.changed: dict[str, asyncio.Event] = {}


STREAMS = Streams()


async def read_line(reader: asyncio.StreamReader, limit: int) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise BadRequest("line too long") from exc
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise BadRequest("connection closed in the middle of a line") from exc
        raise
    if len(line) > limit:
        raise BadRequest("line too long")
    return line


async def read_head(reader: asyncio.StreamReader) -> Request | None:
    """Read a request line and headers; None when the client closed between requests."""
    try:
        line = await read_line(reader, MAX_REQUEST_LINE)
    except asyncio.IncompleteReadError:
        return None
    while line in (b"\r\n", b"\n"):  # tolerate blank lines between requests
        try:
            line = await read_line(reader, MAX_REQUEST_LINE)
        except asyncio.IncompleteReadError:
            return None
    parts = line.decode("latin-1").strip().split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    headers: list[tuple[str, str]] = []
    total = 0
    while True:
        header_line = await read_line(reader, MAX_HEADER_BYTES)
        total += len(header_line)
        if header_line in (b"\r\n", b"\n"):
            break
        if total > MAX_HEADER_BYTES or len(headers) >= MAX_HEADERS:
            raise BadRequest("too many or too large headers", 431)
        name, colon, value = header_line.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest("malformed header line")
        headers.append((name, value.strip()))
    return Request(parts[0], parts[1], parts[2], headers)


async def body_chunks(reader: asyncio.StreamReader, request: Request):
    """Yield the request body as it arrives (chunked or Content-Length)."""
    if request.chunked:
        while True:
            size_line = await read_line(reader, 1024)
            size_text = size_line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise BadRequest("malformed chunk size") from exc
            if size < 0:
                raise BadRequest("malformed chunk size")
            if size == 0:
                while (await read_line(reader, MAX_HEADER_BYTES)) not in (b"\r\n", b"\n"):
                    pass  # trailers, ignored
                return
            remaining = size
            while remaining:
                data = await reader.read(min(remaining, CHUNK))
                if not data:
                    raise BadRequest("connection closed in the middle of a chunk")
                remaining -= len(data)
                yield data
            if (await read_line(reader, 16)) not in (b"\r\n", b"\n"):
                raise BadRequest("chunk not followed by CRLF")
    else:
        remaining = request.content_length
        while remaining:
            data = await reader.read(min(remaining, CHUNK))
            if not data:
                raise BadRequest("connection closed before the end of the body")
            remaining -= len(data)
            yield data


async def read_small_body(reader: asyncio.StreamReader, request: Request) -> bytes:
    body = bytearray()
    async for data in body_chunks(reader, request):
        body += data
        if len(body) > MAX_PLAIN_BODY:
            raise BadRequest(f"body larger than {MAX_PLAIN_BODY} bytes", 413)
    return bytes(body)


def head_bytes(status: int, headers: list[tuple[str, str]]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Status"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes = b"",
    content_type: str = "application/json",
    extra: list[tuple[str, str]] | None = None,
    keep_alive: bool = True,
) -> None:
    headers = [("Content-Length", str(len(body))), ("Connection", "keep-alive" if keep_alive else "close")]
    if body:
        headers.append(("Content-Type", content_type))
    writer.write(head_bytes(status, headers + (extra or [])) + body)
    await writer.drain()


def as_json(data: object) -> bytes:
    return json.dumps(data, sort_keys=True).encode()


def error_body(message: str) -> bytes:
    return as_json({"error": message})


async def write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    await writer.drain()


async def end_chunks(writer: asyncio.StreamWriter) -> None:
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an integer") from exc
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def query_float(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a number") from exc
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


async def hello(request: Request, writer: asyncio.StreamWriter, port: int) -> None:
    env = {key: value for key, value in os.environ.items() if key.startswith("JANCTION_")}
    body = {
        "service": "pyservice",
        "role": os.environ.get("JANCTION_ROLE", ""),
        "index": os.environ.get("JANCTION_INDEX", ""),
        "env": env,
        "method": request.method,
        "path": request.path,
        "query": request.raw_query,
        "headers": [[name, value] for name, value in request.headers],
        "port": port,
    }
    await respond(writer, 200, as_json(body), keep_alive=request.keep_alive)


def sse_event(event: str, event_id: int | None, data: object) -> bytes:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return (head + f"data: {json.dumps(data, sort_keys=True)}\n\n").encode()


async def events(request: Request, writer: asyncio.StreamWriter) -> bool:
    count = query_int(request, "n", 10, 0, MAX_EVENTS)
    interval = query_float(request, "interval", 0.0, 0.0, 60.0)
    timeout = query_float(request, "timeout", 30.0, 0.1, 3600.0)
    stream = request.query.get("id", "")
    if len(stream) > 200:
        raise BadRequest("id must be at most 200 characters")
    if stream and stream in STREAMS.sent:
        await respond(writer, 409, error_body(f"stream {stream!r} is already open"), keep_alive=request.keep_alive)
        return request.keep_alive
    headers = [
        ("Content-Type", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "keep-alive" if request.keep_alive else "close"),
    ]
    writer.write(head_bytes(200, headers))
    await writer.drain()
    if stream:
        STREAMS.sent[stream] = -1
        STREAMS.acked[stream] = -1
        STREAMS.changed[stream] = asyncio.Event()
    try:
        for k in range(count):
            if stream and k > 0:
                changed = STREAMS.changed[stream]
                deadline = time.monotonic() + timeout
                while STREAMS.acked[stream] < k - 1:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        await write_chunk(writer, sse_event("timeout", None, {"waiting_for_ack": k - 1}))
                        await end_chunks(writer)
                        return request.keep_alive
                    changed.clear()
                    try:
                        await asyncio.wait_for(changed.wait(), left)
                    except TimeoutError:
                        pass
            elif interval and k > 0:
                await asyncio.sleep(interval)
            payload = {"k": k, "n": count, "id": stream, "sent_at_ms": int(time.time() * 1000)}
            if stream:
                STREAMS.sent[stream] = k
            await write_chunk(writer, sse_event("tick", k, payload))
        await write_chunk(writer, sse_event("done", None, {"n": count, "id": stream}))
        await end_chunks(writer)
    finally:
        if stream:
            STREAMS.sent.pop(stream, None)
            STREAMS.acked.pop(stream, None)
            STREAMS.changed.pop(stream, None)
    return request.keep_alive


async def ack(request: Request, writer: asyncio.StreamWriter) -> None:
    stream = request.query.get("id", "")
    k = query_int(request, "k", -1, 0, MAX_EVENTS)
    if stream not in STREAMS.sent:
        await respond(writer, 404, error_body(f"no open stream {stream!r}"), keep_alive=request.keep_alive)
        return
    if k != STREAMS.sent[stream]:
        message = f"event {k} is not the last event sent ({STREAMS.sent[stream]})"
        await respond(writer, 409, error_body(message), keep_alive=request.keep_alive)
        return
    STREAMS.acked[stream] = k
    STREAMS.changed[stream].set()
    await respond(writer, 204, keep_alive=request.keep_alive)


async def echo(request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    if not request.chunked and not request.header("content-length"):
        raise BadRequest("POST /echo needs a body (chunked or with Content-Length)", 411)
    content_type = request.header("content-type") or "application/octet-stream"
    headers = [
        ("Content-Type", content_type),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "keep-alive" if request.keep_alive else "close"),
    ]
    if request.header("expect").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    writer.write(head_bytes(200, headers))
    await writer.drain()
    try:
        async for data in body_chunks(reader, request):
            await write_chunk(writer, data)
    except BadRequest:
        return False  # the response has begun: a bad body can only end the connection
    await end_chunks(writer)
    return request.keep_alive


async def send_bytes(request: Request, writer: asyncio.StreamWriter) -> bool:
    count = query_int(request, "n", 0, 0, MAX_BYTES)
    headers = [
        ("Content-Type", "application/octet-stream"),
        ("Content-Length", str(count)),
        ("Connection", "keep-alive" if request.keep_alive else "close"),
    ]
    writer.write(head_bytes(200, headers))
    remaining = count
    view = memoryview(ZEROS)
    while remaining:
        piece = min(remaining, CHUNK)
        writer.write(view[:piece])
        remaining -= piece
        await writer.drain()
    await writer.drain()
    return request.keep_alive


# -- websockets (RFC 6455) ------------------------------------------------------------------------------------


class WebSocketClosed(Exception):
    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", first, length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, 126, length)
    else:
        head = struct.pack("!BBQ", first, 127, length)
    return head + payload


def unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


async def ws_read_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    first, second = await reader.readexactly(2)
    if first & 0x70:
        raise WebSocketClosed(1002, "reserved bits set")
    fin, opcode = bool(first & 0x80), first & 0x0F
    if not second & 0x80:
        raise WebSocketClosed(1002, "client frames must be masked")
    length = second & 0x7F
    if opcode >= 0x8 and (length > 125 or not fin):
        raise WebSocketClosed(1002, "control frames must be short and unfragmented")
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    if length > MAX_WS_MESSAGE:
        raise WebSocketClosed(1009, f"frame larger than {MAX_WS_MESSAGE} bytes")
    mask = await reader.readexactly(4)
    return fin, opcode, unmask(await reader.readexactly(length), mask)


async def websocket(request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    key = request.header("sec-websocket-key")
    if "websocket" not in request.header("upgrade").lower() or not key:
        await respond(writer, 426, error_body("GET /ws needs a websocket upgrade"), extra=[("Upgrade", "websocket")])
        return
    if request.header("sec-websocket-version") != "13":
        await respond(writer, 426, error_body("only websocket version 13"), extra=[("Sec-WebSocket-Version", "13")])
        return
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324 - RFC 6455
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)]
    writer.write(head_bytes(101, headers))
    await writer.drain()
    message_opcode = 0
    message = bytearray()
    try:
        while True:
            fin, opcode, payload = await ws_read_frame(reader)
            if opcode == 0x8:  # close: answer with the same code
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1000
                raise WebSocketClosed(code, "")
            if opcode == 0x9:
                writer.write(ws_frame(0xA, payload))
                await writer.drain()
                continue
            if opcode == 0xA:
                continue
            if opcode in (0x1, 0x2):
                if message_opcode:
                    raise WebSocketClosed(1002, "new message before the last one ended")
                message_opcode = opcode
            elif opcode == 0x0:
                if not message_opcode:
                    raise WebSocketClosed(1002, "continuation without a message")
            else:
                raise WebSocketClosed(1002, f"unknown opcode {opcode}")
            message += payload
            if len(message) > MAX_WS_MESSAGE:
                raise WebSocketClosed(1009, f"message larger than {MAX_WS_MESSAGE} bytes")
            if not fin:
                continue
            if message_opcode == 0x1:
                try:
                    bytes(message).decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise WebSocketClosed(1007, "text message is not UTF-8") from exc
            writer.write(ws_frame(message_opcode, bytes(message)))
            await writer.drain()
            message_opcode = 0
            message = bytearray()
    except WebSocketClosed as closed:
        writer.write(ws_frame(0x8, struct.pack("!H", closed.code) + closed.reason.encode()[:120]))
        await writer.drain()
    except asyncio.IncompleteReadError:
        pass


# -- dispatch -------------------------------------------------------------------------------------------------


async def handle_one(request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> bool:
    """Answer one request; return whether the connection may carry another."""
    route = (request.method, request.path)
    if route == ("POST", "/echo"):
        return await echo(request, reader, writer)
    if route == ("GET", "/ws"):
        await websocket(request, reader, writer)
        return False
    await read_small_body(reader, request)
    if route == ("GET", "/hello"):
        await hello(request, writer, port)
    elif route == ("GET", "/events"):
        return await events(request, writer)
    elif route == ("POST", "/ack"):
        await ack(request, writer)
    elif route == ("GET", "/bytes"):
        return await send_bytes(request, writer)
    elif route == ("GET", "/set-cookie"):
        host = request.header("host").split(":")[0] or "localhost"
        cookies = [("Set-Cookie", "sessionid=from-service; Path=/"), ("Set-Cookie", f"csrftoken=x; Domain={host}")]
        await respond(writer, 200, as_json({"set": 2}), extra=cookies, keep_alive=request.keep_alive)
    elif route == ("GET", "/slow"):
        seconds = query_float(request, "seconds", 1.0, 0.0, MAX_SLOW_SECONDS)
        await asyncio.sleep(seconds)
        await respond(writer, 200, as_json({"slept": seconds}), keep_alive=request.keep_alive)
    elif route == ("GET", "/status"):
        code = query_int(request, "code", 200, 200, 599)
        await respond(writer, code, as_json({"status": code}), keep_alive=request.keep_alive)
    elif request.path in ("/hello", "/events", "/ack", "/echo", "/ws", "/bytes", "/set-cookie", "/slow", "/status"):
        await respond(writer, 405, error_body(f"{request.method} is not allowed on {request.path}"))
    else:
        await respond(writer, 404, error_body(f"no route {request.path}"), keep_alive=request.keep_alive)
    return request.keep_alive


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close our side, then read (a bounded amount, briefly) what the client still sends.

    Closing with unread input would reset the connection, and the client could lose the error response.
    """
    try:
        writer.write_eof()
        deadline = time.monotonic() + 1.0
        unread = 0
        while unread < MAX_PLAIN_BODY and (left := deadline - time.monotonic()) > 0:
            data = await asyncio.wait_for(reader.read(CHUNK), left)
            if not data:
                break
            unread += len(data)
    except (OSError, TimeoutError):
        pass


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    try:
        while True:
            try:
                request = await read_head(reader)
                if request is None:
                    break
                if not await handle_one(request, reader, writer, port):
                    break
            except BadRequest as exc:
                await respond(writer, exc.status, error_body(str(exc)), keep_alive=False)
                await linger(reader, writer)
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def log(line: str) -> None:
    """Write one whole line at once (podman's log would split a line written in pieces)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main() -> None:
    delay = float(os.environ.get("PYSERVICE_START_DELAY", "0") or 0)
    if delay:
        await asyncio.sleep(delay)
    host = os.environ.get("PYSERVICE_HOST", "0.0.0.0")  # noqa: S104 - the container's own namespace
    ports = [int(port) for port in os.environ.get("PORT", "8000").split(",") if port.strip()]
    servers = []
    for port in ports:
        server = await asyncio.start_server(
            lambda reader, writer, port=port: serve_connection(reader, writer, port),
            host,
            port,
            limit=MAX_HEADER_BYTES,
            reuse_address=True,
        )
        servers.append(server)
        log(f"pyservice listening on {host}:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    log("pyservice stopping")


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
