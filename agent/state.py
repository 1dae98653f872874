"""The agent's state directory: node identity files and a JSON record of placements.

Everything lives in one directory (mode 0700): the node key, certificate and CA (mode 0600)
and `state.json`, rewritten atomically (temporary file, fsync, rename) so a crash leaves
either the old or the new record.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

STATE_VERSION = 1


@dataclass
class UsageRecord:
    """A signed usage report waiting for the gateway's acknowledgement."""

    placement_id: str
    seq: int
    interval_start_ms: int
    interval_end_ms: int
    vgpu_count: int
    vgpu_milliseconds: int
    signature: bytes = b""

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the signature in hex)."""
        return {**asdict(self), "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageRecord:
        """Build a record from to_json's output."""
        return cls(**{**data, "signature": bytes.fromhex(data["signature"])})


@dataclass
class PlacementRecord:
    """What the agent knows and has reported about one placement."""

    placement_id: str
    image: str
    vgpu_local_ids: list[str]
    state: str = "starting"
    exit_code: int | None = None
    message: str = ""
    started_at_ms: int = 0
    ended_at_ms: int = 0
    usage_end_ms: int = 0
    usage_seq: int = 0
    log_seq: int = 0
    log_cursor: str = ""
    stop_requested: bool = False
    limits_not_enforced: str = ""
    # Colocation: the buyer accepts freezing; when it was frozen; stopped because the owner came back.
    pausable: bool = False
    paused_at_ms: int = 0
    owner_stopped: bool = False
    # Services (issue 15): [name, container port] pairs the ingress may reach, where to dial, how many idle tunnels.
    service_ports: list[list] = field(default_factory=list)
    tunnel_addresses: list[str] = field(default_factory=list)
    tunnel_pool_size: int = 0
    pending_usage: list[UsageRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        data = asdict(self)
        data["pending_usage"] = [record.to_json() for record in self.pending_usage]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlacementRecord:
        """Build a record from to_json's output, ignoring unknown keys."""
        known = {item.name for item in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["pending_usage"] = [UsageRecord.from_json(item) for item in data.get("pending_usage", [])]
        return cls(**values)


@dataclass
class AgentState:
    """The whole persisted record."""

    node_id: str = ""
    connect_address: str = ""
    fake_seed: str = ""
    placements: dict[str, PlacementRecord] = field(default_factory=dict)
    # Colocation: the last policy the platform sent (kept across restarts, so an agent that cannot reach
    # the gateway still follows it) and whether the owner was active.
    colocation: dict[str, Any] = field(default_factory=dict)
    owner_active: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "version": STATE_VERSION,
            "node_id": self.node_id,
            "connect_address": self.connect_address,
            "fake_seed": self.fake_seed,
            "placements": {key: record.to_json() for key, record in self.placements.items()},
            "colocation": self.colocation,
            "owner_active": self.owner_active,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentState:
        """Build the state from to_json's output."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {data.get('version')!r}; expected {STATE_VERSION}")
        return cls(
            node_id=data.get("node_id", ""),
            connect_address=data.get("connect_address", ""),
            fake_seed=data.get("fake_seed", ""),
            placements={key: PlacementRecord.from_json(value) for key, value in data.get("placements", {}).items()},
            colocation=dict(data.get("colocation") or {}),
            owner_active=bool(data.get("owner_active", False)),
        )


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace path's contents with data so readers see the old or the new bytes, never a mix."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class StateStore:
    """Files of one agent's state directory."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self.key_path = self.directory / "node.key"
        self.cert_path = self.directory / "node.crt"
        self.ca_path = self.directory / "ca.crt"
        self.state_path = self.directory / "state.json"

    @property
    def enrolled(self) -> bool:
        """Return whether the node holds a key, a certificate and the CA."""
        return all(path.exists() for path in (self.key_path, self.cert_path, self.ca_path))

    def write_secret(self, path: Path, data: bytes) -> None:
        """Write an identity file with mode 0600."""
        write_atomically(path, data, 0o600)

    def load(self) -> AgentState:
        """Return the saved state, or a fresh one (with a new fake-GPU seed) when there is none."""
        if not self.state_path.exists():
            state = AgentState(fake_seed=secrets.token_hex(16))
            self.save(state)
            return state
        return AgentState.from_json(json.loads(self.state_path.read_text()))

    def save(self, state: AgentState) -> None:
        """Write the state atomically."""
        write_atomically(self.state_path, json.dumps(state.to_json(), indent=1, sort_keys=True).encode())
