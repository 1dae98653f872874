"""Fixtures for the end-to-end gateway tests with the real agent on the podman runtime."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.runtime.base import LABEL_MANAGED, LABEL_PLACEMENT
from nodes.gateway.server import Gateway
from tests.nodes.gateway_fixtures import REPO, gateway_ca_pem

TEST_IMAGE = os.environ.get("JANCTION_TEST_IMAGE", "localhost/janction-test-busybox:latest")

requires_podman = pytest.mark.skipif(
    shutil.which("podman") is None, reason="podman is not installed (apt-get install podman runc busybox-static)"
)


@pytest.fixture(scope="session")
def podman_image() -> str:
    """Build (once) and return the local busybox image; nothing is pulled."""
    result = subprocess.run(
        [str(REPO / "scripts" / "build_test_image.sh")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/build_test_image.sh failed: {result.stderr.strip()}")
    return TEST_IMAGE


def podman_containers(placement_id: str) -> list[dict]:
    """Return `podman ps --all` entries of the agent's containers for one placement."""
    result = subprocess.run(
        [
            "podman",
            "ps",
            "--all",
            "--filter",
            f"label={LABEL_MANAGED}=true",
            "--filter",
            f"label={LABEL_PLACEMENT}={placement_id}",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout or "[]")


@pytest.fixture
def placement_ids() -> Iterator[Callable[[str], str]]:
    """Return a maker of placement ids unique to this run; their containers are removed after the test."""
    made: list[str] = []

    def make(name: str) -> str:
        placement_id = f"{name}-{uuid.uuid4().hex[:10]}"
        made.append(placement_id)
        return placement_id

    yield make
    for placement_id in made:
        for container in podman_containers(placement_id):
            remove = ["podman", "rm", "--force", "--time", "0", container["Id"]]
            subprocess.run(remove, capture_output=True, check=False, timeout=60)


class PodmanAgentProcess:
    """`python -m agent` with fake GPUs and the podman runtime, as a child process."""

    def __init__(
        self, *, gateway: Gateway, token: str, state_dir: Path, gpus: str, slices: int, extra: tuple[str, ...] = ()
    ) -> None:
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        ca_path = state_dir.parent / "gateway-ca.pem"
        ca_path.write_bytes(gateway_ca_pem())
        self.command = [
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
            "podman",
            "--heartbeat-interval",
            "1",
            "--usage-interval",
            "1",
            "--ca-cert",
            str(ca_path),
            *extra,
        ]
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start (or restart, with the same state directory) the agent process; its output is appended."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        """Return what the agent logged over all its runs."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """Kill the agent process at once (SIGKILL), as a crash would; its containers keep running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the agent the polite way."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_podman_agent(tmp_path, podman_image) -> Iterator[Callable[..., PodmanAgentProcess]]:
    """Return a function that starts podman agents; they are stopped after the test."""
    started: list[PodmanAgentProcess] = []

    def start(
        gateway: Gateway,
        token: str,
        *,
        name: str = "agent",
        gpus: str = "RTX 4090:1",
        slices: int = 2,
        extra: tuple[str, ...] = (),
    ) -> PodmanAgentProcess:
        agent = PodmanAgentProcess(
            gateway=gateway, token=token, state_dir=tmp_path / name, gpus=gpus, slices=slices, extra=extra
        )
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()
