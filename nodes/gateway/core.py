"""The gateway's shared state: database workers, the heartbeat buffer and the command dispatcher."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

import grpc
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connections
from django.utils import timezone

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from nodes.gateway.convert import control_message
from nodes.models import Node, NodeCommand, NodePlacement, NodeState, RevokedCertificate
from nodes.services import NodeHeartbeat, node_commands_mark_delivered, node_commands_pending, node_heartbeats_apply

log = logging.getLogger("nodes.gateway")

# How long a quarantined node's stream stays open for the stop commands queued for it (then it ends anyway).
QUARANTINE_STOP_GRACE_SECONDS = 30

MAX_COMMANDS_PER_POLL = 1000
# Errors that mean "the database is away" (not "this row is bad"): keep the data and try again later.
DATABASE_AWAY = (OperationalError, InterfaceError)


class DbWorkers:
    """A few threads that run every database call of the gateway, so open streams share few connections."""

    def __init__(self, count: int) -> None:
        self._stopped = False
        self._jobs: queue.Queue[tuple[Callable[..., Any], dict[str, Any], Future] | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._work, name=f"gateway-db-{n}", daemon=True) for n in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, function: Callable[..., Any], **kwargs: Any) -> Future:
        """Queue function(**kwargs) for a database worker and return the future of its result."""
        if self._stopped:
            raise RuntimeError("the gateway is stopping")
        future: Future = Future()
        self._jobs.put((function, kwargs, future))
        return future

    def run(self, function: Callable[..., Any], **kwargs: Any) -> Any:
        """Run function(**kwargs) on a database worker and return its result (or raise its error)."""
        return self.submit(function, **kwargs).result()

    async def arun(self, function: Callable[..., Any], **kwargs: Any) -> Any:
        """Await function(**kwargs) run on a database worker, without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(function, **kwargs))

    def _work(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                function, kwargs, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                close_old_connections()
                try:
                    future.set_result(function(**kwargs))
                except BaseException as exc:  # handed to the caller
                    future.set_exception(exc)
        finally:
            connections.close_all()

    def stop(self) -> None:
        """Finish queued work, then end the threads and close their connections."""
        self._stopped = True
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=10)


class HeartbeatBuffer:
    """Keeps the latest heartbeat per node in memory; `flush` writes them all in one bulk update."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, NodeHeartbeat] = {}
        self.received = 0
        self.flushes = 0
        self.dropped = 0

    def add(self, heartbeat: NodeHeartbeat) -> None:
        """Buffer a heartbeat, replacing the node's older one."""
        with self._lock:
            self._pending[heartbeat.node_id] = heartbeat
            self.received += 1

    def discard(self, node_id: int) -> None:
        """Forget a node's buffered heartbeat (its agent said goodbye: it must not bring the node back)."""
        with self._lock:
            self._pending.pop(node_id, None)

    def flush(self) -> int:
        """Write the buffered heartbeats and return how many nodes were written.

        When the database is away the batch is kept for the next flush (newer heartbeats replace it); when
        a row is refused (a value its column cannot hold), the batch is split until the bad rows stand
        alone, and only those are dropped: one node's bad data never holds back the others'.
        """
        with self._lock:
            batch, self._pending = list(self._pending.values()), {}
        if not batch:
            return 0
        try:
            written = self._write(batch)
        except Exception:
            with self._lock:
                for heartbeat in batch:
                    self._pending.setdefault(heartbeat.node_id, heartbeat)
            raise
        with self._lock:
            self.flushes += 1
        return written

    def _write(self, batch: list[NodeHeartbeat]) -> int:
        try:
            node_heartbeats_apply(heartbeats=batch)
            return len(batch)
        except DATABASE_AWAY:
            raise
        except DatabaseError:
            if len(batch) == 1:
                self.dropped += 1
                log.warning("node %s: dropped a heartbeat its columns cannot hold", batch[0].node_id, exc_info=True)
                return 0
        middle = len(batch) // 2
        return self._write(batch[:middle]) + self._write(batch[middle:])


class StreamSession:
    """One open Connect stream: the node it belongs to and what to send it.

    The stream's handler runs on the gateway's event loop and awaits `outbox`; `send` and `close` may be
    called from any thread (the dispatcher's poll runs on its own), so they hand items to the loop.
    """

    def __init__(self, *, node_id: int, gpu_ids: dict[int, int], loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.node_id = node_id
        self.gpu_ids = gpu_ids
        self._loop = loop or asyncio.get_running_loop()
        # (NodeCommand id or None, message); None ends the stream.
        self.outbox: asyncio.Queue[tuple[int | None, pb.ControlMessage] | None] = asyncio.Queue()
        self.routed: set[int] = set()
        self.closed = threading.Event()
        # Set when the gateway ends the stream for a reason the agent must hear: (status code, details).
        self.end_status: tuple[grpc.StatusCode, str] | None = None

    def _put(self, item: tuple[int | None, pb.ControlMessage] | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self.outbox.put_nowait, item)
        except RuntimeError:
            pass  # the event loop is closed: the stream is gone, and what was not delivered is sent again later

    def send(self, message: pb.ControlMessage, command_id: int | None = None) -> None:
        """Queue a message for the stream (thread-safe)."""
        self._put((command_id, message))

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        """End the stream with a status the agent sees (thread-safe)."""
        if self.end_status is None:
            self.end_status = (code, details)
        self.close()

    def close(self) -> None:
        """End the stream's response side (thread-safe)."""
        if not self.closed.is_set():
            self.closed.set()
            self._put(None)


class CommandDispatcher:
    """Routes queued NodeCommands to the streams of their nodes, in id order, and marks them delivered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[int, StreamSession] = {}
        self._delivered: list[int] = []

    def register(self, session: StreamSession) -> None:
        """Make a stream its node's current one; an older stream of the node is closed."""
        with self._lock:
            older = self._sessions.get(session.node_id)
            self._sessions[session.node_id] = session
        if older is not None:
            log.info("node %s opened a new stream; closing its older one", session.node_id)
            older.close()

    def unregister(self, session: StreamSession) -> None:
        """Forget a stream that ended."""
        with self._lock:
            if self._sessions.get(session.node_id) is session:
                del self._sessions[session.node_id]

    def connected(self) -> list[int]:
        """Return the ids of nodes with an open stream."""
        with self._lock:
            return sorted(self._sessions)

    def delivered(self, command_id: int) -> None:
        """Note that a command was written to its stream."""
        with self._lock:
            self._delivered.append(command_id)

    def end_revoked(self) -> list[int]:
        """End the streams of nodes whose certificate was revoked since they connected; return their ids."""
        with self._lock:
            sessions = dict(self._sessions)
        if not sessions:
            return []
        revoked = sorted(
            set(RevokedCertificate.objects.filter(node_id__in=list(sessions)).values_list("node_id", flat=True))
        )
        for node_id in revoked:
            sessions[node_id].abort(grpc.StatusCode.PERMISSION_DENIED, "This node's certificate was revoked.")
        return revoked

    def end_quarantined(self) -> list[int]:
        """End the streams of nodes quarantined since they connected (they cannot connect again); return their ids."""
        with self._lock:
            sessions = dict(self._sessions)
        if not sessions:
            return []
        quarantined = set(
            Node.objects.filter(pk__in=list(sessions), state=NodeState.QUARANTINED).values_list("pk", flat=True)
        )
        # A quarantined node's agent is first told to stop what it still runs (nobody pays for it any more): its
        # stream stays open until those commands are delivered, for at most QUARANTINE_STOP_GRACE_SECONDS.
        waiting = set(
            NodeCommand.objects.filter(
                node_id__in=quarantined,
                delivered_at__isnull=True,
                cancelled_at__isnull=True,
                created_at__gte=timezone.now() - timedelta(seconds=QUARANTINE_STOP_GRACE_SECONDS),
            ).values_list("node_id", flat=True)
        )
        quarantined = sorted(quarantined - waiting)
        for node_id in quarantined:
            sessions[node_id].abort(grpc.StatusCode.PERMISSION_DENIED, "This node is quarantined; contact support.")
        return quarantined

    def close_all(self) -> None:
        """End every stream."""
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.close()

    def poll(self) -> int:
        """Mark delivered commands, then route new ones to their streams; return how many were routed."""
        with self._lock:
            delivered, self._delivered = self._delivered, []
            sessions = dict(self._sessions)
        if delivered:
            try:
                node_commands_mark_delivered(command_ids=delivered)
            except Exception:
                with self._lock:
                    self._delivered.extend(delivered)
                raise
            done = set(delivered)
            for session in sessions.values():
                session.routed -= done
        if not sessions:
            return 0
        pending = node_commands_pending(node_ids=list(sessions), limit=MAX_COMMANDS_PER_POLL)
        settled = _settled_starts(pending)
        if settled:
            # The platform ended these placements while their StartPlacement waited: never start them.
            log.info("dropping StartPlacement commands %s: their placements were already settled", sorted(settled))
            node_commands_mark_delivered(command_ids=sorted(settled))
        routed = 0
        for command_id, node_id, message in pending:
            if command_id in settled:
                continue
            session = sessions[node_id]
            if command_id in session.routed or session.closed.is_set():
                continue
            session.routed.add(command_id)
            session.send(control_message(message), command_id)
            routed += 1
        return routed


def _settled_starts(pending: list[tuple[int, int, dict]]) -> set[int]:
    """Return the ids of queued StartPlacement commands whose placement the platform already ended."""
    starts = {
        command_id: message["start_placement"].get("placement_id", "")
        for command_id, _, message in pending
        if isinstance(message, dict) and "start_placement" in message
    }
    if not starts:
        return set()
    ended = set(
        NodePlacement.objects.filter(placement_id__in=set(starts.values()), stopped_at__isnull=False).values_list(
            "placement_id", flat=True
        )
    )
    return {command_id for command_id, placement_id in starts.items() if placement_id in ended}


class NodeGuard:
    """Per-node budgets of one gateway: streams per certificate, a message rate, strikes for bad messages.

    Used only on the gateway's event loop, so it needs no lock. What it refuses costs only the sender.
    """

    def __init__(
        self,
        *,
        streams_per_certificate: int,
        messages_per_second: float,
        burst: int,
        bad_messages_max: int,
        bad_window_seconds: float,
        penalty_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.streams_per_certificate = streams_per_certificate
        self.messages_per_second = messages_per_second
        self.burst = burst
        self.bad_messages_max = bad_messages_max
        self.bad_window_seconds = bad_window_seconds
        self.penalty_seconds = penalty_seconds
        self._clock = clock
        self._streams: dict[str, int] = {}
        self._buckets: dict[int, tuple[float, float]] = {}  # node id -> (tokens, at)
        self._strikes: dict[int, deque[float]] = {}
        self._penalties: dict[int, float] = {}  # node id -> end of its penalty
        self.refused_streams = 0
        self.dropped_messages = 0
        self.strikes = 0
        self.disconnects = 0

    def stream_open(self, certificate_key: str) -> bool:
        """Count a new Connect call of a certificate; False when it holds too many already."""
        held = self._streams.get(certificate_key, 0)
        if held >= self.streams_per_certificate:
            self.refused_streams += 1
            return False
        self._streams[certificate_key] = held + 1
        return True

    def stream_closed(self, certificate_key: str) -> None:
        """Forget a Connect call that ended."""
        held = self._streams.get(certificate_key, 0) - 1
        if held > 0:
            self._streams[certificate_key] = held
        else:
            self._streams.pop(certificate_key, None)

    def penalty_left(self, node_id: int) -> float:
        """Return the seconds a penalised node must still wait before it may connect (0 when none)."""
        end = self._penalties.get(node_id)
        if end is None:
            return 0.0
        left = end - self._clock()
        if left <= 0:
            del self._penalties[node_id]
            return 0.0
        return left

    def allow(self, node_id: int) -> bool:
        """Take one token from the node's bucket; False when it sends faster than its rate and burst."""
        now = self._clock()
        tokens, at = self._buckets.get(node_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.messages_per_second)
        if tokens < 1:
            self._buckets[node_id] = (tokens, now)
            self.dropped_messages += 1
            return False
        self._buckets[node_id] = (tokens - 1, now)
        return True

    def strike(self, node_id: int) -> bool:
        """Count a bad message; True when the node crossed the limit (it is then penalised)."""
        self.strikes += 1
        now = self._clock()
        window = self._strikes.setdefault(node_id, deque())
        window.append(now)
        while window and window[0] < now - self.bad_window_seconds:
            window.popleft()
        if len(window) > self.bad_messages_max:
            window.clear()
            self._penalties[node_id] = now + self.penalty_seconds
            self.disconnects += 1
            return True
        return False

    def forget(self, node_id: int) -> None:
        """Drop a disconnected node's rate bucket (its strikes and penalty stay)."""
        self._buckets.pop(node_id, None)
