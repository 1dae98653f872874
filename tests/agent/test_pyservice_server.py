"""The pyservice test server (scripts/images/pyservice/server.py) speaks HTTP/1.1, SSE and websockets correctly.

It runs here as a host process on a free loopback port: the same file the image and the sandbox run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.service_image import SERVER_SOURCE

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "PYSERVICE_HOST": "127.0.0.1", "JANCTION_ROLE": "primary",
           "JANCTION_INDEX": "0", "SECRET": "not-shown"}  # fmt: skip
    process = subprocess.Popen([sys.executable, str(SERVER_SOURCE)], env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and "listening" in process.stdout.readline()
    yield port
    process.terminate()
    assert process.wait(timeout=10) == 0  # SIGTERM stops it cleanly


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


class Reader:
    """A buffered reader over a socket, for reading responses piece by piece."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        self.buffer += data

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def head(self) -> tuple[int, dict[str, str]]:
        lines = self.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.setdefault(name.lower(), value.strip())
        return int(lines[0].split()[1]), headers

    def chunk(self) -> bytes:
        size = int(self.until(b"\r\n").strip(), 16)
        data = self.exactly(size)
        assert self.exactly(2) == b"\r\n"
        return data


def _request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with _connect(port) as sock:
        sock.sendall(raw)
        reader = Reader(sock)
        status, headers = reader.head()
        body = reader.exactly(int(headers.get("content-length", "0")))
    return status, headers, body


def test_hello_shows_role_index_and_the_headers_it_received(server):
    raw = b"GET /hello?x=1 HTTP/1.1\r\nHost: svc\r\nCookie: sessionid=abc\r\nAuthorization: Bearer k\r\n\r\n"
    status, _, body = _request(server, raw)
    hello = json.loads(body)
    assert status == 200 and (hello["role"], hello["index"], hello["query"]) == ("primary", "0", "x=1")
    assert ["Cookie", "sessionid=abc"] in hello["headers"] and ["Authorization", "Bearer k"] in hello["headers"]
    assert "SECRET" not in hello["env"] and hello["env"]["JANCTION_ROLE"] == "primary"


def test_keep_alive_serves_several_requests_on_one_connection(server):
    with _connect(server) as sock:
        reader = Reader(sock)
        for _ in range(3):
            sock.sendall(b"GET /status?code=503 HTTP/1.1\r\nHost: s\r\n\r\n")
            status, headers = reader.head()
            assert status == 503 and json.loads(reader.exactly(int(headers["content-length"]))) == {"status": 503}


def test_sse_sends_the_next_event_only_after_the_ack(server):
    stream = f"s{time.monotonic_ns()}"
    with _connect(server) as sock:
        sock.sendall(f"GET /events?n=3&id={stream} HTTP/1.1\r\nHost: s\r\n\r\n".encode())
        reader = Reader(sock)
        status, headers = reader.head()
        assert status == 200 and headers["content-type"] == "text/event-stream"
        for k in range(3):
            event = reader.chunk().decode()
            assert f"id: {k}\n" in event and json.loads(event.split("data: ")[1])["k"] == k
            if k == 2:
                break  # the last event: "done" follows at once
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):  # nothing more until the ack
                reader.chunk()
            sock.settimeout(TIMEOUT)
            if k == 0:
                assert _request(server, f"POST /ack?id={stream}&k=5 HTTP/1.1\r\nHost: s\r\n\r\n".encode())[0] == 409
            assert _request(server, f"POST /ack?id={stream}&k={k} HTTP/1.1\r\nHost: s\r\n\r\n".encode())[0] == 204
        assert "event: done" in reader.chunk().decode() and reader.chunk() == b""
    assert _request(server, f"POST /ack?id={stream}&k=2 HTTP/1.1\r\nHost: s\r\n\r\n".encode())[0] == 404


def test_sse_without_an_ack_times_out_and_a_stream_id_is_used_once(server):
    with _connect(server) as sock, _connect(server) as second:
        sock.sendall(b"GET /events?n=2&id=dup&timeout=0.5 HTTP/1.1\r\nHost: s\r\n\r\n")
        reader = Reader(sock)
        reader.head()
        assert "id: 0" in reader.chunk().decode()
        second.sendall(b"GET /events?n=2&id=dup HTTP/1.1\r\nHost: s\r\n\r\n")
        assert Reader(second).head()[0] == 409
        assert "event: timeout" in reader.chunk().decode()


def test_echo_streams_each_chunk_back_before_the_body_ends(server):
    with _connect(server) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n")
        reader = Reader(sock)
        assert reader.head()[0] == 200
        for piece in (b"first", b"second piece", b"x" * 100_000):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            echoed = b""
            while len(echoed) < len(piece):
                echoed += reader.chunk()
            assert echoed == piece
        sock.sendall(b"0\r\n\r\n")
        assert reader.chunk() == b""


def test_bytes_sends_exactly_n(server):
    status, headers, body = _request(server, b"GET /bytes?n=1000001 HTTP/1.1\r\nHost: s\r\n\r\n")
    assert status == 200 and headers["content-length"] == "1000001" and len(body) == 1000001


def _ws_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    mask = os.urandom(4) if masked else b""
    length = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    flag = 0x80 if masked else 0
    if length < 126:
        head += bytes([flag | length])
    elif length < 65536:
        head += bytes([flag | 126]) + struct.pack("!H", length)
    else:
        head += bytes([flag | 127]) + struct.pack("!Q", length)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if masked else payload
    return head + mask + body


def _ws_read(reader: Reader) -> tuple[int, bytes]:
    first, second = reader.exactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", reader.exactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", reader.exactly(8))
    return first & 0x0F, reader.exactly(length)


def _ws_open(port: int) -> tuple[socket.socket, Reader]:
    key = base64.b64encode(os.urandom(16)).decode()
    sock = _connect(port)
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
    reader = Reader(sock)
    status, headers = reader.head()
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()  # noqa: S324 - RFC 6455
    expected = base64.b64encode(digest)
    assert status == 101 and headers["sec-websocket-accept"] == expected.decode()
    return sock, reader


def test_websocket_echoes_text_binary_fragments_and_pings(server):
    sock, reader = _ws_open(server)
    with sock:
        sock.sendall(_ws_frame(0x1, "héllo".encode()))
        assert _ws_read(reader) == (0x1, "héllo".encode())
        big = os.urandom(70_000)
        sock.sendall(_ws_frame(0x2, big))
        assert _ws_read(reader) == (0x2, big)
        sock.sendall(_ws_frame(0x1, b"frag", fin=False) + _ws_frame(0x9, b"p") + _ws_frame(0x0, b"mented"))
        assert _ws_read(reader) == (0xA, b"p")
        assert _ws_read(reader) == (0x1, b"fragmented")
        sock.sendall(_ws_frame(0x8, struct.pack("!H", 1000)))
        assert _ws_read(reader) == (0x8, struct.pack("!H", 1000))


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (_ws_frame(0x1, b"x", masked=False), 1002),
        (_ws_frame(0x1, b"\xff\xfe"), 1007),
        (_ws_frame(0x0, b"x"), 1002),
        (_ws_frame(0x9, b"x", fin=False), 1002),
        (bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 40) + b"mask", 1009),
    ],
    ids=["unmasked", "bad-utf8", "orphan-continuation", "fragmented-ping", "huge"],
)
def test_websocket_closes_with_the_right_code_on_bad_frames(server, frame, code):
    sock, reader = _ws_open(server)
    with sock:
        sock.sendall(frame)
        opcode, payload = _ws_read(reader)
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == code


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
        (b"GET /hello HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", 400),
        (b"POST /ack?id=a&k=0 HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 200),  # head first, then the error
        (b"GET /bytes?n=-5 HTTP/1.1\r\n\r\n", 400),
        (b"GET /events?n=1&interval=nan HTTP/1.1\r\n\r\n", 400),
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"DELETE /hello HTTP/1.1\r\n\r\n", 405),
        (b"GET /ws HTTP/1.1\r\n\r\n", 426),
    ],
    ids=[
        "request-line",
        "header-flood",
        "huge-header",
        "negative-length",
        "bad-chunk",
        "negative-n",
        "nan",
        "unknown",
        "method",
        "no-upgrade",
    ],
)
def test_bad_requests_get_a_clear_status_and_the_server_lives_on(server, raw, status):
    assert _request(server, raw)[0] == status
    assert _request(server, b"GET /hello HTTP/1.1\r\nHost: s\r\n\r\n")[0] == 200
