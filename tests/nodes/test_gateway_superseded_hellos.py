"""Repeated Hellos on superseded streams do not queue without bound (issue 11, item 3).

A raw client over mutual TLS floods one stream with Hellos, then opens newer streams on the same
certificate: the superseded stream stops being processed at once, the per-certificate stream limit
holds throughout, and the node ends with the newest stream's inventory.
"""

from __future__ import annotations

import threading
import time

import grpc

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from nodes.gateway import servicer
from nodes.models import Node, NodeState, VGpu
from nodes.services import node_create
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import *  # noqa: F403
from tests.nodes.gateway_fixtures import enrolled_identity, mutual_stub, wait_until
from tests.nodes.test_gateway_security import RawStream

FLOOD = 400


def _hello(version: str, vgpus: int = 1) -> pb.AgentMessage:
    gpu = pb.Gpu(index=0, uuid="GPU-super", name="RTX 4090", memory_bytes=24 * 2**30, architecture="ada", fake=True)
    plan = [
        pb.VGpu(local_id=f"0:{n}", gpu_uuid="GPU-super", memory_bytes=24 * 2**30 // vgpus, pool="ada-24g", fake=True)
        for n in range(vgpus)
    ]
    hello = pb.Hello(agent_version=version, runtime="sandbox", hostname=version, gpus=[gpu], vgpus=plan)
    return pb.AgentMessage(hello=hello)


class HelloLog:
    """Records every Hello the gateway hands to node_hello, in order, and the peak of streams per certificate."""

    def __init__(self, gateway, monkeypatch) -> None:
        self.versions: list[str] = []  # Hellos as node_hello starts them
        self.events: list[tuple[str, str]] = []  # ("start" | "done", version)
        self.peak_streams = 0
        self._lock = threading.Lock()
        real_hello, guard = servicer.node_hello, gateway.guard
        real_open = guard.stream_open

        def node_hello(*, node_id, hello):
            with self._lock:
                self.versions.append(hello.agent_version)
                self.events.append(("start", hello.agent_version))
            try:
                return real_hello(node_id=node_id, hello=hello)
            finally:
                with self._lock:
                    self.events.append(("done", hello.agent_version))

        def stream_open(key):
            opened = real_open(key)
            self.peak_streams = max(self.peak_streams, guard._streams.get(key, 0))
            return opened

        monkeypatch.setattr(servicer, "node_hello", node_hello)
        monkeypatch.setattr(guard, "stream_open", stream_open)

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(version.startswith(prefix) for version in self.versions)

    def started_after_stored(self, version: str, prefix: str) -> list[str]:
        """Return the Hellos starting with prefix that started after `version` was stored."""
        with self._lock:
            later = self.events[self.events.index(("done", version)) + 1 :]
        return [name for kind, name in later if kind == "start" and name.startswith(prefix)]


def _ended(stream: RawStream) -> bool:
    stream._reader.join(timeout=0)
    return not stream._reader.is_alive()


def test_hellos_on_superseded_streams_are_dropped_and_the_newest_inventory_wins(gateway, tmp_path, monkeypatch):
    log = HelloLog(gateway, monkeypatch)
    ticket = node_create(owner=UserFactory(), name="rig")
    store = enrolled_identity(gateway, ticket.token, tmp_path / "agent")
    channel, stub = mutual_stub(gateway, store)
    limit = gateway.guard.streams_per_certificate

    old = RawStream(stub, timeout=120)
    old.send(_hello("old-0"))
    wait_until(lambda: Node.objects.get(pk=ticket.node.pk).state == NodeState.ONLINE, what="the node online")
    for n in range(1, FLOOD + 1):  # within the message burst: only superseding can stop them
        old.send(_hello(f"old-{n}"))
    wait_until(lambda: log.count("old-") >= 5, what="the flood being processed")

    newer, previous = [], old
    for n in range(3):
        stream = RawStream(stub, timeout=120)
        stream.send(_hello(f"new-{n}", vgpus=2))
        wait_until(lambda n=n: f"new-{n}" in log.versions, what=f"Hello new-{n} taken")
        wait_until(lambda previous=previous: _ended(previous), what="the superseded stream closed")
        for k in range(50):
            stream.send(_hello(f"new-{n}-{k}", vgpus=2))
        newer.append(stream)
        previous = stream
    newest = newer[-1]
    settled = log.count("old-")
    print(f"flooded {FLOOD + 1} Hellos, processed {settled}, peak streams {log.peak_streams}")
    # A newer stream supersedes the older once its own Hello is stored; after that the older one may start
    # at most the Hello it had in hand, and the rest of its flood is never processed.
    assert len(log.started_after_stored("new-0", "old-")) <= 1
    assert settled < FLOOD // 2, f"{settled} of {FLOOD + 1} flooded Hellos were processed"
    wait_until(lambda: log.count("new-2-") == 50, what="the newest stream's Hellos")
    time.sleep(0.5)
    assert log.count("old-") == settled, "nothing more from the superseded stream"
    for n in range(2):
        late = log.started_after_stored(f"new-{n + 1}", f"new-{n}-")
        assert len(late) <= 1, f"superseded stream new-{n} went on after new-{n + 1}: {late}"
    assert log.peak_streams <= limit

    node = Node.objects.get(pk=ticket.node.pk)
    assert node.state == NodeState.ONLINE
    assert node.agent_version == "new-2-49" and node.hostname == "new-2-49"
    assert VGpu.objects.filter(node=node).count() == 2
    assert newest.error is None and not _ended(newest)

    # The per-certificate limit holds on top of the live stream: silent extras fill it, one more is refused.
    extras = [RawStream(stub, timeout=120) for _ in range(limit - 1)]
    wait_until(lambda: sum(gateway.guard._streams.values()) == limit, what="the extra streams counted")
    refused = RawStream(stub)
    assert refused.failure().code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert log.peak_streams <= limit
    for stream in [*extras, newest]:
        stream.close()
    channel.close()
