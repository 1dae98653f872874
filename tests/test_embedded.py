"""The README's run command: the embedded default serves the marketplace with a gateway and a demo agent."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a loopback URL we built
            return json.load(response)
    except OSError:
        return None


@pytest.mark.slow
def test_run_embedded_serves_the_marketplace_with_a_demo_agent(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    web, enroll, connect = free_port(), free_port(), free_port()
    env.update(
        JANCTION_VAR_DIR=str(tmp_path / "var"),
        AGENT_GATEWAY_ENROLL_LISTEN=f"127.0.0.1:{enroll}",
        AGENT_GATEWAY_PUBLIC_ADDRESS=f"127.0.0.1:{enroll}",
        AGENT_GATEWAY_LISTEN=f"127.0.0.1:{connect}",
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    seeded = subprocess.run([*manage, "seed_demo"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    assert "buyer@janction.localhost" in seeded.stdout  # passwords are printed once
    server = subprocess.Popen(
        [*manage, "run_embedded", "--port", str(web)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pools = wait_for(
            lambda: (p := get_json(f"http://127.0.0.1:{web}/api/v1/pools/")) and p,
            timeout=60,
            what="the demo agent's vGPUs to be on offer",
        )
        assert {p["name"] for p in pools} == {"ada-12g", "ampere-40g"}
        assert all(p["vgpus_free"] == 2 for p in pools)
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=5) as response:
            assert b"Embedded demo mode" in response.read()
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert "Janction (embedded demo)" in output
    assert (tmp_path / "var" / "agent" / "node.crt").exists()
