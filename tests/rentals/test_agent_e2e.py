"""Rentals end to end: the real gateway, the real agent process, podman, a real Celery worker and the websocket."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection, connections
from django.test import Client
from rest_framework.test import APIClient

from janction.asgi import application
from marketplace.rentals.dispatch import rental_logs_stream, rentals_sync
from marketplace.rentals.metering import metering_run, owed
from marketplace.rentals.models import Rental, RentalState
from marketplace.rentals.services import rental_cancel, rental_submit
from marketplace.rentals.tasks import metering, placements_sync
from nodes.models import NodeState, UsageReport, VGpu, VGpuState
from nodes.services import node_create
from pricing.models import RoundAward
from pricing.services import market_round_run
from pricing.tasks import market_round_pool
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import *  # noqa: F403
from tests.nodes.gateway_fixtures import REPO, AgentProcess, wait_until
from tests.rentals.conftest import USDC, balance, fund, ledger_total, platform_balance

pytestmark = pytest.mark.slow
TEST_IMAGE = os.environ.get("JANCTION_TEST_IMAGE", "localhost/janction-test-busybox:latest")


@pytest.fixture
def start_runtime_agent(tmp_path):
    """Return a function that starts agents with a given runtime; they are stopped after the test."""
    started: list[AgentProcess] = []

    def start(gateway, token: str, *, name: str, runtime: str, gpus: str = "RTX 4090:1", slices: int = 1):
        agent = AgentProcess(
            gateway=gateway, token=token, state_dir=tmp_path / name, gpus=gpus, slices=slices, runtime=runtime
        )
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def test_image() -> str:
    """Build (once) the local busybox image with scripts/build_test_image.sh."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: apt-get install podman runc busybox-static")
    result = subprocess.run([str(REPO / "scripts" / "build_test_image.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return TEST_IMAGE


@pytest.fixture
def celery_worker(transactional_db, tmp_path):
    """Run a real Celery worker process on the test database, consuming a private queue."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    database_url = urlunsplit(parts._replace(path=f"/{connection.settings_dict['NAME']}"))
    queue = f"rentals-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "x"),
        "CELERY_TASK_ALWAYS_EAGER": "0",
    }
    log_path = tmp_path / "celery.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "janction", "worker", "-P", "solo", "--loglevel=warning"),
                *("-Q", queue, "--without-heartbeat", "--without-mingle", "--without-gossip"),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield queue
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _session_headers(user) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    return [(b"origin", b"http://testserver"), (b"cookie", cookie.encode())]


class LiveView(threading.Thread):
    """Listen on a rental's websocket in a thread of its own until the rental is settled."""

    def __init__(self, rental_id: int, user):
        super().__init__(daemon=True)
        self.messages: list[dict] = []
        self.connected = threading.Event()
        self.communicator = WebsocketCommunicator(
            application, f"/ws/rentals/{rental_id}/", headers=_session_headers(user)
        )

    def run(self) -> None:
        asyncio.run(self._listen())

    async def _listen(self) -> None:
        connected, _ = await self.communicator.connect(timeout=10)
        self.connected.set()
        if not connected:
            await sync_to_async(connections.close_all)()
            return
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            # A receive that times out ends the application; wait for output without one.
            if await self.communicator.receive_nothing(timeout=0.5):
                continue
            message = await self.communicator.receive_json_from(timeout=5)
            self.messages.append(message)
            if message["type"] == "rental.settled":
                break
        await self.communicator.disconnect()
        await sync_to_async(connections.close_all)()  # the consumer's database thread

    def log_texts(self) -> list[str]:
        texts = [line["text"] for m in self.messages if m["type"] == "rental.snapshot" for line in m["lines"]]
        texts += [line["text"] for m in self.messages if m["type"] == "rental.logs" for line in m["lines"]]
        return texts


def _online(node) -> bool:
    node.refresh_from_db()
    return node.state == NodeState.ONLINE and VGpu.objects.filter(node=node, state=VGpuState.FREE).exists()


def _money_checks(rental: Rental, buyer, funded: int) -> None:
    rental.refresh_from_db()
    assert rental.settled_at is not None
    placements = list(rental.placements.all())
    for placement in placements:
        reports = UsageReport.objects.filter(placement_id=placement.node_placement_id)
        assert placement.metered_through_seq == max((r.seq for r in reports), default=0)
        assert placement.buyer_charged == owed(placement.metered_vgpu_ms, placement.buyer_payment_per_hour, 1)
    assert rental.charged == sum(p.buyer_charged for p in placements)
    assert balance(buyer, "escrow") == 0
    assert balance(buyer, "available") == funded - rental.charged
    assert rental.refunded == rental.held_total - rental.charged
    assert ledger_total() == 0


def test_golden_path_with_podman_a_celery_worker_and_the_websocket(
    gateway, start_runtime_agent, celery_worker, test_image
):
    provider, buyer = UserFactory(), UserFactory()
    ticket = node_create(owner=provider, name="podman-rig", reserve_price_per_hour=500_000)
    agent = start_runtime_agent(gateway, ticket.token, name="podman", runtime="podman")
    wait_until(lambda: _online(ticket.node), timeout=60, what=f"node online; agent said:\n{agent.output()}")
    assert ticket.node.runtime == "podman"
    funded = 50 * USDC
    fund(buyer, funded)
    api = APIClient()
    api.force_authenticate(buyer)
    response = api.post(
        "/api/v1/rentals/",
        {
            "pool": "ada-24g",
            "vgpus": 1,
            "max_price_per_hour": "3",
            "max_duration_seconds": 600,
            "image": test_image,
            "command": ["sh", "-c", "echo hello from podman; sleep 3; echo bye"],
            "env": {"API_TOKEN": "s3cret"},
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()),
    )
    assert response.status_code == 201, response.json()
    assert response.json()["env"] == {"API_TOKEN": "********"}
    rental = Rental.objects.get(pk=response.json()["id"])
    live = LiveView(rental.pk, buyer)
    live.start()
    assert live.connected.wait(15)

    def pump() -> bool:
        """Play Celery beat: queue each periodic task on the worker and wait for it."""
        for signature in (market_round_pool.s(rental.pool_id), placements_sync.s(), metering.s()):
            signature.apply_async(queue=celery_worker).get(timeout=60)
        rental.refresh_from_db()
        return rental.settled_at is not None

    wait_until(pump, timeout=90, what=f"rental settled; agent said:\n{agent.output()}")
    live.join(timeout=60)

    assert rental.state == RentalState.COMPLETED, rental.state_reason
    states = [e.to_state for e in rental.events.all()]
    assert states == ["pending", "allocated", "starting", "running", "completed"]
    assert {"hello from podman", "bye"} <= set(live.log_texts())
    pushed = [m["state"] for m in live.messages if m["type"] == "rental.state"]
    assert "completed" in pushed and live.messages[-1]["type"] == "rental.settled"
    placement = rental.placements.get()
    assert placement.observed_state == "exited" and placement.exit_code == 0
    # Charged per second: at least the 3 s sleep, on one vGPU.
    assert 3_000 <= placement.metered_vgpu_ms < 60_000
    _money_checks(rental, buyer, funded)
    award = RoundAward.objects.get(round=rental.bid.round, node=ticket.node)
    earned = owed(placement.metered_vgpu_ms, award.payment_per_hour, award.units_sold)
    assert balance(provider, "earnings") == earned - platform_balance("fees")  # the fee comes out of its side
    assert set(VGpu.objects.filter(node=ticket.node).values_list("state", flat=True)) == {VGpuState.FREE}


def test_killing_the_agent_interrupts_charges_only_reported_seconds_and_restarts_elsewhere(
    gateway, start_agent, settings
):
    # Alone in its pool after the first node dies, the spare node (0.60) trades at the pool reference price.
    settings.PRICING_DEFAULT_ASK = "1.00"
    provider, buyer = UserFactory(), UserFactory()
    first = node_create(owner=provider, name="first", reserve_price_per_hour=400_000)
    second = node_create(owner=provider, name="second", reserve_price_per_hour=600_000)
    doomed = start_agent(gateway, first.token, name="first", slices=1)
    spare = start_agent(gateway, second.token, name="second", slices=1)
    wait_until(lambda: _online(first.node) and _online(second.node), timeout=60, what="both nodes online")
    funded = 50 * USDC
    fund(buyer, funded)
    rental = rental_submit(
        owner=buyer,
        pool_name="ada-24g",
        vgpus=1,
        max_price_per_hour="2",
        max_duration_seconds=600,
        image="docker.io/library/busybox:1.36",
        command=["sh", "-c", "echo started; sleep 60"],
        restart_on_interruption=True,
    )

    def tick() -> None:
        market_round_run(pool_id=rental.pool_id)
        rental_logs_stream()
        rentals_sync()
        metering_run()
        rental.refresh_from_db()

    def charged_twice() -> bool:
        tick()
        placement = rental.placements.first()
        return placement is not None and placement.metered_through_seq >= 2

    wait_until(charged_twice, timeout=60, what=f"two usage reports charged; agent said:\n{doomed.output()}")
    lost = rental.placements.get()
    assert lost.node_id == first.node.pk and rental.state == RentalState.RUNNING

    doomed.kill()
    wait_until(lambda: (tick(), rental.attempt == 2)[1], timeout=60, what="the rental interrupted and requeued")
    lost.refresh_from_db()
    reported = UsageReport.objects.filter(placement_id=lost.node_placement_id)
    assert lost.settled_at is not None and lost.observed_state == "lost"
    assert lost.metered_vgpu_ms == sum(r.vgpu_milliseconds for r in reported)
    assert lost.buyer_charged == owed(lost.metered_vgpu_ms, lost.buyer_payment_per_hour, 1)
    states = [e.to_state for e in rental.events.all()]
    assert states[-2:] == ["interrupted", "pending"] or states[-3:-1] == ["interrupted", "pending"]

    def running_elsewhere() -> bool:
        tick()
        return rental.state == RentalState.RUNNING and rental.placements.exclude(pk=lost.pk).exists()

    wait_until(running_elsewhere, timeout=60, what=f"running on the spare node; it said:\n{spare.output()}")
    again = rental.placements.exclude(pk=lost.pk).get()
    assert again.node_id == second.node.pk
    wait_until(lambda: (tick(), again.__class__.objects.get(pk=again.pk).metered_through_seq >= 1)[1], timeout=60)

    rental_cancel(owner=buyer, rental_id=rental.pk)
    wait_until(lambda: (tick(), rental.settled_at is not None)[1], timeout=60, what="the cancelled rental settled")
    assert rental.state == RentalState.CANCELLED
    assert [e.to_state for e in rental.events.all()].count("running") == 2
    _money_checks(rental, buyer, funded)
    lost.refresh_from_db()
    # Nothing the lost node could still report after the loss was charged.
    assert lost.buyer_charged == owed(lost.metered_vgpu_ms, lost.buyer_payment_per_hour, 1)
