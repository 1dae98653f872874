"""Egress policy (issue 15): no network by default; with --allow-egress the internet, but not the LAN or the host.

Real podman, real nftables and a real "LAN": a network namespace behind a veth pair. Its side holds a
LAN address (192.168.x.2, private), a LAN address in a public-looking subnet the host is attached to
(203.0.113.y, not RFC 1918: only the "directly attached" rule blocks it) and, behind a route through it, a
stand-in for an internet host (198.51.100.x/32, routed, not attached). A container of the pyservice image
tries to connect to each, and to the host's own addresses. Every name is unique and removed afterwards.
"""

from __future__ import annotations

import ipaddress
import json
import random
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agent.runtime.base import PlacementSpec, WorkloadState, container_name
from agent.runtime.docker import DockerRuntime
from agent.runtime.egress import EgressPolicy, EgressRules, blocked_networks, table_definition
from agent.runtime.podman import PodmanRuntime
from agent.slicing import ContainerGpuSettings
from tests.agent.support import Recorder

FAKE_GPU = ContainerGpuSettings({"NVIDIA_VISIBLE_DEVICES": "GPU-fake"}, ("GPU-fake",), fake=True, uses_mps=False)
PROBE = """
import errno, socket, struct, sys
def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
for target in sys.argv[1:]:
    name, host, port = target.split(",")
    host = gateway() if host == "gateway" else host
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        outcome = "ok"
    except OSError as exc:
        outcome = errno.errorcode.get(exc.errno, type(exc).__name__) if exc.errno else type(exc).__name__
    sys.stdout.write(f"probe {name} {outcome}\\n")  # one write: podman's log splits partial lines
"""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {result.stderr}")
    return result


@dataclass
class Lan:
    lan_address: str  # private, on a subnet the host is attached to
    attached_public_address: str  # public-looking, on a subnet the host is attached to
    internet_address: str  # routed through the LAN host, attached nowhere
    host_lan_address: str
    host_address: str  # the host's address on its default route's interface
    port: int


def _free_octet() -> int:
    routes = [route["dst"] for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]")]
    taken = []
    for destination in routes:
        try:
            taken.append(ipaddress.ip_network(destination, strict=False))
        except ValueError:
            continue
    for _ in range(100):
        octet = random.randint(100, 250)
        candidates = [ipaddress.ip_network(f"192.168.{octet}.0/24"), ipaddress.ip_network(f"198.51.100.{octet}/32")]
        if not any(c.overlaps(t) for c in candidates for t in taken if t.prefixlen > 0):
            return octet
    raise AssertionError("no free 192.168.x.0/24 for the test LAN")


@pytest.fixture
def lan() -> Iterator[Lan]:
    for tool, package in (("podman", "podman runc"), ("nft", "nftables"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install {package} (or bash scripts/install-system-deps.sh)")
    tag = uuid.uuid4().hex[:6]
    namespace, host_side, lan_side = f"svcimg-lan-{tag}", f"svh{tag}", f"svn{tag}"
    octet = _free_octet()
    quad = random.randint(1, 62) * 4
    port = random.randint(20000, 29999)
    _ip("netns", "add", namespace)
    listener = None
    try:
        _ip("link", "add", host_side, "type", "veth", "peer", "name", lan_side)
        _ip("link", "set", lan_side, "netns", namespace)
        _ip("addr", "add", f"192.168.{octet}.1/24", "dev", host_side)
        _ip("addr", "add", f"203.0.113.{quad + 1}/30", "dev", host_side)
        _ip("link", "set", host_side, "up")
        for args in (
            ("addr", "add", f"192.168.{octet}.2/24", "dev", lan_side),
            ("addr", "add", f"203.0.113.{quad + 2}/30", "dev", lan_side),
            ("addr", "add", f"198.51.100.{octet}/32", "dev", "lo"),
            ("link", "set", lan_side, "up"),
            ("link", "set", "lo", "up"),
            ("route", "add", "default", "via", f"192.168.{octet}.1"),
        ):
            _ip("-n", namespace, *args)
        _ip("route", "add", f"198.51.100.{octet}/32", "via", f"192.168.{octet}.2")
        server = (
            "import socket, time\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {port}))\ns.listen(64)\nprint('ready', flush=True)\ntime.sleep(600)\n"
        )
        listener = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", server], stdout=subprocess.PIPE, text=True
        )
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        default_dev = next(r["dev"] for r in json.loads(_ip("-j", "-4", "route", "show", "default").stdout))
        host_address = json.loads(_ip("-j", "-4", "addr", "show", "dev", default_dev).stdout)[0]["addr_info"][0]
        yield Lan(
            lan_address=f"192.168.{octet}.2",
            attached_public_address=f"203.0.113.{quad + 2}",
            internet_address=f"198.51.100.{octet}",
            host_lan_address=f"192.168.{octet}.1",
            host_address=host_address["local"],
            port=port,
        )
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        _ip("route", "del", f"198.51.100.{octet}/32", check=False)
        _ip("link", "del", host_side, check=False)
        _ip("netns", "del", namespace, check=False)


@pytest.fixture
def egress_runtime(pyservice_image) -> Iterator[PodmanRuntime]:
    policy = EgressPolicy(table=f"svcimg_egress_{uuid.uuid4().hex[:8]}", dns=("192.0.2.53",))
    runtime = PodmanRuntime(egress=policy)
    yield runtime
    EgressRules(policy).remove_table()


def _probe(runtime: PodmanRuntime, image: str, targets: dict[str, tuple[str, int]], *, egress: bool) -> dict:
    placement_id = f"svcimg-egress-{uuid.uuid4().hex[:10]}"
    arguments = [f"{name},{host},{port}" for name, (host, port) in targets.items()]
    spec = PlacementSpec(placement_id, image, ("python3", "-c", PROBE, *arguments), {}, FAKE_GPU,
                         network_allowed=egress)  # fmt: skip
    events = Recorder()
    runtime.start(spec, events)
    try:
        finished = events.wait_finished(timeout=90)
        assert finished.state == WorkloadState.EXITED and finished.exit_code == 0, (events.changes, events.texts())
        outcomes = dict(line.split()[1:3] for line in events.texts("stdout") if line.startswith("probe "))
        assert len(outcomes) == len(targets), events.texts()
        if egress:
            network = container_name(placement_id)
            inspected = subprocess.run(["podman", "network", "inspect", network], capture_output=True, text=True)
            interface = json.loads(inspected.stdout)[0]["network_interface"]
            assert interface in runtime.egress_rules.bridges()
        return outcomes
    finally:
        runtime.remove(placement_id)
        assert subprocess.run(["podman", "network", "exists", container_name(placement_id)]).returncode != 0


def test_egress_reaches_the_internet_but_not_the_lan_or_the_host(lan, egress_runtime, pyservice_image):
    with socket.socket() as host_service:
        host_service.bind(("0.0.0.0", 0))  # noqa: S104 - a host service on every address, as a real one might be
        host_service.listen()
        host_port = host_service.getsockname()[1]
        # The LAN answers the host: only the policy keeps the container from it.
        for address in (lan.lan_address, lan.attached_public_address, lan.internet_address):
            socket.create_connection((address, lan.port), timeout=3).close()
        targets = {
            "internet": (lan.internet_address, lan.port),
            "lan": (lan.lan_address, lan.port),
            "lan_public_subnet": (lan.attached_public_address, lan.port),
            "host_on_lan": (lan.host_lan_address, host_port),
            "host": (lan.host_address, host_port),
            "host_loopback": ("127.0.0.1", host_port),
            "host_gateway": ("gateway", host_port),  # the bridge's gateway address is the host's too
        }
        outcomes = _probe(egress_runtime, pyservice_image, targets, egress=True)
    assert outcomes["internet"] == "ok", outcomes
    for name in ("lan", "lan_public_subnet", "host_on_lan", "host", "host_gateway"):
        assert outcomes[name] == "EHOSTUNREACH", (name, outcomes)
    assert outcomes["host_loopback"] == "ECONNREFUSED", outcomes  # the container's own loopback


def test_no_network_by_default_and_egress_only_where_the_node_allows_it(lan, pyservice_image):
    runtime = PodmanRuntime()
    targets = {"internet": (lan.internet_address, lan.port), "lan": (lan.lan_address, lan.port)}
    outcomes = _probe(runtime, pyservice_image, targets, egress=False)
    assert outcomes == {"internet": "ENETUNREACH", "lan": "ENETUNREACH"}
    placement_id = f"svcimg-noegress-{uuid.uuid4().hex[:10]}"
    events = Recorder()
    spec = PlacementSpec(placement_id, pyservice_image, (), {}, FAKE_GPU, network_allowed=True)
    runtime.start(spec, events)
    finished = events.wait_finished()
    runtime.remove(placement_id)
    assert finished.state == WorkloadState.FAILED
    assert "does not allow internet egress" in finished.message and "--allow-egress" in finished.message


def test_docker_refuses_egress(docker_socket, pyservice_image):
    runtime = DockerRuntime(socket_path=docker_socket)
    placement_id = f"svcimg-docker-egress-{uuid.uuid4().hex[:10]}"
    events = Recorder()
    runtime.start(PlacementSpec(placement_id, pyservice_image, (), {}, FAKE_GPU, network_allowed=True), events)
    finished = events.wait_finished()
    runtime.remove(placement_id)
    assert finished.state == WorkloadState.FAILED and "internet egress needs --runtime podman" in finished.message


def test_blocked_ranges_cover_private_shared_link_local_and_attached_subnets():
    blocked = [ipaddress.ip_network(n) for n in blocked_networks(["192.0.2.0/24", "172.31.201.0/30", "fd00::/64"])]
    for address in ("10.1.2.3", "172.20.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254", "127.0.0.1",
                    "224.0.0.251", "192.0.2.77", "0.0.0.1", "255.255.255.255"):  # fmt: skip
        assert any(ipaddress.ip_address(address) in network for network in blocked), address
    for address in ("1.1.1.1", "198.51.100.7", "8.8.8.8"):
        assert not any(ipaddress.ip_address(address) in network for network in blocked), address
    # Merged: nft refuses overlapping interval elements.
    assert not any(a.overlaps(b) for i, a in enumerate(blocked) for b in blocked[i + 1 :])


def test_table_definition_rejects_input_and_blocked_forwarding_from_the_bridges():
    text = table_definition("t")
    assert "hook input" in text and "hook forward" in text
    assert text.count("iifname @bridges") == 3


@pytest.mark.parametrize("name", ["bad-name", "a b", "x;flush ruleset", "t" * 65])
def test_table_names_are_checked(name):
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        EgressPolicy(table=name)
