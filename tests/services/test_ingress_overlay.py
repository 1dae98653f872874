"""The ingress's overlay path (docs/overlay.md, "The service endpoint"), for real but without the three-host lab:
the hub's segment link is a bare link in a network namespace of this test, holding the hub's segment address;
the "container" is an HTTP server whose socket was made in that namespace on the member's address. Checked: the
request goes over the overlay from the hub's address with the ingress's header rules unchanged; a refused port is
the same 502 as through a tunnel; where the hub has no link (the overlay is not up) the agent's tunnel serves.
The whole path through WireGuard, VxLAN and the hub's rules is in tests/overlay/test_overlay_e2e.py."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from http.server import ThreadingHTTPServer

import pytest
from django.test import override_settings

from agent.tunnel import ServicePort, TunnelManager
from marketplace.rentals.models import RentalPlacement
from marketplace.services import api_key_create
from marketplace.svc.ingress.overlay import socket_in
from marketplace.svc.ingress.server import Ingress
from marketplace.svc.models import ServiceStats
from nodes.models import OverlaySegment, OverlaySegmentMember
from nodes.services.overlay import overlay_hub_segment_address, segment_network
from tests.factories import UserFactory, online_node
from tests.nodes.gateway_fixtures import wait_until
from tests.rentals.conftest import fund, run_round, submit
from tests.services.support import HostRuntime, _Handler, request
from tests.services.test_ingress_host import node_credentials

pytestmark = pytest.mark.django_db(transaction=True)
VNI = 4000


class _Where(_Handler):
    def do_GET(self) -> None:
        if self.path == "/where":
            headers = {k.lower(): v for k, v in self.headers.items()}
            return self._json(200, {"peer": self.client_address[0], "headers": headers})
        return super().do_GET()


def _serve(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _ip(netns: str, *argv: str) -> None:
    subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "ip", *argv], check=True, capture_output=True)


@pytest.fixture
def hub_netns():
    name = f"jsvc{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        _ip(name, "link", "set", "lo", "up")
        _ip(name, "link", "add", "hubs0", "type", "bridge")  # no dummy module here
        _ip(name, "link", "set", "hubs0", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def overlay_service(gateway_settings, hub_netns):
    """A service rental whose placement is on a service segment; its container listens in hub_netns."""
    gateway_settings.SERVICE_STATS_FLUSH_SECONDS = 0.2
    gateway_settings.SERVICE_OVERLAY_DOWN_SECONDS = 0.5
    buyer = UserFactory()
    fund(buyer, 100 * 1_000_000)
    node = online_node(UserFactory(), name="rig", vgpus=2, price=500_000)
    ingress = Ingress(listen="127.0.0.1:0", tunnel_listen="127.0.0.1:0", overlay=True,
                      overlay_netns=f"/run/netns/{hub_netns}")  # fmt: skip
    ingress.start()
    expose = [{"name": "api", "port": 8000}, {"name": "closed", "port": 8001}]
    with override_settings(SERVICE_INGRESS_TUNNEL_ADDRESSES=[ingress.tunnel_address]):
        rental = run_round(submit(buyer, expose=expose))
    placement = RentalPlacement.objects.get(rental=rental)
    segment = OverlaySegment.objects.create(key=f"rental-{rental.pk}-x", vni=VNI, service_ports=[8000, 8001])
    member = str(segment_network(VNI)[10])
    OverlaySegmentMember.objects.create(segment=segment, node=node, placement_id=placement.placement_id, index=0,
                                        name="primary-0", address=member)  # fmt: skip
    hub = overlay_hub_segment_address(VNI)
    _ip(hub_netns, "addr", "add", f"{hub}/24", "dev", "hubs0")
    _ip(hub_netns, "addr", "add", f"{member}/32", "dev", "hubs0")
    container = ThreadingHTTPServer((member, 8000), _Where, bind_and_activate=False)
    container.socket = socket_in(f"/run/netns/{hub_netns}")
    container.server_bind()
    container.server_activate()
    _serve(container)
    # The agent's tunnel: the fallback, to a server on the host's loopback.
    local = _serve(ThreadingHTTPServer(("127.0.0.1", 0), _Where))
    runtime = HostRuntime({placement.placement_id: {8000: local.server_address[1], 8001: 1}})
    tunnels = TunnelManager(runtime=runtime, credentials=node_credentials(node), pool_size=1)
    tunnels.open(placement.placement_id, [ServicePort(e["name"], e["port"]) for e in expose], [ingress.tunnel_address])
    wait_until(lambda: ingress.registry.idle_count(placement.placement_id, 8000) >= 1, what="an idle tunnel")
    _, key = api_key_create(user=buyer, name="buyer")

    def get(path: str, headers=None):
        return request(ingress.port, "GET", f"/svc/{rental.service_slug}{path}",
                       headers={"Authorization": f"Bearer {key}", **(headers or {})})  # fmt: skip

    try:
        yield {"get": get, "rental": rental, "hub": hub, "netns": hub_netns, "runtime": runtime,
               "placement": placement}  # fmt: skip
    finally:
        tunnels.close_all()
        ingress.stop()
        container.shutdown()
        container.server_close()
        local.shutdown()
        local.server_close()


def test_the_overlay_carries_the_request_from_the_hubs_address_with_the_same_header_rules(overlay_service):
    get = overlay_service["get"]
    status, headers, body = get("/api/where", headers={"Cookie": "sessionid=s", "X-Forwarded-For": "6.6.6.6"})
    assert status == 200, body
    seen = json.loads(body)
    assert seen["peer"] == overlay_service["hub"]  # from the hub's member address, not through the agent
    assert "cookie" not in seen["headers"] and "authorization" not in seen["headers"]
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert headers["Content-Security-Policy"] == "sandbox"
    assert overlay_service["runtime"].opened == {}  # the agent's tunnel was never used
    # Nothing listens on the other exposed port: the same 502 as through a tunnel, not a fallback.
    status, _, body = get("/closed/")
    assert (status, json.loads(body)["code"]) == (502, "container_not_listening")
    assert overlay_service["runtime"].opened == {}
    wait_until(
        lambda: ServiceStats.objects.filter(rental=overlay_service["rental"], port_name="api", overlay_requests=1)
        .exists(),
        what="the overlay request counted",
    )  # fmt: skip


def test_without_the_hubs_link_the_agents_tunnel_serves_and_the_overlay_is_tried_again_later(overlay_service):
    _ip(overlay_service["netns"], "addr", "del", f"{overlay_service['hub']}/24", "dev", "hubs0")
    status, _, body = overlay_service["get"]("/api/where")
    assert status == 200, body
    assert json.loads(body)["peer"] == "127.0.0.1"  # the agent's tunnel
    assert overlay_service["runtime"].opened == {overlay_service["placement"].placement_id: 1}
    _ip(overlay_service["netns"], "addr", "add", f"{overlay_service['hub']}/24", "dev", "hubs0")

    def back_on_the_overlay() -> bool:
        status, _, body = overlay_service["get"]("/api/where")
        return status == 200 and json.loads(body)["peer"] == overlay_service["hub"]

    wait_until(back_on_the_overlay, timeout=10, what="the overlay path again")
