"""An ASGI wrapper that refuses oversized request lines and headers and times out slow request bodies.

It runs before Django sees the request, so a refused request costs no thread, no database connection and
no parsing. The HTTP server in front (granian, see `scripts/serve.sh`) bounds what it buffers and times
out clients that are slow to send their headers; this wrapper gives the exact limits of the settings in
`janction/settings/server.py` and answers them in the API's error format.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

Scope = dict[str, Any]


@dataclass(frozen=True)
class Limits:
    """What a request may carry before the application sees it."""

    max_target_bytes: int = 8192
    max_header_bytes: int = 8192
    max_headers_total_bytes: int = 32768
    max_header_count: int = 100
    body_timeout_seconds: float = 30.0

    @classmethod
    def from_settings(cls) -> Limits:
        """Read the limits from Django's settings."""
        from django.conf import settings

        return cls(
            max_target_bytes=settings.WEB_MAX_REQUEST_TARGET_BYTES,
            max_header_bytes=settings.WEB_MAX_HEADER_BYTES,
            max_headers_total_bytes=settings.WEB_MAX_HEADERS_TOTAL_BYTES,
            max_header_count=settings.WEB_MAX_HEADER_COUNT,
            body_timeout_seconds=settings.WEB_BODY_READ_TIMEOUT_SECONDS,
        )


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    message: str
    detail: dict[str, Any]

    def body(self) -> bytes:
        return json.dumps({"code": self.code, "message": self.message, "detail": self.detail}).encode()


def request_check(scope: Scope, limits: Limits) -> Refusal | None:
    """Return why this request's line or headers are too large, or None when they fit."""
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    query = scope.get("query_string") or b""
    target = len(raw_path) + (len(query) + 1 if query else 0)
    if target > limits.max_target_bytes:
        return Refusal(
            414,
            "request_target_too_long",
            f"The path and query string are {target} bytes; send at most {limits.max_target_bytes} "
            "(put large inputs in a POST body).",
            {"bytes": target, "limit": limits.max_target_bytes},
        )
    headers = scope.get("headers") or []
    if len(headers) > limits.max_header_count:
        return Refusal(
            431,
            "too_many_headers",
            f"The request has {len(headers)} headers; send at most {limits.max_header_count}.",
            {"count": len(headers), "limit": limits.max_header_count},
        )
    total = 0
    for name, value in headers:
        size = len(name) + len(value)
        total += size
        if size > limits.max_header_bytes:
            label = bytes(name).decode("latin-1")[:64]
            return Refusal(
                431,
                "header_too_large",
                f"Header {label!r} is {size} bytes; send at most {limits.max_header_bytes} per header.",
                {"header": label, "bytes": size, "limit": limits.max_header_bytes},
            )
    if total > limits.max_headers_total_bytes:
        return Refusal(
            431,
            "headers_too_large",
            f"The headers are {total} bytes in all; send at most {limits.max_headers_total_bytes}.",
            {"bytes": total, "limit": limits.max_headers_total_bytes},
        )
    return None


async def _reply(send, refusal: Refusal) -> None:
    body = refusal.body()
    await send(
        {
            "type": "http.response.start",
            "status": refusal.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    """Wrap an ASGI app: refuse oversized requests with 414/431, time out slow bodies with 408."""

    def __init__(self, app, limits: Limits | None = None):
        self.app = app
        self._limits = limits

    @property
    def limits(self) -> Limits:
        if self._limits is None:
            self._limits = Limits.from_settings()
        return self._limits

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = request_check(scope, self.limits)
        if refusal is not None:
            if scope["type"] == "http":
                await _reply(send, refusal)
            else:
                # Closing before accepting makes the server answer the handshake with 403.
                await send({"type": "websocket.close", "code": 1008, "reason": refusal.code})
            return
        if scope["type"] == "websocket" or not self.limits.body_timeout_seconds:
            await self.app(scope, receive, send)
            return
        await _BodyTimer(self.app, self.limits.body_timeout_seconds).run(scope, receive, send)


class _BodyTimer:
    """Give the app the request body only while the deadline holds; past it, answer 408 and report a disconnect."""

    def __init__(self, app, timeout: float):
        self.app = app
        self.timeout = timeout
        self.deadline: float | None = None
        self.body_done = False
        self.started = False
        self.timed_out = False

    async def run(self, scope: Scope, receive, send) -> None:
        async def timed_send(message: dict[str, Any]) -> None:
            if self.timed_out:
                return  # the 408 went out; the app's late answer has nowhere to go
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        async def timed_receive() -> dict[str, Any]:
            if self.body_done or self.timed_out:
                return await receive()
            loop = asyncio.get_running_loop()
            if self.deadline is None:
                self.deadline = loop.time() + self.timeout
            try:
                message = await asyncio.wait_for(receive(), max(self.deadline - loop.time(), 0))
            except TimeoutError:
                self.timed_out = True
                if not self.started:
                    await _reply(
                        send,
                        Refusal(
                            408,
                            "request_timeout",
                            f"The request body did not arrive within {self.timeout:g} seconds.",
                            {"limit_seconds": self.timeout},
                        ),
                    )
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                self.body_done = True
            return message

        await self.app(scope, timed_receive, timed_send)
