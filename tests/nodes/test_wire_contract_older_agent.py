"""An agent built from the last released proto still enrolls and connects to today's gateway (issue 10, item 6).

The agent's messages here come from the released descriptor snapshot (agent/protocol/released/), loaded
into a descriptor pool of their own, never from today's generated stubs: what an agent of the previous
release puts on the wire. It enrolls, says Hello over mutual TLS, gets its node online with its vGPU, and
receives today's command.
"""

from __future__ import annotations

import queue
import threading

import grpc

from agent.identity import build_csr_pem, generate_private_key, mutual_tls_credentials, private_key_pem
from agent.protocol.descriptor import message_classes, released_snapshot
from nodes.models import Node, NodeState, VGpu
from nodes.services import node_create, node_send
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import *  # noqa: F403
from tests.nodes.gateway_fixtures import gateway_ca_pem, wait_until

SERVICE = "/janction.agent.v1.AgentGateway"


def test_an_agent_of_the_released_proto_enrolls_connects_and_is_commanded(gateway):
    old = message_classes(released_snapshot())
    ticket = node_create(owner=UserFactory(), name="old-agent")
    key = generate_private_key()
    enroll_channel = grpc.secure_channel(
        f"127.0.0.1:{gateway.enroll_port}", grpc.ssl_channel_credentials(root_certificates=gateway_ca_pem())
    )
    enroll_call = enroll_channel.unary_unary(
        f"{SERVICE}/Enroll",
        request_serializer=old["EnrollRequest"].SerializeToString,
        response_deserializer=old["EnrollResponse"].FromString,
    )
    enrolled = enroll_call(
        old["EnrollRequest"](
            enrollment_token=ticket.token, csr_pem=build_csr_pem(key, "old-host").decode(), hostname="old-host"
        ),
        timeout=30,
    )
    enroll_channel.close()
    assert enrolled.node_id == str(ticket.node.pk)

    credentials = mutual_tls_credentials(
        key_pem=private_key_pem(key),
        certificate_pem=enrolled.certificate_pem.encode(),
        trusted_ca_pem=enrolled.ca_certificate_pem.encode(),
    )
    channel = grpc.secure_channel(f"127.0.0.1:{gateway.port}", credentials)
    connect = channel.stream_stream(
        f"{SERVICE}/Connect",
        request_serializer=old["AgentMessage"].SerializeToString,
        response_deserializer=old["ControlMessage"].FromString,
    )
    outgoing: queue.Queue = queue.Queue()
    received: list = []
    call = connect(iter(outgoing.get, None), timeout=60)

    def read() -> None:
        try:
            received.extend(call)
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        gpu = old["Gpu"](
            index=0, uuid="GPU-old", name="RTX 4090", memory_bytes=24 * 2**30, architecture="ada", fake=True
        )
        vgpu = old["VGpu"](local_id="0:0", gpu_uuid="GPU-old", memory_bytes=24 * 2**30, pool="ada-24g", fake=True)
        hello = old["Hello"](agent_version="0.1.0", runtime="sandbox", hostname="old-host", gpus=[gpu], vgpus=[vgpu])
        outgoing.put(old["AgentMessage"](hello=hello))
        node = wait_until(
            lambda: Node.objects.filter(pk=ticket.node.pk, state=NodeState.ONLINE).first(), what="the node online"
        )
        assert list(VGpu.objects.filter(node=node).values_list("local_id", "pool__name")) == [("0:0", "ada-24g")]
        node_send(node_id=node.pk, message={"ping": {"nonce": 7}})
        wait_until(lambda: any(m.WhichOneof("payload") == "ping" and m.ping.nonce == 7 for m in received), what="ping")
    finally:
        outgoing.put(None)
        call.cancel()
        reader.join(timeout=5)
        channel.close()
