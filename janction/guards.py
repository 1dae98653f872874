"""Bounds on every request, checked before anything parses it: body size, JSON nesting depth, NULs.

`BodySizeLimit` wraps the ASGI application and refuses a body over JANCTION_MAX_BODY_BYTES while it
arrives, before Django buffers it. `RequestLimitsMiddleware` refuses, for every view, a body nested
deeper than JANCTION_MAX_JSON_DEPTH (counted without recursion, so no decoder ever sees it) and a query
string with a NUL character (PostgreSQL cannot store one). `JSONParser` is DRF's parser plus the NUL rule
for JSON strings.
"""

import json
import re
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser as DrfJSONParser

# A backslash escape (whose second character never opens or closes anything), a quote, or a bracket.
_TOKENS = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Return whether `body` nests arrays or objects deeper than `limit`, scanning without recursion."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token == b'"':
            in_string = not in_string
        elif in_string or len(token) == 2:
            continue
        elif token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _error(status: int, code: str, message: str, detail: dict | None = None) -> JsonResponse:
    return JsonResponse({"code": code, "message": message, "detail": detail or {}}, status=status)


def _too_large_body(limit: int) -> dict:
    return {
        "code": "request_too_large",
        "message": f"The request body is larger than {limit} bytes; send less.",
        "detail": {"limit_bytes": limit},
    }


def _too_large_page(limit: int) -> str:
    """The site's own 413 page, for browsers posting forms outside the API."""
    return render_to_string("413.html", {"limit_bytes": limit})


class RequestLimitsMiddleware:
    """Refuse oversized or too deeply nested bodies and NULs in the query string, before any view runs."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        refusal = self._refusal(request)
        return refusal if refusal is not None else self.get_response(request)

    def _refusal(self, request) -> JsonResponse | None:
        if b"\x00" in unquote_to_bytes(request.META.get("QUERY_STRING", "")):
            return _error(400, "invalid", "The query string contains a NUL character (%00); remove it.")
        limit = settings.JANCTION_MAX_BODY_BYTES
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if not declared.isdigit():
            return _error(400, "malformed_request", "Content-Length must be a whole number of bytes.")
        if int(declared) > limit:
            if not request.path.startswith("/api/"):
                return HttpResponse(_too_large_page(limit), status=413)
            body = _too_large_body(limit)
            return _error(413, body["code"], body["message"], body["detail"])
        depth = settings.JANCTION_MAX_JSON_DEPTH
        if json_depth_exceeds(request.body, depth):
            return _error(
                400,
                "too_deeply_nested",
                f"The request body nests arrays and objects more than {depth} levels deep; flatten it.",
                {"max_depth": depth},
            )
        return None


class BodySizeLimit:
    """ASGI wrapper: answer 413 as soon as a request body passes JANCTION_MAX_BODY_BYTES."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.JANCTION_MAX_BODY_BYTES
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(send, limit, scope)
        received = []
        size = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                return await self._refuse(send, limit, scope)
            if not message.get("more_body"):
                break

        async def replay():
            return received.pop(0) if received else await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send, limit: int, scope) -> None:
        if scope.get("path", "").startswith("/api/"):
            body, content_type = json.dumps(_too_large_body(limit)).encode(), b"application/json"
        else:
            body, content_type = _too_large_page(limit).encode(), b"text/html; charset=utf-8"
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": [*headers, (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class JSONParser(DrfJSONParser):
    """DRF's JSON parser that also refuses NUL characters in any string, key or value."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("The JSON is nested too deeply; flatten it.") from None
        pending = [data]
        while pending:
            item = pending.pop()
            if isinstance(item, str):
                if "\x00" in item:
                    raise ParseError("Text may not contain NUL characters (\\u0000); remove them.")
            elif isinstance(item, dict):
                pending.extend(item.keys())
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
        return data
