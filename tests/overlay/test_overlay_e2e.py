"""The overlay end to end (docs/overlay.md): three hosts made of network namespaces on this machine.

hub: `manage.py overlay_hub` (WireGuard through wireguard-go, nftables from the database).
a, b: each its own `python -m agent --overlay` with podman, dialling the hub. Two rentals, each with one
placement on a and one on b, each on its own VxLAN segment. Real gateway, database, podman, WireGuard.
Both are services: the buyer calls them through the real ingress, which reaches the containers over the overlay
from the hub's member address on each segment (the agents' tunnels point nowhere, so nothing else could answer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

from agent.overlay.segments import PlacementNames
from marketplace.rentals.dispatch import rental_logs_stream, rentals_sync
from marketplace.rentals.metering import metering_run
from marketplace.rentals.models import Rental, RentalState
from marketplace.rentals.services import rental_cancel, rental_submit
from marketplace.services import api_key_create
from marketplace.svc.ingress.server import Ingress
from marketplace.svc.models import ServiceStats
from nodes.gateway.server import Gateway, GatewayConfig
from nodes.models import NodeOverlay, NodeState, OverlaySegment, PlacementLogLine, VGpu, VGpuState
from nodes.overlay_hub import segment_mac, service_link, service_link_prefix
from nodes.services import node_create
from nodes.services.overlay import overlay_hub_address, overlay_hub_segment_address
from pricing.services import market_round_run
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import REPO, gateway_ca, gateway_ca_pem, gateway_settings, wait_until  # noqa: F401
from tests.overlay.lab import Lab, missing_prerequisites, sh
from tests.rentals.conftest import USDC, fund
from tests.services.support import request

pytestmark = pytest.mark.slow
TEST_IMAGE = os.environ.get("JANCTION_TEST_IMAGE", "localhost/janction-test-busybox:latest")
HUB_PORT = 51820
# Serve "<rental tag> <own segment address>" on 8080, and "peer <the caller's address>" at /cgi-bin/peer; then
# call every name on the segment once a second.
WORKLOAD = (
    'mkdir -p /tmp/w/cgi-bin && echo "$TAG $JANCTION_SEGMENT_ADDRESS" > /tmp/w/index.html && '
    "printf '%s\\n' '#!/bin/sh' 'echo Content-Type: text/plain' echo 'echo \"peer $REMOTE_ADDR\"' "
    "> /tmp/w/cgi-bin/peer && chmod +x /tmp/w/cgi-bin/peer && httpd -p 8080 -h /tmp/w; "
    "while true; do for peer in primary-0 worker-1; do "
    "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $peer 8080 | tail -n 1 | sed \"s/^/from $peer: /\"; "
    "done; sleep 1; done"
)


@pytest.fixture
def lab(tmp_path):
    if missing := missing_prerequisites():
        pytest.fail("the overlay test needs: " + "; ".join(missing))
    built = subprocess.run([str(REPO / "scripts" / "build_test_image.sh")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    made = Lab()
    try:
        yield made.create(["hub", "a", "b"])
    finally:
        made.destroy()


@pytest.fixture
def lab_gateway(transactional_db, gateway_settings, lab):  # noqa: F811
    # An agent restarted within this grace keeps its node online and its rentals running (the kill -9 step).
    gateway_settings.NODE_HEARTBEAT_GRACE_SECONDS = 120
    # Services: the agents' tunnels point where nothing listens (only the overlay can carry a request), and
    # a path that failed is retried soon.
    gateway_settings.SERVICE_INGRESS_TUNNEL_ADDRESSES = ["127.0.0.1:9"]
    gateway_settings.SERVICE_TUNNEL_WAIT_SECONDS = 1
    gateway_settings.SERVICE_OVERLAY_DOWN_SECONDS = 1
    server = Gateway(
        GatewayConfig.from_settings(listen=f"{lab.gateway_address}:0", enroll_listen=f"{lab.gateway_address}:0")
    )
    server.start()
    yield server
    server.stop(grace=0)


def _database_env() -> dict:
    parts = urlsplit(os.environ["DATABASE_URL"])
    url = urlunsplit(parts._replace(path=f"/{connection.settings_dict['NAME']}"))
    return {**os.environ, "DATABASE_URL": url, "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "x")}


class Host:
    """One lab host's agent: started, killed with SIGKILL and restarted on the same state directory."""

    def __init__(self, lab: Lab, role: str, gateway: Gateway, token: str, tmp_path) -> None:
        self.lab, self.role, self.prefix = lab, role, f"{lab.prefix}{role}"
        self.state_dir = tmp_path / f"agent-{role}"
        self.log = tmp_path / f"agent-{role}.log"
        ca = tmp_path / "gateway-ca.pem"
        ca.write_bytes(gateway_ca_pem())
        self.argv = [
            sys.executable, "-m", "agent", "--gateway", f"{lab.gateway_address}:{gateway.enroll_port}",
            "--state-dir", str(self.state_dir), "--fake-gpus", "RTX 4090:1,RTX 3090:1", "--slices", "1",
            "--runtime", "podman", "--overlay", "--overlay-prefix", self.prefix, "--heartbeat-interval", "1",
            "--usage-interval", "1", "--ca-cert", str(ca),
        ]  # fmt: skip
        self.process = lab.spawn(role, [*self.argv, "--enroll-token", token], log=self.log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def restart(self) -> None:
        self.process = self.lab.spawn(self.role, self.argv, log=self.log)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def handshake_fresh(self) -> bool:
        output = sh("wg", "show", f"{self.prefix}w", "latest-handshakes", netns=self.lab.hosts[self.role], check=False)
        parts = output.stdout.split()
        return len(parts) >= 2 and parts[1].isdigit() and time.time() - int(parts[1]) < 30


def _online(node) -> bool:
    node.refresh_from_db()
    return node.state == NodeState.ONLINE and VGpu.objects.filter(node=node, state=VGpuState.FREE).count() == 2


def _reaches(container: str, address: str) -> bool:
    """Return whether a container gets an HTTP answer from address:8080 within 2 s."""
    result = subprocess.run(
        ["podman", "exec", container, "sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {address} 8080"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return result.returncode == 0 and "200 OK" in result.stdout


def _reached(container: str, addresses: list[str]) -> list[str]:
    """Return which of the addresses a container reaches (probed at once: a refused probe waits its 2 s)."""
    with ThreadPoolExecutor(len(addresses)) as pool:
        reached = pool.map(lambda address: _reaches(container, address), addresses)
        return [address for address, ok in zip(addresses, reached, strict=True) if ok]


def _host_reaches(lab: Lab, role: str, address: str, port: int = 8080) -> bool:
    command = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 {address} {port}"
    result = sh("sh", "-c", command, netns=lab.hosts[role], check=False)
    return result.returncode == 0 and "200 OK" in result.stdout


def _claims_refused(lab: Lab) -> int:
    """Return how many ARP claims of addresses their host does not own the hub dropped."""
    output = sh("nft", "list", "counter", "inet", f"janction_{lab.prefix}hub", "claims_refused",
                netns=lab.hosts["hub"]).stdout  # fmt: skip
    return int(output.split("packets")[1].split()[0])


def test_two_hosts_one_segment_per_rental_isolated_torn_down_and_rejoined_after_kill_9(lab, lab_gateway, tmp_path):
    # The hub process talks to the database from the root namespace; its WireGuard link and rules live in "hub".
    with (tmp_path / "hub.log").open("wb") as hub_log_file:
        hub = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "manage.py"),
                "overlay_hub",
                "--endpoint",
                f"{lab.addresses['hub']}:{HUB_PORT}",
                "--listen-port",
                str(HUB_PORT),
                "--interface",
                f"{lab.prefix}hub",
                "--key-file",
                str(tmp_path / "hub.key"),
                "--netns",
                f"/run/netns/{lab.hosts['hub']}",
                "--interval",
                "0.3",
            ],
            stdout=hub_log_file,
            stderr=subprocess.STDOUT,
            env=_database_env(),
            cwd=REPO,
            start_new_session=True,
        )
    lab.pids.append(hub.pid)
    provider, buyer = UserFactory(), UserFactory()
    # The agents' tunnels point nowhere: an answer through the ingress can only have come over the overlay.
    ingress = Ingress(listen="127.0.0.1:0", tunnel_listen="127.0.0.1:0", overlay=True,
                      overlay_netns=lab.netns_path("hub"))  # fmt: skip
    ingress.start()
    tickets = {role: node_create(owner=provider, name=f"host-{role}", reserve_price_per_hour=400_000) for role in "ab"}
    hosts = {role: Host(lab, role, lab_gateway, tickets[role].token, tmp_path) for role in "ab"}
    try:
        for role, host in hosts.items():
            online = lambda role=role: _online(tickets[role].node)  # noqa: E731
            wait_until(online, timeout=60, what=f"{role} online:\n{host.output()}")
        hub_log = tmp_path / "hub.log"
        for role, host in hosts.items():
            wait_until(host.handshake_fresh, timeout=30, what=f"{role}'s WireGuard handshake with the hub:\n"
                       f"{host.output()}\nhub:\n{hub_log.read_text()}")  # fmt: skip
        assert NodeOverlay.objects.count() == 2
        # The hub records where it sees each host (its next sync after the handshake); a segment allocated before
        # that names no direct peer and stays relayed. In production a host joins long before a rental.
        wait_until(lambda: all(NodeOverlay.objects.values_list("endpoint", flat=True)), timeout=10,
                   what="the hub recorded both hosts' endpoints")  # fmt: skip
        # A malformed or stolen key never reaches the hub: the unique key is the node's alone.
        keys = set(NodeOverlay.objects.values_list("public_key", flat=True))
        assert len(keys) == 2

        fund(buyer, 100 * USDC)
        rentals = {
            tag: rental_submit(
                owner=buyer,
                pool_name=pool,
                vgpus=2,
                max_price_per_hour="3",
                max_duration_seconds=900,
                image=TEST_IMAGE,
                command=["sh", "-c", WORKLOAD],
                env={"TAG": tag},
                # Each a service; the second's exposed port has no listener (its 8080 is not exposed).
                expose=[{"name": name, "port": port}],
            )
            for tag, pool, name, port in (("first", "ada-24g", "web", 8080), ("second", "ampere-24g", "alt", 8081))
        }

        def tick() -> None:
            for rental in rentals.values():
                market_round_run(pool_id=rental.pool_id)
            rental_logs_stream()
            rentals_sync()
            metering_run()

        def running() -> bool:
            tick()
            return all(Rental.objects.get(pk=r.pk).state == RentalState.RUNNING for r in rentals.values())

        wait_until(running, timeout=90, what=f"both rentals running:\n{hosts['a'].output()}")
        segments = {tag: OverlaySegment.objects.get(key__startswith=f"rental-{r.pk}-") for tag, r in rentals.items()}
        assert segments["first"].vni != segments["second"].vni
        placements = {tag: list(r.placements.order_by("pk")) for tag, r in rentals.items()}
        for tag in rentals:
            assert {p.node_id for p in placements[tag]} == {tickets["a"].node.pk, tickets["b"].node.pk}
        members = {
            tag: {m.node_id: m for m in segments[tag].members.all()} for tag in rentals
        }  # node id -> member (name, address)
        node_a, node_b = tickets["a"].node.pk, tickets["b"].node.pk
        on_a = {tag: next(p for p in placements[tag] if p.node_id == node_a) for tag in rentals}
        peer_on_b = {tag: members[tag][node_b] for tag in rentals}

        # The container on a calls its peer on b by name over HTTP (its log, through the real platform).
        def called_peer(tag: str) -> bool:
            tick()
            texts = PlacementLogLine.objects.filter(placement__placement_id=on_a[tag].placement_id).values_list(
                "text", flat=True
            )
            wanted = f"from {peer_on_b[tag].name}: {tag} {peer_on_b[tag].address}"
            return any(wanted in text for text in texts)

        for tag in rentals:
            wait_until(lambda tag=tag: called_peer(tag), timeout=60, what=f"{tag}: a called its peer on b by name")

        # a and b reach each other: the segments go straight between them (b's overlay /32 on a direct peer of a).
        b_direct = f"{NodeOverlay.objects.get(node_id=node_b).address}/32"
        wait_until(
            lambda: b_direct in sh("wg", "show", f"{hosts['a'].prefix}w", "allowed-ips", netns=lab.hosts["a"]).stdout,
            timeout=30, what=f"a's direct path to b:\n{hosts['a'].output()}",
        )  # fmt: skip

        # Isolation: the second rental's container on a reaches neither of the first rental's containers;
        # b's own processes reach no container (not even after routing the segment into the tunnel).
        container = f"janction-{on_a['second'].placement_id}"
        first_addresses = [m.address for m in members["first"].values()]
        assert _reaches(container, peer_on_b["second"].address), "the probe itself works on its own segment"
        for address in first_addresses:
            assert not _reaches(container, address)
        all_addresses = first_addresses + [m.address for m in members["second"].values()]
        for address in all_addresses:
            assert not _host_reaches(lab, "b", address)
        attack_route = ["route", "add", f"{first_addresses[0].rsplit('.', 1)[0]}.0/24", "dev", f"{hosts['b'].prefix}w"]
        sh("ip", *attack_route, netns=lab.hosts["b"])
        assert not _host_reaches(lab, "b", first_addresses[0])
        sh("ip", *["route", "del", *attack_route[2:]], netns=lab.hosts["b"])
        # The hub forwards only the live segments' VxLAN between their hosts, and takes from each host only its
        # own members' addresses on the service segments it is a member of.
        ruleset = sh("nft", "list", "table", "inet", f"janction_{lab.prefix}hub", netns=lab.hosts["hub"]).stdout
        lines = [line for line in ruleset.splitlines() if "@th,96,24" in line]
        assert len([line for line in lines if "@th,224,16" not in line]) == 4  # two segments, two directions each
        assert len(lines) == 4 + 2 * 2 * 2  # two service segments, two hosts, IPv4 and ARP

        # The endpoint over the overlay: the buyer calls the service with the buyer's API key; the container sees
        # the hub's member address as its peer; both placements answer; a port nobody listens on is a clear 502.
        hub_member = {tag: overlay_hub_segment_address(segments[tag].vni) for tag in rentals}
        _, key = api_key_create(user=buyer, name="buyer")
        auth = {"Authorization": f"Bearer {key}"}
        base = {tag: f"/svc/{Rental.objects.get(pk=r.pk).service_slug}" for tag, r in rentals.items()}

        def served(path: str) -> str:
            status, _, body = request(ingress.port, "GET", base["first"] + path, headers=auth)
            # busybox httpd listens on IPv6 too, so it names an IPv4 peer as [::ffff:a.b.c.d].
            text = body.decode().strip().replace("[::ffff:", "").replace("]", "")
            return text if status == 200 else f"{status} {body[:200]!r}"

        wait_until(lambda: served("/web/cgi-bin/peer") == f"peer {hub_member['first']}", timeout=30,
                   what=f"the container's answer over the overlay: {served('/web/cgi-bin/peer')}")  # fmt: skip
        first_answers = {f"first {address}" for address in first_addresses}
        assert {served("/web/") for _ in range(4)} == first_answers
        status, _, body = request(ingress.port, "GET", base["second"] + "/alt/", headers=auth)
        assert (status, json.loads(body)["code"]) == (502, "container_not_listening")
        assert request(ingress.port, "GET", base["first"] + "/web/")[0] == 401  # the ingress's auth as ever
        wait_until(
            lambda: ServiceStats.objects.filter(rental=rentals["first"], overlay_requests__gte=5).exists(),
            timeout=15, what="the overlay requests counted",
        )  # fmt: skip

        # Attacks. The hub opens only the exposed ports (the second rental's 8080 is not one of them); containers
        # open nothing towards the hub, on any of its addresses, even where something listens there; a container
        # routed through the hub by its provider gets nowhere; host b claiming a's member address (on a's own
        # segment and from another VNI's member) does not move the endpoint's traffic for a.
        second_addresses = [m.address for m in members["second"].values()]
        assert _host_reaches(lab, "hub", first_addresses[0]) and not _host_reaches(lab, "hub", second_addresses[0])
        www = tmp_path / "hub-www"
        www.mkdir()
        (www / "index.html").write_text("the hub's own service\n")
        lab.spawn("hub", ["busybox", "httpd", "-f", "-p", "8080", "-h", str(www)], log=tmp_path / "hub-httpd.log")
        wait_until(lambda: _host_reaches(lab, "hub", lab.addresses["hub"]), timeout=10, what="the hub's listener")
        assert _reached(container, [hub_member["second"], overlay_hub_address(), lab.addresses["hub"]]) == []
        container_netns = PlacementNames.of(hosts["a"].prefix, on_a["second"].placement_id).netns
        sh("ip", "route", "add", "default", "via", hub_member["second"], netns=container_netns)
        assert _reached(container, [first_addresses[0], lab.addresses["hub"], lab.gateway_address]) == []
        sh("ip", "route", "del", "default", netns=container_netns)
        on_b_first = next(p for p in placements["first"] if p.node_id == node_b)
        b_netns = PlacementNames.of(hosts["b"].prefix, on_b_first.placement_id).netns
        a_address = members["first"][node_a].address
        refused_before = _claims_refused(lab)
        sh("ip", "addr", "add", f"{a_address}/32", "dev", "eth0", netns=b_netns)
        sh("busybox", "arping", "-U", "-c", "2", "-I", "eth0", "-s", a_address, a_address, netns=b_netns, check=False)
        assert _claims_refused(lab) >= refused_before + 2  # the hub's inner-source check dropped b's claims
        neighbour = sh("ip", "neigh", "show", a_address, "dev", service_link(f"{lab.prefix}hub", segments["first"].vni),
                       netns=lab.hosts["hub"]).stdout  # fmt: skip
        assert segment_mac(a_address) in neighbour and "PERMANENT" in neighbour, neighbour
        assert {served("/web/") for _ in range(4)} == first_answers
        sh("ip", "addr", "del", f"{a_address}/32", "dev", "eth0", netns=b_netns)

        # kill -9 the agent on a, leave a stray link of its prefix: the restarted agent removes it and rejoins.
        hosts["a"].kill()
        sh("ip", "link", "add", f"{hosts['a'].prefix}x99999", "type", "bridge", netns=lab.hosts["a"])
        restarted_at = time.time()
        hosts["a"].restart()
        wait_until(
            lambda: f"{hosts['a'].prefix}x99999" not in lab.links("a", hosts["a"].prefix),
            timeout=60, what=f"the stray link removed:\n{hosts['a'].output()}",
        )  # fmt: skip
        wait_until(hosts["a"].handshake_fresh, timeout=30, what="a rejoined the hub")
        count_before = PlacementLogLine.objects.filter(placement__placement_id=on_a["first"].placement_id).count()

        def still_calls_peer() -> bool:
            tick()
            lines = PlacementLogLine.objects.filter(placement__placement_id=on_a["first"].placement_id).order_by("pk")
            wanted = f"from {peer_on_b['first'].name}: first {peer_on_b['first'].address}"
            return any(wanted in line.text for line in lines[count_before:])

        wait_until(still_calls_peer, timeout=60, what=f"segment back after restart:\n{hosts['a'].output()}")
        assert time.time() - restarted_at < 120

        # Cancel: nothing of either rental is left on any host, and the hub forwards nothing.
        for rental in rentals.values():
            rental_cancel(owner=buyer, rental_id=rental.pk)

        def settled() -> bool:
            tick()
            return all(Rental.objects.get(pk=r.pk).settled_at is not None for r in rentals.values())

        wait_until(settled, timeout=90, what="both rentals settled")
        for role, host in hosts.items():
            wait_until(
                lambda role=role, host=host: lab.links(role, host.prefix) == [f"{host.prefix}w"],
                timeout=30, what=f"only the underlay left on {role}: {lab.links(role, host.prefix)}",
            )  # fmt: skip
            routes = sh("ip", "route", "show", netns=lab.hosts[role]).stdout
            assert "10.128." not in routes, routes
            assert not any(p.name.startswith(host.prefix) for p in Path("/run/netns").iterdir())
        wait_until(
            lambda: "@th,96,24" not in sh("nft", "list", "table", "inet", f"janction_{lab.prefix}hub",
                                    netns=lab.hosts["hub"]).stdout,
            timeout=15, what="the hub's rules emptied",
        )  # fmt: skip
        hub_table = sh("nft", "list", "table", "inet", f"janction_{lab.prefix}hub", netns=lab.hosts["hub"]).stdout
        assert "tcp dport" not in hub_table, hub_table
        wait_until(lambda: not lab.links("hub", service_link_prefix(f"{lab.prefix}hub")), timeout=15,
                   what="the hub's member links removed")  # fmt: skip
        assert OverlaySegment.objects.filter(released_at__isnull=True).count() == 0
    finally:
        ingress.stop()
        for host in hosts.values():
            host.stop()
        for rental_placements in Rental.objects.filter(owner=buyer):
            for placement in rental_placements.placements.all():
                subprocess.run(["podman", "rm", "-f", "--ignore", f"janction-{placement.placement_id}"],
                               capture_output=True)  # fmt: skip
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(timeout=15)
        except subprocess.TimeoutExpired:
            hub.kill()
