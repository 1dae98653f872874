"""Builders shared by the agent tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.identity import generate_private_key
from agent.nvml.fake import FakeGpuBackend, parse_fake_gpu_spec
from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.runtime.base import LogLine, PlacementSpec, Runtime, RuntimeEvents, StateChange, WorkloadInfo
from agent.session import AgentSession
from agent.slicing import plan_node
from agent.state import StateStore
from agent.usage import UsageMeter


def build_session(
    state_dir: Path,
    runtime: Runtime,
    *,
    gpus: str = "RTX 4090:1",
    slices: int | str = 2,
    usage_interval_ms: int = 1000,
    heartbeat_interval: float = 5.0,
    clock: Callable[[], float] = time.time,
    key=None,
) -> AgentSession:
    """Return a session over fake GPUs with its state in state_dir."""
    store = StateStore(state_dir)
    state = store.load()
    backend = FakeGpuBackend(parse_fake_gpu_spec(gpus), seed=state.fake_seed)
    return AgentSession(
        store=store,
        state=state,
        backend=backend,
        plan=plan_node(backend.gpus(), slices),
        runtime=runtime,
        meter=UsageMeter(key or generate_private_key(), interval_ms=usage_interval_ms),
        hostname="test-host",
        heartbeat_interval=heartbeat_interval,
        clock=clock,
    )


def start_message(
    placement_id: str, command: list[str], *, vgpus: tuple[str, ...] = ("0:0",), **fields
) -> pb.ControlMessage:
    """Return a StartPlacement control message."""
    start = pb.StartPlacement(
        placement_id=placement_id, image=fields.pop("image", "busybox"), command=command, vgpu_local_ids=vgpus, **fields
    )
    return pb.ControlMessage(start_placement=start)


class Recorder(RuntimeEvents):
    """Collects a runtime's events and lets a test wait for them."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self.changes: list[StateChange] = []
        self._condition = threading.Condition()

    def on_log(self, line: LogLine) -> None:
        """Record a line."""
        with self._condition:
            self.lines.append(line)
            self._condition.notify_all()

    def on_state(self, change: StateChange) -> None:
        """Record a state change."""
        with self._condition:
            self.changes.append(change)
            self._condition.notify_all()

    def texts(self, stream: str | None = None) -> list[str]:
        """Return the recorded line texts, optionally of one stream."""
        with self._condition:
            return [line.text for line in self.lines if stream is None or line.stream == stream]

    def wait(self, predicate: Callable[[Recorder], bool], timeout: float = 30.0) -> None:
        """Wait until predicate(self) holds."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"timed out; lines={self.lines} changes={self.changes}"
                self._condition.wait(remaining)

    def wait_finished(self, timeout: float = 30.0) -> StateChange:
        """Wait for and return the EXITED or FAILED change."""
        self.wait(lambda r: any(change.state.finished for change in r.changes), timeout)
        return next(change for change in self.changes if change.state.finished)


class FakeRuntime(Runtime):
    """A runtime that records calls; the test drives its events by hand."""

    name = "fake"

    def __init__(self, workloads: list[WorkloadInfo] | None = None, *, supports_network: bool = True) -> None:
        self.started: list[PlacementSpec] = []
        self.stopped: list[tuple[str, int]] = []
        self.attached: list[tuple[str, str]] = []
        self.removed: list[str] = []
        self.workloads = workloads or []
        self.supports_network = supports_network

    def check_available(self) -> None:
        """Always available."""

    def start(self, spec: PlacementSpec, events: RuntimeEvents) -> None:
        """Record the start."""
        self.started.append(spec)

    def stop(self, placement_id: str, grace_seconds: int = 10) -> None:
        """Record the stop."""
        self.stopped.append((placement_id, grace_seconds))

    def list_workloads(self) -> list[WorkloadInfo]:
        """Return the configured workloads."""
        return self.workloads

    def attach(self, placement_id: str, events: RuntimeEvents, log_cursor: str = "") -> None:
        """Record the attach."""
        self.attached.append((placement_id, log_cursor))

    def remove(self, placement_id: str) -> None:
        """Record the removal."""
        self.removed.append(placement_id)


def drain(outbox) -> list[pb.AgentMessage]:
    """Return every message waiting in an outbox."""
    messages = []
    while not outbox.empty():
        message = outbox.get_nowait()
        if message is not None:
            messages.append(message)
    return messages


def of_kind(messages: list[pb.AgentMessage], kind: str) -> list:
    """Return the payloads of one kind."""
    return [getattr(message, kind) for message in messages if message.WhichOneof("payload") == kind]
