"""What entering a container's network namespace costs per proxied connection (issue 15).

Run: .venv/bin/python -m benchmarks.netns_connect_bench [--trials 2000] [--megabytes 512]

One pyservice container (scripts/build-service-image.sh) runs with `--network none` under the podman
runtime. Baseline, in the same run: the same server run as a host process on the host's loopback.

  connect: median and p99 of open a connection + one small request/response (`GET /hello`) + close,
           through Runtime.open_connection (the cached path: setns thread + connect) versus
           socket.create_connection to the host process;
  first:   the first open_connection of a placement (its process was cached when the container started);
  stream:  MB/s of `GET /bytes?n=...` read through each socket (the same loopback kind of path).

The ratio printed is container / host: how much the namespace hop adds.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.runtime.base import PlacementSpec  # noqa: E402
from agent.runtime.podman import PodmanRuntime  # noqa: E402
from agent.slicing import ContainerGpuSettings  # noqa: E402

SERVER = REPO / "scripts" / "images" / "pyservice" / "server.py"
FAKE_GPU = ContainerGpuSettings({}, (), fake=True, uses_mps=False)


class _Events:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def on_log(self, line) -> None:
        self.lines.append(line.text)

    def on_state(self, change) -> None:
        pass


def _hello(sock: socket.socket) -> None:
    with sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        while sock.recv(65536):
            pass


def _stream(sock: socket.socket, count: int) -> float:
    started = time.perf_counter()
    with sock:
        sock.sendall(f"GET /bytes?n={count} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
        received = 0
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    elapsed = time.perf_counter() - started
    assert received >= count, (received, count)
    return count / elapsed / 1e6


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--megabytes", type=int, default=512)
    args = parser.parse_args()
    image = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-service-image.sh")], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    host_port = 18000 + os.getpid() % 1000
    host = subprocess.Popen(
        [sys.executable, str(SERVER)], env={**os.environ, "PORT": str(host_port), "PYSERVICE_HOST": "127.0.0.1"}
    )
    runtime = PodmanRuntime()
    placement_id = f"bench-netns-{uuid.uuid4().hex[:8]}"
    events = _Events()
    runtime.start(PlacementSpec(placement_id, image, (), {}, FAKE_GPU), events)
    try:
        deadline = time.monotonic() + 60
        while not any("listening" in line for line in events.lines):
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.05)
        first_started = time.perf_counter()
        _hello(runtime.open_connection(placement_id, 8000, 5))
        first = time.perf_counter() - first_started
        while True:
            try:
                _hello(socket.create_connection(("127.0.0.1", host_port), timeout=5))
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
        container, direct = [], []
        for _ in range(args.trials):
            started = time.perf_counter()
            _hello(runtime.open_connection(placement_id, 8000, 5))
            container.append(time.perf_counter() - started)
            started = time.perf_counter()
            _hello(socket.create_connection(("127.0.0.1", host_port), timeout=5))
            direct.append(time.perf_counter() - started)
        count = args.megabytes * 1_000_000
        stream_container = _stream(runtime.open_connection(placement_id, 8000, 5), count)
        stream_direct = _stream(socket.create_connection(("127.0.0.1", host_port), timeout=5), count)
    finally:
        runtime.remove(placement_id)
        host.terminate()
        host.wait()
    ms = 1000
    print(f"trials: {args.trials}, stream: {args.megabytes} MB")
    for name, values in (("container (open_connection)", container), ("host loopback (baseline)", direct)):
        print(f"connect+GET /hello {name}: median {statistics.median(values) * ms:.3f} ms, "
              f"p99 {_percentile(values, 0.99) * ms:.3f} ms")  # fmt: skip
    print(f"ratio container/host median: {statistics.median(container) / statistics.median(direct):.2f}x, "
          f"added median {(statistics.median(container) - statistics.median(direct)) * ms:.3f} ms")  # fmt: skip
    print(f"first open_connection of the placement (+ GET /hello): {first * ms:.1f} ms")
    print(f"stream: container {stream_container:.0f} MB/s, host {stream_direct:.0f} MB/s, "
          f"ratio {stream_container / stream_direct:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
