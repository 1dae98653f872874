"""What the session reports when the provider's side ends a workload: expiry, agent restarts, shutdown."""

from __future__ import annotations

import threading

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.runtime.base import StateChange, WorkloadState
from agent.validation import CLOCK_SKEW_MS
from tests.agent.support import FakeRuntime, build_session, drain, of_kind, start_message

NOW = 1_800_000_000.0


class StoppingRuntime(FakeRuntime):
    """A fake runtime whose workloads end (exit code 143) shortly after a stop, as SIGTERM would."""

    def __init__(self) -> None:
        super().__init__()
        self.events = None

    def start(self, spec, events) -> None:
        """Record the start and keep the receiver of events."""
        super().start(spec, events)
        self.events = events

    def stop(self, placement_id: str, grace_seconds: int = 10) -> None:
        """End the workload from another thread, as a real runtime does."""
        super().stop(placement_id, grace_seconds)
        change = StateChange(placement_id, WorkloadState.EXITED, int(NOW * 1000) + 5_000, exit_code=143)
        threading.Timer(0.05, self.events.on_state, args=(change,)).start()


def test_an_expired_start_is_not_started_and_is_reported_lost_not_failed(tmp_path):
    runtime = FakeRuntime()
    session = build_session(tmp_path, runtime, clock=lambda: NOW)
    _, outbox = session.on_connected()
    expired = int(NOW * 1000) - CLOCK_SKEW_MS - 1_000
    session.handle(start_message("p-1", ["x"], expires_at_ms=expired, issued_for_state="allocated"))
    (status,) = of_kind(drain(outbox), "placement_status")
    assert status.state == pb.PLACEMENT_STATE_LOST and "expired" in status.message
    assert runtime.started == [] and session.placements == {}

    session.handle(start_message("p-2", ["x"], expires_at_ms=int(NOW * 1000) + 60_000))
    assert [spec.placement_id for spec in runtime.started] == ["p-2"]


def test_a_start_for_vgpus_this_node_does_not_offer_is_the_provider_side_not_the_buyer(tmp_path):
    runtime = FakeRuntime()
    session = build_session(tmp_path, runtime, clock=lambda: NOW)
    _, outbox = session.on_connected()
    session.handle(start_message("p-1", ["x"], vgpus=("9:9",)))
    (status,) = of_kind(drain(outbox), "placement_status")
    assert (status.state, status.message) == (pb.PLACEMENT_STATE_LOST, "unknown vGPU ids: 9:9")


def test_limits_the_runtime_could_not_enforce_are_reported_with_the_running_status(tmp_path):
    runtime = FakeRuntime()
    session = build_session(tmp_path, runtime, clock=lambda: NOW)
    _, outbox = session.on_connected()
    session.handle(start_message("p-1", ["x"]))
    note = "pids, memory and CPU limits are not enforced: the agent is not root"
    session.on_state(StateChange("p-1", WorkloadState.RUNNING, 1, limits_not_enforced=note))
    statuses = of_kind(drain(outbox), "placement_status")
    assert [(s.state, s.limits_not_enforced) for s in statuses] == [
        (pb.PLACEMENT_STATE_STARTING, ""),
        (pb.PLACEMENT_STATE_RUNNING, note),
    ]
    initial, _ = session.on_connected()
    assert session.placements["p-1"].limits_not_enforced == note
    assert initial[0].hello.placements[0].placement_id == "p-1"


def test_shutdown_stops_every_workload_reports_it_lost_with_its_usage_then_says_goodbye(tmp_path):
    runtime = StoppingRuntime()
    session = build_session(tmp_path, runtime, clock=lambda: NOW, usage_interval_ms=60_000)
    _, outbox = session.on_connected()
    session.handle(start_message("p-1", ["x"]))
    session.on_state(StateChange("p-1", WorkloadState.RUNNING, int(NOW * 1000)))
    drain(outbox)

    assert session.shutdown_workloads(3, timeout=5)
    assert runtime.stopped == [("p-1", 3)]
    session.handle(start_message("p-2", ["x"], vgpus=("0:1",)))
    assert [spec.placement_id for spec in runtime.started] == ["p-1"], "a stopping agent starts nothing new"
    assert session.say_goodbye("maintenance")
    messages = []
    while (message := outbox.get(timeout=1)) is not None:
        messages.append(message)
    kinds = [m.WhichOneof("payload") for m in messages]
    assert kinds[-1] == "goodbye" and messages[-1].goodbye.reason == "maintenance"
    (lost,) = [s for s in of_kind(messages, "placement_status") if s.placement_id == "p-1"]
    assert lost.state == pb.PLACEMENT_STATE_LOST and "shut down" in lost.message
    (usage,) = of_kind(messages, "usage_report")
    assert (usage.interval_start_ms, usage.interval_end_ms) == (int(NOW * 1000), int(NOW * 1000) + 5_000)
    assert kinds.index("usage_report") < kinds.index("goodbye")
    assert not session.say_goodbye("again"), "the stream already ended"


def test_a_stop_the_platform_asked_for_stays_an_exit_during_shutdown(tmp_path):
    runtime = StoppingRuntime()
    session = build_session(tmp_path, runtime, clock=lambda: NOW)
    session.on_connected()
    session.handle(start_message("p-1", ["x"]))
    session.on_state(StateChange("p-1", WorkloadState.RUNNING, int(NOW * 1000)))
    session.handle(pb.ControlMessage(stop_placement=pb.StopPlacement(placement_id="p-1", grace_seconds=1)))
    session.shutdown_workloads(1, timeout=5)
    assert session.placements["p-1"].state == WorkloadState.EXITED
