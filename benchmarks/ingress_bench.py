"""Service endpoint overhead: small requests and streaming through the ingress and a tunnel, against direct.

Run: .venv/bin/python -m benchmarks.ingress_bench [--seconds 8] [--connections 16] [--stream-mb 256]

Processes on this machine, as in production but without the container: a small asyncio HTTP/1.1 server (the
"container": keep-alive, `GET /` answers 2 bytes, `GET /bytes?n=N` streams N bytes in 64 KiB writes); the agent's
tunnel side (`agent.tunnel.TunnelManager`, its own process, mutual TLS with a node certificate) whose
open_connection reaches that server on the loopback (the namespace hop of the real runtimes is measured apart by
`benchmarks/netns_connect_bench.py`); the ingress (`marketplace.svc.ingress.server.Ingress`) in this process,
with a real service rental in a throwaway PostgreSQL database; and the load generator (its own process:
keep-alive connections sending `GET` back to back).

Printed, in the same run: requests/s with --connections keep-alive connections, p50/p99 latency of one
connection's sequential requests, each direct and through the endpoint, their ratio and the added p50; and the
MB/s of one --stream-mb download each way. Goals (issue 15): >= 0.5x the direct rate, added p50 < 2 ms,
streaming >= 50 MB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import time

API_KEY_HEADER = "Authorization"


# -- the "container" -------------------------------------------------------------------------------------------


def _serve_direct(port_queue) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1]
                if target.startswith(b"/bytes"):
                    n = int(target.split(b"n=")[1])
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                    chunk = b"x" * 65536
                    while n > 0:
                        writer.write(chunk[: min(n, len(chunk))])
                        n -= len(chunk)
                        await writer.drain()
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


# -- the agent's side -----------------------------------------------------------------------------------------


def _run_agent(key_pem, cert_pem, ca_pem, placement_id, address, direct_port, pool_size, ready) -> None:
    from agent.identity import mutual_tls_credentials
    from agent.tunnel import ServicePort, TunnelManager

    class LoopbackRuntime:
        def open_connection(self, placement_id: str, container_port: int, timeout: float) -> socket.socket:
            return socket.create_connection(("127.0.0.1", direct_port), timeout=timeout)

    credentials = mutual_tls_credentials(key_pem=key_pem, certificate_pem=cert_pem, trusted_ca_pem=ca_pem)
    tunnels = TunnelManager(runtime=LoopbackRuntime(), credentials=credentials, pool_size=pool_size)
    tunnels.open(placement_id, [ServicePort("api", 8000)], [address], pool_size)
    ready.set()
    while True:
        time.sleep(3600)


# -- the load generator ---------------------------------------------------------------------------------------


def _load(port: int, path: str, headers: str, connections: int, seconds: float, sequential: bool, out) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n{headers}\r\n".encode()

    async def one(latencies: list[float], deadline: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            chunked = False
            for line in head.split(b"\r\n"):
                lower = line.lower()
                if lower.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                elif lower.startswith(b"transfer-encoding:") and b"chunked" in lower:
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readline()).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:200])
            latencies.append(time.perf_counter() - started)
        writer.close()

    async def main() -> list[float]:
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(one(latencies, deadline) for _ in range(1 if sequential else connections)))
        return latencies

    out.put(asyncio.run(main()))


def run_load(port, path, headers, connections, seconds, sequential=False) -> list[float]:
    out = multiprocessing.Queue()
    process = multiprocessing.Process(target=_load, args=(port, path, headers, connections, seconds, sequential, out))
    process.start()
    latencies = out.get(timeout=seconds + 60)
    process.join()
    return latencies


def download(port: int, path: str, headers: dict, size: int) -> float:
    """Return MB/s of one download of `size` bytes."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    got = 0
    while chunk := response.read(1024 * 1024):
        got += len(chunk)
    elapsed = time.perf_counter() - started
    conn.close()
    if got != size:
        raise RuntimeError(f"downloaded {got} of {size} bytes")
    return size / elapsed / 1e6


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--stream-mb", type=int, default=256)
    args = parser.parse_args()

    from benchmarks._django import setup_bench_database

    name = f"janction_ingress_bench_{os.getpid()}"
    teardown = setup_bench_database(name)
    try:
        _bench(args)
    finally:
        from django.db import connection

        # The ingress's executor threads still hold connections to this throwaway database: end only those.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [connection.settings_dict["NAME"]],
            )
        teardown()


def _bench(args) -> None:
    from django.conf import settings

    from agent.identity import build_csr_pem, generate_private_key, private_key_pem
    from ledger.services import ledger_deposit
    from marketplace.rentals.models import RentalPlacement
    from marketplace.rentals.services import rental_submit
    from marketplace.services import api_key_create
    from marketplace.svc.ingress.server import Ingress
    from nodes.ca import ca_generate, ca_key_pem, platform_ca
    from nodes.models import Node
    from pricing.services import market_round_run
    from tests.factories import UserFactory, online_node

    ca = ca_generate()
    settings.AGENT_CA_CERT_PEM, settings.AGENT_CA_KEY_PEM = ca.certificate_pem, ca_key_pem(ca).decode()
    settings.PRICING_DEFAULT_ASK = "0.50"
    settings.SERVICE_MAX_CONCURRENT_REQUESTS = 10_000
    pool_size = max(4, args.connections)

    ingress = Ingress(listen="127.0.0.1:0", tunnel_listen="127.0.0.1:0")
    ingress.start()
    settings.SERVICE_INGRESS_TUNNEL_ADDRESSES = [ingress.tunnel_address]
    settings.SERVICE_TUNNEL_POOL_SIZE = pool_size
    buyer = UserFactory()
    ledger_deposit(user_id=buyer.pk, currency="USDC", amount=10**9, idempotency_key="bench-fund")
    node = online_node(UserFactory(), name="bench-rig", vgpus=1, price=500_000)
    rental = rental_submit(
        owner=buyer,
        pool_name="ada-12g",
        vgpus=1,
        max_price_per_hour="2",
        max_duration_seconds=3600,
        image="docker.io/library/python:3.12",
        expose=[{"name": "api", "port": 8000}],
    )
    market_round_run(pool_id=rental.pool_id)
    placement = RentalPlacement.objects.get(rental=rental)
    key = generate_private_key()
    issued = platform_ca().issue_client_certificate(csr_pem=build_csr_pem(key, "bench"), node_id=node.pk)
    Node.objects.filter(pk=node.pk).update(certificate_serial=issued.serial, certificate_pem=issued.pem)
    _, api_key = api_key_create(user=buyer, name="bench")

    ports = multiprocessing.Queue()
    direct = multiprocessing.Process(target=_serve_direct, args=(ports,), daemon=True)
    direct.start()
    direct_port = ports.get(timeout=30)
    ready = multiprocessing.Event()
    agent = multiprocessing.Process(
        target=_run_agent,
        args=(
            private_key_pem(key),
            issued.pem.encode(),
            ca.certificate_pem.encode(),
            placement.placement_id,
            ingress.tunnel_address,
            direct_port,
            pool_size,
            ready,
        ),
        daemon=True,
    )
    agent.start()
    ready.wait(30)
    deadline = time.monotonic() + 30
    while ingress.registry.idle_count(placement.placement_id, 8000) < pool_size and time.monotonic() < deadline:
        time.sleep(0.1)

    base = f"/svc/{rental.service_slug}/api"
    auth = f"{API_KEY_HEADER}: Bearer {api_key}\r\n"
    try:
        run_load(ingress.port, f"{base}/", auth, 4, 2.0)  # warm-up
        rows = []
        for name, port, path, headers in (
            ("direct", direct_port, "/", ""),
            ("endpoint", ingress.port, f"{base}/", auth),
        ):
            concurrent = run_load(port, path, headers, args.connections, args.seconds)
            sequential = run_load(port, path, headers, 1, args.seconds / 2, sequential=True)
            rows.append(
                (
                    name,
                    len(concurrent) / args.seconds,
                    statistics.median(sequential) * 1000,
                    percentile(sequential, 0.99) * 1000,
                )
            )
        size = args.stream_mb * 1024 * 1024
        stream_direct = download(direct_port, f"/bytes?n={size}", {}, size)
        stream_endpoint = download(ingress.port, f"{base}/bytes?n={size}", {"Authorization": f"Bearer {api_key}"}, size)
    finally:
        agent.terminate()
        direct.terminate()
        ingress.stop()

    print(f"small GET, {args.connections} keep-alive connections for {args.seconds:g} s; latency of one connection")
    print(f"{'path':<10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, rate, p50, p99 in rows:
        print(f"{name:<10} {rate:>10.0f} {p50:>8.2f} {p99:>8.2f}")
    (_, direct_rate, direct_p50, _), (_, endpoint_rate, endpoint_p50, _) = rows
    print(f"rate ratio endpoint/direct: {endpoint_rate / direct_rate:.2f}x (goal >= 0.5x)")
    print(f"added p50: {endpoint_p50 - direct_p50:.2f} ms (goal < 2 ms)")
    print(
        f"streaming {args.stream_mb} MiB: direct {stream_direct:.0f} MB/s, "
        f"endpoint {stream_endpoint:.0f} MB/s (goal >= 50)"
    )


if __name__ == "__main__":
    main()
