"""Real mode's web server as `scripts/serve.sh` starts it: granian workers, pooled connections, limits, websockets."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from websockets.sync.client import connect as ws_connect

from marketplace.rentals.services import rental_cancel
from marketplace.services import api_key_create
from tests.factories import UserFactory, online_node
from tests.rentals.conftest import fund, submit

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2
POOL_MAX = 3
APP_NAME = f"janction-web-test-{os.getpid()}"

pytestmark = pytest.mark.django_db(transaction=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in path.read_text().split()} if path.exists() else set()


def _wait_ready(base: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if _get(base + "/api/v1/pools/")[0] == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the server did not answer in time")


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    """Start scripts/serve.sh on the test database with two workers of at most three connections each."""
    db = settings.DATABASES["default"]
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "PORT": str(port),
        "WEB_WORKERS": str(WORKERS),
        "DATABASE_POOL_MIN_SIZE": "1",
        "DATABASE_POOL_MAX_SIZE": str(POOL_MAX),
        "DATABASE_APPLICATION_NAME": APP_NAME,
        "WEB_HEADER_READ_TIMEOUT_MS": "1500",
        "WEB_BODY_READ_TIMEOUT_SECONDS": "2",
        "WEB_LOG_LEVEL": "warning",
        # Stopping the server at the end waits this long at most for its workers (30 s by default).
        "WEB_KILL_TIMEOUT_SECONDS": "5",
    }
    process = subprocess.Popen(["bash", "scripts/serve.sh"], cwd=ROOT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process)
        yield base, port, process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _server_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APP_NAME])
        return cursor.fetchone()[0]


def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET an http://127.0.0.1:port/... URL on a fresh connection; return the status and body."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _raw(port: int, data: bytes, timeout: float = 20) -> tuple[bytes, float]:
    """Send raw bytes, read until the server closes; return what came back and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return received, time.monotonic() - started


def test_connections_stay_within_pool_times_workers_under_concurrent_requests(server):
    base, _, _ = server
    user = UserFactory()
    fund(user, 10**9)
    _, raw_key = api_key_create(user=user, name="load")
    online_node(UserFactory(), vgpus=2)
    auth = {"Authorization": f"Bearer {raw_key}"}
    urls = [base + "/api/v1/rentals/", base + "/api/v1/pools/", base + "/api/v1/ledger/balances/"]
    seen = [0]
    stop = threading.Event()

    def sample():
        from django.db import connections

        while not stop.is_set():
            seen[0] = max(seen[0], _server_connections())
            time.sleep(0.05)
        connections.close_all()

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
            statuses = list(pool.map(lambda i: _get(urls[i % 3], auth)[0], range(240)))
    finally:
        stop.set()
        sampler.join()

    assert statuses == [200] * 240
    assert 1 <= seen[0] <= WORKERS * POOL_MAX


def test_a_64_kb_query_string_is_414_and_a_64_kb_header_is_431(server):
    base, _, _ = server

    long_query = _get(base + "/api/v1/pools/?q=" + "a" * 65_536)
    big_header = _get(base + "/api/v1/pools/", {"X-Filler": "a" * 65_536})
    many_headers = _get(base + "/api/v1/pools/", {f"X-H{i}": "1" for i in range(150)})

    # Past hyper's own bounds (a 64 KiB URI, 100 headers) granian answers the bare status itself.
    assert (long_query[0], big_header[0], many_headers[0]) == (414, 431, 431)


def test_past_the_guard_limits_the_refusal_carries_the_error_body(server):
    base, _, _ = server

    long_query = _get(base + "/api/v1/pools/?q=" + "a" * 9_000)
    big_header = _get(base + "/api/v1/pools/", {"X-Filler": "a" * 9_000})
    headers_in_all = _get(base + "/api/v1/pools/", {f"X-H{i}": "a" * 4_000 for i in range(9)})

    assert long_query[0] == 414 and json.loads(long_query[1])["code"] == "request_target_too_long"
    assert big_header[0] == 431 and json.loads(big_header[1])["code"] == "header_too_large"
    assert headers_in_all[0] == 431 and json.loads(headers_in_all[1])["code"] == "headers_too_large"


def test_a_megabyte_of_headers_is_refused_by_the_server_not_dropped(server):
    _, port, _ = server
    request = b"GET /api/v1/pools/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: " + b"a" * 1_000_000 + b"\r\n\r\n"

    received, _ = _raw(port, request)

    assert received.startswith(b"HTTP/1.1 431")


def test_a_client_slow_to_send_its_headers_is_cut_off(server):
    _, port, _ = server

    received, took = _raw(port, b"GET /api/v1/pools/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    assert took < 10 and not received.startswith(b"HTTP/1.1 200")


def test_a_client_slow_to_send_its_body_gets_408(server):
    _, port, _ = server
    request = (
        b"POST /api/v1/api-keys/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )

    received, took = _raw(port, request)

    assert received.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in received
    assert took < 10


def _in_thread(function):
    """Run ``function`` on a thread of its own (an earlier test may leave an event loop on this one)."""

    def run():
        from django.db import connections

        try:
            return function()
        finally:
            connections.close_all()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def test_the_rental_websocket_works_through_the_server(server):
    _, port, _ = server
    buyer = UserFactory()
    fund(buyer, 1_000 * 1_000_000)
    online_node(UserFactory(), vgpus=2, price=500_000)
    rental = submit(buyer)
    client = Client()
    client.force_login(buyer)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    url = f"ws://127.0.0.1:{port}/ws/rentals/{rental.pk}/"

    with ws_connect(url, origin=f"http://127.0.0.1:{port}", additional_headers={"Cookie": cookie}) as ws:
        snapshot = json.loads(ws.recv(timeout=20))
        _in_thread(lambda: rental_cancel(owner=buyer, rental_id=rental.pk))
        state = json.loads(ws.recv(timeout=20))

    assert snapshot["type"] == "rental.snapshot" and snapshot["id"] == rental.pk
    assert state["type"] == "rental.state" and state["state"] == "cancelled"


def test_a_worker_that_dies_is_replaced_and_the_server_keeps_answering(server):
    base, _, process = server
    granian = process.pid  # scripts/serve.sh execs granian
    workers = _children(granian)
    assert len(workers) == WORKERS
    victim = min(workers)

    os.kill(victim, signal.SIGKILL)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = _children(granian)
        if victim not in current and len(current) == WORKERS:
            break
        time.sleep(0.2)
    assert victim not in current and len(current) == WORKERS
    assert all(_get(base + "/api/v1/pools/")[0] == 200 for _ in range(10))
