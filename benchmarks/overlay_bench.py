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
        addresses = {"a": "100.64.0.2", "b": "100.64.0.3"}
        for role in ("a", "b"):
            (work / role).mkdir()
            hosts[role] = OverlayHost(
                state_dir=work / role, prefix=f"{lab.prefix}{role}", net=Net(f"/run/netns/{lab.hosts[role]}")
            )
            hosts[role].configure(
                UnderlayConfig(
                    address=addresses[role],
                    prefix_length=16,
                    hub_public_key=hub.public_key,
                    hub_endpoint=f"{lab.addresses['hub']}:51820",
                    hub_address="100.64.0.1",
                    network="100.64.0.0/16",
                    keepalive_seconds=5,
                )
            )
        peers = [(hosts[r].public_key, addresses[r]) for r in ("a", "b")]
        hub.apply(peers=peers, flows=[])
        names = (("worker-0", "10.128.1.10"), ("worker-1", "10.128.1.11"))
        specs = {
            "a": SegmentSpec(1, "10.128.1.10", 24, 1370, ("100.64.0.3",), names),
            "b": SegmentSpec(1, "10.128.1.11", 24, 1370, ("100.64.0.2",), names),
        }
        ns = {role: PlacementNames.of(f"{lab.prefix}{role}", f"bench-{role}").netns for role in ("a", "b")}
        # The server in b's container namespace must exist before the probe: start it right after placement_up.
        start = time.monotonic()
        hub.apply(peers=peers, flows=[("100.64.0.2", "100.64.0.3", 1), ("100.64.0.3", "100.64.0.2", 1)])
        threads = [
            threading.Thread(target=hosts[role].placement_up, args=(f"bench-{role}", specs[role])) for role in "ab"
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        listener = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{ns['b']}", sys.executable, "-c", SERVER], stdout=subprocess.PIPE
        )
        reachable = _reachable(ns["a"], "10.128.1.11", start + 30)
        reach_seconds = time.monotonic() - start
        listener.kill()
        listener.wait()
        assert reachable, "the segment never became reachable"

        base_rate, base_rtt = _measure(lab.hosts["vb"], lab.hosts["va"], "10.9.9.2", args.megabytes, args.trials)
        rate, rtt = _measure(ns["b"], ns["a"], "10.128.1.11", args.megabytes, args.trials)
        ratio = rate / base_rate
        print(f"trials={args.trials} transfer={args.megabytes} MB, medians")
        print(f"plain veth pair:          {base_rate:9.1f} MB/s   rtt {base_rtt:8.1f} us")
        print(f"VxLAN over WireGuard/hub: {rate:9.1f} MB/s   rtt {rtt:8.1f} us")
        print(f"throughput ratio: {ratio:.3f} (goal >= {GOAL_RATIO})   rtt ratio: {rtt / base_rtt:.1f}x")
        print(f"allocation -> reachable segment: {reach_seconds:.2f} s (goal < {GOAL_REACHABLE_SECONDS:g} s)")
        return 0 if ratio >= GOAL_RATIO and reach_seconds < GOAL_REACHABLE_SECONDS else 2
    finally:
        for host in hosts.values():
            host.shutdown()
        if hub is not None:
            hub.stop()
        lab.destroy()


if __name__ == "__main__":
    sys.exit(main())
