"""Fixtures for the agent's tests; none of them needs Django."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.gateway import FakeGateway
from tests.agent.pki import ThrowawayPki, make_pki
from tests.service_image import pyservice_image  # noqa: F401 - the fixture, for the agent's tests

REPO = Path(__file__).resolve().parents[2]
TEST_IMAGE = os.environ.get("JANCTION_TEST_IMAGE", "localhost/janction-test-busybox:latest")

requires_podman = pytest.mark.skipif(
    shutil.which("podman") is None, reason="podman is not installed (apt-get install podman runc busybox-static)"
)
requires_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap is not installed (apt-get install bubblewrap)"
)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Replace tests/conftest.py's Django cache reset: the agent's tests run without Django."""


@pytest.fixture(scope="session")
def test_image() -> str:
    """Build (once) and return the local busybox image."""
    result = subprocess.run(
        [str(REPO / "scripts" / "build_test_image.sh")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/build_test_image.sh failed: {result.stderr.strip()}")
    return TEST_IMAGE


@pytest.fixture(scope="session")
def docker_socket(test_image: str) -> Iterator[str]:
    """Serve podman's Docker-compatible API on a private unix socket for the session."""
    directory = tempfile.mkdtemp(prefix="janction-docker-")
    socket_path = os.path.join(directory, "api.sock")
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not os.path.exists(socket_path):
        if service.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("podman system service did not start")
        time.sleep(0.05)
    yield socket_path
    os.killpg(service.pid, signal.SIGTERM)
    service.wait(timeout=20)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pki() -> ThrowawayPki:
    """Return a throwaway CA with a localhost server certificate."""
    return make_pki()


@pytest.fixture
def gateway(pki: ThrowawayPki) -> Iterator[FakeGateway]:
    """Run a fake gateway for one test."""
    fake = FakeGateway(pki)
    fake.start()
    yield fake
    fake.stop()
