"""Overlay data plane: TCP throughput and round trip between two container namespaces over VxLAN-over-WireGuard
(through the hub, userspace wireguard-go) versus a plain veth pair, in the same run; and the time from
allocation to a reachable segment.

Run as root: .venv/bin/python -m benchmarks.overlay_bench [--trials 3] [--megabytes 200]

Three hosts are network namespaces on this machine (tests/overlay/lab.py): hub, a, b. The hub is
`nodes.overlay_hub.HubRunner` (what `manage.py overlay_hub` runs), the hosts are the agent's own
`agent.overlay.host.OverlayHost`. The two endpoints are the network namespaces the agent prepares for
containers (a container joins exactly that namespace with `--network ns:`), driven by Python over nsenter so
the numbers hold no container-exec overhead. Baseline: two namespaces joined by one veth pair.

allocation -> reachable: from the hub's rules for the new segment and both hosts' `placement_up` calls
(started together) until a TCP connection from a's namespace to b's succeeds. It leaves out the
platform's part before the agents hear StartPlacement (round, dispatch, command delivery: see
benchmarks/gateway_bench.py). Goals: throughput ratio >= 0.3, allocation -> reachable < 5 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from agent.overlay.host import OverlayHost
from agent.overlay.net import Net
from agent.overlay.segments import PlacementNames, SegmentSpec
from agent.overlay.underlay import UnderlayConfig
from nodes.overlay_hub import HubRunner
from tests.overlay.lab import Lab, missing_prerequisites, sh

GOAL_RATIO = 0.3
MTU = 1420  # WireGuard link MTU; VxLAN device, bridge and container eth0 get MTU - 50 (docs/overlay.md)
GOAL_REACHABLE_SECONDS = 5.0
PORT = 5201
SERVER = f"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", {PORT})); s.listen(4)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    mode = c.recv(1)
    if mode == b"t":
        while c.recv(1 << 20):
            pass
        c.sendall(b"k")
    else:
        while (b := c.recv(1)):
            c.sendall(b)
    c.close()
"""
CLIENT = """
import socket, statistics, sys, time
host, mode, amount = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = socket.create_connection((host, {port}), timeout=30)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.sendall(mode.encode())
if mode == "t":
    chunk = b"x" * (1 << 16)
    start = time.perf_counter()
    for _ in range(amount * 16):
        c.sendall(chunk)
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
    print(amount / (time.perf_counter() - start))
else:
    samples = []
    for _ in range(amount):
        start = time.perf_counter(); c.sendall(b"p"); c.recv(1); samples.append(time.perf_counter() - start)
    print(statistics.median(samples) * 1e6)
""".replace("{port}", str(PORT))


def _measure(server_ns: str, client_ns: str, address: str, megabytes: int, trials: int) -> tuple[float, float]:
    server = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{server_ns}", sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        client = ["nsenter", f"--net=/run/netns/{client_ns}", sys.executable, "-c", CLIENT, address]
        rates = [float(subprocess.check_output([*client, "t", str(megabytes)], text=True)) for _ in range(trials)]
        rtts = [float(subprocess.check_output([*client, "r", "500"], text=True)) for _ in range(trials)]
        return statistics.median(rates), statistics.median(rtts)
    finally:
        server.kill()
        server.wait()


def _reachable(client_ns: str, address: str, deadline: float) -> bool:
    probe = f"import socket; socket.create_connection(('{address}', {PORT}), timeout=0.5).close()"
    while time.monotonic() < deadline:
        if sh("nsenter", f"--net=/run/netns/{client_ns}", sys.executable, "-c", probe, check=False).returncode == 0:
            return True
        time.sleep(0.02)
    return False


def _segment_up(lab: Lab, hub: HubRunner, hosts: dict, vni: int, *, direct: bool) -> tuple[dict[str, str], float]:
    """Allocate segment vni on a and b (with direct peers or relay only); return the namespaces and seconds to
    a TCP connection from a's namespace to b's."""
    addresses = {role: hosts[role].underlay.config.address for role in "ab"}
    endpoints = hub.endpoints()
    names = ((f"worker-{vni}0", f"10.128.{vni}.10"), (f"worker-{vni}1", f"10.128.{vni}.11"))
    specs = {}
    for role, other, own in (("a", "b", f"10.128.{vni}.10"), ("b", "a", f"10.128.{vni}.11")):
        peers = ((hosts[other].public_key, endpoints[hosts[other].public_key], addresses[other]),) if direct else ()
        specs[role] = SegmentSpec(vni, own, 24, MTU - 50, (addresses[other],), names, peers)
    ns = {role: PlacementNames.of(f"{lab.prefix}{role}", f"bench-{role}-{vni}").netns for role in "ab"}
    flows = [(addresses["a"], addresses["b"], vni), (addresses["b"], addresses["a"], vni)]
    start = time.monotonic()
    hub.apply(peers=[(hosts[r].public_key, addresses[r]) for r in "ab"], flows=[*hub.flows, *flows])
    hub.flows += flows
    threads = [
        threading.Thread(target=hosts[role].placement_up, args=(f"bench-{role}-{vni}", specs[role])) for role in "ab"
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The server in b's container namespace must exist before the probe: start it right after placement_up.
    listener = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{ns['b']}", sys.executable, "-c", SERVER], stdout=subprocess.PIPE
    )
    reachable = _reachable(ns["a"], f"10.128.{vni}.11", start + 30)
    seconds = time.monotonic() - start
    listener.kill()
    listener.wait()
    assert reachable, f"segment {vni} never became reachable"
    return ns, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=200)
    args = parser.parse_args()
    if missing := missing_prerequisites():
        print("missing: " + "; ".join(missing), file=sys.stderr)
        return 1
    lab = Lab().create(["hub", "a", "b", "va", "vb"])
    work = Path(tempfile.mkdtemp(prefix="overlay-bench-"))
    hosts: dict[str, OverlayHost] = {}
    hub = None
    try:
        # Baseline: a plain veth pair between two namespaces.
        sh("ip", "link", "add", "vethx", "type", "veth", "peer", "name", "vethy", "netns", lab.hosts["vb"],
           netns=lab.hosts["va"])  # fmt: skip
        sh("ip", "addr", "add", "10.9.9.1/24", "dev", "vethx", netns=lab.hosts["va"])
        sh("ip", "link", "set", "vethx", "up", netns=lab.hosts["va"])
        sh("ip", "addr", "add", "10.9.9.2/24", "dev", "vethy", netns=lab.hosts["vb"])
        sh("ip", "link", "set", "vethy", "up", netns=lab.hosts["vb"])

        hub = HubRunner(
            interface=f"{lab.prefix}hub", key_file=work / "hub.key", listen_port=51820, address="100.64.0.1",
            prefix_length=16, netns=f"/run/netns/{lab.hosts['hub']}",
        )  # fmt: skip
        hub.start()
        hub.flows = []
        addresses = {"a": "100.64.0.2", "b": "100.64.0.3"}
        for role in ("a", "b"):
            (work / role).mkdir()
            hosts[role] = OverlayHost(
                state_dir=work / role, prefix=f"{lab.prefix}{role}", net=Net(f"/run/netns/{lab.hosts[role]}")
            )
        # The hub knows the hosts' keys before they dial (as in production, where the node registered first).
        hub.apply(peers=[(hosts[r].public_key, addresses[r]) for r in "ab"], flows=[])
        for role in ("a", "b"):
            hosts[role].configure(
                UnderlayConfig(
                    address=addresses[role],
                    prefix_length=16,
                    hub_public_key=hub.public_key,
                    hub_endpoint=f"{lab.addresses['hub']}:51820",
                    hub_address="100.64.0.1",
                    network="100.64.0.0/16",
                    keepalive_seconds=5,
                    mtu=MTU,
                )
            )
        # Allocation happens long after an agent joined: wait for both hosts' handshakes with the hub.
        deadline = time.monotonic() + 30
        while not all(h.underlay.handshake_age() is not None for h in hosts.values()) or len(hub.endpoints()) < 2:
            assert time.monotonic() < deadline, "no handshake with the hub"
            time.sleep(0.05)

        ns_relay, reach_relay = _segment_up(lab, hub, hosts, 1, direct=False)
        base_rate, base_rtt = _measure(lab.hosts["vb"], lab.hosts["va"], "10.9.9.2", args.megabytes, args.trials)
        relay_rate, relay_rtt = _measure(ns_relay["b"], ns_relay["a"], "10.128.1.11", args.megabytes, args.trials)

        ns_direct, reach_direct = _segment_up(lab, hub, hosts, 2, direct=True)
        start = time.monotonic()
        while not all(h.paths().get(addresses[o]) == "direct" for h, o in ((hosts["a"], "b"), (hosts["b"], "a"))):
            assert time.monotonic() - start < 30, f"no direct path: {hosts['a'].paths()} {hosts['b'].paths()}"
            time.sleep(0.02)
        direct_after = reach_direct + time.monotonic() - start
        rate, rtt = _measure(ns_direct["b"], ns_direct["a"], "10.128.2.11", args.megabytes, args.trials)
        print(f"trials={args.trials} transfer={args.megabytes} MB, medians; WireGuard MTU {MTU}, VxLAN/eth0 {MTU - 50}")
        print(f"plain veth pair:             {base_rate:9.1f} MB/s   rtt {base_rtt:8.1f} us")
        print(f"VxLAN/WireGuard via the hub: {relay_rate:9.1f} MB/s   rtt {relay_rtt:8.1f} us   "
              f"ratio {relay_rate / base_rate:.3f}")  # fmt: skip
        print(f"VxLAN/WireGuard direct:      {rate:9.1f} MB/s   rtt {rtt:8.1f} us   ratio {rate / base_rate:.3f}")
        print(f"throughput ratio direct/veth: {rate / base_rate:.3f} (goal >= {GOAL_RATIO})   "
              f"direct/hub: {rate / relay_rate:.1f}x   rtt direct/veth: {rtt / base_rtt:.1f}x")  # fmt: skip
        print(
            f"allocation -> reachable segment: via the hub {reach_relay:.2f} s, with direct peers "
            f"{reach_direct:.2f} s (direct path up after {direct_after:.2f} s) (goal < {GOAL_REACHABLE_SECONDS:g} s)"
        )
        reach = max(reach_relay, reach_direct)
        return 0 if rate / base_rate >= GOAL_RATIO and reach < GOAL_REACHABLE_SECONDS else 2
    finally:
        for host in hosts.values():
            host.shutdown()
        if hub is not None:
            hub.stop()
        lab.destroy()


if __name__ == "__main__":
    sys.exit(main())
