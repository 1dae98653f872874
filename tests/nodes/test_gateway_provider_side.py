"""Through the real gateway: expired or settled starts are never delivered, Goodbye takes a node offline at once,
provider-side losses arrive as "lost", and "limits not enforced" is stored."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import pytest
from django.db import transaction
from django.utils import timezone

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.protocol.gen.janction.agent.v1.agent_pb2_grpc import AgentGatewayStub
from nodes.models import Node, NodeEvent, NodePlacement, NodeState, UsageReport
from nodes.services import node_create, node_send, placement_commands_cancel
from tests.agent.conftest import requires_bwrap
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import *  # noqa: F403
from tests.nodes.gateway_fixtures import enrolled_identity, mutual_stub, wait_until


class Stream:
    """A hand-driven Connect stream (a raw client written from the proto, not the project's agent)."""

    def __init__(self, stub: AgentGatewayStub) -> None:
        self._requests: queue.Queue[pb.AgentMessage | None] = queue.Queue()
        self.received: list[pb.ControlMessage] = []
        self._call = stub.Connect(iter(self._requests.get, None), timeout=60)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self._call:
                self.received.append(message)
        except grpc.RpcError:
            pass

    def send(self, message: pb.AgentMessage) -> None:
        self._requests.put(message)

    def started(self) -> list[str]:
        return [m.start_placement.placement_id for m in list(self.received) if m.HasField("start_placement")]

    def ended(self) -> bool:
        return not self._reader.is_alive()

    def close(self) -> None:
        self._requests.put(None)
        self._call.cancel()
        self._reader.join(timeout=5)


def _hello() -> pb.AgentMessage:
    gpu = pb.Gpu(index=0, uuid="GPU-ps", name="RTX 4090", memory_bytes=24 * 2**30, architecture="ada", fake=True)
    vgpu = pb.VGpu(local_id="0:0", gpu_uuid="GPU-ps", memory_bytes=24 * 2**30, pool="ada-24g", fake=True)
    return pb.AgentMessage(hello=pb.Hello(agent_version="t", runtime="sandbox", gpus=[gpu], vgpus=[vgpu]))


@pytest.fixture
def connected(gateway, tmp_path):
    """Return (node, stream): an enrolled node whose raw stream has said Hello and is online."""
    ticket = node_create(owner=UserFactory(), name="raw")
    store = enrolled_identity(gateway, ticket.token, tmp_path / "raw")
    channel, stub = mutual_stub(gateway, store)
    stream = Stream(stub)
    stream.send(_hello())
    wait_until(lambda: Node.objects.get(pk=ticket.node.pk).state == NodeState.ONLINE, what="online")
    yield Node.objects.get(pk=ticket.node.pk), stream
    stream.close()
    channel.close()


def _start(placement_id: str, **fields) -> dict:
    return {"start_placement": {"placement_id": placement_id, "image": "busybox", "vgpu_local_ids": ["0:0"], **fields}}


def test_expired_and_settled_starts_are_never_delivered_but_a_fresh_one_is(connected):
    node, stream = connected
    past_ms = int(timezone.now().timestamp() * 1000) - 1_000
    future_ms = int(timezone.now().timestamp() * 1000) + 60_000
    # One transaction, so the gateway's dispatcher never sees p-settled before it is cancelled.
    with transaction.atomic():
        node_send(node_id=node.pk, message=_start("p-expired", expires_at_ms=past_ms))
        node_send(node_id=node.pk, message=_start("p-settled", expires_at_ms=future_ms))
        assert placement_commands_cancel(placement_ids=["p-settled"]) == 1
    node_send(node_id=node.pk, message=_start("p-fresh", expires_at_ms=future_ms, issued_for_state="allocated"))
    wait_until(lambda: "p-fresh" in stream.started(), what="the fresh start")
    time.sleep(0.3)  # several dispatcher polls: commands go out in id order, so the others would be here by now
    assert stream.started() == ["p-fresh"]
    (fresh,) = [m.start_placement for m in stream.received if m.HasField("start_placement")]
    assert fresh.expires_at_ms == future_ms and fresh.issued_for_state == "allocated"


def test_goodbye_takes_the_node_offline_at_once(connected, gateway_settings):
    node, stream = connected
    gateway_settings.NODE_HEARTBEAT_GRACE_SECONDS = 3600  # the offline sweep cannot be what takes it offline
    stream.send(pb.AgentMessage(heartbeat=pb.Heartbeat(sent_at_ms=1)))
    stream.send(pb.AgentMessage(goodbye=pb.Goodbye(reason="maintenance\nwindow")))
    started = time.monotonic()
    wait_until(lambda: Node.objects.get(pk=node.pk).state == NodeState.OFFLINE, timeout=5, what="offline")
    assert time.monotonic() - started < 2
    event = NodeEvent.objects.filter(node=node).first()
    assert (event.to_state, event.reason) == (NodeState.OFFLINE, "The agent signed off: maintenance window")
    wait_until(stream.ended, what="the gateway to end the stream")
    time.sleep(0.5)  # a buffered heartbeat flushed after the goodbye must not bring it back
    assert Node.objects.get(pk=node.pk).state == NodeState.OFFLINE


def test_a_lost_status_and_limits_not_enforced_are_stored_and_lost_is_final(connected):
    node, stream = connected
    node_send(node_id=node.pk, message=_start("p-label"))
    wait_until(lambda: "p-label" in stream.started(), what="the start")
    note = "pids, total memory and CPU limits are not enforced (the agent is not root)"
    running = pb.PlacementStatus(
        placement_id="p-label", state=pb.PLACEMENT_STATE_RUNNING, at_ms=1, limits_not_enforced=note
    )
    stream.send(pb.AgentMessage(placement_status=running))
    wait_until(lambda: NodePlacement.objects.get(placement_id="p-label").state == "running", what="running")
    assert NodePlacement.objects.get(placement_id="p-label").limits_not_enforced == note
    lost = pb.PlacementStatus(placement_id="p-label", state=pb.PLACEMENT_STATE_LOST, at_ms=2, message="agent crashed")
    stream.send(pb.AgentMessage(placement_status=lost))
    wait_until(lambda: NodePlacement.objects.get(placement_id="p-label").state == "lost", what="lost")
    stream.send(pb.AgentMessage(placement_status=running))
    time.sleep(0.3)
    placement = NodePlacement.objects.get(placement_id="p-label")
    assert (placement.state, placement.message, placement.limits_not_enforced) == ("lost", "agent crashed", note)


@requires_bwrap
def test_the_real_agent_stopped_with_sigterm_reports_lost_with_usage_and_goes_offline_at_once(
    gateway, gateway_settings, start_agent
):
    gateway_settings.NODE_HEARTBEAT_GRACE_SECONDS = 3600
    ticket = node_create(owner=UserFactory(), name="polite")
    agent = start_agent(gateway, ticket.token, name="polite")
    wait_until(lambda: Node.objects.get(pk=ticket.node.pk).state == NodeState.ONLINE, timeout=60, what="online")
    node_send(node_id=ticket.node.pk, message=_start("p-term", command=["sh", "-c", "sleep 600"]))
    wait_until(lambda: NodePlacement.objects.get(placement_id="p-term").state == "running", timeout=30, what="run")
    time.sleep(1.5)
    agent.stop()
    assert agent.process.returncode == 0, agent.output()
    placement = NodePlacement.objects.get(placement_id="p-term")
    assert placement.state == "lost" and "shut down" in placement.message
    assert UsageReport.objects.filter(placement=placement).exists()
    node = Node.objects.get(pk=ticket.node.pk)
    assert node.state == NodeState.OFFLINE and node.state_reason.startswith("The agent signed off")


@requires_bwrap
def test_a_sandbox_workload_killed_with_its_agent_is_reported_lost_after_the_restart(gateway, start_agent):
    ticket = node_create(owner=UserFactory(), name="crashy")
    agent = start_agent(gateway, ticket.token, name="crashy")
    wait_until(lambda: Node.objects.get(pk=ticket.node.pk).state == NodeState.ONLINE, timeout=60, what="online")
    node_send(node_id=ticket.node.pk, message=_start("p-crash", command=["sh", "-c", "sleep 600"]))
    wait_until(lambda: NodePlacement.objects.get(placement_id="p-crash").state == "running", timeout=30, what="run")
    agent.kill()
    start_agent(gateway, ticket.token, name="crashy")
    wait_until(
        lambda: NodePlacement.objects.get(placement_id="p-crash").state in ("lost", "failed"), timeout=60, what="final"
    )
    placement = NodePlacement.objects.get(placement_id="p-crash")
    assert placement.state == "lost", "the provider's crash is not the workload's failure"
    assert "gone when the agent restarted" in placement.message
