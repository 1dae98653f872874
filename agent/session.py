"""The agent's message handling, independent of the transport so it can be tested without a server.

The session owns the placement records. Control messages and runtime events change them;
what the gateway should hear goes to the current connection's outbox. Status changes and
usage reports are persisted first, so after a reconnect (or an agent restart) `on_connected`
can re-send every final status and every usage report the gateway has not acknowledged.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from agent import __version__
from agent.colocation import OwnerWatch, Share, WatchPolicy
from agent.messages import (
    gpu_message,
    heartbeat_message,
    log_messages,
    owner_activity_message,
    placement_spec,
    running_placement_message,
    status_message,
    usage_message,
    vgpu_message,
)
from agent.nvml.base import GpuBackend
from agent.overlay.host import OverlayHost
from agent.overlay.net import NetError
from agent.overlay.segments import SegmentSpec
from agent.overlay.underlay import UnderlayConfig
from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.runtime.base import DEFAULT_GRACE_SECONDS, LogLine, Runtime, StateChange, WorkloadState
from agent.slicing import ContainerGpuSettings, SlicingError, VGpuPlan, container_gpu_settings
from agent.state import AgentState, PlacementRecord, StateStore
from agent.tunnel import ServicePort, TunnelManager
from agent.usage import UsageMeter
from agent.validation import (
    ExpiredCommand,
    InvalidPlacement,
    NodeCannotRun,
    validate_placement_id,
    validate_start,
)

log = logging.getLogger(__name__)

MAX_BUFFERED_LINES = 10_000
SHUTDOWN_MESSAGE = "the provider's agent shut down"
OWNER_STOP_MESSAGE = "stopped: the node's owner is using the GPU"
OWNER_PAUSE_MESSAGE = "paused: the node's owner is using the GPU"
OWNER_BUSY_MESSAGE = "the node's owner is using its GPUs"
MAX_GRACE_SECONDS = 86_400
SAVE_INTERVAL_SECONDS = 2.0
Outbox = queue.Queue[pb.AgentMessage | None]


class AgentSession:
    """Handles control messages and runtime events for one node."""

    def __init__(
        self,
        *,
        store: StateStore,
        state: AgentState,
        backend: GpuBackend,
        plan: list[VGpuPlan],
        runtime: Runtime,
        meter: UsageMeter,
        hostname: str,
        heartbeat_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        watch: OwnerWatch | None = None,
        tunnels: TunnelManager | None = None,
        overlay: OverlayHost | None = None,
    ) -> None:
        self._overlay = overlay
        self._store = store
        self._state = state
        self._backend = backend
        self._gpus = backend.gpus()
        self._plan = {vgpu.local_id: vgpu for vgpu in plan}
        self._runtime = runtime
        self._meter = meter
        self._hostname = hostname
        self._heartbeat_interval = heartbeat_interval
        self._clock = clock
        self._lock = threading.RLock()
        self._outbox: Outbox = queue.Queue()
        self._connected = False
        self._draining = False
        self._shutting_down = False
        self._lines: dict[str, list[tuple[int, str, str]]] = {}
        self._final_sent: set[str] = set()
        self._last_heartbeat = 0.0
        self._last_save = 0.0
        self._dirty = False
        self._watch = watch
        self._tunnels = tunnels
        if watch is not None:
            # What the platform last said and whether the owner was active survive a restart of the agent.
            watch.policy = _watch_policy(state.colocation) if state.colocation else watch.policy
            watch.active = state.owner_active

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @property
    def placements(self) -> dict[str, PlacementRecord]:
        """Return the live placement records by id."""
        return self._state.placements

    # -- connection life-cycle -------------------------------------------------------------

    def on_connected(self) -> tuple[list[pb.AgentMessage], Outbox]:
        """Return the messages that open a stream (Hello first) and the outbox for the rest."""
        with self._lock:
            self._outbox = queue.Queue()
            self._connected = True
            now = self._now_ms()
            initial = [self.hello_message()]
            if self._state.owner_active:
                initial.append(owner_activity_message(active=True, at_ms=now, reason=self._watch_reason()))
            for record in self._state.placements.values():
                if WorkloadState(record.state).finished:
                    initial.append(status_message(record, record.ended_at_ms or now))
                    self._final_sent.add(record.placement_id)
                initial.extend(usage_message(report) for report in record.pending_usage)
            for placement_id, lines in self._lines.items():
                initial.extend(log_messages(placement_id, lines))
            self._lines.clear()
            self._prune()
            return initial, self._outbox

    def on_disconnected(self) -> None:
        """Stop sending; status and usage are kept for the next connection."""
        with self._lock:
            self._connected = False
            self._outbox.put(None)

    def _send(self, message: pb.AgentMessage) -> None:
        if self._connected:
            self._outbox.put(message)

    def hello_message(self) -> pb.AgentMessage:
        """Return the Hello describing this node and what it still runs."""
        with self._lock:
            live = [r for r in self._state.placements.values() if not WorkloadState(r.state).finished]
            return pb.AgentMessage(
                hello=pb.Hello(
                    agent_version=__version__,
                    runtime=self._runtime.name,
                    hostname=self._hostname,
                    gpus=[gpu_message(gpu) for gpu in self._gpus],
                    vgpus=[vgpu_message(vgpu) for vgpu in self._plan.values()],
                    placements=[running_placement_message(record) for record in live],
                    network_unsupported=not self._runtime.supports_network,
                    egress_allowed=self._runtime.egress_allowed,
                    overlay=pb.OverlayHello(public_key=self._overlay.public_key) if self._overlay else None,
                )
            )

    # -- control messages ------------------------------------------------------------------

    def handle(self, message: pb.ControlMessage) -> None:
        """Act on one control message from the gateway."""
        kind = message.WhichOneof("payload")
        if kind == "start_placement":
            self._start(message.start_placement)
        elif kind == "stop_placement":
            self._stop(message.stop_placement)
        elif kind == "drain":
            self._drain(message.drain)
        elif kind == "ping":
            self._send(self._heartbeat(message.ping.nonce))
        elif kind == "usage_ack":
            self._acknowledge(message.usage_ack)
        elif kind == "colocation":
            self._set_colocation(message.colocation)
        elif kind == "overlay_config":
            self._configure_overlay(message.overlay_config)
        else:
            log.warning("ignoring an empty or unknown control message")

    def _start(self, start: pb.StartPlacement) -> None:
        placement_id = start.placement_id
        with self._lock:
            existing = self._state.placements.get(placement_id)
            if existing is not None:
                self._send(status_message(existing, self._now_ms()))
                return
            try:
                validate_placement_id(placement_id)
                validate_start(start, self._now_ms())
                if self._draining or self._shutting_down:
                    raise NodeCannotRun("this node is draining and accepts no new placements")
                if self._state.owner_active:
                    raise NodeCannotRun(OWNER_BUSY_MESSAGE)
                spec = placement_spec(start, self._gpu_settings(self._claim(list(start.vgpu_local_ids))))
                segment = self._segment_of(start)
            except (InvalidPlacement, SlicingError) as exc:
                log.warning("refusing placement %r: %s", placement_id, exc)
                # An expired command or a node that cannot take a sound one is not the workload's fault: lost.
                provider_side = isinstance(exc, (ExpiredCommand, NodeCannotRun))
                state = WorkloadState.LOST if provider_side else WorkloadState.FAILED
                refused = PlacementRecord(placement_id, start.image[:255], list(start.vgpu_local_ids)[:64], state.value)
                refused.message = str(exc)
                self._send(status_message(refused, self._now_ms()))
                return
            record = PlacementRecord(placement_id, start.image, list(start.vgpu_local_ids))
            record.pausable = start.pausable
            record.service_ports = [[port.name, port.container_port] for port in start.service_ports]
            record.tunnel_addresses = list(start.tunnel_addresses)
            record.tunnel_pool_size = start.tunnel_pool_size
            self._state.placements[placement_id] = record
            self._save()
            self._send(status_message(record, self._now_ms()))
        log.info(
            "starting placement %s (%s) on %s, issued for %s",
            placement_id,
            start.image,
            ", ".join(start.vgpu_local_ids),
            start.issued_for_state or "an unstated rental state",
        )
        if segment is not None:
            assert self._overlay is not None
            try:
                netns_path = self._overlay.placement_up(placement_id, segment)
            except NetError as exc:
                log.warning("placement %s: segment failed: %s", placement_id, exc)
                self._overlay_down(placement_id)
                message = f"the provider's overlay network failed: {exc}"[:500]
                self.on_state(StateChange(placement_id, WorkloadState.LOST, self._now_ms(), message=message))
                return
            spec = replace(
                spec,
                netns_path=netns_path,
                hosts=segment.names,
                env={
                    **spec.env,
                    "JANCTION_SEGMENT_ADDRESS": segment.address,
                    "JANCTION_SEGMENT_HOSTS": ",".join(f"{name}={address}" for name, address in segment.names),
                },
            )
        self._runtime.start(spec, self)

    def _gpu_settings(self, vgpus: list[VGpuPlan]) -> ContainerGpuSettings:
        """Return how a container gets these vGPUs, with what the backend says it sees of them (fake GPUs)."""
        gpu = container_gpu_settings(vgpus)
        view = self._backend.container_view(gpu.device_uuids) if gpu.fake else ()
        return dataclasses.replace(gpu, nvidia_smi_lines=view) if view else gpu
    def _segment_of(self, start: pb.StartPlacement) -> SegmentSpec | None:
        """Return the placement's validated segment, None without one; raise NodeCannotRun off the overlay."""
        if not start.HasField("segment"):
            return None
        if self._overlay is None or not self._overlay.ready:
            raise NodeCannotRun("this node is not on the overlay network (start the agent with --overlay)")
        segment = start.segment
        try:
            return SegmentSpec(
                vni=segment.vni,
                address=segment.address,
                prefix_length=segment.prefix_length,
                mtu=segment.mtu,
                remote_hosts=tuple(segment.remote_hosts),
                names=tuple((item.name, item.address) for item in segment.names),
                peers=tuple((peer.public_key, peer.endpoint, peer.address) for peer in segment.peers),
            ).validated()
        except ValueError as exc:
            raise InvalidPlacement(f"segment: {exc}") from None

    def _configure_overlay(self, message: pb.OverlayConfig) -> None:
        """Bring the WireGuard link to the hub up as the platform assigned it."""
        if self._overlay is None:
            log.warning("ignoring an overlay configuration: this agent runs without --overlay")
            return
        config = UnderlayConfig(
            address=message.address,
            prefix_length=message.prefix_length,
            hub_public_key=message.hub_public_key,
            hub_endpoint=message.hub_endpoint,
            hub_address=message.hub_address,
            network=message.network,
            keepalive_seconds=message.keepalive_seconds or 25,
            mtu=message.mtu or 1420,
        )
        try:
            self._overlay.configure(config)
        except (NetError, ValueError) as exc:
            log.error("overlay: could not apply the platform's configuration: %s", exc)

    def _overlay_down(self, placement_id: str) -> None:
        if self._overlay is not None:
            try:
                self._overlay.placement_down(placement_id)
            except NetError as exc:
                log.warning("overlay: could not take placement %s off its segment: %s", placement_id, exc)

    def _claim(self, local_ids: list[str]) -> list[VGpuPlan]:
        if not local_ids:
            raise InvalidPlacement("a placement needs at least one vGPU")
        unknown = [local_id for local_id in local_ids if local_id not in self._plan]
        if unknown:
            raise NodeCannotRun(f"unknown vGPU ids: {', '.join(unknown)}")
        busy = {
            local_id
            for record in self._state.placements.values()
            if not WorkloadState(record.state).finished
            for local_id in record.vgpu_local_ids
        }
        taken = [local_id for local_id in local_ids if local_id in busy]
        if taken:
            raise NodeCannotRun(f"vGPUs already in use: {', '.join(taken)}")
        return [self._plan[local_id] for local_id in local_ids]

    def _stop(self, stop: pb.StopPlacement) -> None:
        with self._lock:
            record = self._state.placements.get(stop.placement_id)
            if record is None:
                unknown = PlacementRecord(stop.placement_id, "", [], "failed")
                unknown.message = "this node does not run the placement"
                self._send(status_message(unknown, self._now_ms()))
                return
            if WorkloadState(record.state).finished:
                self._send(status_message(record, record.ended_at_ms))
                return
            record.stop_requested = True
            self._save()
        self._runtime.stop(stop.placement_id, stop.grace_seconds or DEFAULT_GRACE_SECONDS)

    def _drain(self, drain: pb.Drain) -> None:
        log.info("draining: %s", drain.reason or "requested by the gateway")
        with self._lock:
            self._draining = True
        self._send(self._heartbeat(0))

    def _acknowledge(self, ack: pb.UsageAck) -> None:
        with self._lock:
            record = self._state.placements.get(ack.placement_id)
            if record is not None and self._meter.acknowledge(record, ack.seq):
                self._prune()
                self._save()

    # -- runtime events --------------------------------------------------------------------

    def on_log(self, line: LogLine) -> None:
        """Number a workload's log line and queue it for the next flush."""
        with self._lock:
            record = self._state.placements.get(line.placement_id)
            if record is None:
                return
            record.log_seq += 1
            if line.cursor:
                record.log_cursor = line.cursor
            self._dirty = True
            lines = self._lines.setdefault(line.placement_id, [])
            lines.append((record.log_seq, line.stream, line.text))
            if len(lines) > MAX_BUFFERED_LINES:
                del lines[0]

    def on_state(self, change: StateChange) -> None:
        """Record a workload's transition and report it (with its last usage when it ended)."""
        remove, report = False, None
        with self._lock:
            record = self._state.placements.get(change.placement_id)
            if record is None or WorkloadState(record.state).finished:
                return
            if change.state.finished and self._shutting_down and not record.stop_requested:
                change = StateChange(
                    change.placement_id, WorkloadState.LOST, change.at_ms, change.exit_code, SHUTDOWN_MESSAGE
                )
            elif change.state.finished and record.owner_stopped and not record.stop_requested:
                # Stopped for the owner: the provider's side, so the platform may requeue it elsewhere.
                change = StateChange(
                    change.placement_id, WorkloadState.LOST, change.at_ms, change.exit_code, OWNER_STOP_MESSAGE
                )
            if change.state.finished and record.state == WorkloadState.PAUSED:
                # It ended while frozen: the frozen time is never metered.
                record.usage_end_ms = max(record.usage_end_ms, change.at_ms)
            elif change.state == WorkloadState.RUNNING and record.state == WorkloadState.PAUSED:
                return  # a re-attached frozen container reports running; it stays paused until the owner leaves
            record.state = change.state.value
            if change.state == WorkloadState.RUNNING:
                record.started_at_ms = record.started_at_ms or change.at_ms
                record.limits_not_enforced = change.limits_not_enforced
                if record.stop_requested or self._shutting_down:
                    self._runtime.stop(record.placement_id)
                else:
                    self._open_tunnels(record)
            elif change.state.finished:
                self._flush_logs(record.placement_id)
                record.exit_code = change.exit_code
                record.ended_at_ms = max(change.at_ms, record.usage_end_ms, record.started_at_ms)
                record.message = change.message or ("stopped on request" if record.stop_requested else "")
                report = self._meter.next_report(record, self._now_ms())
                remove = True
            self._save()
            if report is not None:
                self._send(usage_message(report))
            self._send(status_message(record, record.ended_at_ms or change.at_ms))
            if change.state.finished and self._connected:
                self._final_sent.add(record.placement_id)
                self._prune()
        log.info("placement %s is %s %s", change.placement_id, change.state.value, change.message)
        if remove:
            if self._tunnels is not None:
                self._tunnels.close(change.placement_id)
            self._runtime.remove(change.placement_id)
            self._overlay_down(change.placement_id)

    def _open_tunnels(self, record: PlacementRecord) -> None:
        """Keep idle service tunnels to the ingresses for a running placement that exposes ports (issue 15)."""
        if self._tunnels is None or not record.service_ports:
            return
        ports = [ServicePort(name, port) for name, port in record.service_ports]
        self._tunnels.open(record.placement_id, ports, record.tunnel_addresses, record.tunnel_pool_size)

    # -- periodic work ---------------------------------------------------------------------

    def tick(self) -> None:
        """Flush logs, issue due usage reports (saved before they are sent), send a due heartbeat."""
        now = self._clock()
        with self._lock:
            if self._connected:
                for placement_id in list(self._lines):
                    self._flush_logs(placement_id)
            reports = [self._meter.next_report(record, int(now * 1000)) for record in self._state.placements.values()]
            reports = [report for report in reports if report is not None]
            if reports or (self._dirty and now - self._last_save >= SAVE_INTERVAL_SECONDS):
                self._save()
            for report in reports:
                self._send(usage_message(report))
            heartbeat_due = self._connected and now - self._last_heartbeat >= self._heartbeat_interval
        if heartbeat_due:
            self._send(self._heartbeat(0))
        self._colocate()

    # -- colocation ------------------------------------------------------------------------

    def _watch_reason(self) -> str:
        return self._watch.reason if self._watch is not None and self._watch.reason else OWNER_BUSY_MESSAGE

    def _set_colocation(self, colocation: pb.Colocation) -> None:
        """Take the node's policy from the platform (kept in the state file); values out of range are clamped."""
        policy = {
            "watch": colocation.watch_owner,
            "utilization_percent": min(max(colocation.utilization_threshold_percent, 1), 100),
            "memory_percent": min(max(colocation.memory_threshold_percent, 1), 100),
            "grace_seconds": min(colocation.grace_seconds, MAX_GRACE_SECONDS),
            "owner_time": colocation.owner_time,
        }
        with self._lock:
            self._state.colocation = policy
            self._save()
            if self._watch is not None:
                self._watch.policy = _watch_policy(policy)
        log.info("colocation policy: %s", policy)

    def _shares(self) -> dict[str, Share]:
        """Return what the live placements may use of each GPU (frozen ones hold memory, not compute)."""
        shares: dict[str, Share] = {}
        for record in self._state.placements.values():
            if record.state not in (WorkloadState.RUNNING, WorkloadState.PAUSED, WorkloadState.STARTING):
                continue
            for local_id in record.vgpu_local_ids:
                vgpu = self._plan.get(local_id)
                if vgpu is None:
                    continue
                share = shares.get(vgpu.gpu_uuid, Share())
                compute = vgpu.compute_share_percent if record.state != WorkloadState.PAUSED else 0
                shares[vgpu.gpu_uuid] = Share(share.compute_percent + compute, share.memory_bytes + vgpu.memory_bytes)
        return shares

    def _colocate(self) -> None:
        """Sample the owner watch when due; step aside when the owner comes, come back when they leave."""
        watch = self._watch
        if watch is None or not watch.due():
            return
        with self._lock:
            shares = self._shares()
        change = watch.observe(shares)
        now = self._now_ms()
        if change is not None:
            with self._lock:
                self._state.owner_active = change
                self._save()
                self._send(owner_activity_message(active=change, at_ms=now, reason=watch.reason))
        if watch.active:
            self._step_aside()
        elif change is False:
            self._come_back()

    def _step_aside(self) -> None:
        """Freeze every running pausable placement; stop the others (reported LOST, so they can be requeued)."""
        with self._lock:
            running = [r for r in self._state.placements.values() if r.state == WorkloadState.RUNNING]
            running = [r for r in running if not r.owner_stopped and not r.stop_requested]
        for record in running:
            if record.pausable and self._runtime.supports_pause and self._pause(record):
                continue
            with self._lock:
                record.owner_stopped = True
                self._save()
            log.info("stopping placement %s: %s", record.placement_id, OWNER_STOP_MESSAGE)
            self._runtime.stop(record.placement_id, DEFAULT_GRACE_SECONDS)

    def _pause(self, record: PlacementRecord) -> bool:
        at = self._now_ms()
        if not self._runtime.pause(record.placement_id):
            return False
        with self._lock:
            if record.state != WorkloadState.RUNNING:
                return True  # it ended meanwhile; on_state reported it
            report = self._meter.cut(record, at)
            record.state = WorkloadState.PAUSED.value
            record.paused_at_ms = at
            record.message = OWNER_PAUSE_MESSAGE
            self._save()
            if report is not None:
                self._send(usage_message(report))
            self._send(status_message(record, at))
        log.info("paused placement %s: the owner is using the GPU", record.placement_id)
        return True

    def _come_back(self) -> None:
        """Thaw the frozen placements: metering starts again from the moment each runs."""
        with self._lock:
            paused = [r for r in self._state.placements.values() if r.state == WorkloadState.PAUSED]
        for record in paused:
            if record.stop_requested or not self._runtime.resume(record.placement_id):
                continue
            at = self._now_ms()
            with self._lock:
                if record.state != WorkloadState.PAUSED:
                    continue
                record.state = WorkloadState.RUNNING.value
                record.usage_end_ms = max(record.usage_end_ms, at)
                record.paused_at_ms = 0
                record.message = ""
                self._save()
                self._send(status_message(record, at))
            log.info("resumed placement %s: the owner left", record.placement_id)

    def _flush_logs(self, placement_id: str) -> None:
        if self._connected:
            for message in log_messages(placement_id, self._lines.pop(placement_id, [])):
                self._outbox.put(message)

    def _heartbeat(self, nonce: int) -> pb.AgentMessage:
        samples = self._backend.telemetry()
        with self._lock:
            self._last_heartbeat = self._clock()
            running = sum(1 for r in self._state.placements.values() if r.state == WorkloadState.RUNNING)
            return heartbeat_message(
                samples,
                at_ms=self._now_ms(),
                ping_nonce=nonce,
                draining=self._draining,
                running=running,
                overlay_rtt_us=self._overlay.rtt_us if self._overlay else 0,
            )

    def _save(self) -> None:
        self._store.save(self._state)
        self._dirty = False
        self._last_save = self._clock()

    def _prune(self) -> None:
        """Forget finished placements whose final status went out and whose usage is acknowledged."""
        for placement_id in [
            placement_id
            for placement_id, record in self._state.placements.items()
            if WorkloadState(record.state).finished and not record.pending_usage and placement_id in self._final_sent
        ]:
            del self._state.placements[placement_id]
            self._final_sent.discard(placement_id)
            self._dirty = True

    # -- start-up ----------------------------------------------------------------------------

    def recover(self) -> None:
        """Re-attach to workloads that outlived an agent restart; settle the ones that did not."""
        workloads = {workload.placement_id: workload for workload in self._runtime.list_workloads()}
        with self._lock:
            live = [r for r in self._state.placements.values() if not WorkloadState(r.state).finished]
            settled = {r.placement_id for r in self._state.placements.values() if WorkloadState(r.state).finished}
            unknown = workloads.keys() - self._state.placements.keys()
        for placement_id in settled & {pid for pid, workload in workloads.items() if not workload.running}:
            self._runtime.remove(placement_id)
        for record in live:
            workload = workloads.get(record.placement_id)
            if workload is not None and workload.running:
                with self._lock:
                    if record.state != WorkloadState.PAUSED:
                        record.state = WorkloadState.RUNNING.value
                    record.started_at_ms = record.started_at_ms or self._now_ms()
                    self._save()
                log.info("re-attaching to placement %s", record.placement_id)
                self._runtime.attach(record.placement_id, self, record.log_cursor)
                self._open_tunnels(record)
            elif workload is not None:
                at = workload.finished_at_ms or self._now_ms()
                self.on_state(StateChange(record.placement_id, WorkloadState.EXITED, at, workload.exit_code))
            else:
                # The agent (or its host) went away under the workload: the provider's failure, not the buyer's.
                message = "the workload was gone when the agent restarted"
                at = record.usage_end_ms or record.started_at_ms or self._now_ms()
                self.on_state(StateChange(record.placement_id, WorkloadState.LOST, at, message=message))
        for placement_id in unknown:
            log.warning("the runtime holds workload %s that this agent's state does not know", placement_id)

    def shutdown_workloads(self, grace_seconds: int = DEFAULT_GRACE_SECONDS, *, timeout: float | None = None) -> bool:
        """Stop every workload (SIGTERM, grace, SIGKILL), reporting each as lost; return whether all ended.

        Each final status and last usage report goes to the outbox as its workload ends.
        """
        with self._lock:
            self._shutting_down = True
            live = [r.placement_id for r in self._state.placements.values() if not WorkloadState(r.state).finished]
        for placement_id in live:
            log.info("stopping placement %s: the agent is shutting down", placement_id)
            self._runtime.stop(placement_id, grace_seconds)
        deadline = time.monotonic() + (grace_seconds + 10 if timeout is None else timeout)
        while time.monotonic() < deadline:
            with self._lock:
                if all(WorkloadState(self._state.placements[p].state).finished for p in live if p in self.placements):
                    return True
            time.sleep(0.05)
        return False

    def unacknowledged_usage(self) -> int:
        """Return how many usage reports still wait for the gateway's acknowledgement."""
        with self._lock:
            return sum(len(record.pending_usage) for record in self._state.placements.values())

    def say_goodbye(self, reason: str) -> bool:
        """Queue Goodbye as the stream's last message and end it; return whether a stream was open."""
        with self._lock:
            if not self._connected:
                return False
            self._outbox.put(pb.AgentMessage(goodbye=pb.Goodbye(reason=reason[:200])))
            self._connected = False
            self._outbox.put(None)
            return True

    def close(self) -> None:
        """Save the state one last time and end the service tunnels."""
        with self._lock:
            self._save()
        if self._tunnels is not None:
            self._tunnels.close_all()


def _watch_policy(policy: dict) -> WatchPolicy:
    """Return the watch settings of a stored Colocation policy."""
    return WatchPolicy(
        watch=bool(policy.get("watch")),
        utilization_percent=int(policy.get("utilization_percent") or 1),
        memory_percent=int(policy.get("memory_percent") or 1),
        grace_seconds=int(policy.get("grace_seconds") or 0),
        owner_time=bool(policy.get("owner_time")),
    )
