"""The pyservice test image (scripts/build-service-image.sh) as a pytest fixture, for any test directory.

Use it from a conftest.py: `from tests.service_image import pyservice_image  # noqa: F401`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVER_SOURCE = REPO / "scripts" / "images" / "pyservice" / "server.py"
BUILD_TIMEOUT_SECONDS = 600


def build_pyservice_image() -> str:
    """Build the image (or find it cached) and return its reference; fail the test with what to install."""
    try:
        result = subprocess.run(
            ["bash", str(REPO / "scripts" / "build-service-image.sh")],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/build-service-image.sh took more than {BUILD_TIMEOUT_SECONDS} s")
    lines = result.stdout.split()
    if result.returncode != 0 or not lines or not lines[-1].startswith("localhost/janction-pyservice:"):
        pytest.fail(
            "scripts/build-service-image.sh failed (it needs podman and mmdebstrap as root and the Debian mirror; "
            f"run `bash scripts/install-system-deps.sh`): {result.stderr.strip()[-2000:]}"
        )
    return lines[-1]


@pytest.fixture(scope="session")
def pyservice_image() -> str:
    """Return the reference of the pyservice image, built once per session (seconds when cached)."""
    return build_pyservice_image()
