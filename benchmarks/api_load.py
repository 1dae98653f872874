"""Load test of the web tier: real mode as the README starts it (`make serve`) against one daphne process.

Run: DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python -m benchmarks.api_load
(or `make bench`). On a throwaway database it seeds a provider with an online node and funded buyers with
API keys, then for each server in turn runs CLIENTS concurrent clients for DURATION seconds from this one
asyncio process (aiohttp, keep-alive): GET /api/v1/pools/, GET /api/v1/rentals/ and POST /api/v1/rentals/
with an Idempotency-Key (each client is its own buyer; each server gets fresh buyers). It prints, per
server: requests/s, p50/p99 of reads and of writes, errors (any non-2xx or transport failure), the most
PostgreSQL connections the server held (pg_stat_activity, sampled every 100 ms) against its bound
(processes x DATABASE_POOL_MAX_SIZE), and this process's CPU share; then the ratio of requests/s.
Both servers run with the same settings (DATABASE_POOL=1, DJANGO_DEBUG off) on the same database.

Goals (issue 12): 0 errors; p99 < 500 ms for reads and < 1 s for writes; connections <= pool x processes;
at least 3x the single daphne's requests/s.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import psycopg

from benchmarks._django import ROOT, setup_bench_database

CLIENTS = int(os.environ.get("API_LOAD_CLIENTS", 50))
DURATION = float(os.environ.get("API_LOAD_SECONDS", 30))
# Each server is loaded in SLICES turns of DURATION / SLICES seconds, alternating with the others, so that
# background load on a shared machine falls on all of them alike; each turn starts with WARMUP seconds unmeasured.
SLICES = int(os.environ.get("API_LOAD_SLICES", 3))
WARMUP = 2.0
ASGI = "janction.asgi:application"
POOL_MAX = int(os.environ.get("DATABASE_POOL_MAX_SIZE", 8))
# Shares of the mix: reads of the public pools, reads of the caller's rentals, rental submissions.
MIX = (("pools", 0.4), ("rentals", 0.3), ("submit", 0.3))
RENTAL = {
    "pool": "ada-12g",
    "vgpus": 1,
    "max_price_per_hour": "1.00",
    "max_duration_seconds": 600,
    "image": "docker.io/library/busybox:latest",
    "command": ["sh", "-c", "echo hello"],
}


@dataclass
class Result:
    name: str
    processes: int
    reads: list[float] = field(default_factory=list)
    writes: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    completed: int = 0  # every answered request, warm-up included (for the server CPU per request)
    max_connections: int = 0

    @property
    def rate(self) -> float:
        return (len(self.reads) + len(self.writes)) / self.seconds


def _seed(count: int) -> list[str]:
    """Create a provider with an online node and ``count`` funded buyers; return their API keys."""
    from django.db import connections

    from ledger.services import ledger_deposit
    from marketplace.services import api_key_create
    from tests.factories import UserFactory, online_node

    online_node(UserFactory(), name="bench-rig", vgpus=8, price=500_000)
    keys = []
    for _ in range(count):
        buyer = UserFactory()
        ledger_deposit(user_id=buyer.pk, currency="USDC", amount=10**12, idempotency_key=f"bench-{buyer.pk}")
        keys.append(api_key_create(user=buyer, name="load")[1])
    connections.close_all()
    return keys


def _process_tree_cpu(pid: int) -> float:
    """Return the CPU seconds (user + system) used so far by a process and its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            stat = open(f"/proc/{current}/stat").read()
            children = open(f"/proc/{current}/task/{current}/children").read().split()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
        pending.extend(int(child) for child in children)
    return total


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command[0]} exited: {process.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"{command} did not start listening in time")


def _stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _sample_connections(dsn: str, application_name: str, stop: threading.Event, result: Result) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            (count,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name]
            ).fetchone()
            result.max_connections = max(result.max_connections, count)
            time.sleep(0.1)


async def _client(session, base: str, key: str, until: float, measure_from: float, result: Result, rng) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    names, weights = zip(*MIX, strict=True)
    loop = asyncio.get_running_loop()
    while (started := loop.time()) < until:
        op = rng.choices(names, weights)[0]
        try:
            if op == "submit":
                request = session.post(
                    base + "/api/v1/rentals/", json=RENTAL, headers={**headers, "Idempotency-Key": str(uuid.uuid4())}
                )
            else:
                request = session.get(
                    base + ("/api/v1/pools/" if op == "pools" else "/api/v1/rentals/"), headers=headers
                )
            async with request as response:
                await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as error:
            status = type(error).__name__
        elapsed = loop.time() - started
        result.completed += 1
        if started < measure_from:
            continue
        if isinstance(status, int) and 200 <= status < 300:
            (result.writes if op == "submit" else result.reads).append(elapsed)
        else:
            label = f"{op} {status}"
            result.errors[label] = result.errors.get(label, 0) + 1


async def _load(base: str, keys: list[str], result: Result, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + WARMUP
    until = measure_from + seconds
    connector = aiohttp.TCPConnector(limit=len(keys))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(
            *(_client(session, base, key, until, measure_from, result, random.Random(i)) for i, key in enumerate(keys))
        )
        after = resource.getrusage(resource.RUSAGE_SELF)
    result.seconds += seconds
    result.cpu_seconds += (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)


@dataclass
class Server:
    name: str
    command: list[str]
    processes: int
    env: dict[str, str]
    port: int
    keys: list[str]
    result: Result | None = None
    process: subprocess.Popen | None = None


def _run_all(servers: list[Server], dsn: str) -> list[Result]:
    """Start every server, then load them in turn, SLICES times each, so background load hits all alike."""
    stop = threading.Event()
    samplers = []
    try:
        for server in servers:
            server.result = Result(name=server.name, processes=server.processes)
            server.process = _start(server.command, server.env, server.port)
            sampler = threading.Thread(
                target=_sample_connections,
                args=(dsn, server.env["DATABASE_APPLICATION_NAME"], stop, server.result),
                daemon=True,
            )
            sampler.start()
            samplers.append(sampler)
        for index in range(SLICES):
            for server in servers:
                print(f"  turn {index + 1}/{SLICES}: {server.name}", flush=True)
                before = _process_tree_cpu(server.process.pid)
                asyncio.run(_load(f"http://127.0.0.1:{server.port}", server.keys, server.result, DURATION / SLICES))
                # Includes the warm-up, whose requests count in `completed`.
                server.result.server_cpu_seconds += _process_tree_cpu(server.process.pid) - before
    finally:
        stop.set()
        for sampler in samplers:
            sampler.join()
        for server in servers:
            if server.process is not None:
                _stop(server.process)
    return [server.result for server in servers]


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("inf")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(values: list[float], q: float) -> str:
    return f"{_quantile(values, q) * 1000:.0f}" if values else "-"


def _report(results: list[Result], load_before: float) -> None:
    print(
        f"\n{CLIENTS} clients, {DURATION:.0f} s measured per server in {SLICES} alternating turns "
        f"(each after {WARMUP:.0f} s unmeasured), mix {dict(MIX)}"
    )
    header = (
        f"{'server':<32} {'req/s':>6} {'read p50/p99 ms':>16} {'write p50/p99 ms':>17} {'errors':>6} "
        f"{'max PG conns (bound)':>20} {'server CPU ms/req':>17} {'server cores':>12} {'load CPU':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        bound = r.processes * POOL_MAX
        wall = r.seconds + SLICES * WARMUP
        print(
            f"{r.name:<32} {r.rate:>6.1f} {_ms(r.reads, 0.5) + '/' + _ms(r.reads, 0.99):>16} "
            f"{_ms(r.writes, 0.5) + '/' + _ms(r.writes, 0.99):>17} {sum(r.errors.values()):>6} "
            f"{f'{r.max_connections} ({bound})':>20} {1000 * r.server_cpu_seconds / max(r.completed, 1):>17.1f} "
            f"{r.server_cpu_seconds / wall:>12.2f} {100 * r.cpu_seconds / r.seconds:>7.0f}%"
        )
        if r.errors:
            print(f"{'':<32} errors: {r.errors}")
    baseline = results[0]
    for r in results[1:]:
        ratio = f"{r.rate / baseline.rate:.2f}x" if baseline.rate else "n/a"
        print(f"{r.name}: {ratio} the requests/s of {baseline.name} (measured)")
    # A projection, not a measurement: what each server could serve with a free core per Python process
    # (one process runs Django on one core at a time), from the CPU it spent per request here.
    for r in results:
        per_request = r.server_cpu_seconds / max(r.completed, 1)
        if per_request:
            print(
                f"{r.name}: {r.processes / per_request:.0f} req/s if each of its {r.processes} process(es) "
                "had a core to itself (projected from its CPU per request)"
            )
    real = results[-1]
    checks = [
        ("0 errors", not real.errors),
        ("read p99 < 500 ms", _quantile(real.reads, 0.99) < 0.5),
        ("write p99 < 1 s", _quantile(real.writes, 0.99) < 1.0),
        ("connections <= pool x processes", real.max_connections <= real.processes * POOL_MAX),
        (">= 3x the baseline's requests/s", bool(baseline.rate) and real.rate >= 3 * baseline.rate),
    ]
    print("goals for " + real.name + ": " + "; ".join(f"{goal}: {'met' if ok else 'NOT met'}" for goal, ok in checks))
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after (other work on the machine competes for the same cores)"
    )


def main() -> None:
    teardown = setup_bench_database("janction_api_bench")
    try:
        from django.conf import settings

        db = settings.DATABASES["default"]
        dsn = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        workers = int(os.environ.get("WEB_WORKERS") or os.cpu_count() or 1)
        plans = [
            ("daphne, 1 process (baseline)", 1, lambda port: [sys.executable, "-m", "daphne", "-p", str(port), ASGI]),
            (f"make serve: granian, {workers} workers", workers, lambda port: ["bash", "scripts/serve.sh"]),
        ]
        keys = _seed(CLIENTS * len(plans))
        servers = []
        for index, (name, processes, command) in enumerate(plans):
            port = _free_port()
            env = {
                **os.environ,
                "DATABASE_URL": dsn.replace("postgresql://", "postgres://"),
                "DATABASE_POOL": "1",
                "DATABASE_POOL_MAX_SIZE": str(POOL_MAX),
                "DATABASE_APPLICATION_NAME": f"api-load-{index}",
                "DJANGO_DEBUG": "0",
                "PORT": str(port),
                "WEB_WORKERS": str(workers),
                "WEB_LOG_LEVEL": "warning",
                # 50 clients from one address: the per-address and per-key limits would answer 429.
                "JANCTION_RATE_LIMIT_IP": "",
                "JANCTION_RATE_LIMIT_KEY": "",
            }
            servers.append(
                Server(name, command(port), processes, env, port, keys[index * CLIENTS : (index + 1) * CLIENTS])
            )
        load_before = os.getloadavg()[0]
        _report(_run_all(servers, dsn), load_before)
    finally:
        teardown()


if __name__ == "__main__":
    main()
