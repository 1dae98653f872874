"""Fixtures for the gateway tests: a real gateway on free loopback ports and the real agent, as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from agent.client import enroll
from agent.identity import mutual_tls_credentials
from agent.protocol.gen.janction.agent.v1.agent_pb2_grpc import AgentGatewayStub
from agent.state import StateStore
from nodes.ca import ca_generate, ca_key_pem
from nodes.gateway.server import Gateway, GatewayConfig

REPO = Path(__file__).resolve().parents[2]
GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class CaPems:
    certificate: str
    key: str


@pytest.fixture(scope="session")
def gateway_ca() -> CaPems:
    """Return a platform CA for the session."""
    ca = ca_generate()
    return CaPems(certificate=ca.certificate_pem, key=ca_key_pem(ca).decode())


@pytest.fixture
def gateway_settings(settings, gateway_ca: CaPems):
    """Point the gateway at the test CA, with short flush, poll and grace periods."""
    settings.AGENT_CA_CERT_PEM = gateway_ca.certificate
    settings.AGENT_CA_KEY_PEM = gateway_ca.key
    settings.AGENT_HEARTBEAT_FLUSH_SECONDS = 0.2
    settings.AGENT_COMMAND_POLL_SECONDS = 0.05
    settings.NODE_HEARTBEAT_GRACE_SECONDS = GRACE_SECONDS
    settings.NODE_GATEWAY_START_GRACE_SECONDS = GRACE_SECONDS
    settings.NODE_OFFLINE_CHECK_INTERVAL_SECONDS = 0.5
    settings.AGENT_GATEWAY_MAX_STREAMS = 16
    settings.AGENT_GATEWAY_DB_WORKERS = 2
    return settings


@pytest.fixture
def gateway(transactional_db, gateway_settings) -> Iterator[Gateway]:
    """Run a gateway on free loopback ports for one test."""
    server = Gateway(GatewayConfig.from_settings(listen="127.0.0.1:0", enroll_listen="127.0.0.1:0"))
    server.start()
    yield server
    server.stop(grace=0)


def wait_until(predicate: Callable[[], object], *, timeout: float = 15.0, what: str = "condition") -> object:
    """Poll predicate until it returns something truthy, failing after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def enrolled_identity(gateway: Gateway, token: str, directory: Path) -> StateStore:
    """Enroll with the agent's own client code and return its state store (key, certificate, CA)."""
    store = StateStore(directory)
    enroll(
        store=store,
        state=store.load(),
        gateway=f"127.0.0.1:{gateway.enroll_port}",
        token=token,
        ca_pem=gateway_ca_pem(),
        hostname="test-host",
    )
    return store


def gateway_ca_pem() -> bytes:
    """Return the CA certificate the gateway currently uses."""
    from nodes.ca import platform_ca

    return platform_ca().certificate_pem.encode()


def mutual_stub(gateway: Gateway, store: StateStore) -> tuple[grpc.Channel, AgentGatewayStub]:
    """Return a channel and stub on the connect port presenting the store's node certificate."""
    credentials = mutual_tls_credentials(
        key_pem=store.key_path.read_bytes(),
        certificate_pem=store.cert_path.read_bytes(),
        trusted_ca_pem=store.ca_path.read_bytes(),
    )
    channel = grpc.secure_channel(f"127.0.0.1:{gateway.port}", credentials)
    return channel, AgentGatewayStub(channel)


class AgentProcess:
    """`python -m agent` with fake GPUs (the sandbox runtime unless told otherwise), as a child process."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        token: str,
        state_dir: Path,
        gpus: str = "RTX 4090:1",
        slices: int = 2,
        runtime: str = "sandbox",
    ):
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        ca_path = state_dir.parent / "gateway-ca.pem"
        ca_path.write_bytes(gateway_ca_pem())
        command = [
            sys.executable,
            "-m",
            "agent",
            "--gateway",
            f"127.0.0.1:{gateway.enroll_port}",
            "--state-dir",
            str(state_dir),
            "--enroll-token",
            token,
            "--fake-gpus",
            gpus,
            "--slices",
            str(slices),
            "--runtime",
            runtime,
            "--heartbeat-interval",
            "1",
            "--usage-interval",
            "1",
            "--ca-cert",
            str(ca_path),
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        """Return what the agent logged."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """Kill the agent at once (SIGKILL), as a crash would."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the agent the polite way."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_agent(tmp_path) -> Iterator[Callable[..., AgentProcess]]:
    """Return a function that starts agent processes; they are stopped after the test."""
    started: list[AgentProcess] = []

    def start(gateway: Gateway, token: str, *, name: str = "agent", **options) -> AgentProcess:
        agent = AgentProcess(gateway=gateway, token=token, state_dir=tmp_path / name, **options)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()
