"""Agent gateway heartbeat capacity: simulated agents over mutual TLS, ramped until p99 latency passes 250 ms.

Run: DATABASE_URL=postgres://... .venv/bin/python -m benchmarks.gateway_bench [--steps 250,500,1000] [--duration 15]
     [--adversarial 0.01]
Node loss: ... -m benchmarks.gateway_bench --node-loss 3 starts 2 x 3 real agents (`python -m agent`, fake
GPUs, default heartbeat interval) against the gateway with the default grace, sweep and flush settings,
then kills three with SIGKILL and stops three with SIGSTOP (a hung host) at random moments, and prints
each one's time from the signal to "offline" against the worst case the settings guarantee.

The real gateway (`nodes.gateway.server.Gateway`, default settings except the stream cap) runs in this
process on 127.0.0.1; N enrolled nodes (client certificates issued directly by the platform CA) are
simulated by `--clients` other processes, each hosting many agents on their own gRPC channels (one TLS
connection and one Connect stream each) on an asyncio loop. Every agent sends Hello, then a Heartbeat
every second at a random phase.

Latency: the gateway-side handling latency of one heartbeat, from the agent stamping `sent_at_ms`
(Unix ms, just before it writes the message to its stream) to the gateway's reader thread converting
it for the in-memory HeartbeatBuffer (the last step before the batcher; the database write is batched
every AGENT_HEARTBEAT_FLUSH_SECONDS, off this path, and its duration is shown separately). It covers
the client's gRPC send, TLS, the gateway's gRPC receive queue and its reader thread getting the GIL.
Both ends share one clock; `sent_at_ms` has 1 ms resolution. Messages/s is what the gateway handled.

A step fails when its p99 exceeds 250 ms, when the gateway handles under 95% of N heartbeats/s,
when the clients fall more than 250 ms (p99) behind their schedule, or when not all N streams are up
within the connect timeout. Clients and gateway share this machine's cores, as does PostgreSQL.
Columns: "lag p99" is how late the clients sent against their schedule; "flush max" the longest
batched heartbeat write; "gw CPU" / "cl CPU" the CPU time of the gateway process / all client
processes per wall-clock second (100% = one core).

Adversarial mix (`--adversarial 0.01`): that share of the N agents misbehave, in turn one of
"flood" (heartbeats as fast as the client can write), "bad" (out-of-range telemetry, 4e9 mW, and usage
reports for placements they were never sent, five times a second) and "silent" (Connect streams that
never send Hello, as many as the certificate is allowed, reopened when closed). Each reconnects one
second after the gateway ends its stream. Latency, the handled rate and the verdict count honest agents
only; a step also fails when any honest node was marked offline. The columns "strikes", "dropped" and
"refused" are the gateway's counts of bad messages, rate-limited messages and refused streams.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import resource
import time
from dataclasses import dataclass

import grpc

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.protocol.gen.janction.agent.v1.agent_pb2_grpc import AgentGatewayStub

P99_LIMIT_MS = 250.0
MIN_HANDLED_SHARE = 0.95
HEARTBEAT_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 120.0
SETTLE_SECONDS = 3.0
REPLY_TIMEOUT_SECONDS = 60.0
POOL_NAME = "ada-24g"
GPU_MEMORY = 24 * 1024**3
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


MISBEHAVIOURS = ("flood", "bad", "silent")


@dataclass(frozen=True)
class AgentIdentity:
    """What one simulated agent needs: its node id, key and certificate (PEM), and how it behaves."""

    node_id: int
    key_pem: bytes
    certificate_pem: bytes
    role: str = "honest"


# -- simulated agents (client processes; no Django here) -----------------------------------------------------


def _hello(node_id: int) -> pb.AgentMessage:
    uuid = f"GPU-bench-{node_id:08d}"
    return pb.AgentMessage(
        hello=pb.Hello(
            agent_version="bench",
            runtime="sandbox",
            hostname=f"bench-{node_id}",
            gpus=[
                pb.Gpu(
                    index=0,
                    uuid=uuid,
                    name="NVIDIA GeForce RTX 4090",
                    memory_bytes=GPU_MEMORY,
                    compute_capability="8.9",
                    architecture="ada",
                    fake=True,
                )
            ],
            vgpus=[
                pb.VGpu(
                    local_id="0:0",
                    gpu_uuid=uuid,
                    memory_bytes=GPU_MEMORY,
                    compute_share_percent=100,
                    pool=POOL_NAME,
                    enforcement="whole",
                    fake=True,
                )
            ],
        )
    )


def _heartbeat(node_id: int) -> pb.AgentMessage:
    sample = pb.GpuSample(
        index=0,
        uuid=f"GPU-bench-{node_id:08d}",
        utilization_percent=random.randint(0, 100),
        memory_used_bytes=random.randint(0, GPU_MEMORY),
        temperature_celsius=random.randint(30, 80),
        power_milliwatts=random.randint(20_000, 450_000),
        fake=True,
    )
    return pb.AgentMessage(heartbeat=pb.Heartbeat(sent_at_ms=int(time.time() * 1000), gpus=[sample]))


class SimulatedAgents:
    """Many agents on one asyncio loop, each with its own mutual-TLS channel and Connect stream."""

    def __init__(self, address: str, ca_pem: bytes) -> None:
        self._address = address
        self._ca_pem = ca_pem
        self._tasks: list[asyncio.Task] = []
        self._channels: list[grpc.aio.Channel] = []
        self.sent = 0
        self.errors = 0
        self.lags_ms: list[float] = []

    def add(self, identities: list[AgentIdentity]) -> None:
        """Start one agent per identity."""
        for identity in identities:
            self._tasks.append(asyncio.ensure_future(self._run(identity)))

    async def _run(self, identity: AgentIdentity) -> None:
        loop = asyncio.get_running_loop()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self._ca_pem, private_key=identity.key_pem, certificate_chain=identity.certificate_pem
        )
        channel = grpc.aio.secure_channel(self._address, credentials, options=CHANNEL_OPTIONS)
        self._channels.append(channel)
        if identity.role != "honest":
            await self._misbehave(identity, AgentGatewayStub(channel))
            return
        try:
            call = AgentGatewayStub(channel).Connect()
            await call.write(_hello(identity.node_id))
            due = loop.time() + random.random() * HEARTBEAT_SECONDS
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                self.lags_ms.append((loop.time() - due) * 1000)
                await call.write(_heartbeat(identity.node_id))
                self.sent += 1
                due += HEARTBEAT_SECONDS
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1

    async def _misbehave(self, identity: AgentIdentity, stub: AgentGatewayStub) -> None:
        """Misbehave in the identity's way, reconnecting a second after each end of stream, until cancelled."""
        while True:
            try:
                if identity.role == "silent":
                    calls = [stub.Connect() for _ in range(3)]
                    await asyncio.gather(*(call.wait_for_connection() for call in calls), return_exceptions=True)
                    await asyncio.gather(*(call.code() for call in calls), return_exceptions=True)
                    continue
                call = stub.Connect()
                await call.write(_hello(identity.node_id))
                while True:
                    if identity.role == "flood":
                        await call.write(pb.AgentMessage(heartbeat=pb.Heartbeat()))
                        await asyncio.sleep(0.002)
                    else:
                        sample = pb.GpuSample(index=0, power_milliwatts=4_000_000_000, temperature_celsius=4_000_000)
                        await call.write(pb.AgentMessage(heartbeat=pb.Heartbeat(gpus=[sample])))
                        report = pb.UsageReport(
                            placement_id="never-sent", seq=2**63, interval_start_ms=1, interval_end_ms=2, vgpu_count=1
                        )
                        await call.write(pb.AgentMessage(usage_report=report))
                        await asyncio.sleep(0.2)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(1.0)

    def take_stats(self) -> dict:
        """Return what was sent since the last call, with this process's CPU time."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        lags, self.lags_ms = self.lags_ms, []
        sent, self.sent = self.sent, 0
        return {"sent": sent, "lags_ms": lags, "errors": self.errors, "cpu_s": usage.ru_utime + usage.ru_stime}

    async def close(self) -> None:
        """Cancel every agent and close every channel."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(channel.close(grace=None) for channel in self._channels), return_exceptions=True)


def _raise_open_file_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve_commands(address: str, ca_pem: bytes, commands, replies) -> None:
    loop = asyncio.get_running_loop()
    agents = SimulatedAgents(address, ca_pem)
    try:
        while True:
            kind, payload = await loop.run_in_executor(None, commands.get)
            if kind == "add":
                agents.add(payload)
            elif kind == "stats":
                replies.put(agents.take_stats())
            else:
                return
    finally:
        await agents.close()


def client_process(address: str, ca_pem: bytes, commands, replies) -> None:
    """Host simulated agents until told to stop (the entry point of each client process)."""
    _raise_open_file_limit()
    asyncio.run(_serve_commands(address, ca_pem, commands, replies))


# -- the gateway side (this process) ---------------------------------------------------------------------------


class HeartbeatProbe:
    """Wraps the gateway's heartbeat conversion to record each honest heartbeat's handling latency."""

    def __init__(self, convert_heartbeat) -> None:
        self._convert = convert_heartbeat
        self.latencies_ms: list[float] = []
        self.misbehaving: set[int] = set()

    def __call__(self, *, heartbeat: pb.Heartbeat, node_id: int, **kwargs):
        """Record now minus sent_at_ms (honest agents only), then convert as the gateway does."""
        if node_id not in self.misbehaving:
            self.latencies_ms.append(time.time() * 1000 - heartbeat.sent_at_ms)
        return self._convert(heartbeat=heartbeat, node_id=node_id, **kwargs)

    def take(self) -> list[float]:
        """Return the latencies recorded since the last call."""
        taken, self.latencies_ms = self.latencies_ms, []
        return taken


class FlushTimer:
    """Wraps HeartbeatBuffer.flush to record how long each batched database write takes."""

    def __init__(self, flush) -> None:
        self._flush = flush
        self.durations_ms: list[float] = []

    def __call__(self) -> int:
        """Flush and record the duration."""
        started = time.perf_counter()
        try:
            return self._flush()
        finally:
            self.durations_ms.append((time.perf_counter() - started) * 1000)

    def take(self) -> list[float]:
        """Return the durations recorded since the last call."""
        taken, self.durations_ms = self.durations_ms, []
        return taken


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _create_identities(owner, start: int, count: int, adversarial: float = 0.0) -> list[AgentIdentity]:
    """Create `count` enrolled nodes with certificates issued by the platform CA; a share of them misbehave."""
    from django.utils import timezone

    from agent.identity import build_csr_pem, generate_private_key, private_key_pem
    from nodes.ca import platform_ca
    from nodes.models import Node

    ca = platform_ca()
    nodes = Node.objects.bulk_create([Node(owner=owner, name=f"bench-{start + n}") for n in range(count)])
    identities = []
    now = timezone.now()
    every = round(1 / adversarial) if adversarial > 0 else 0
    for number, node in enumerate(nodes, start=start):
        key = generate_private_key()
        issued = ca.issue_client_certificate(csr_pem=build_csr_pem(key, node.name), node_id=node.pk)
        node.enrolled_at, node.certificate_serial, node.certificate_pem = now, issued.serial, issued.pem
        role = (
            MISBEHAVIOURS[(number // every) % len(MISBEHAVIOURS)] if every and number % every == every - 1 else "honest"
        )
        identities.append(AgentIdentity(node.pk, private_key_pem(key), issued.pem.encode(), role))
    Node.objects.bulk_update(nodes, ["enrolled_at", "certificate_serial", "certificate_pem"], batch_size=500)
    return identities


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _client_stats(clients) -> dict:
    for commands, _, _ in clients:
        commands.put(("stats", None))
    merged = {"sent": 0, "lags_ms": [], "errors": 0, "cpu_s": 0.0}
    for _, replies, _ in clients:
        stats = replies.get(timeout=REPLY_TIMEOUT_SECONDS)
        merged["sent"] += stats["sent"]
        merged["lags_ms"] += stats["lags_ms"]
        merged["errors"] += stats["errors"]
        merged["cpu_s"] += stats["cpu_s"]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="250,500,1000,2000,3000,4000,5000", help="agent counts to try, in order")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per step")
    parser.add_argument("--clients", type=int, default=2, help="client processes hosting the agents")
    parser.add_argument(
        "--adversarial", type=float, default=0.0, help="share of misbehaving agents, e.g. 0.01 (default: none)"
    )
    parser.add_argument(
        "--node-loss", type=int, default=0, help="measure time-to-offline of this many killed and stopped agents"
    )
    args = parser.parse_args()
    steps = [int(step) for step in args.steps.split(",")]
    if steps != sorted(set(steps)) or steps[0] < 1:
        parser.error("--steps must be increasing positive numbers")

    from benchmarks._django import setup_bench_database

    _raise_open_file_limit()
    teardown = setup_bench_database(os.environ.get("JANCTION_BENCH_DATABASE", "janction_gateway_bench"))
    try:
        if args.node_loss:
            node_loss(args.node_loss)
        else:
            run(steps, args.duration, args.clients, args.adversarial)
    finally:
        teardown()


def node_loss(count: int) -> None:
    """Kill `count` agents with SIGKILL and stop `count` with SIGSTOP; print each one's time to offline."""
    import signal
    import statistics
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from django.conf import settings

    from agent.config import build_parser
    from nodes.ca import ca_generate, ca_key_pem, platform_ca
    from nodes.gateway.server import Gateway, GatewayConfig
    from nodes.models import Node, NodeEvent, NodeState
    from nodes.services import node_create
    from tests.factories import UserFactory

    ca = ca_generate()
    settings.AGENT_CA_CERT_PEM, settings.AGENT_CA_KEY_PEM = ca.certificate_pem, ca_key_pem(ca).decode()
    settings.NODE_GATEWAY_START_GRACE_SECONDS = 1.0  # steady state from the start (default: 45 s)
    heartbeat = build_parser().get_default("heartbeat_interval")
    grace, sweep = settings.NODE_HEARTBEAT_GRACE_SECONDS, settings.NODE_OFFLINE_CHECK_INTERVAL_SECONDS
    flush = settings.AGENT_HEARTBEAT_FLUSH_SECONDS
    bound = heartbeat + grace + sweep + flush
    gateway = Gateway(GatewayConfig.from_settings(listen="127.0.0.1:0", enroll_listen="127.0.0.1:0"))
    gateway.start()
    root = Path(tempfile.mkdtemp(prefix="node-loss-"))
    (root / "ca.pem").write_bytes(platform_ca().certificate_pem.encode())
    owner = UserFactory()
    agents = []
    try:
        for number in range(2 * count):
            ticket = node_create(owner=owner, name=f"loss-{number}")
            log = (root / f"agent-{number}.log").open("wb")
            command = [
                *(sys.executable, "-m", "agent", "--gateway", f"127.0.0.1:{gateway.enroll_port}"),
                *("--state-dir", str(root / f"agent-{number}"), "--enroll-token", ticket.token),
                *("--fake-gpus", "RTX 4090:1", "--runtime", "sandbox", "--ca-cert", str(root / "ca.pem")),
            ]
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            agents.append((ticket.node.pk, process, "SIGKILL" if number < count else "SIGSTOP"))
        ids = [node_id for node_id, _, _ in agents]
        deadline = time.monotonic() + 120
        while Node.objects.filter(pk__in=ids, state=NodeState.ONLINE).count() < len(ids):
            if time.monotonic() > deadline:
                raise SystemExit(f"agents did not come online; see {root}")
            time.sleep(0.5)
        print(
            f"node loss: heartbeat {heartbeat:g} s (agent default) + grace {grace:g} s + sweep {sweep:g} s "
            f"+ flush {flush:g} s = worst case {bound:g} s"
        )
        time.sleep(2 * heartbeat)  # let every agent settle into its heartbeat rhythm
        signalled = {}
        for node_id, process, kind in random.sample(agents, len(agents)):
            time.sleep(random.uniform(0, heartbeat))  # a random moment in the heartbeat cycle
            process.send_signal(signal.SIGKILL if kind == "SIGKILL" else signal.SIGSTOP)
            signalled[node_id] = (kind, time.time())
        deadline = time.monotonic() + 3 * bound
        while time.monotonic() < deadline:
            if NodeEvent.objects.filter(node_id__in=ids, to_state=NodeState.OFFLINE).count() >= len(ids):
                break
            time.sleep(0.2)
        offline = dict(
            NodeEvent.objects.filter(node_id__in=ids, to_state=NodeState.OFFLINE).values_list("node_id", "at")
        )
        for kind in ("SIGKILL", "SIGSTOP"):
            times = [
                offline[node_id].timestamp() - at
                for node_id, (signal_kind, at) in signalled.items()
                if signal_kind == kind and node_id in offline
            ]
            missing = sum(1 for _, (k, _) in signalled.items() if k == kind) - len(times)
            listed = ", ".join(f"{t:.1f}" for t in sorted(times))
            print(
                f"{kind}: time to offline {listed} s; median {statistics.median(times):.1f} s, max {max(times):.1f} s"
                f"{f'; {missing} never went offline' if missing else ''} (bound {bound:g} s)"
            )
    finally:
        for _, process, _ in agents:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(timeout=10)
        gateway.stop(grace=0)


def run(steps: list[int], duration: float, client_count: int, adversarial: float = 0.0) -> None:
    from django.conf import settings

    from nodes.ca import ca_generate, ca_key_pem, platform_ca
    from nodes.gateway import convert
    from nodes.gateway.server import Gateway, GatewayConfig
    from nodes.models import NodeEvent, NodeState, Pool
    from tests.factories import UserFactory

    # Judge silence soon after the start, so the sweep really runs during the steps (default: 45 s).
    settings.NODE_GATEWAY_START_GRACE_SECONDS = 5.0
    ca = ca_generate()
    settings.AGENT_CA_CERT_PEM, settings.AGENT_CA_KEY_PEM = ca.certificate_pem, ca_key_pem(ca).decode()
    owner = UserFactory()
    Pool.objects.create(name=POOL_NAME, architecture="ada", memory_gib=24)

    probe = HeartbeatProbe(convert.node_heartbeat)
    convert.node_heartbeat = probe
    config = GatewayConfig.from_settings(listen="127.0.0.1:0", enroll_listen="127.0.0.1:0")
    # The default (1000) caps one gateway; silent agents hold a few streams each.
    config.max_streams = max(config.max_streams, steps[-1] + steps[-1] // 10 + 16)
    gateway = Gateway(config)
    gateway.start()
    flushes = FlushTimer(gateway.heartbeats.flush)
    gateway.heartbeats.flush = flushes

    context = multiprocessing.get_context("spawn")
    clients = []
    for _ in range(client_count):
        commands, replies = context.Queue(), context.Queue()
        process = context.Process(
            target=client_process,
            args=(f"127.0.0.1:{gateway.port}", platform_ca().certificate_pem.encode(), commands, replies),
            daemon=True,
        )
        process.start()
        clients.append((commands, replies, process))

    print(
        f"gateway on 127.0.0.1 (this process) + {client_count} client processes; {os.cpu_count()} cores shared "
        f"by gateway, clients and PostgreSQL; {duration:g} s per step; heartbeat every {HEARTBEAT_SECONDS:g} s/agent"
    )
    if adversarial:
        print(f"adversarial mix: {adversarial:.1%} of the agents misbehave ({', '.join(MISBEHAVIOURS)} in turn)")
    print(f"{'N':>6} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'lag p99':>8} "
          f"{'flush max':>9} {'gw CPU':>7} {'cl CPU':>7} "
          f"{'strikes':>8} {'dropped':>8} {'refused':>8}  verdict")  # fmt: skip
    sustained = 0
    connected = 0
    honest_ids: list[int] = []
    try:
        for n in steps:
            identities = _create_identities(owner, connected, n - connected, adversarial)
            probe.misbehaving |= {identity.node_id for identity in identities if identity.role != "honest"}
            honest_ids += [identity.node_id for identity in identities if identity.role == "honest"]
            for index, (commands, _, _) in enumerate(clients):
                commands.put(("add", identities[index::client_count]))
            deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
            honest = len(honest_ids)

            def honest_up() -> int:
                return len(set(gateway.dispatcher.connected()) - probe.misbehaving)

            while honest_up() < honest and time.monotonic() < deadline:
                time.sleep(0.25)
            streams = honest_up()
            connected = n
            if streams < honest:
                print(f"{n:>6}  only {streams} streams up after {CONNECT_TIMEOUT_SECONDS:g} s: gateway saturated")
                break
            time.sleep(SETTLE_SECONDS)
            probe.take()
            flushes.take()
            client_cpu_before = _client_stats(clients)["cpu_s"]
            cpu_before, started = _cpu_seconds(), time.monotonic()
            time.sleep(duration)
            latencies = probe.take()
            elapsed = time.monotonic() - started
            gateway_cpu = (_cpu_seconds() - cpu_before) / elapsed
            sent = _client_stats(clients)
            flush_max = max(flushes.take(), default=float("nan"))
            handled_rate = len(latencies) / elapsed
            guard = gateway.guard
            strikes, dropped, refused = guard.strikes, guard.dropped_messages, guard.refused_streams
            lost = NodeEvent.objects.filter(node_id__in=honest_ids, to_state=NodeState.OFFLINE).count()
            p50, p99 = _percentile(latencies, 0.50), _percentile(latencies, 0.99)
            lag_p99 = _percentile(sent["lags_ms"], 0.99)
            client_cpu = (sent["cpu_s"] - client_cpu_before) / elapsed
            problems = []
            if p99 > P99_LIMIT_MS:
                problems.append(f"p99 > {P99_LIMIT_MS:g} ms")
            if lost:
                problems.append(f"{lost} honest nodes marked offline")
            if handled_rate < MIN_HANDLED_SHARE * honest / HEARTBEAT_SECONDS:
                problems.append("gateway handles < 95% of heartbeats")
            if lag_p99 > P99_LIMIT_MS:
                problems.append("clients fall behind")
            if sent["errors"]:
                problems.append(f"{sent['errors']} streams failed")
            worst = max(latencies, default=float("nan"))
            print(
                f"{n:>6} {handled_rate:>8.0f} {p50:>8.1f} {p99:>8.1f} {worst:>8.1f} {lag_p99:>8.1f} "
                f"{flush_max:>7.0f}ms {gateway_cpu:>7.0%} {client_cpu:>7.0%} {strikes:>8} {dropped:>8} {refused:>8}"
                f"  {'; '.join(problems) or 'ok'}",
                flush=True,
            )
            if problems:
                break
            sustained = n
    finally:
        for commands, _, _ in clients:
            commands.put(("stop", None))
        for _, _, process in clients:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
        gateway.stop(grace=0)
    print(
        f"largest N sustained: {sustained} agents ({sustained / HEARTBEAT_SECONDS:.0f} heartbeats/s); goal >= 3,000/s"
    )


if __name__ == "__main__":
    main()
