"""A gateway killed with SIGKILL and restarted while placements run: no node is lost, usage is charged once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

from marketplace.rentals.dispatch import rentals_sync
from marketplace.rentals.metering import metering_run, owed
from marketplace.rentals.models import RentalState
from marketplace.rentals.services import rental_cancel, rental_submit
from nodes.models import NodeEvent, NodeState, UsageReport, VGpu, VGpuState
from nodes.services import node_create, node_mark_stale_offline
from pricing.services import market_round_run
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import *  # noqa: F403
from tests.nodes.gateway_fixtures import GRACE_SECONDS, REPO, AgentProcess, CaPems, wait_until
from tests.rentals.conftest import USDC, balance, fund, ledger_total

pytestmark = pytest.mark.slow
# Heartbeat grace plus the agent's 30 s reconnect backoff cap, as the production default (45 s) is.
START_GRACE_SECONDS = 40.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class GatewayProcess:
    """`manage.py agent_gateway` on the test database, as a child process that can be killed."""

    def __init__(self, ca: CaPems, log_path, *, port: int, enroll_port: int) -> None:
        self.port, self.enroll_port = port, enroll_port
        parts = urlsplit(os.environ["DATABASE_URL"])
        self.env = {
            **os.environ,
            "DATABASE_URL": urlunsplit(parts._replace(path=f"/{connection.settings_dict['NAME']}")),
            "AGENT_CA_CERT_PEM": ca.certificate,
            "AGENT_CA_KEY_PEM": ca.key,
            "AGENT_HEARTBEAT_FLUSH_SECONDS": "0.2",
            "AGENT_COMMAND_POLL_SECONDS": "0.05",
            "NODE_HEARTBEAT_GRACE_SECONDS": str(GRACE_SECONDS),
            "NODE_OFFLINE_CHECK_INTERVAL_SECONDS": "0.5",
            "NODE_GATEWAY_START_GRACE_SECONDS": str(START_GRACE_SECONDS),
        }
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            *(sys.executable, "manage.py", "agent_gateway"),
            *("--listen", f"127.0.0.1:{self.port}", "--enroll-listen", f"127.0.0.1:{self.enroll_port}"),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError(f"the gateway did not start:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def test_a_gateway_killed_and_restarted_loses_no_node_and_charges_every_report_once(
    transactional_db, gateway_settings, gateway_ca, tmp_path
):
    gateway_settings.NODE_GATEWAY_START_GRACE_SECONDS = START_GRACE_SECONDS
    gateway = GatewayProcess(gateway_ca, tmp_path / "gateway.log", port=_free_port(), enroll_port=_free_port())
    gateway.start()
    agents = []
    try:
        provider, buyer = UserFactory(), UserFactory()
        ticket = node_create(owner=provider, name="steady", reserve_price_per_hour=400_000)
        agent = AgentProcess(
            gateway=SimpleNamespace(enroll_port=gateway.enroll_port),
            token=ticket.token,
            state_dir=tmp_path / "a",
            slices=1,
        )
        agents.append(agent)
        node = ticket.node

        def online() -> bool:
            node.refresh_from_db()
            return node.state == NodeState.ONLINE and VGpu.objects.filter(node=node, state=VGpuState.FREE).exists()

        wait_until(online, timeout=60, what=f"node online; agent said:\n{agent.output()}")
        funded = 50 * USDC
        fund(buyer, funded)
        rental = rental_submit(
            owner=buyer,
            pool_name="ada-24g",
            vgpus=1,
            max_price_per_hour="2",
            max_duration_seconds=600,
            image="docker.io/library/busybox:1.36",
            command=["sh", "-c", "sleep 120"],
        )

        def tick() -> None:
            market_round_run(pool_id=rental.pool_id)
            node_mark_stale_offline()  # Celery beat's sweep, besides the gateway's own
            rentals_sync()
            metering_run()
            rental.refresh_from_db()

        def charged(count: int):
            def check() -> bool:
                tick()
                placement = rental.placements.first()
                return placement is not None and placement.metered_through_seq >= count

            return check

        wait_until(charged(2), timeout=60, what=f"two reports charged; agent said:\n{agent.output()}")
        assert rental.state == RentalState.RUNNING

        gateway.kill()
        for _ in range(int(3 * GRACE_SECONDS / 0.5)):  # the sweep runs while no gateway records heartbeats
            tick()
            time.sleep(0.5)
        gateway.start()
        before = rental.placements.get().metered_through_seq
        wait_until(charged(before + 3), timeout=60, what=f"usage charged after the restart:\n{agent.output()}")
        assert not NodeEvent.objects.filter(node=node, to_state=NodeState.OFFLINE).exists()
        assert rental.state == RentalState.RUNNING

        rental_cancel(owner=buyer, rental_id=rental.pk)
        wait_until(lambda: (tick(), rental.settled_at is not None)[1], timeout=60, what="the rental settled")
        time.sleep(2)
        tick()  # late reports of the stopped workload, if any
        placement = rental.placements.get()
        reports = list(UsageReport.objects.filter(placement_id=placement.node_placement_id).order_by("seq"))
        seqs = [r.seq for r in reports]
        assert seqs == list(range(1, len(seqs) + 1)), "every report stored once, in order"
        assert placement.metered_through_seq == seqs[-1]
        assert placement.buyer_charged == owed(placement.metered_vgpu_ms, placement.buyer_payment_per_hour, 1)
        assert placement.metered_vgpu_ms <= sum(r.vgpu_milliseconds for r in reports)
        rental.refresh_from_db()
        assert rental.state == RentalState.CANCELLED
        assert "interrupted" not in [e.to_state for e in rental.events.all()]
        assert balance(buyer, "available") + balance(buyer, "escrow") == funded - rental.charged
        assert ledger_total() == 0
    finally:
        for agent in agents:
            agent.stop()
        gateway.stop()
