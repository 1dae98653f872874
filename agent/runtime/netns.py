"""Connections into a workload's network namespace: how the agent reaches a service in a container with no network.

Every workload keeps its own network namespace with nothing but a loopback interface (podman and docker
`--network none`, the sandbox's `--unshare-all`), and nothing is published on the host. To reach a port in
it, a short-lived thread enters the namespace (`setns(2)` on `/proc/<pid>/ns/net` of a process of the
workload), creates a TCP socket there and goes back; a socket belongs to the namespace it was created in for
its whole life, so the agent then connects it to 127.0.0.1:<port> and uses it from any thread. Only the
creating thread ever changes namespace, and only for the few microseconds of socket(2).

Needs CAP_SYS_ADMIN (setns) and CAP_SYS_PTRACE (opening another user's namespace file): the agent runs as root.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int


class ServiceConnectError(RuntimeError):
    """A connection into a workload could not be opened; `code` says why (stable, snake_case)."""

    code = "service_connect_error"


class PlacementNotRunning(ServiceConnectError):
    """The placement is unknown to this agent, belongs to another agent, is paused or has stopped."""

    code = "placement_not_running"


class PlacementPaused(PlacementNotRunning):
    """The workload is frozen while the node's owner uses the GPU (agent.colocation); it will run again."""

    code = "placement_paused"


class ContainerNotListening(ServiceConnectError):
    """The workload runs but nothing accepts connections on the port (starting, or it never listens)."""

    code = "container_not_listening"


class ConnectTimedOut(ServiceConnectError):
    """The workload did not accept the connection in time."""

    code = "connect_timed_out"


class ServiceConnectionsUnavailable(ServiceConnectError):
    """This agent cannot enter network namespaces (it lacks root / CAP_SYS_ADMIN), or the runtime cannot."""

    code = "service_connections_unavailable"


@dataclass(frozen=True)
class NamespaceTarget:
    """A process whose network namespace is a workload's: its pid and its start time (against pid reuse)."""

    pid: int
    start_time: int


def process_start_time(pid: int) -> int | None:
    """Return the start time (clock ticks after boot) of a process, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after it follow the last ')'.
    fields = text[text.rindex(b")") + 2 :].split()
    return int(fields[19])


def target_of(pid: int) -> NamespaceTarget | None:
    """Return the target for a live process, or None when it does not exist."""
    start = process_start_time(pid)
    return NamespaceTarget(pid, start) if start is not None else None


def running_container_target(placement_id: str, state: dict) -> NamespaceTarget:
    """Return the process of a running container from its inspected State (podman and the Docker API agree)."""
    if state.get("Paused") or state.get("Status") == "paused":
        raise PlacementPaused(f"placement {placement_id} is paused while the node's owner uses the GPU")
    pid = state.get("Pid") or 0
    target = target_of(int(pid)) if state.get("Running") and isinstance(pid, int) and pid > 0 else None
    if target is None:
        raise PlacementNotRunning(f"placement {placement_id} has stopped")
    return target


def namespace_inode(pid: int | str) -> int | None:
    """Return the inode of a process's network namespace ("self" for the agent's), or None when it is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _effective_capabilities() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def check_namespace_entry() -> None:
    """Raise ServiceConnectionsUnavailable, saying what to do, unless this process can enter network namespaces."""
    capabilities = _effective_capabilities()
    missing = [
        name
        for bit, name in ((CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"))
        if not capabilities & (1 << bit)
    ]
    if missing:
        raise ServiceConnectionsUnavailable(
            f"the agent lacks {' and '.join(missing)}, so it cannot open connections into containers and this "
            "node cannot serve service rentals; run the agent as root (sudo, or the systemd unit's User=root)"
        )
    # Entering our own namespace changes nothing but proves setns works here (a seccomp profile may forbid it).
    try:
        socket_in_namespace("/proc/thread-self/ns/net", expected_inode=None).close()
    except ServiceConnectError as exc:
        raise ServiceConnectionsUnavailable(f"setns(2) does not work in this agent: {exc}") from exc


def socket_in_namespace(namespace_path: str, *, expected_inode: int | None) -> socket.socket:
    """Return a new TCP socket created inside the network namespace at `namespace_path`.

    `namespace_path` is opened first and, when `expected_inode` is given, must still be that namespace
    (the caller checked the process behind it); the agent's own namespace is refused unless asked for.
    """
    outcome: dict[str, object] = {}

    def create() -> None:
        try:
            outcome["socket"] = _create_in(namespace_path, expected_inode)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    # A fresh thread, never a pooled one: if returning to the agent's namespace failed, the thread ends with it.
    thread = threading.Thread(target=create, name="netns-socket", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["socket"]  # type: ignore[return-value]


def _create_in(namespace_path: str, expected_inode: int | None) -> socket.socket:
    try:
        target = os.open(namespace_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise PlacementNotRunning("the workload's process is gone") from exc
    except PermissionError as exc:
        raise ServiceConnectionsUnavailable(
            f"cannot open {namespace_path} ({exc.strerror}); run the agent as root"
        ) from exc
    try:
        if expected_inode is not None:
            inode = os.fstat(target).st_ino
            if inode != expected_inode:
                raise PlacementNotRunning("the workload's process changed while connecting")
            if inode == namespace_inode("self"):
                raise ServiceConnectionsUnavailable("the workload shares the agent's network namespace; refusing")
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _setns(target)
            except OSError as exc:
                if exc.errno == errno.EPERM:
                    raise ServiceConnectionsUnavailable(
                        "setns(2) was refused (EPERM): the agent needs CAP_SYS_ADMIN; run it as root"
                    ) from exc
                raise ServiceConnectError(f"setns(2) failed: {exc.strerror}") from exc
            try:
                return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                _setns(own)
        finally:
            os.close(own)
    finally:
        os.close(target)


def connect_in_namespace(target: NamespaceTarget, port: int, timeout: float) -> socket.socket:
    """Return a socket connected to 127.0.0.1:port in the network namespace of `target`'s process.

    Raises PlacementNotRunning when the process is gone or is another one now (pid reuse).
    """
    inode = namespace_inode(target.pid)
    if inode is None or process_start_time(target.pid) != target.start_time:
        raise PlacementNotRunning("the workload's process is gone")
    sock = socket_in_namespace(f"/proc/{target.pid}/ns/net", expected_inode=inode)
    # The namespace file was opened before this check: the same start time means it was this process's.
    if process_start_time(target.pid) != target.start_time:
        sock.close()
        raise PlacementNotRunning("the workload's process ended while connecting")
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
    except TimeoutError as exc:
        sock.close()
        raise ConnectTimedOut(f"port {port} did not accept the connection within {timeout:g} s") from exc
    except ConnectionRefusedError as exc:
        sock.close()
        raise ContainerNotListening(f"nothing listens on port {port} in the container") from exc
    except OSError as exc:
        sock.close()
        raise ContainerNotListening(f"cannot connect to port {port} in the container: {exc.strerror}") from exc
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
