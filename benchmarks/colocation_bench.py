"""Colocation reaction time: the owner's process appears on the GPU -> workload frozen -> vGPUs out of the market.

Run: DATABASE_URL=postgres://... .venv/bin/python -m benchmarks.colocation_bench [--trials 20]

The real gateway runs in this process; one real agent (`python -m agent`, podman runtime, one fake RTX 4090
whose process list is a file, --fake-gpu-processes) serves a pausable rental on a "when idle" node (grace
period 1 s). Each trial starts a real host process (the owner's "game"), lists it on the fake GPU, and
measures from that moment:

  frozen: until the container's cgroup freezer reads FROZEN (cgroup v1) or `podman inspect` says paused;
  market: until the platform holds the node out of the market (the agent's OwnerActivity claim stored,
          so the next round's order book skips the node: nodes.availability.nodes_out_of_market).

Then the owner process ends, and the trial waits for the placement to run again before the next one (at a
random phase of the agent's 0.25 s watch interval). Goals: frozen < 2 s, market < 5 s (median and worst).
The baseline printed alongside is the agent's sampling interval: the floor any detection by polling has.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_FROZEN_SECONDS = 2.0
GOAL_MARKET_SECONDS = 5.0
POLL_SECONDS = 0.005


def _freezer_state(container_id: str) -> str:
    path = Path(f"/sys/fs/cgroup/freezer/libpod_parent/libpod-{container_id}/freezer.state")
    try:
        return path.read_text().strip()
    except OSError:
        result = subprocess.run(
            ["podman", "container", "inspect", "--format", "{{.State.Status}}", container_id],
            capture_output=True,
            text=True,
            check=False,
        )
        return "FROZEN" if result.stdout.strip() == "paused" else "THAWED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    from benchmarks._django import setup_bench_database

    teardown = setup_bench_database(os.environ.get("JANCTION_BENCH_DATABASE", "janction_colocation_bench"))
    try:
        run(args.trials)
    finally:
        teardown()


def run(trials: int) -> None:
    from django.conf import settings

    from agent.colocation import DEFAULT_INTERVAL_SECONDS
    from ledger.services import ledger_deposit
    from marketplace.rentals.dispatch import rentals_sync
    from marketplace.rentals.models import RentalState
    from marketplace.rentals.services import rental_cancel, rental_submit
    from nodes.availability import node_availability_set, nodes_out_of_market
    from nodes.ca import ca_generate, ca_key_pem, platform_ca
    from nodes.gateway.server import Gateway, GatewayConfig
    from nodes.models import NodePlacement, NodeState
    from nodes.services import node_create
    from pricing.services import market_round_run
    from tests.factories import UserFactory

    root = Path(tempfile.mkdtemp(prefix="colocation-bench-"))
    image = os.environ.get("JANCTION_TEST_IMAGE", "localhost/janction-test-busybox:latest")
    subprocess.run([str(Path(__file__).resolve().parent.parent / "scripts" / "build_test_image.sh")], check=True)
    ca = ca_generate()
    settings.AGENT_CA_CERT_PEM, settings.AGENT_CA_KEY_PEM = ca.certificate_pem, ca_key_pem(ca).decode()
    settings.AGENT_COMMAND_POLL_SECONDS = 0.05
    settings.PRICING_DEFAULT_ASK = "1.00"
    gateway = Gateway(GatewayConfig.from_settings(listen="127.0.0.1:0", enroll_listen="127.0.0.1:0"))
    gateway.start()
    (root / "ca.pem").write_bytes(platform_ca().certificate_pem.encode())
    listing = root / "gpu-processes"
    listing.write_text("")
    provider, buyer = UserFactory(), UserFactory()
    ticket = node_create(owner=provider, name="gamer", reserve_price_per_hour=400_000)
    node_id = ticket.node.pk
    node_availability_set(owner=provider, node_id=node_id, mode="when_idle", grace_seconds=1)
    log = (root / "agent.log").open("wb")
    agent = subprocess.Popen(
        [
            *(sys.executable, "-m", "agent", "--gateway", f"127.0.0.1:{gateway.enroll_port}"),
            *("--state-dir", str(root / "agent"), "--enroll-token", ticket.token, "--ca-cert", str(root / "ca.pem")),
            *("--fake-gpus", "RTX 4090:1", "--runtime", "podman", "--fake-gpu-processes", str(listing)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    owner = None
    try:
        _wait(lambda: ticket.node.__class__.objects.get(pk=node_id).state == NodeState.ONLINE, 120, "node online")
        ledger_deposit(user_id=buyer.pk, currency="USDC", amount=100_000_000, idempotency_key="colocation-bench")
        rental = rental_submit(
            owner=buyer,
            pool_name="ada-24g",
            vgpus=1,
            max_price_per_hour="2",
            max_duration_seconds=3600,
            image=image,
            command=["sh", "-c", "while true; do sleep 0.1; done"],
            pausable=True,
            accepts_interruptible=True,
        )

        def running() -> bool:
            market_round_run(pool_id=rental.pool_id)
            rentals_sync()
            rental.refresh_from_db()
            return rental.state == RentalState.RUNNING

        _wait(running, 120, f"rental running (agent log: {root / 'agent.log'})")
        placement = rental.placements.get()
        container_id = subprocess.run(
            ["podman", "container", "inspect", "--format", "{{.Id}}", f"janction-{placement.placement_id}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        frozen_times, market_times = [], []
        for trial in range(trials):
            time.sleep(random.uniform(0, DEFAULT_INTERVAL_SECONDS))
            owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            listing.write_text(f"{owner.pid}\n")
            started = time.monotonic()
            frozen = market = None
            while frozen is None or market is None:
                now = time.monotonic() - started
                if now > 30:
                    raise SystemExit(f"trial {trial}: no reaction in 30 s; see {root / 'agent.log'}")
                if frozen is None and _freezer_state(container_id) == "FROZEN":
                    frozen = now
                if market is None and nodes_out_of_market(node_ids=[node_id]) == {node_id}:
                    market = now
                time.sleep(POLL_SECONDS)
            frozen_times.append(frozen)
            market_times.append(market)
            owner.kill()
            owner.wait()
            listing.write_text("")
            _wait(
                lambda: (
                    NodePlacement.objects.get(pk=placement.node_placement_id).state == "running"
                    and not nodes_out_of_market(node_ids=[node_id])
                    and _freezer_state(container_id) == "THAWED"
                ),
                30,
                "resumed",
            )
        print(f"colocation: {trials} trials, one podman agent, watch interval {DEFAULT_INTERVAL_SECONDS} s (baseline)")
        for name, times, goal in (
            ("frozen", frozen_times, GOAL_FROZEN_SECONDS),
            ("out of the market", market_times, GOAL_MARKET_SECONDS),
        ):
            median, worst = statistics.median(times), max(times)
            verdict = "meets" if worst < goal else "MISSES"
            print(
                f"owner process -> {name}: median {median:.3f} s, worst {worst:.3f} s "
                f"({median / DEFAULT_INTERVAL_SECONDS:.1f}x the watch interval); goal < {goal:g} s: {verdict}"
            )
        rental_cancel(owner=buyer, rental_id=rental.pk)
        rentals_sync()
    finally:
        if owner is not None and owner.poll() is None:
            owner.kill()
        agent.terminate()
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
        gateway.stop(grace=0)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


if __name__ == "__main__":
    main()
