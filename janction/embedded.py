"""The embedded default's in-process pieces: a beat loop for eager Celery and the demo provider's agent."""

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

# The demo provider's host: declared fake GPUs, each halved into two vGPUs, run in the bubblewrap sandbox.
DEMO_FAKE_GPUS = "RTX 4090:1,A100-80GB:1"
DEMO_SLICES = "2"
DEMO_NODE_NAME = "demo-node (fake GPUs)"
DEMO_RESERVE_PRICE = 200_000  # 0.20 USDC per vGPU-hour


class BeatLoop:
    """Run every CELERY_BEAT_SCHEDULE task in-process on its period (eager Celery has no beat of its own)."""

    def __init__(self, schedule: dict, *, tick_seconds: float = 1.0):
        self.schedule = schedule
        self.tick_seconds = tick_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedded-beat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from django.db import close_old_connections

        from janction.celery import app

        app.loader.import_default_modules()  # what a worker does at start: register every app's tasks
        due = dict.fromkeys(self.schedule, 0.0)
        while not self._stop.wait(self.tick_seconds):
            now = time.monotonic()
            for name, entry in self.schedule.items():
                if now < due[name]:
                    continue
                due[name] = now + float(entry["schedule"])
                try:
                    app.tasks[entry["task"]].apply(throw=True)
                except Exception:
                    logger.exception("periodic task %s failed", entry["task"])
                finally:
                    close_old_connections()


def demo_agent_command(*, token: str | None, gateway: str, state_dir: Path, ca_fingerprint: str) -> list[str]:
    """Return the command line that starts the demo provider's agent (pinning the CA as providers' agents do)."""
    command = [
        sys.executable,
        "-m",
        "agent",
        "--gateway",
        gateway,
        "--state-dir",
        str(state_dir),
        "--ca-fingerprint",
        ca_fingerprint,
        "--fake-gpus",
        DEMO_FAKE_GPUS,
        "--slices",
        DEMO_SLICES,
        "--runtime",
        "sandbox",
        "--usage-interval",
        "10",
    ]
    if token:
        command += ["--enroll-token", token]
    return command


def demo_node_prepare(*, state_dir: Path) -> str | None:
    """Make sure the demo provider has a node for the local agent; return a token when it must enroll."""
    from django.contrib.auth import get_user_model

    from nodes.models import Node
    from nodes.services import node_create, node_delete, node_token_regenerate

    provider = get_user_model().objects.filter(username="provider").first()
    if provider is None:
        raise RuntimeError("The demo provider is missing; run `manage.py seed_demo` first.")
    node = Node.objects.filter(owner=provider, name=DEMO_NODE_NAME, deleted_at__isnull=True).first()
    enrolled_here = (state_dir / "node.crt").exists()
    if node is not None and node.enrolled_at is not None and enrolled_here:
        return None
    if node is not None and node.enrolled_at is not None:
        # The agent's identity was lost (its state directory was removed): retire the node, make a new one.
        node_delete(owner=provider, node_id=node.pk)
        node = None
    if enrolled_here:
        shutil.rmtree(state_dir)
    if node is None:
        return node_create(owner=provider, name=DEMO_NODE_NAME, reserve_price_per_hour=DEMO_RESERVE_PRICE).token
    return node_token_regenerate(owner=provider, node_id=node.pk).token


def demo_agent_start(*, gateway: str) -> subprocess.Popen | None:
    """Start the demo provider's agent as a child process (it never imports Django)."""
    from nodes.ca import platform_ca

    ca = platform_ca()  # creates the embedded CA on first use, so the agent can trust the gateway
    state_dir = Path(settings.VAR_DIR) / "agent"
    token = demo_node_prepare(state_dir=state_dir)
    if shutil.which("bwrap") is None:
        logger.warning(
            "bubblewrap (bwrap) is not installed, so the demo agent's sandbox cannot run workloads; "
            "install it with `apt-get install bubblewrap`"
        )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = demo_agent_command(token=token, gateway=gateway, state_dir=state_dir, ca_fingerprint=ca.fingerprint)
    # The child keeps its own copy of the log descriptor; the parent's closes with this block.
    with open(Path(settings.VAR_DIR) / "agent.log", "ab") as log:
        return subprocess.Popen(command, cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
