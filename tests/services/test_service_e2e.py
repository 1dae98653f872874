"""Services end to end: the real gateway, the real agent process running the pyservice image in podman
(`--network none`), the ingress with its mutual-TLS tunnels, and a buyer calling /svc/<slug>/api/ with a key."""

from __future__ import annotations

import http.client
import json
import uuid

import pytest
from rest_framework.test import APIClient
from websockets.sync.client import connect as ws_connect

from marketplace.rentals.dispatch import rentals_sync
from marketplace.rentals.models import Rental, RentalState
from marketplace.services import api_key_create
from marketplace.svc.ingress.server import Ingress
from nodes.models import NodeState
from nodes.services import node_create
from pricing.services import market_round_run
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import AgentProcess, gateway, wait_until  # noqa: F401
from tests.rentals.conftest import USDC, fund
from tests.service_image import pyservice_image  # noqa: F401
from tests.services.support import request

pytestmark = pytest.mark.slow


@pytest.fixture
def ingress(gateway, settings):  # noqa: F811 - the gateway fixture
    server = Ingress(listen="127.0.0.1:0", tunnel_listen="127.0.0.1:0")
    server.start()
    settings.SERVICE_INGRESS_TUNNEL_ADDRESSES = [server.tunnel_address]
    yield server
    server.stop()


def read_event(response) -> dict:
    fields = {}
    while (line := response.readline()) not in (b"\n", b""):
        name, _, value = line.decode().rstrip("\n").partition(": ")
        fields[name] = value
    return fields


def test_a_buyer_calls_a_podman_service_through_the_endpoint(gateway, ingress, pyservice_image, tmp_path):  # noqa: F811
    provider, buyer = UserFactory(), UserFactory()
    ticket = node_create(owner=provider, name="svc-rig", reserve_price_per_hour=500_000)
    agent = AgentProcess(
        gateway=gateway, token=ticket.token, state_dir=tmp_path / "agent", gpus="RTX 4090:1", slices=1, runtime="podman"
    )
    try:
        wait_until(lambda: _online(ticket.node), timeout=60, what=f"node online:\n{agent.output()}")
        fund(buyer, 50 * USDC)
        api = APIClient()
        api.force_authenticate(buyer)
        response = api.post(
            "/api/v1/rentals/",
            {
                "pool": "ada-24g",
                "vgpus": 1,
                "max_price_per_hour": "3",
                "max_duration_seconds": 900,
                "image": pyservice_image,
                "env": {"PORT": "8000"},
                "expose": [{"name": "api", "port": 8000}],
            },
            format="json",
            HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
        )
        assert response.status_code == 201, response.json()
        rental = Rental.objects.get(pk=response.json()["id"])
        base = f"/svc/{rental.service_slug}/api"
        _, key = api_key_create(user=buyer, name="svc")
        auth = {"Authorization": f"Bearer {key}"}

        def running() -> bool:
            market_round_run(pool_id=rental.pool_id)
            rentals_sync()
            rental.refresh_from_db()
            return rental.state == RentalState.RUNNING

        wait_until(running, timeout=90, what=f"rental running:\n{agent.output()}")
        wait_until(
            lambda: request(ingress.port, "GET", f"{base}/hello", headers=auth)[0] == 200,
            timeout=60,
            what=f"the service answering through the endpoint:\n{agent.output()}",
        )

        # The page's cookies and the buyer's key never reach the container; role and index do.
        status, _, body = request(
            ingress.port, "GET", f"{base}/hello", headers={**auth, "Cookie": "sessionid=s3cret; csrftoken=t0ken"}
        )
        assert status == 200
        seen = json.loads(body)
        names = {name.lower(): value for name, value in seen["headers"]}
        assert "cookie" not in names and "authorization" not in names
        assert "s3cret" not in body.decode() and key not in body.decode()
        assert (seen["role"], str(seen["index"])) == ("primary", "0")

        # Server-sent events: the service sends event k+1 only after the client acknowledged event k.
        stream = uuid.uuid4().hex
        conn = http.client.HTTPConnection("127.0.0.1", ingress.port, timeout=20)
        conn.request("GET", f"{base}/events?n=4&id={stream}", headers=auth)
        events = conn.getresponse()
        assert events.status == 200 and events.headers["Content-Type"].startswith("text/event-stream")
        for k in range(4):
            event = read_event(events)
            assert json.loads(event["data"])["k"] == k
            if k < 3:  # the service holds event k + 1 until this acknowledgement arrives
                ack = request(ingress.port, "POST", f"{base}/ack?id={stream}&k={k}", headers=auth)
                assert ack[0] == 204, ack
        conn.close()

        # A websocket echo.
        with ws_connect(f"ws://127.0.0.1:{ingress.port}{base}/ws", additional_headers=auth, open_timeout=20) as ws:
            for message in ("hello", b"\x00binary\xff", "y" * 100_000):
                ws.send(message)
                assert ws.recv(timeout=20) == message

        # No key: 401. A revoked token: 401. Another user's key: 404. No Set-Cookie from the service.
        assert request(ingress.port, "GET", f"{base}/hello")[0] == 401
        created = api.post(f"/api/v1/rentals/{rental.pk}/service/tokens/", {"name": "t"}, format="json").json()
        token = {"Authorization": f"Bearer {created['token']}"}
        assert request(ingress.port, "GET", f"{base}/hello", headers=token)[0] == 200
        api.delete(f"/api/v1/rentals/{rental.pk}/service/tokens/{created['service_token']['id']}/")
        # Refused within SERVICE_AUTH_CACHE_SECONDS (1 s): the ingress reuses an authorisation that long.
        wait_until(
            lambda: request(ingress.port, "GET", f"{base}/hello", headers=token)[0] == 401,
            timeout=5,
            what="the revoked token refused",
        )
        _, theirs = api_key_create(user=UserFactory(), name="other")
        assert request(ingress.port, "GET", f"{base}/hello", headers={"Authorization": f"Bearer {theirs}"})[0] == 404
        status, headers, _ = request(ingress.port, "GET", f"{base}/set-cookie", headers=auth)
        assert status == 200 and headers.get_all("Set-Cookie") is None
        assert headers["Content-Security-Policy"] == "sandbox"

        # After cancel: 410.
        cancelled = api.post(f"/api/v1/rentals/{rental.pk}/cancel/", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
        assert cancelled.status_code == 200
        # A request still inside the 1 s authorisation cache goes on to the container being stopped and may wait
        # for it (seconds, on a loaded machine): a generous deadline for the answer to become the 410.
        wait_until(
            lambda: request(ingress.port, "GET", f"{base}/hello", headers=auth)[0] == 410, timeout=60, what="410"
        )
        status, _, body = request(ingress.port, "GET", f"{base}/hello", headers=auth)
        assert status == 410 and json.loads(body)["code"] == "service_gone"
    finally:
        agent.stop()


def _online(node) -> bool:
    node.refresh_from_db()
    return node.state == NodeState.ONLINE
