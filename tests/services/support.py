"""Host-side pieces for the ingress tests: a small HTTP/SSE/echo server, a websocket echo, an HTTP client helper,
and a runtime stand-in whose open_connection reaches those servers on the host (the real runtimes enter the
container's network namespace: tests/services/test_service_e2e.py)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from websockets.sync.server import serve as ws_serve


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    acks: dict[str, threading.Condition] = {}
    acked: dict[str, int] = {}
    seen: list[dict] = []

    def log_message(self, *args) -> None:
        pass

    def _json(self, status: int, data) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.seen.append({"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]})
        if url.path == "/hello":
            self._json(200, {"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]})
        elif url.path == "/events":
            self._events(int(query.get("n", "3")), query.get("id", ""))
        elif url.path == "/set-cookie":
            self.send_response(200)
            self.send_header("Set-Cookie", "sessionid=from-service; Path=/")
            self.send_header("Strict-Transport-Security", "max-age=31536000")
            self.send_header("Clear-Site-Data", '"cookies"')
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        elif url.path == "/slow":
            time.sleep(float(query.get("seconds", "1")))
            self._json(200, {"slept": True})
        elif url.path == "/bytes":
            n = int(query.get("n", "0"))
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"x" * 65536
            while n > 0:
                self.wfile.write(chunk[: min(n, len(chunk))])
                n -= len(chunk)
        else:
            self._json(404, {"error": "no such path"})

    def _events(self, n: int, stream_id: str) -> None:
        cond = self.acks.setdefault(stream_id, threading.Condition())
        self.acked[stream_id] = -1
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for k in range(n):
            if k > 0:
                with cond:  # event k only after the client acknowledged event k - 1
                    if not cond.wait_for(lambda k=k: self.acked[stream_id] >= k - 1, timeout=15):
                        break
            event = f"id: {k}\ndata: {json.dumps({'k': k})}\n\n".encode()
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/ack":
            stream_id, k = query["id"], int(query["k"])
            cond = self.acks.setdefault(stream_id, threading.Condition())
            with cond:
                self.acked[stream_id] = k
                cond.notify_all()
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif url.path == "/echo":
            length = int(self.headers.get("Content-Length", "0"))
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while (size := int(self.rfile.readline().strip(), 16)) > 0:
                    body += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
            else:
                body = self.rfile.read(length)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._json(404, {"error": "no such path"})


class HostService:
    """The HTTP server and a websocket echo on free loopback ports, for one test."""

    def __init__(self) -> None:
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.http.daemon_threads = True
        self.ws = ws_serve(lambda conn: [conn.send(message) for message in conn], "127.0.0.1", 0)
        self.threads = [
            threading.Thread(target=self.http.serve_forever, daemon=True),
            threading.Thread(target=self.ws.serve_forever, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    @property
    def http_port(self) -> int:
        return self.http.server_address[1]

    @property
    def ws_port(self) -> int:
        return self.ws.socket.getsockname()[1]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.ws.shutdown()


class HostRuntime:
    """Stands in for a runtime's open_connection: (placement, container port) -> a port on the host's loopback."""

    def __init__(self, ports: dict[str, dict[int, int]]) -> None:
        self.ports = ports
        self.opened: dict[str, int] = {}

    def open_connection(self, placement_id: str, container_port: int, timeout: float) -> socket.socket:
        self.opened[placement_id] = self.opened.get(placement_id, 0) + 1
        return socket.create_connection(("127.0.0.1", self.ports[placement_id][container_port]), timeout=timeout)


def request(port: int, method: str, path: str, *, headers=None, body=None, timeout: float = 20):
    """Send one request to the ingress; return (status, headers dict (lower-case, last wins + list), body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, response.headers, data
    finally:
        conn.close()
