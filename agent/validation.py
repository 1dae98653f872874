"""Checks on every StartPlacement before a runtime sees it: the agent trusts no command, not even the platform's.

The platform validates what buyers send, but a compromised or buggy platform, a replayed command or a
hand-written gateway must not be able to turn a placement into flags for the container engine, a host
port below 1024, an unbounded environment or limits the host cannot honour. Each check raises
InvalidPlacement with a message saying what was wrong; the session reports it as a failed placement.
"""

from __future__ import annotations

import re

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb

# The grammar of github.com/distribution/reference: [domain[:port]/]path[:tag][@digest]. No component may
# begin with "-", so a reference can never be read as a flag.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
OCI_REFERENCE = re.compile(rf"^(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?$", re.ASCII)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$", re.ASCII)
PEER_ADDRESS = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9a-fA-F:.]{2,45}\])$", re.ASCII)
RESERVED_ENV_PREFIXES = ("JANCTION_", "CUDA_MPS_", "NVIDIA_VISIBLE_DEVICES")

MAX_PLACEMENT_ID_LENGTH = 128
MAX_IMAGE_LENGTH = 255
MAX_COMMAND_ARGS = 256
MAX_COMMAND_BYTES = 64 * 1024
MAX_ENV_VARS = 256
MAX_ENV_NAME_LENGTH = 128
MAX_ENV_BYTES = 64 * 1024
MAX_PORTS = 16
MIN_HOST_PORT = 1024
MAX_PEERS = 64
MAX_VGPUS = 64
MEMORY_RANGE = (16 * 1024**2, 4 * 1024**4)  # 16 MiB to 4 TiB
CPU_MILLICORES_RANGE = (10, 1024 * 1000)  # a hundredth of a core to 1,024 cores
PIDS_RANGE = (16, 65536)
# How far the agent's clock may run ahead of the platform's before it calls an unexpired command expired.
CLOCK_SKEW_MS = 5_000


class InvalidPlacement(ValueError):
    """A StartPlacement the agent refuses."""


class NodeCannotRun(InvalidPlacement):
    """A sound StartPlacement this node cannot take (draining, vGPUs busy or gone): not the buyer's fault."""


class ExpiredCommand(InvalidPlacement):
    """A StartPlacement that arrived after its expiry: the platform may already have settled the placement."""


def validate_placement_id(placement_id: str) -> None:
    """Raise InvalidPlacement unless the id is short and printable."""
    if not placement_id or len(placement_id) > MAX_PLACEMENT_ID_LENGTH or not placement_id.isprintable():
        raise InvalidPlacement(f"placement ids must be 1 to {MAX_PLACEMENT_ID_LENGTH} printable characters")


def validate_image(image: str) -> None:
    """Raise InvalidPlacement unless `image` is an OCI image reference (which never starts with "-")."""
    if not image.strip():
        raise InvalidPlacement("the placement has no image")
    if image.startswith("-") or len(image) > MAX_IMAGE_LENGTH or not OCI_REFERENCE.fullmatch(image):
        raise InvalidPlacement(
            f"{image[:80]!r} is not an OCI image reference (e.g. docker.io/library/python:3.12); refused"
        )


def validate_command(command: list[str]) -> None:
    """Raise InvalidPlacement for too many or too long arguments, or a NUL byte in one."""
    if len(command) > MAX_COMMAND_ARGS:
        raise InvalidPlacement(f"the command has {len(command)} arguments; at most {MAX_COMMAND_ARGS} are allowed")
    size = sum(len(arg.encode()) + 1 for arg in command)
    if size > MAX_COMMAND_BYTES:
        raise InvalidPlacement(f"the command is {size} bytes; at most {MAX_COMMAND_BYTES} are allowed")
    if any("\0" in arg for arg in command):
        raise InvalidPlacement("command arguments may not contain NUL bytes")


def validate_env(env: dict[str, str]) -> None:
    """Raise InvalidPlacement for bad or reserved names, values with line breaks or NULs, or too much of it."""
    if len(env) > MAX_ENV_VARS:
        raise InvalidPlacement(f"the environment has {len(env)} variables; at most {MAX_ENV_VARS} are allowed")
    for name, value in env.items():
        if len(name) > MAX_ENV_NAME_LENGTH or not ENV_NAME.fullmatch(name):
            raise InvalidPlacement(f"invalid environment variable name {name[:80]!r}")
        if name.startswith(RESERVED_ENV_PREFIXES):
            raise InvalidPlacement(f"environment variable {name} is reserved for the platform")
        if any(char in value for char in "\0\r\n"):
            raise InvalidPlacement(f"the value of environment variable {name} contains a line break or NUL")
    size = sum(len(name.encode()) + len(value.encode()) + 2 for name, value in env.items())
    if size > MAX_ENV_BYTES:
        raise InvalidPlacement(f"the environment is {size} bytes; at most {MAX_ENV_BYTES} are allowed")


def validate_ports(ports: list[pb.PortMapping]) -> None:
    """Raise InvalidPlacement for too many, out-of-range, privileged or repeated ports."""
    if len(ports) > MAX_PORTS:
        raise InvalidPlacement(f"{len(ports)} ports requested; at most {MAX_PORTS} are allowed")
    containers: set[tuple[int, str]] = set()
    hosts: set[tuple[int, str]] = set()
    for port in ports:
        protocol = port.protocol or "tcp"
        if protocol not in ("tcp", "udp"):
            raise InvalidPlacement(f"port protocols must be tcp or udp, got {protocol[:20]!r}")
        if not 0 < port.container_port < 65536:
            raise InvalidPlacement("container ports must be between 1 and 65535")
        if port.host_port and not MIN_HOST_PORT <= port.host_port <= 65535:
            raise InvalidPlacement(f"host ports must be 0 (any free port) or between {MIN_HOST_PORT} and 65535")
        if (port.container_port, protocol) in containers or (port.host_port, protocol) in hosts:
            raise InvalidPlacement(f"port {port.container_port}/{protocol} is mapped twice")
        containers.add((port.container_port, protocol))
        if port.host_port:
            hosts.add((port.host_port, protocol))


def validate_peers(peers: list[pb.Peer]) -> None:
    """Raise InvalidPlacement for too many peers or ones whose address could smuggle text into JANCTION_PEERS."""
    if len(peers) > MAX_PEERS:
        raise InvalidPlacement(f"{len(peers)} peers; at most {MAX_PEERS} are allowed")
    for peer in peers:
        if not PEER_ADDRESS.fullmatch(peer.address) or not 0 < peer.port < 65536:
            raise InvalidPlacement(f"peer {peer.address[:80]!r}:{peer.port} is not a host name and port")


SERVICE_PORT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$", re.ASCII)
ROLE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$", re.ASCII)
MAX_TUNNEL_ADDRESSES = 8
MAX_TUNNEL_POOL_SIZE = 64


def validate_service(start: pb.StartPlacement) -> None:
    """Raise InvalidPlacement for bad service ports, tunnel addresses, pool size or role (issue 15)."""
    if len(start.service_ports) > MAX_PORTS:
        raise InvalidPlacement(f"{len(start.service_ports)} service ports; at most {MAX_PORTS} are allowed")
    names, ports = set(), set()
    for port in start.service_ports:
        if not SERVICE_PORT_NAME.fullmatch(port.name) or not 0 < port.container_port < 65536:
            raise InvalidPlacement(f"service port {port.name[:40]!r}:{port.container_port} is not a name and a port")
        if port.name in names or port.container_port in ports:
            raise InvalidPlacement(f"service port {port.name!r} ({port.container_port}) appears twice")
        names.add(port.name)
        ports.add(port.container_port)
    if len(start.tunnel_addresses) > MAX_TUNNEL_ADDRESSES:
        raise InvalidPlacement(f"{len(start.tunnel_addresses)} tunnel addresses; at most {MAX_TUNNEL_ADDRESSES}")
    for address in start.tunnel_addresses:
        host, _, port = address.rpartition(":")
        if not PEER_ADDRESS.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidPlacement(f"tunnel address {address[:80]!r} is not host:port")
    if start.tunnel_pool_size > MAX_TUNNEL_POOL_SIZE:
        raise InvalidPlacement(f"tunnel_pool_size may be at most {MAX_TUNNEL_POOL_SIZE}")
    if start.role and not ROLE_NAME.fullmatch(start.role):
        raise InvalidPlacement(f"role {start.role[:40]!r} is not a short lower-case name")
    if start.placement_count and start.placement_index >= start.placement_count:
        raise InvalidPlacement("placement_index must be below placement_count")


def _in_range(value: int, bounds: tuple[int, int], what: str) -> None:
    low, high = bounds
    if value and not low <= value <= high:
        raise InvalidPlacement(f"{what} must be 0 (the agent's default) or between {low} and {high}, got {value}")


def validate_limits(start: pb.StartPlacement) -> None:
    """Raise InvalidPlacement for limits outside what any host can honour (0 means the agent's default)."""
    _in_range(start.memory_limit_bytes, MEMORY_RANGE, "memory_limit_bytes")
    _in_range(start.cpu_millicores, CPU_MILLICORES_RANGE, "cpu_millicores")
    _in_range(start.pids_limit, PIDS_RANGE, "pids_limit")


def validate_expiry(start: pb.StartPlacement, now_ms: int) -> None:
    """Raise ExpiredCommand when the command's expiry (plus the allowed clock skew) has passed."""
    if start.expires_at_ms and now_ms > start.expires_at_ms + CLOCK_SKEW_MS:
        raise ExpiredCommand(
            f"the StartPlacement expired {(now_ms - start.expires_at_ms) // 1000} s before it arrived "
            f"(issued for rental state {start.issued_for_state or 'unknown'!r}); not started"
        )


def validate_start(start: pb.StartPlacement, now_ms: int | None = None) -> None:
    """Raise InvalidPlacement unless every field of a StartPlacement is acceptable (and, given now_ms, unexpired)."""
    validate_placement_id(start.placement_id)
    if now_ms is not None:
        validate_expiry(start, now_ms)
    validate_image(start.image)
    validate_command(list(start.command))
    validate_env(dict(start.env))
    if len(start.vgpu_local_ids) > MAX_VGPUS:
        raise InvalidPlacement(f"{len(start.vgpu_local_ids)} vGPUs requested; at most {MAX_VGPUS} are allowed")
    validate_limits(start)
    validate_ports(list(start.ports))
    validate_peers(list(start.peers))
    validate_service(start)
