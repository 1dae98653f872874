"""The request guard, in-process: 414/431 before the app runs, 408 for a body that does not arrive in time."""

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from janction.asgi_guard import Limits, RequestGuard

LIMITS = Limits(
    max_target_bytes=100, max_header_bytes=50, max_headers_total_bytes=120, max_header_count=5, body_timeout_seconds=0.2
)


class App:
    """An ASGI app that reads the whole body, then answers 200 with what it read."""

    def __init__(self):
        self.calls = 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def call(scope_overrides=None, messages=None, hang=False, kind="http"):
    """Run the guarded app on one request and return (messages sent, the app)."""
    app = App()
    guard = RequestGuard(app, LIMITS)
    scope = {"type": kind, "path": "/api/v1/pools/", "raw_path": b"/api/v1/pools/", "query_string": b"", "headers": []}
    scope.update(scope_overrides or {})
    queue = list(messages or [{"type": "http.request", "body": b"", "more_body": False}])
    sent = []

    async def receive():
        if queue:
            return queue.pop(0)
        if hang:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    # On a thread of its own: an earlier browser test may leave an event loop running on the main thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, asyncio.wait_for(guard(scope, receive, send), 5)).result()
    return sent, app


def refusal(sent):
    start, body = sent[0], sent[1]
    return start["status"], json.loads(body["body"])


def test_a_request_within_the_limits_reaches_the_app():
    sent, app = call({"query_string": b"a=1", "headers": [(b"host", b"x")]})
    assert app.calls == 1 and sent[0]["status"] == 200


def test_a_long_request_target_is_414_before_the_app_runs():
    sent, app = call({"query_string": b"q=" + b"a" * 100})
    status, body = refusal(sent)
    assert (status, body["code"], app.calls) == (414, "request_target_too_long", 0)
    assert body["detail"] == {"bytes": len(b"/api/v1/pools/") + 103, "limit": 100}
    assert "at most 100" in body["message"]


@pytest.mark.parametrize(
    "headers, code",
    [
        ([(b"x-big", b"a" * 60)], "header_too_large"),
        ([(b"x-h", b"a" * 40)] * 4, "headers_too_large"),
        ([(b"x", b"1")] * 6, "too_many_headers"),
    ],
)
def test_oversized_headers_are_431_before_the_app_runs(headers, code):
    sent, app = call({"headers": headers})
    status, body = refusal(sent)
    assert (status, body["code"], app.calls) == (431, code, 0)
    assert (b"connection", b"close") in sent[0]["headers"]


def test_a_body_that_stops_arriving_gets_408_and_the_app_sees_a_disconnect():
    sent, app = call(messages=[{"type": "http.request", "body": b'{"a":', "more_body": True}], hang=True)
    status, body = refusal(sent)
    assert (status, body["code"]) == (408, "request_timeout")
    assert app.calls == 1 and len(sent) == 2  # the app answered nothing after the disconnect


def test_a_body_sent_in_pieces_within_the_deadline_is_read_whole():
    pieces = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"c"}]
    sent, _ = call(messages=pieces)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"abc"


def test_an_oversized_websocket_handshake_is_closed_without_reaching_the_app():
    sent, app = call({"headers": [(b"x-big", b"a" * 60)]}, kind="websocket")
    assert app.calls == 0 and sent == [{"type": "websocket.close", "code": 1008, "reason": "header_too_large"}]


def test_a_websocket_within_the_limits_reaches_the_app():
    sent, app = call(messages=[{"type": "websocket.connect"}], kind="websocket")
    assert app.calls == 1 and sent == [{"type": "websocket.accept"}]
