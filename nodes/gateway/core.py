"""The gateway's shared state: database workers, the heartbeat buffer and the command dispatcher."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from django.db import close_old_connections, connections

from agent.proto.gen.janction.agent.v1 import agent_pb2 as pb
from nodes.commands import node_commands_pending
from nodes.gateway.convert import control_message
from nodes.services import NodeHeartbeat, node_commands_mark_delivered, node_heartbeats_apply

log = logging.getLogger("nodes.gateway")

MAX_COMMANDS_PER_POLL = 1000


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
        """Write the buffered heartbeats; on failure keep them for the next flush. Return how many nodes."""
        with self._lock:
            batch, self._pending = list(self._pending.values()), {}
        if not batch:
            return 0
        try:
            node_heartbeats_apply(heartbeats=batch)
        except Exception:
            with self._lock:
                for heartbeat in batch:
                    self._pending.setdefault(heartbeat.node_id, heartbeat)
            raise
        with self._lock:
            self.flushes += 1
        return len(batch)


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

    def _put(self, item: tuple[int | None, pb.ControlMessage] | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self.outbox.put_nowait, item)
        except RuntimeError:
            pass  # the event loop is closed: the stream is gone, and what was not delivered is sent again later

    def send(self, message: pb.ControlMessage, command_id: int | None = None) -> None:
        """Queue a message for the stream (thread-safe)."""
        self._put((command_id, message))

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
        routed = 0
        for command_id, node_id, message in pending:
            session = sessions[node_id]
            if command_id in session.routed or session.closed.is_set():
                continue
            session.routed.add(command_id)
            session.send(control_message(message), command_id)
            routed += 1
        return routed
