"""Pause and owner claims over the real mutual-TLS stream: what an agent says is checked, never trusted."""

from __future__ import annotations

import time

from agent.identity import load_private_key
from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from nodes.models import Node, NodeAvailability, NodePlacement, NodeState, PlacementPause
from nodes.services import node_send
from tests.nodes.gateway_fixtures import *  # noqa: F403
from tests.nodes.gateway_fixtures import enrolled_identity, mutual_stub, wait_until
from tests.nodes.test_gateway_security import RawStream, _hello, _report, _ticket


def _status(placement_id: str, state: int, at_ms: int) -> pb.AgentMessage:
    return pb.AgentMessage(placement_status=pb.PlacementStatus(placement_id=placement_id, state=state, at_ms=at_ms))


def test_usage_over_a_claimed_pause_is_refused_and_a_pause_of_an_unstarted_placement_is_a_strike(gateway, tmp_path):
    ticket = _ticket()
    store = enrolled_identity(gateway, ticket.token, tmp_path / "agent")
    key = load_private_key(store.key_path)
    channel, stub = mutual_stub(gateway, store)
    stream = RawStream(stub)
    stream.send(_hello())
    wait_until(lambda: Node.objects.get(pk=ticket.node.pk).state == NodeState.ONLINE, what="node online")
    for placement_id in ("p-1", "p-2"):
        start = {"placement_id": placement_id, "image": "busybox", "vgpu_local_ids": ["0:0"]}
        node_send(node_id=ticket.node.pk, message={"start_placement": start})
    wait_until(lambda: sum(m.HasField("start_placement") for m in stream.received) == 2, what="starts delivered")
    now = int(time.time() * 1000)
    # p-2 never reported running: "paused" does not follow "requested" (a strike, nothing stored).
    stream.send(_status("p-2", pb.PLACEMENT_STATE_PAUSED, now))
    stream.send(_status("p-1", pb.PLACEMENT_STATE_RUNNING, now))
    stream.send(pb.AgentMessage(usage_report=_report("p-1", 1, now, key, length_ms=1000)))
    wait_until(lambda: ("p-1", 1) in stream.acks(), what="the running interval's ack")
    # Paused, claimed backdated into the charged second: the pause starts where the usage ended.
    stream.send(_status("p-1", pb.PLACEMENT_STATE_PAUSED, now + 500))
    stream.send(pb.AgentMessage(owner_activity=pb.OwnerActivity(active=True, at_ms=now + 500, reason="pid 1")))
    wait_until(lambda: PlacementPause.objects.filter(placement__placement_id="p-1").exists(), what="pause stored")
    stream.send(pb.AgentMessage(usage_report=_report("p-1", 2, now + 1000, key, length_ms=2000)))  # frozen time
    wait_until(lambda: stream.nacks(), what="the frozen interval's refusal")
    assert [code for _, _, code in stream.nacks()] == ["usage_report_while_paused"]
    pause = PlacementPause.objects.get(placement__placement_id="p-1")
    assert pause.paused_at_ms == now + 1000 and pause.resumed_at_ms is None
    assert NodePlacement.objects.get(placement_id="p-2").state == "requested"
    assert NodeAvailability.objects.get(node=ticket.node).owner_active
    assert gateway.guard.strikes >= 2  # the impossible pause and the frozen-time usage
    stream.close()
    channel.close()
