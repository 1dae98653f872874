"""The ingress and the agent's tunnel client, for real (mutual TLS, h11, the tunnel protocol), against servers on
the host: routing, streaming, auth, limits, headers, errors and attacks. The container runtimes' part (entering a
container's network namespace) is tested end to end in test_service_e2e.py."""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from websockets.sync.client import connect as ws_connect

from agent.identity import build_csr_pem, generate_private_key, mutual_tls_credentials, private_key_pem
from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.protocol.gen.janction.agent.v1.agent_pb2_grpc import ServiceTunnelStub
from agent.tunnel import ServicePort, TunnelManager
from marketplace.rentals.models import RentalPlacement
from marketplace.rentals.services import rental_cancel
from marketplace.services import api_key_create
from marketplace.svc.ingress.server import Ingress
from marketplace.svc.models import ServiceStats
from marketplace.svc.services import service_token_create, service_token_revoke
from nodes.ca import platform_ca
from nodes.models import Node
from tests.factories import UserFactory, online_node
from tests.nodes.gateway_fixtures import wait_until
from tests.rentals.conftest import fund, run_round, submit
from tests.services.support import HostRuntime, HostService, request

pytestmark = pytest.mark.django_db
USDC = 1_000_000


def node_identity(node: Node) -> tuple[bytes, bytes]:
    """Give a node a client certificate from the platform CA, as enrollment does; return (key PEM, cert PEM)."""
    key = generate_private_key()
    issued = platform_ca().issue_client_certificate(csr_pem=build_csr_pem(key, "host"), node_id=node.pk)
    Node.objects.filter(pk=node.pk).update(certificate_serial=issued.serial, certificate_pem=issued.pem)
    return private_key_pem(key), issued.pem.encode()


def node_credentials(node: Node) -> grpc.ChannelCredentials:
    key_pem, cert_pem = node_identity(node)
    return mutual_tls_credentials(
        key_pem=key_pem, certificate_pem=cert_pem, trusted_ca_pem=platform_ca().certificate_pem.encode()
    )


class Platform:
    """One ingress, one provider node with its tunnel manager (as its agent has), one funded buyer with a key.

    Module scope: the rows are committed (the ingress's threads read them) and flushed when the module ends.
    """

    def __init__(self) -> None:
        self.buyer = UserFactory()
        fund(self.buyer, 1000 * USDC)
        self.node = online_node(UserFactory(), name="rig", vgpus=8, price=500_000)
        self.ingress = Ingress(listen="127.0.0.1:0", tunnel_listen="127.0.0.1:0")
        self.ingress.start()
        self.runtime = HostRuntime({})
        self.credentials = node_credentials(self.node)
        self.tunnels = TunnelManager(runtime=self.runtime, credentials=self.credentials, pool_size=2)
        _, self.key = api_key_create(user=self.buyer, name="buyer")

    def close(self) -> None:
        self.tunnels.close_all()
        self.ingress.stop()


class Service:
    """A service rental placed on the platform's node, served by servers on the host through real tunnels."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.ingress = platform.ingress
        expose = [{"name": "api", "port": 8000}, {"name": "ws", "port": 8001}]
        with override_settings(SERVICE_INGRESS_TUNNEL_ADDRESSES=[platform.ingress.tunnel_address]):
            self.rental = run_round(submit(platform.buyer, expose=expose))
        self.placement = RentalPlacement.objects.get(rental=self.rental)
        assert self.placement.dispatched_at is not None
        self.buyer, self.key = platform.buyer, platform.key
        self.service = HostService()
        platform.runtime.ports[self.placement.placement_id] = {8000: self.service.http_port, 8001: self.service.ws_port}
        self.tunnels = platform.tunnels
        self.tunnels.open(
            self.placement.placement_id,
            [ServicePort(e["name"], e["port"]) for e in expose],
            [self.ingress.tunnel_address],
        )
        wait_until(lambda: self.idle(8000) >= 1 and self.idle(8001) >= 1, what="idle tunnels")

    def idle(self, port: int) -> int:
        return self.ingress.registry.idle_count(self.placement.placement_id, port)

    @property
    def opened(self) -> int:
        return self.platform.runtime.opened.get(self.placement.placement_id, 0)

    @property
    def base(self) -> str:
        return f"/svc/{self.rental.service_slug}"

    def auth(self, credential: str | None = None) -> dict:
        return {"Authorization": f"Bearer {credential or self.key}"}

    def get(self, path: str, credential: str | None = None, headers=None):
        return request(self.ingress.port, "GET", self.base + path, headers={**self.auth(credential), **(headers or {})})

    def close(self) -> None:
        self.tunnels.close(self.placement.placement_id)
        self.service.close()


@pytest.fixture(scope="module")
def platform(django_db_setup, django_db_blocker, gateway_ca):
    with (
        django_db_blocker.unblock(),
        override_settings(
            AGENT_CA_CERT_PEM=gateway_ca.certificate,
            AGENT_CA_KEY_PEM=gateway_ca.key,
            SERVICE_STATS_FLUSH_SECONDS=0.2,
        ),
    ):
        built = Platform()
        yield built
        built.close()
        call_command("flush", interactive=False, verbosity=0)


def committed(function, *args, **kwargs):
    """Run a write in its own thread and connection, committed at once: the test's own transaction (rolled back
    at its end) is invisible to the ingress's threads."""
    with ThreadPoolExecutor(1) as pool:

        def run():
            try:
                return function(*args, **kwargs)
            finally:
                connection.close()

        return pool.submit(run).result()


@pytest.fixture(scope="module")
def shared(platform, django_db_blocker):
    """A service the read-only tests share."""
    with django_db_blocker.unblock():
        service = Service(platform)
        yield service
        service.close()


@pytest.fixture
def stack(shared):
    return shared


@pytest.fixture
def own(platform):
    """A service of the test's own, for tests that break or end it."""
    service = committed(Service, platform)
    yield service
    service.close()


def test_a_request_reaches_the_service_with_the_path_and_query_and_without_site_credentials(stack):
    status, headers, body = stack.get(
        "/api/hello?x=1",
        headers={"Cookie": "sessionid=site-session; csrftoken=t", "X-Forwarded-For": "6.6.6.6", "X-Custom": "kept"},
    )
    assert status == 200, body
    seen = json.loads(body)
    assert seen["path"] == "/hello?x=1"
    names = {name.lower(): value for name, value in seen["headers"]}
    assert "cookie" not in names and "authorization" not in names
    assert names["x-custom"] == "kept"
    assert names["x-forwarded-for"] == "127.0.0.1"
    assert names["x-forwarded-prefix"] == f"{stack.base}/api"
    assert headers["Content-Security-Policy"] == "sandbox"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_keep_alive_requests_share_one_tunnel(stack):
    opened_before = stack.opened
    conn = http.client.HTTPConnection("127.0.0.1", stack.ingress.port, timeout=10)
    for _ in range(5):
        conn.request("GET", f"{stack.base}/api/hello", headers=stack.auth())
        response = conn.getresponse()
        assert response.status == 200
        response.read()
    conn.close()
    assert stack.opened == opened_before + 1


def read_event(response) -> dict:
    """Read one server-sent event (its fields up to the blank line) from a streaming response."""
    fields = {}
    while (line := response.readline()) not in (b"\n", b""):
        name, _, value = line.decode().rstrip("\n").partition(": ")
        fields[name] = value
    return fields


def test_sse_events_arrive_one_by_one(stack):
    """The service sends event k+1 only after the client acknowledged event k: nothing may be buffered."""
    stream = uuid.uuid4().hex
    conn = http.client.HTTPConnection("127.0.0.1", stack.ingress.port, timeout=10)
    conn.request("GET", f"{stack.base}/api/events?n=4&id={stream}", headers=stack.auth())
    response = conn.getresponse()
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    received = []
    for k in range(4):
        event = read_event(response)
        assert event["id"] == str(k) and json.loads(event["data"])["k"] == k
        received.append(k)
        ack = request(stack.ingress.port, "POST", f"{stack.base}/api/ack?id={stream}&k={k}", headers=stack.auth())
        assert ack[0] == 204
    assert received == [0, 1, 2, 3]
    conn.close()


def test_a_chunked_request_body_streams_to_the_service(stack):
    def chunks():
        for i in range(5):
            yield f"part{i};".encode()

    conn = http.client.HTTPConnection("127.0.0.1", stack.ingress.port, timeout=10)
    conn.request("POST", f"{stack.base}/api/echo", body=chunks(), headers=stack.auth(), encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == b"part0;part1;part2;part3;part4;"
    conn.close()


def test_websocket_echo(stack):
    with ws_connect(
        f"ws://127.0.0.1:{stack.ingress.port}{stack.base}/ws/", additional_headers=stack.auth(), open_timeout=10
    ) as ws:
        for message in ("hello", "x" * 200_000, b"\x00\x01binary"):
            ws.send(message)
            assert ws.recv(timeout=10) == message


def test_without_a_key_401_with_a_revoked_token_401_with_another_users_key_404(stack):
    status, headers, body = request(stack.ingress.port, "GET", f"{stack.base}/api/hello")
    assert status == 401 and json.loads(body)["code"] == "service_unauthorized"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    token, raw = committed(service_token_create, owner=stack.buyer, rental_id=stack.rental.pk, name="t")
    assert stack.get("/api/hello", credential=raw)[0] == 200
    committed(service_token_revoke, owner=stack.buyer, rental_id=stack.rental.pk, token_id=token.pk)
    # The ingress reuses an authorisation for SERVICE_AUTH_CACHE_SECONDS (1 s): refused within that.
    wait_until(lambda: stack.get("/api/hello", credential=raw)[0] == 401, timeout=5, what="the revoked token refused")
    _, theirs = committed(lambda: api_key_create(user=UserFactory(), name="other"))
    status, _, body = stack.get("/api/hello", credential=theirs)
    assert status == 404 and json.loads(body)["code"] == "service_not_found"
    assert stack.get("/nope/hello")[0] == 404
    assert request(stack.ingress.port, "GET", "/svc/unknownslug1/api/hello", headers=stack.auth())[0] == 404
    assert request(stack.ingress.port, "GET", "/elsewhere", headers=stack.auth())[0] == 404


def test_services_cannot_set_cookies_or_site_wide_headers(stack):
    status, headers, _ = stack.get("/api/set-cookie")
    assert status == 200
    assert headers.get_all("Set-Cookie") is None
    assert "Strict-Transport-Security" not in headers and "Clear-Site-Data" not in headers
    assert headers["Content-Security-Policy"] == "sandbox"


def test_a_body_over_the_limit_is_413_before_and_while_streaming(stack, settings):
    settings.SERVICE_REQUEST_MAX_BYTES = 1000
    status, _, body = request(
        stack.ingress.port, "POST", f"{stack.base}/api/echo", headers=stack.auth(), body=b"x" * 2000
    )
    assert status == 413 and json.loads(body)["code"] == "request_too_large"

    def chunks():
        for _ in range(10):
            yield b"y" * 500

    conn = http.client.HTTPConnection("127.0.0.1", stack.ingress.port, timeout=10)
    try:
        conn.request("POST", f"{stack.base}/api/echo", body=chunks(), headers=stack.auth(), encode_chunked=True)
        assert conn.getresponse().status == 413
    except (BrokenPipeError, ConnectionResetError):
        pass  # the ingress may close before the client finished sending; the service never got the body
    conn.close()


def test_a_slow_service_is_504_and_the_concurrency_limit_is_429(stack, settings):
    settings.SERVICE_RESPONSE_TIMEOUT_SECONDS = 1
    status, _, body = stack.get("/api/slow?seconds=3")
    assert status == 504 and json.loads(body)["code"] == "service_timed_out"
    settings.SERVICE_RESPONSE_TIMEOUT_SECONDS = 60
    settings.SERVICE_MAX_CONCURRENT_REQUESTS = 1
    slow = http.client.HTTPConnection("127.0.0.1", stack.ingress.port, timeout=10)
    slow.request("GET", f"{stack.base}/api/slow?seconds=2", headers=stack.auth())
    time.sleep(0.5)
    status, _, body = stack.get("/api/hello")
    assert status == 429 and json.loads(body)["code"] == "too_many_requests"
    assert slow.getresponse().status == 200
    slow.close()


def test_a_container_that_does_not_listen_is_502(own):
    stack = own
    stack.service.http.shutdown()
    stack.service.http.server_close()
    status, _, body = stack.get("/api/hello")
    assert status == 502 and json.loads(body)["code"] == "container_not_listening"


def test_no_tunnel_is_503_and_after_cancel_410(own, settings):
    stack = own
    settings.SERVICE_TUNNEL_WAIT_SECONDS = 1
    stack.tunnels.close(stack.placement.placement_id)
    wait_until(lambda: stack.ingress.registry.idle_count(stack.placement.placement_id, 8000) == 0, what="no tunnels")
    status, headers, body = stack.get("/api/hello")
    assert status == 503 and headers["Retry-After"] == "2"
    committed(rental_cancel, owner=stack.buyer, rental_id=stack.rental.pk)
    wait_until(lambda: stack.get("/api/hello")[0] == 410, timeout=5, what="410 after cancel")
    status, _, body = stack.get("/api/hello")
    assert status == 410 and json.loads(body)["code"] == "service_gone"


def test_counters_reach_the_buyer(own):
    stack = own
    for _ in range(3):
        assert stack.get("/api/hello")[0] == 200

    # The ingress counts a request just after its last byte went out, and writes the counts every few seconds.
    def counted():
        return ServiceStats.objects.filter(rental=stack.rental, port_name="api", requests=3).first()

    stats = wait_until(counted, what="three requests counted")
    assert stats.errors == 0 and stats.bytes_out > 0
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(stack.buyer)
    data = client.get(f"/api/v1/rentals/{stack.rental.pk}/service/").json()
    api = next(row for row in data["stats"] if row["port_name"] == "api")
    assert api["requests"] == 3 and api["latency_ms_mean"] is not None


def test_an_agent_cannot_offer_tunnels_for_another_nodes_placement(stack):
    """A second node's certificate offering the first node's placement is refused; so is an unexposed port."""
    other = committed(lambda: online_node(UserFactory(), name="other-rig", vgpus=1, pool_name="ampere-24g"))
    key_pem, cert_pem = committed(node_identity, other)
    credentials = mutual_tls_credentials(
        key_pem=key_pem, certificate_pem=cert_pem, trusted_ca_pem=platform_ca().certificate_pem.encode()
    )
    with grpc.secure_channel(stack.ingress.tunnel_address, credentials) as channel:
        stub = ServiceTunnelStub(channel)
        offer = pb.TunnelFrame(offer=pb.TunnelOffer(placement_id=stack.placement.placement_id, container_port=8000))
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Tunnel(iter([offer]), timeout=10))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with grpc.secure_channel(stack.ingress.tunnel_address, stack.platform.credentials) as channel:
        stub = ServiceTunnelStub(channel)
        offer = pb.TunnelFrame(offer=pb.TunnelOffer(placement_id=stack.placement.placement_id, container_port=22))
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Tunnel(iter([offer]), timeout=10))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Without a client certificate the TLS handshake itself fails.
    anonymous = grpc.ssl_channel_credentials(root_certificates=platform_ca().certificate_pem.encode())
    with grpc.secure_channel(stack.ingress.tunnel_address, anonymous) as channel:
        with pytest.raises(grpc.RpcError):
            list(ServiceTunnelStub(channel).Tunnel(iter([offer]), timeout=5))


def test_garbage_and_oversized_headers_get_a_4xx_and_the_ingress_keeps_serving(stack):
    for raw in (b"NOT HTTP\r\n\r\n", b"GET /svc/x HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 100_000 + b"\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", stack.ingress.port), timeout=10) as sock:
            sock.sendall(raw)
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 4"), answer[:100]
    assert stack.get("/api/hello")[0] == 200


def test_an_ingress_restart_interrupts_a_service_only_until_the_agent_redials(own):
    """The agent's pools redial a restarted ingress (same tunnel port) by themselves; requests work again."""
    first = Ingress(listen="127.0.0.1:0", tunnel_listen="127.0.0.1:0")
    first.start()
    tunnel_port = first.tunnel_port
    manager = TunnelManager(runtime=own.platform.runtime, credentials=own.platform.credentials, pool_size=1)
    manager.open(own.placement.placement_id, [ServicePort("api", 8000)], [first.tunnel_address])
    second = None
    try:
        wait_until(lambda: first.registry.idle_count(own.placement.placement_id, 8000) >= 1, what="a tunnel")
        assert request(first.port, "GET", f"{own.base}/api/hello", headers=own.auth())[0] == 200
        first.stop()
        second = Ingress(listen="127.0.0.1:0", tunnel_listen=f"127.0.0.1:{tunnel_port}")
        second.start()
        wait_until(
            lambda: second.registry.idle_count(own.placement.placement_id, 8000) >= 1,
            timeout=40,
            what="the agent redialling the restarted ingress",
        )
        assert request(second.port, "GET", f"{own.base}/api/hello", headers=own.auth())[0] == 200
    finally:
        manager.close_all()
        if second is not None:
            second.stop()
