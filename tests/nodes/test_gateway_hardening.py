"""The gateway believes only what the platform can check, and no single node can hurt the fleet.

Most tests drive a raw gRPC client (the test decides every message), since the real agent would not
send these messages; a provider can rewrite its agent and the protocol is public.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import grpc
import pytest
from django.db import connection
from django.utils import timezone
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.identity import load_private_key
from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from nodes.gateway.core import HeartbeatBuffer
from nodes.models import (
    GatewayClock,
    Gpu,
    Node,
    NodeCommand,
    NodeEvent,
    NodeFlag,
    NodePlacement,
    NodeState,
    PlacementLogLine,
    Pool,
    RevokedCertificate,
    UsageReport,
)
from nodes.services import (
    GpuSampleReport,
    NodeHeartbeat,
    PlacementStatusReport,
    node_ban,
    node_create,
    node_mark_stale_offline,
    node_send,
    node_transition,
    placement_status_record,
)
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import *  # noqa: F403
from tests.nodes.gateway_fixtures import enrolled_identity, gateway_ca_pem, mutual_stub, wait_until
from tests.nodes.test_gateway_security import RawStream, _report


def _hello(uuid: str = "GPU-x", *, fake: bool = True, name: str = "RTX 4090", placements=(), vgpus: int = 1):
    gpu = pb.Gpu(index=0, uuid=uuid, name=name, memory_bytes=24 * 2**30, architecture="ada", fake=fake)
    plan = [
        pb.VGpu(local_id=f"0:{n}", gpu_uuid=uuid, memory_bytes=24 * 2**30 // vgpus, pool="ada-24g", fake=fake)
        for n in range(vgpus)
    ]
    return pb.AgentMessage(
        hello=pb.Hello(agent_version="t", runtime="sandbox", gpus=[gpu], vgpus=plan, placements=list(placements))
    )


class Rig:
    """An enrolled node, its key and a raw stream that already sent Hello."""

    def __init__(self, gateway, tmp_path, name: str = "rig", hello: pb.AgentMessage | None = None):
        ticket = node_create(owner=UserFactory(), name=name)
        self.node = ticket.node
        self.store = enrolled_identity(gateway, ticket.token, tmp_path / name)
        self.key = load_private_key(self.store.key_path)
        self.channel, self.stub = mutual_stub(gateway, self.store)
        self.stream = RawStream(self.stub, timeout=180)
        self.stream.send(hello or _hello(f"GPU-{name}"))
        wait_until(lambda: Node.objects.get(pk=self.node.pk).state == NodeState.ONLINE, what=f"{name} online")
        # Heartbeats as an agent sends them, so a slow test never sees its node declared lost.
        self._quiet = threading.Event()
        threading.Thread(target=self._beat, daemon=True).start()

    def _beat(self) -> None:
        while not self._quiet.wait(0.5):
            self.stream.send(pb.AgentMessage(heartbeat=pb.Heartbeat()))

    def start(self, placement_id: str = "p-1", local_ids=("0:0",)) -> NodePlacement:
        start = {"placement_id": placement_id, "image": "busybox", "vgpu_local_ids": list(local_ids)}
        node_send(node_id=self.node.pk, message={"start_placement": start})
        wait_until(
            lambda: any(m.start_placement.placement_id == placement_id for m in self.stream.received),
            what="StartPlacement delivered",
        )
        return NodePlacement.objects.get(placement_id=placement_id)

    def send(self, **payload) -> None:
        self.stream.send(pb.AgentMessage(**payload))

    def close(self) -> None:
        self._quiet.set()
        self.stream.close()
        self.channel.close()


def _ms(moment) -> int:
    return int(moment.timestamp() * 1000)


def _nack_codes(stream: RawStream) -> list[str]:
    return [code for _, _, code in stream.nacks()]


# -- Item 4: one bad heartbeat costs only its sender -----------------------------------------------------


def test_an_out_of_range_heartbeat_costs_only_its_sender_and_never_poisons_the_flush(gateway, tmp_path):
    bad, good = Rig(gateway, tmp_path, "bad"), Rig(gateway, tmp_path, "good")
    good._quiet.set()  # its heartbeats are the test's
    poison = pb.GpuSample(index=0, utilization_percent=50, power_milliwatts=4_000_000_000)
    bad.send(heartbeat=pb.Heartbeat(gpus=[poison]))
    good.send(heartbeat=pb.Heartbeat(gpus=[pb.GpuSample(index=0, utilization_percent=42, power_milliwatts=300_000)]))

    wait_until(lambda: Gpu.objects.get(node=good.node).utilization_percent == 42, what="the good node's telemetry")
    assert Gpu.objects.get(node=bad.node).power_milliwatts is None  # the sample was dropped, never stored
    assert gateway.guard.strikes >= 1
    time.sleep(3 * 0.2)
    good.send(heartbeat=pb.Heartbeat(gpus=[pb.GpuSample(index=0, utilization_percent=43)]))
    wait_until(lambda: Gpu.objects.get(node=good.node).utilization_percent == 43, what="later flushes still work")
    assert set(Node.objects.values_list("state", flat=True)) == {NodeState.ONLINE}
    bad.close()
    good.close()


def test_a_row_its_column_cannot_hold_is_isolated_and_dropped_the_rest_of_the_batch_is_written(db, gateway_settings):
    from tests.nodes.test_gateway_services import _online_node

    nodes = [_online_node(f"r{n}") for n in range(5)]
    buffer = HeartbeatBuffer()
    moment = timezone.now()
    for number, (node, gpu_ids) in enumerate(nodes):
        power = 4_000_000_000 if number == 2 else 100_000  # bypasses the gateway's range check on purpose
        sample = GpuSampleReport(0, 10 + number, 2**30, 50, power, 1)
        buffer.add(NodeHeartbeat(node.pk, moment, {gpu_ids[0]: sample}))

    assert buffer.flush() == 4
    assert buffer.dropped == 1
    written = dict(Gpu.objects.filter(node__in=[n for n, _ in nodes]).values_list("node_id", "utilization_percent"))
    assert [written[node.pk] for node, _ in nodes] == [10, 11, None, 13, 14]
    assert buffer.flush() == 0  # the bad row is not retried forever


# -- Items 1 and 2: usage checked against the platform's records ------------------------------------------


def test_usage_outside_the_placements_life_is_refused_with_a_negative_ack_and_never_stored(gateway, tmp_path):
    rig = Rig(gateway, tmp_path)
    placement = rig.start()
    born = _ms(placement.created_at)
    now = int(time.time() * 1000)
    rig.send(usage_report=_report("p-1", 1, 1000, rig.key))  # [1000, 2000) ms
    backdated = _report("p-1", 2, 1_000_000_000_000, rig.key, length_ms=now - 1_000_000_000_000)
    rig.send(usage_report=backdated)  # [2001-09-09, now)
    rig.send(usage_report=_report("p-1", 3, born - 60_000, rig.key, length_ms=61_000))  # starts before it was sent
    rig.send(usage_report=_report("p-1", 4, born + 100, rig.key))  # inside its life
    wait_until(lambda: ("p-1", 4) in rig.stream.acks(), what="the honest report acked")
    assert _nack_codes(rig.stream) == ["usage_report_outside_placement"] * 3

    placement_status_record(
        node_id=rig.node.pk, status=PlacementStatusReport("p-1", "exited", 0, "", now)
    )  # the platform now holds it as ended
    later = int(time.time() * 1000) + 10_000
    rig.send(usage_report=_report("p-1", 5, later, rig.key))  # after its stop
    wait_until(lambda: len(rig.stream.nacks()) == 4, what="the late report refused")
    assert list(UsageReport.objects.values_list("seq", flat=True)) == [4]
    rig.close()


def test_hello_cannot_rewrite_the_vgpus_of_a_placement_nor_revive_an_exited_one(gateway, tmp_path):
    rig = Rig(gateway, tmp_path)
    placement = rig.start()
    inflated = pb.RunningPlacement(
        placement_id="p-1", state=pb.PLACEMENT_STATE_RUNNING, vgpu_local_ids=[f"0:{n}" for n in range(100)]
    )
    rig.send(hello=_hello("GPU-rig", placements=[inflated]).hello)
    wait_until(lambda: NodePlacement.objects.get(pk=placement.pk).state == "running", what="reattached")
    assert NodePlacement.objects.get(pk=placement.pk).vgpu_local_ids == ["0:0"]
    start = _ms(placement.created_at) + 100
    rig.send(usage_report=_report("p-1", 1, start, rig.key, vgpus=100))
    empty = pb.RunningPlacement(placement_id="p-1", state=pb.PLACEMENT_STATE_RUNNING, vgpu_local_ids=[])
    rig.send(hello=_hello("GPU-rig", placements=[empty]).hello)
    rig.send(usage_report=_report("p-1", 2, start + 1000, rig.key, vgpus=2_000_000_000))
    wait_until(lambda: len(rig.stream.nacks()) == 2, what="both inflated reports refused")
    assert _nack_codes(rig.stream) == ["usage_report_too_many_vgpus"] * 2

    rig.send(placement_status=pb.PlacementStatus(placement_id="p-1", state=pb.PLACEMENT_STATE_EXITED, exit_code=0))
    wait_until(lambda: NodePlacement.objects.get(pk=placement.pk).state == "exited", what="exited")
    rig.send(hello=_hello("GPU-rig", placements=[inflated]).hello)  # "it runs again"
    stop = wait_until(
        lambda: NodeCommand.objects.filter(node=rig.node, message__stop_placement__placement_id="p-1").first(),
        what="the revived placement told to stop",
    )
    assert stop is not None
    assert NodePlacement.objects.get(pk=placement.pk).state == "exited"
    assert not UsageReport.objects.exists()
    rig.close()


def test_placement_states_move_only_along_the_transition_table(db, gateway_settings):
    from tests.nodes.test_gateway_services import _online_node

    node, _ = _online_node()
    node_send(node_id=node.pk, message={"start_placement": {"placement_id": "p", "vgpu_local_ids": ["0:0"]}})

    def report(state: str) -> str:
        return placement_status_record(node_id=node.pk, status=PlacementStatusReport("p", state, None, "", 0)).state

    assert [report(s) for s in ("starting", "running", "paused", "running")] == [
        "starting",
        "running",
        "paused",
        "running",
    ]
    with pytest.raises(Exception, match="cannot become starting"):
        report("starting")
    assert report("exited") == "exited"
    assert report("running") == "exited"  # a final state is never undone
    assert NodePlacement.objects.get(placement_id="p").stopped_at is not None


def test_usage_over_time_the_platform_held_the_node_offline_is_refused(gateway, tmp_path):
    rig = Rig(gateway, tmp_path)
    placement = rig.start()
    # The platform held the node offline for a while (its heartbeats stopped), then it came back.
    node = Node.objects.get(pk=rig.node.pk)
    node_transition(node=node, to_state=NodeState.OFFLINE, reason="test")
    time.sleep(0.3)
    # The rig's next heartbeat may have brought it back already (then this changes nothing): the offline period
    # is from the test's offline event to the first online event after it, whichever wrote it.
    node_transition(node=Node.objects.get(pk=node.pk), to_state=NodeState.ONLINE, reason="test")
    offline = NodeEvent.objects.filter(node=node, to_state=NodeState.OFFLINE).latest("pk")
    online = NodeEvent.objects.filter(node=node, to_state=NodeState.ONLINE, pk__gt=offline.pk).earliest("pk")
    start = _ms(placement.created_at) + 10
    before = _report("p-1", 1, start, rig.key, length_ms=_ms(offline.at) - start)
    over = _report("p-1", 2, _ms(offline.at), rig.key, length_ms=_ms(online.at) - _ms(offline.at))
    rig.send(usage_report=before)
    rig.send(usage_report=over)
    wait_until(lambda: rig.stream.nacks() and rig.stream.acks(), what="one ack, one nack")
    assert _nack_codes(rig.stream) == ["usage_report_while_offline"]
    assert list(UsageReport.objects.values_list("seq", flat=True)) == [1]
    rig.close()


# -- Item 8: typed errors, negative acks, strikes, revocation ---------------------------------------------


def test_internal_errors_never_reach_the_client_and_bad_numbers_get_typed_answers(gateway, tmp_path):
    ticket = node_create(owner=UserFactory(), name="rig")
    store = enrolled_identity(gateway, ticket.token, tmp_path / "agent")
    channel, stub = mutual_stub(gateway, store)
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Connect(iter([_hello(name="N" * 200)]), timeout=5))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gpu.name is 200 characters long" in refused.value.details()
    assert "DataError" not in refused.value.details()
    channel.close()

    rig = Rig(gateway, tmp_path, "rig2")
    placement = rig.start()
    huge = pb.UsageReport(placement_id="p-1", seq=2**63, interval_start_ms=1, interval_end_ms=2, vgpu_count=1)
    huge.vgpu_milliseconds = 1
    rig.send(usage_report=huge)
    rig.send(usage_report=_report("p-1", 1, _ms(placement.created_at) + 10, rig.key))
    wait_until(lambda: rig.stream.acks(), what="the stream still works after the bad report")
    assert _nack_codes(rig.stream) == ["agent_message_invalid"]
    assert rig.stream.error is None
    rig.close()


def test_a_node_sending_too_many_bad_messages_is_disconnected_and_penalised(gateway, tmp_path):
    gateway.guard.bad_messages_max = 3
    rig = Rig(gateway, tmp_path)
    for _ in range(4):
        rig.send(heartbeat=pb.Heartbeat(gpus=[pb.GpuSample(index=0, temperature_celsius=4_000_000)]))
    failure = rig.stream.failure()
    assert failure.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Too many refused messages" in failure.details()
    again = RawStream(rig.stub)
    again.send(_hello("GPU-rig"))
    assert again.failure().code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    rig.close()


def test_a_banned_nodes_certificate_is_revoked_whatever_its_state_later(gateway, tmp_path):
    rig = Rig(gateway, tmp_path)
    node_ban(node_id=rig.node.pk, reason="sold fake GPUs")
    assert rig.stream.failure().code() == grpc.StatusCode.PERMISSION_DENIED  # its open stream ends too
    rig.close()
    node = Node.objects.get(pk=rig.node.pk)
    node_transition(node=node, to_state=NodeState.OFFLINE, reason="an operator lifted the quarantine")
    channel, stub = mutual_stub(gateway, rig.store)
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Connect(iter([_hello("GPU-rig")]), timeout=5))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in refused.value.details()
    channel.close()


def test_an_operators_quarantine_disconnects_the_agent_and_it_cannot_come_back(gateway, tmp_path):
    from nodes.operator import node_quarantine as operator_quarantine

    rig = Rig(gateway, tmp_path)
    operator_quarantine(node_id=rig.node.pk, reason="forged usage")
    failure = rig.stream.failure()  # its open stream ends at the gateway's next maintenance pass
    assert failure.code() == grpc.StatusCode.PERMISSION_DENIED and "quarantined" in failure.details()
    rig.close()
    assert not RevokedCertificate.objects.filter(node=rig.node).exists()  # not banned: release lets it return
    channel, stub = mutual_stub(gateway, rig.store)
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Connect(iter([_hello("GPU-rig")]), timeout=5))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED and "quarantined" in refused.value.details()
    channel.close()


def test_a_quarantined_agent_gets_its_stop_commands_before_the_gateway_ends_its_stream(gateway, tmp_path):
    """Found at merge time: quarantine stops what the agent still runs, and the disconnect must not beat the stops."""
    from django.db import transaction

    from nodes.operator import node_quarantine as operator_quarantine

    rig = Rig(gateway, tmp_path)
    rig.start("p-q")
    with transaction.atomic():
        operator_quarantine(node_id=rig.node.pk, reason="forged usage")
        node_send(node_id=rig.node.pk, message={"stop_placement": {"placement_id": "p-q"}})
    failure = rig.stream.failure()
    assert failure.code() == grpc.StatusCode.PERMISSION_DENIED and "quarantined" in failure.details()
    assert any(m.stop_placement.placement_id == "p-q" for m in rig.stream.received)  # delivered before the end
    rig.close()


# -- Item 5: separate limits, first-message deadline, per-certificate limits, log quotas -------------------


def test_a_stream_that_never_says_hello_is_closed_and_one_certificate_holds_few_streams(gateway, tmp_path):
    gateway.config.first_message_seconds = 0.5
    ticket = node_create(owner=UserFactory(), name="rig")
    store = enrolled_identity(gateway, ticket.token, tmp_path / "agent")
    channel, stub = mutual_stub(gateway, store)
    silent = RawStream(stub)
    assert silent.failure().code() == grpc.StatusCode.DEADLINE_EXCEEDED

    gateway.config.first_message_seconds = 30
    held = [RawStream(stub) for _ in range(gateway.guard.streams_per_certificate)]
    wait_until(lambda: sum(gateway.guard._streams.values()) == len(held), what="the silent streams counted")
    extra = RawStream(stub)
    assert extra.failure().code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for stream in held:
        stream.close()
    channel.close()


def test_unauthenticated_calls_cannot_take_the_slots_of_node_streams(gateway_settings, transactional_db, tmp_path):
    from nodes.gateway.server import Gateway, GatewayConfig

    gateway_settings.AGENT_GATEWAY_MAX_UNAUTHENTICATED = 3
    server = Gateway(GatewayConfig.from_settings(listen="127.0.0.1:0", enroll_listen="127.0.0.1:0"))
    server.start()
    ticket = node_create(owner=UserFactory(), name="rig")
    store = enrolled_identity(server, ticket.token, tmp_path / "rig")
    channel = grpc.secure_channel(f"127.0.0.1:{server.enroll_port}", grpc.ssl_channel_credentials(gateway_ca_pem()))
    health = health_pb2_grpc.HealthStub(channel)
    watches = [health.Watch(health_pb2.HealthCheckRequest(service="")) for _ in range(3)]
    try:
        for watch in watches:
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as refused:
            next(health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The enrollment port is full, and a node with its certificate still connects.
        node_channel, stub = mutual_stub(server, store)
        stream = RawStream(stub)
        stream.send(_hello("GPU-rig"))
        wait_until(lambda: Node.objects.get(pk=ticket.node.pk).state == NodeState.ONLINE, what="online")
        stream.close()
        node_channel.close()
    finally:
        for watch in watches:
            watch.cancel()
        channel.close()
        server.stop(grace=0)


def test_a_flood_is_rate_limited_and_log_lines_have_a_quota_per_placement(gateway, tmp_path, settings):
    settings.AGENT_LOG_LINES_PER_PLACEMENT = 10
    rig = Rig(gateway, tmp_path)
    rig.start()
    for chunk in range(3):
        rig.send(log_chunk=pb.LogChunk(placement_id="p-1", seq=1 + 5 * chunk, stream=1, lines=["x"] * 5))
    wait_until(lambda: NodePlacement.objects.get(placement_id="p-1").logs_truncated, what="the quota reached")
    assert PlacementLogLine.objects.count() == 10
    assert rig.stream.error is None  # a chatty workload is not an attack

    gateway.guard.messages_per_second, gateway.guard.burst = 1.0, 5
    gateway.guard.forget(rig.node.pk)
    for _ in range(200):
        rig.send(heartbeat=pb.Heartbeat())
    assert rig.stream.failure().code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert gateway.guard.dropped_messages > 0
    rig.close()


# -- Item 3: hardware claims are evidence --------------------------------------------------------------------


def test_a_gpu_uuid_belongs_to_one_node_and_fake_stays_fake(gateway, tmp_path):
    real = Rig(gateway, tmp_path, "real", hello=_hello("GPU-real-h100", fake=False))
    thief_ticket = node_create(owner=UserFactory(), name="thief")
    store = enrolled_identity(gateway, thief_ticket.token, tmp_path / "thief")
    channel, stub = mutual_stub(gateway, store)
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Connect(iter([_hello("GPU-real-h100", fake=False)]), timeout=5))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert NodeFlag.objects.get(node=thief_ticket.node).code == "gpu_uuid_claimed"
    assert Gpu.objects.filter(uuid="GPU-real-h100").count() == 1

    faker = Rig(gateway, tmp_path, "faker")  # declares fake GPUs
    faker.send(hello=_hello("GPU-faker", fake=False).hello)  # ... then claims they are real
    time.sleep(0.5)
    faker_node = Node.objects.get(pk=faker.node.pk)
    assert faker_node.has_fake_gpus and set(Gpu.objects.filter(node=faker_node).values_list("fake", flat=True)) == {
        True
    }
    for rig in (real, faker):
        rig.close()
    channel.close()


def test_hellos_are_bounded_and_pools_come_from_the_catalogue(gateway, tmp_path):
    ticket = node_create(owner=UserFactory(), name="rig")
    store = enrolled_identity(gateway, ticket.token, tmp_path / "agent")
    channel, stub = mutual_stub(gateway, store)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Connect(iter([_hello(vgpus=5000)]), timeout=10))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the number of vGPUs=5000" in refused.value.details()
    assert time.monotonic() - started < 5
    channel.close()

    odd = _hello("GPU-odd")
    odd.hello.vgpus[0].pool = "made-up-pool"
    rig = Rig(gateway, tmp_path, "odd", hello=odd)
    assert not Pool.objects.filter(name="made-up-pool").exists()
    rig.close()


# -- Item 6: the database goes away --------------------------------------------------------------------------


def test_every_loop_reconnects_after_the_database_dropped_its_connections(gateway, tmp_path):
    rig = Rig(gateway, tmp_path)
    rig.start("p-0")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    node_send(node_id=rig.node.pk, message={"ping": {"nonce": 7}})
    wait_until(lambda: any(m.ping.nonce == 7 for m in rig.stream.received), what="a command after the outage")
    rig.send(heartbeat=pb.Heartbeat(gpus=[pb.GpuSample(index=0, utilization_percent=77)]))
    wait_until(lambda: Gpu.objects.get(node=rig.node).utilization_percent == 77, what="heartbeats flushed again")
    rig.send(placement_status=pb.PlacementStatus(placement_id="p-0", state=pb.PLACEMENT_STATE_RUNNING))
    wait_until(lambda: NodePlacement.objects.get(placement_id="p-0").state == "running", what="status stored")
    assert rig.stream.error is None
    rig.close()


# -- Liveness ------------------------------------------------------------------------------------------------


def test_node_loss_is_at_most_30_seconds_by_construction_from_the_default_settings():
    from agent.config import build_parser
    from janction.settings import nodes as defaults

    heartbeat = build_parser().get_default("heartbeat_interval")
    worst = (
        heartbeat
        + defaults.NODE_HEARTBEAT_GRACE_SECONDS
        + defaults.NODE_OFFLINE_CHECK_INTERVAL_SECONDS
        + defaults.AGENT_HEARTBEAT_FLUSH_SECONDS
    )
    assert worst <= 30, f"{heartbeat} + grace + sweep + flush = {worst} s"
    # And no honest node is lost to a delayed flush: the grace outlasts two heartbeats and a flush.
    assert defaults.NODE_HEARTBEAT_GRACE_SECONDS > 2 * heartbeat + defaults.AGENT_HEARTBEAT_FLUSH_SECONDS


def test_nodes_are_judged_only_over_time_a_gateway_recorded(db, gateway_settings):
    from tests.nodes.test_gateway_services import _online_node

    gateway_settings.NODE_GATEWAY_START_GRACE_SECONDS = 30
    node, _ = _online_node()
    now = timezone.now()
    Node.objects.filter(pk=node.pk).update(last_seen_at=now - timedelta(seconds=60))
    # A gateway restarted 10 s ago: agents may still be in backoff.
    GatewayClock.objects.create(name="gateway", recording_since=now - timedelta(seconds=10), recorded_at=now)
    assert node_mark_stale_offline(now=now) == []
    # The gateway stopped recording (crashed, or its database is away): silence proves nothing.
    GatewayClock.objects.update(recording_since=now - timedelta(seconds=600), recorded_at=now - timedelta(seconds=60))
    assert node_mark_stale_offline(now=now) == []
    # Recording for longer than the start grace: the silent node is lost.
    GatewayClock.objects.update(recorded_at=now)
    assert node_mark_stale_offline(now=now) == [node.pk]


def _database_outage(on: bool) -> None:
    """Refuse (or allow again) every new connection to the test database and cut the open ones."""
    import psycopg

    params = connection.settings_dict
    name = params["NAME"]
    with psycopg.connect(
        host=params["HOST"], port=params["PORT"] or 5432, user=params["USER"], dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if on else "false"}')
        if not on:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
    if on:
        connection.close()  # ours was cut too; the next query reconnects


def test_streams_stay_up_while_the_database_is_away_and_nothing_is_acked_before_it_is_stored(gateway, tmp_path):
    rig = Rig(gateway, tmp_path)
    placement = rig.start()
    rig._quiet.set()  # this test sends its own heartbeats
    _database_outage(on=False)
    try:
        rig.send(usage_report=_report("p-1", 1, _ms(placement.created_at) + 10, rig.key))
        rig.send(placement_status=pb.PlacementStatus(placement_id="p-1", state=pb.PLACEMENT_STATE_RUNNING))
        for _ in range(15):  # 3 s without a database: longer than the 2 s heartbeat grace of these tests
            rig.send(heartbeat=pb.Heartbeat(gpus=[pb.GpuSample(index=0, utilization_percent=55)]))
            time.sleep(0.2)
        assert rig.stream.acks() == [] and rig.stream.error is None
    finally:
        _database_outage(on=True)
    wait_until(lambda: rig.stream.acks() == [("p-1", 1)], what="the report acked once stored")
    wait_until(lambda: NodePlacement.objects.get(pk=placement.pk).state == "running", what="the status stored")
    wait_until(lambda: Gpu.objects.get(node=rig.node).utilization_percent == 55, what="buffered heartbeats written")
    time.sleep(1.0)  # a few sweeps after the database came back
    assert not NodeEvent.objects.filter(node=rig.node, to_state=NodeState.OFFLINE).exists()
    assert rig.stream.error is None
    rig.close()


def test_usage_that_arrives_after_the_settlement_but_covers_time_before_it_is_charged_once(gateway, tmp_path):
    from marketplace.rentals.dispatch import rentals_sync
    from marketplace.rentals.metering import metering_run, owed
    from marketplace.rentals.services import rental_submit
    from pricing.services import market_round_run
    from tests.rentals.conftest import USDC, balance, fund, ledger_total

    rig = Rig(gateway, tmp_path)
    Node.objects.filter(pk=rig.node.pk).update(reserve_price_per_hour=400_000)
    buyer = UserFactory()
    fund(buyer, 50 * USDC)
    rental = rental_submit(
        owner=buyer, pool_name="ada-24g", vgpus=1, max_price_per_hour="2", max_duration_seconds=600,
        image="docker.io/library/busybox:1.36", command=["true"],
    )  # fmt: skip
    market_round_run(pool_id=rental.pool_id)
    rentals_sync()
    start = wait_until(lambda: next((m for m in rig.stream.received if m.HasField("start_placement")), None))
    placement_id = start.start_placement.placement_id
    node_placement = NodePlacement.objects.get(placement_id=placement_id)
    begin = _ms(node_placement.created_at) + 50
    rig.send(placement_status=pb.PlacementStatus(placement_id=placement_id, state=pb.PLACEMENT_STATE_RUNNING))
    rig.send(usage_report=_report(placement_id, 1, begin, rig.key, length_ms=1000))
    wait_until(lambda: rig.stream.acks(), what="the first report stored")
    while time.time() * 1000 < begin + 2500:  # it ran 2.5 s before it exited, heartbeating
        rig.send(heartbeat=pb.Heartbeat())
        time.sleep(0.3)
    rig.send(
        placement_status=pb.PlacementStatus(placement_id=placement_id, state=pb.PLACEMENT_STATE_EXITED, exit_code=0)
    )
    wait_until(lambda: NodePlacement.objects.get(pk=node_placement.pk).state == "exited", what="exited")

    def settled() -> bool:
        rentals_sync()
        metering_run()
        rental.refresh_from_db()
        return rental.settled_at is not None

    wait_until(settled, what="the rental settled")
    charged_before = rental.charged
    # The last report arrives only now (the agent was reconnecting), covering time before the settlement.
    rig.send(usage_report=_report(placement_id, 2, begin + 1000, rig.key, length_ms=1000))
    wait_until(lambda: len(rig.stream.acks()) == 2, what="the late report stored")
    metering_run()
    metering_run()  # and never twice

    placement = rental.placements.get()
    rental.refresh_from_db()
    assert placement.metered_through_seq == 2 and placement.metered_vgpu_ms == 2000
    assert placement.buyer_charged == owed(2000, placement.buyer_payment_per_hour, 1)
    assert placement.provider_paid == owed(2000, placement.provider_payment_per_hour, placement.provider_units)
    assert rental.charged == placement.buyer_charged > charged_before
    assert balance(buyer, "escrow") == 0
    assert balance(buyer, "available") == 50 * USDC - rental.charged
    assert ledger_total() == 0
    rig.close()


def test_a_start_placement_queued_for_a_placement_settled_meanwhile_is_never_delivered(gateway, tmp_path):
    from nodes.services import placement_stopped

    rig = Rig(gateway, tmp_path)
    rig.close()  # the node's stream drops (the gateway restarts, the network fails) but it is still online
    start = {"placement_id": "p-settled", "image": "busybox", "vgpu_local_ids": ["0:0"]}
    node_send(node_id=rig.node.pk, message={"start_placement": start})
    node_send(node_id=rig.node.pk, message={"ping": {"nonce": 9}})
    settled = NodePlacement.objects.get(placement_id="p-settled")
    placement_stopped(placement_ids=[settled.pk], at=timezone.now())  # the rentals code settled it

    channel, stub = mutual_stub(gateway, rig.store)
    stream = RawStream(stub)
    stream.send(_hello("GPU-rig"))
    wait_until(lambda: any(m.ping.nonce == 9 for m in stream.received), what="the later command delivered")
    assert not any(m.HasField("start_placement") for m in stream.received)
    wait_until(lambda: not NodeCommand.objects.filter(node=rig.node, delivered_at__isnull=True).exists())
    stream.close()
    channel.close()
