"""Message handling without a server: control messages in, agent messages out."""

from __future__ import annotations

import pytest

from agent.identity import generate_private_key
from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.protocol.signing import verify_usage_report
from agent.runtime.base import LogLine, StateChange, WorkloadInfo, WorkloadState
from agent.session import AgentSession
from agent.state import StateStore
from tests.agent.support import FakeRuntime, build_session, drain, of_kind, start_message

RUNNING, EXITED, FAILED, STARTING = (
    WorkloadState.RUNNING,
    WorkloadState.EXITED,
    WorkloadState.FAILED,
    WorkloadState.STARTING,
)


class Clock:
    """A hand-driven clock."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def key():
    return generate_private_key()


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def session(tmp_path, runtime, clock, key) -> AgentSession:
    return build_session(tmp_path, runtime, gpus="RTX 4090:1", slices=2, usage_interval_ms=10_000, clock=clock, key=key)


def _connect(session: AgentSession):
    initial, outbox = session.on_connected()
    return initial, outbox


def _statuses(messages) -> list[tuple[str, int, str]]:
    return [(s.placement_id, s.state, s.message) for s in of_kind(messages, "placement_status")]


def test_hello_describes_fake_gpus_the_plan_and_the_runtime(session):
    initial, _ = _connect(session)
    hello = initial[0].hello
    assert hello.runtime == "fake" and hello.hostname == "test-host" and hello.agent_version
    assert [(gpu.name, gpu.fake, gpu.architecture) for gpu in hello.gpus] == [("NVIDIA GeForce RTX 4090", True, "ada")]
    assert [(v.local_id, v.pool, v.enforcement, v.compute_share_percent) for v in hello.vgpus] == [
        ("0:0", "ada-12g", "mps", 50),
        ("0:1", "ada-12g", "mps", 50),
    ]
    assert hello.vgpus[0].enforcement_env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=12282M"
    assert not hello.placements


def test_start_placement_reports_starting_and_hands_a_locked_down_spec_to_the_runtime(session, runtime):
    _, outbox = _connect(session)
    start = start_message(
        "p-1",
        ["python", "train.py"],
        vgpus=("0:1",),
        env={"EPOCHS": "3"},
        memory_limit_bytes=4 << 30,
        cpu_millicores=1500,
        peers=[pb.Peer(placement_id="p-2", address="10.0.0.2", port=7000)],
    )
    session.handle(start)
    assert _statuses(drain(outbox)) == [("p-1", pb.PLACEMENT_STATE_STARTING, "")]
    (spec,) = runtime.started
    assert spec.command == ("python", "train.py")
    assert spec.env == {"EPOCHS": "3", "JANCTION_PLACEMENT_ID": "p-1", "JANCTION_PEERS": "10.0.0.2:7000"}
    assert spec.gpu.env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50" and spec.gpu.fake
    assert (spec.memory_limit_bytes, spec.cpu_millicores, spec.pids_limit) == (4 << 30, 1500, 512)
    assert not spec.network_allowed


@pytest.mark.parametrize(
    ("start", "message"),
    [
        (start_message("p-1", ["x"], vgpus=()), "at least one vGPU"),
        (start_message("p-1", ["x"], vgpus=("0:0", "0:0")), "twice"),
        (start_message("p-1", ["x"], env={"BAD-NAME": "1"}), "invalid environment variable name"),
        (start_message("p-1", ["x"], env={"NVIDIA_VISIBLE_DEVICES": "all"}), "reserved"),
        (start_message("p-1", ["x"], image=" "), "no image"),
        (start_message("p\n1", ["x"]), "printable"),
    ],
)
def test_invalid_placements_are_refused_with_a_reason(session, runtime, start, message):
    _, outbox = _connect(session)
    session.handle(start)
    ((_, state, text),) = _statuses(drain(outbox))
    assert state == pb.PLACEMENT_STATE_FAILED and message in text
    assert runtime.started == [] and session.placements == {}


def test_a_busy_vgpu_is_not_given_twice_and_a_repeated_start_repeats_the_status(session, runtime):
    _, outbox = _connect(session)
    session.handle(start_message("p-1", ["x"], vgpus=("0:0",)))
    session.handle(start_message("p-1", ["x"], vgpus=("0:0",)))
    session.handle(start_message("p-2", ["x"], vgpus=("0:0",)))
    statuses = _statuses(drain(outbox))
    assert statuses[:2] == [("p-1", pb.PLACEMENT_STATE_STARTING, "")] * 2
    # The node cannot take it, through no fault of the workload: lost, not failed.
    assert statuses[2][:2] == ("p-2", pb.PLACEMENT_STATE_LOST) and "already in use: 0:0" in statuses[2][2]
    assert len(runtime.started) == 1


def test_a_draining_node_refuses_new_placements_and_says_so_in_heartbeats(session, runtime):
    _, outbox = _connect(session)
    session.handle(pb.ControlMessage(drain=pb.Drain(reason="maintenance")))
    session.handle(start_message("p-1", ["x"]))
    messages = drain(outbox)
    assert of_kind(messages, "heartbeat")[0].draining
    assert _statuses(messages)[0][1] == pb.PLACEMENT_STATE_LOST and "draining" in _statuses(messages)[0][2]
    assert runtime.started == []


def test_ping_is_answered_by_a_heartbeat_with_the_nonce_and_fake_samples(session):
    _, outbox = _connect(session)
    session.handle(pb.ControlMessage(ping=pb.Ping(nonce=77)))
    (heartbeat,) = of_kind(drain(outbox), "heartbeat")
    assert heartbeat.ping_nonce == 77
    assert [(g.index, g.fake) for g in heartbeat.gpus] == [(0, True)]


def test_logs_are_numbered_per_placement_and_flushed_in_chunks(session, clock):
    _, outbox = _connect(session)
    session.handle(start_message("p-1", ["x"]))
    for stream, text in [("stdout", "a"), ("stdout", "b"), ("stderr", "c"), ("stdout", "d")]:
        session.on_log(LogLine("p-1", stream, text))
    session.on_log(LogLine("ghost", "stdout", "ignored"))
    drain(outbox)
    session.tick()
    chunks = [(c.seq, c.stream, list(c.lines)) for c in of_kind(drain(outbox), "log_chunk")]
    assert chunks == [
        (1, pb.LOG_STREAM_STDOUT, ["a", "b"]),
        (3, pb.LOG_STREAM_STDERR, ["c"]),
        (4, pb.LOG_STREAM_STDOUT, ["d"]),
    ]


def test_running_exit_and_usage_flow(session, runtime, clock, key):
    _, outbox = _connect(session)
    session.handle(start_message("p-1", ["x"], vgpus=("0:0", "0:1")))
    start_ms = int(clock.now * 1000)
    session.on_state(StateChange("p-1", RUNNING, start_ms))
    clock.now += 10
    session.tick()
    session.on_log(LogLine("p-1", "stdout", "done"))
    session.on_state(StateChange("p-1", EXITED, start_ms + 12_500, exit_code=0))
    messages = drain(outbox)

    kinds = [m.WhichOneof("payload") for m in messages if m.WhichOneof("payload") != "heartbeat"]
    assert kinds == ["placement_status", "placement_status", "usage_report", "log_chunk", "usage_report",
                     "placement_status"]  # fmt: skip
    reports = of_kind(messages, "usage_report")
    assert [(r.seq, r.interval_start_ms, r.interval_end_ms, r.vgpu_milliseconds) for r in reports] == [
        (1, start_ms, start_ms + 10_000, 20_000),
        (2, start_ms + 10_000, start_ms + 12_500, 5_000),
    ]
    assert all(verify_usage_report(key.public_key(), report) for report in reports)
    final = of_kind(messages, "placement_status")[-1]
    assert (final.state, final.exit_code) == (pb.PLACEMENT_STATE_EXITED, 0)
    assert runtime.removed == ["p-1"]
    assert set(session.placements) == {"p-1"}, "kept until the gateway acknowledges its usage"
    for report in reports:
        session.handle(pb.ControlMessage(usage_ack=pb.UsageAck(placement_id="p-1", seq=report.seq)))
    assert session.placements == {}


def test_stop_requests_reach_the_runtime_and_mark_the_exit(session, runtime):
    _, outbox = _connect(session)
    session.handle(start_message("p-1", ["x"]))
    session.on_state(StateChange("p-1", RUNNING, 1))
    session.handle(pb.ControlMessage(stop_placement=pb.StopPlacement(placement_id="p-1", grace_seconds=3)))
    session.handle(pb.ControlMessage(stop_placement=pb.StopPlacement(placement_id="nope")))
    assert runtime.stopped == [("p-1", 3)]
    session.on_state(StateChange("p-1", EXITED, 2, exit_code=143))
    statuses = _statuses(drain(outbox))
    assert ("nope", pb.PLACEMENT_STATE_FAILED, "this node does not run the placement") in statuses
    assert statuses[-1] == ("p-1", pb.PLACEMENT_STATE_EXITED, "stopped on request")


def test_a_stop_before_the_workload_runs_is_applied_once_it_runs(session, runtime):
    _connect(session)
    session.handle(start_message("p-1", ["x"]))
    session.handle(pb.ControlMessage(stop_placement=pb.StopPlacement(placement_id="p-1")))
    session.on_state(StateChange("p-1", RUNNING, 1))
    assert [placement for placement, _ in runtime.stopped] == ["p-1", "p-1"]


def test_reconnect_resends_hello_with_running_placements_final_statuses_and_unacked_usage(session, clock):
    _connect(session)
    session.handle(start_message("p-1", ["x"], vgpus=("0:0",)))
    session.handle(start_message("p-2", ["x"], vgpus=("0:1",)))
    now_ms = int(clock.now * 1000)
    session.on_state(StateChange("p-1", RUNNING, now_ms))
    session.on_state(StateChange("p-2", RUNNING, now_ms))
    session.on_disconnected()
    clock.now += 11
    session.tick()
    session.on_log(LogLine("p-1", "stdout", "while offline"))
    session.on_state(StateChange("p-2", FAILED, now_ms + 11_500, message="oom"))

    initial, _ = _connect(session)
    kinds = [m.WhichOneof("payload") for m in initial]
    assert kinds[0] == "hello"
    assert [(p.placement_id, p.state) for p in initial[0].hello.placements] == [("p-1", pb.PLACEMENT_STATE_RUNNING)]
    assert _statuses(initial) == [("p-2", pb.PLACEMENT_STATE_FAILED, "oom")]
    assert sorted((r.placement_id, r.seq) for r in of_kind(initial, "usage_report")) == [
        ("p-1", 1),
        ("p-2", 1),
        ("p-2", 2),
    ]
    assert [list(c.lines) for c in of_kind(initial, "log_chunk")] == [["while offline"]]


def _restarted(tmp_path, runtime, clock, key) -> tuple[AgentSession, list]:
    session = build_session(tmp_path, runtime, usage_interval_ms=10_000, clock=clock, key=key)
    session.recover()
    initial, _ = session.on_connected()
    return session, initial


def test_restart_reattaches_running_workloads_from_the_saved_log_cursor(tmp_path, session, clock, key):
    _connect(session)
    session.handle(start_message("p-1", ["x"]))
    session.on_state(StateChange("p-1", RUNNING, int(clock.now * 1000)))
    session.on_log(LogLine("p-1", "stdout", "one", cursor="111"))
    clock.now += 3
    session.tick()

    runtime = FakeRuntime([WorkloadInfo("p-1", running=True)])
    restarted, initial = _restarted(tmp_path, runtime, clock, key)
    assert runtime.attached == [("p-1", "111")]
    (placement,) = initial[0].hello.placements
    assert (placement.placement_id, placement.state, placement.last_log_seq) == ("p-1", pb.PLACEMENT_STATE_RUNNING, 1)
    restarted.on_log(LogLine("p-1", "stdout", "two", cursor="222"))
    assert restarted.placements["p-1"].log_seq == 2


def test_restart_settles_workloads_that_exited_or_vanished_meanwhile(tmp_path, session, clock, key):
    _connect(session)
    session.handle(start_message("p-1", ["x"], vgpus=("0:0",)))
    session.handle(start_message("p-2", ["x"], vgpus=("0:1",)))
    started = int(clock.now * 1000)
    session.on_state(StateChange("p-1", RUNNING, started))
    session.on_state(StateChange("p-2", RUNNING, started))
    session.tick()

    runtime = FakeRuntime([WorkloadInfo("p-1", running=False, exit_code=3, finished_at_ms=started + 4_000)])
    _, initial = _restarted(tmp_path, runtime, clock, key)
    assert initial[0].hello.placements == []
    statuses = {s.placement_id: s for s in of_kind(initial, "placement_status")}
    assert (statuses["p-1"].state, statuses["p-1"].exit_code) == (pb.PLACEMENT_STATE_EXITED, 3)
    # Gone across an agent restart is the provider's loss, not the workload's failure.
    assert statuses["p-2"].state == pb.PLACEMENT_STATE_LOST and "gone" in statuses["p-2"].message
    (report,) = of_kind(initial, "usage_report")
    assert (report.placement_id, report.interval_start_ms, report.interval_end_ms) == ("p-1", started, started + 4_000)
    assert runtime.removed == ["p-1", "p-2"]
    assert StateStore(tmp_path).load().placements["p-1"].state == "exited"


def test_an_engine_reporting_the_exit_before_the_start_bills_nothing_and_keeps_time_monotonic(session):
    _, outbox = _connect(session)
    session.handle(start_message("p-1", ["x"]))
    session.on_state(StateChange("p-1", RUNNING, 5_000))
    session.on_state(StateChange("p-1", EXITED, 4_990, exit_code=0))
    messages = drain(outbox)
    assert of_kind(messages, "usage_report") == []
    running, exited = of_kind(messages, "placement_status")[1:]
    assert exited.at_ms >= running.at_ms == 5_000


def test_restart_removes_leftover_containers_of_settled_placements(tmp_path, session, clock, key):
    _connect(session)
    session.handle(start_message("p-1", ["x"]))
    session.on_state(StateChange("p-1", RUNNING, 1))
    session.on_state(StateChange("p-1", EXITED, 2, exit_code=0))
    leftovers = [WorkloadInfo("p-1", running=False, exit_code=0), WorkloadInfo("stranger", running=True)]
    runtime = FakeRuntime(leftovers)
    _restarted(tmp_path, runtime, clock, key)
    assert runtime.removed == ["p-1"]
    assert runtime.attached == []


def test_a_usage_report_is_on_disk_before_it_is_sent(tmp_path, session, clock):
    _, outbox = _connect(session)
    session.handle(start_message("p-1", ["x"]))
    session.on_state(StateChange("p-1", RUNNING, int(clock.now * 1000)))
    clock.now += 10
    session.tick()
    (report,) = of_kind(drain(outbox), "usage_report")
    saved = StateStore(tmp_path).load().placements["p-1"]
    assert (saved.usage_seq, saved.usage_end_ms) == (1, report.interval_end_ms)
    assert [pending.seq for pending in saved.pending_usage] == [1]


def test_a_segment_for_an_agent_off_the_overlay_is_refused_as_the_providers_side(session, runtime):
    _, outbox = _connect(session)
    segment = pb.Segment(vni=5, address="10.128.5.10", prefix_length=24, mtu=1370, remote_hosts=["100.64.0.3"])
    session.handle(start_message("p-seg", ["true"], segment=segment))
    statuses = _statuses(drain(outbox))
    assert statuses == [
        ("p-seg", pb.PLACEMENT_STATE_LOST, "this node is not on the overlay network (start the agent with --overlay)")
    ]
    assert runtime.started == []
