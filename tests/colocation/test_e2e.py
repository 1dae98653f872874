"""Colocation end to end: the real gateway, real agent processes with podman, an owner process on a fake GPU."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from marketplace.rentals.dispatch import rentals_sync
from marketplace.rentals.metering import metering_run, owed
from marketplace.rentals.models import Rental, RentalState
from marketplace.rentals.services import rental_cancel, rental_submit
from nodes.availability import node_availability_set, nodes_out_of_market
from nodes.models import NodePlacement, NodeState, PlacementPause, UsageReport, VGpu, VGpuState
from nodes.services import node_create
from pricing.services import market_round_run
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import *  # noqa: F403
from tests.nodes.gateway_fixtures import AgentProcess, wait_until
from tests.rentals.conftest import USDC, balance, fund, ledger_total

pytestmark = pytest.mark.slow


@pytest.fixture
def owner_processes(tmp_path):
    """Start and stop 'the owner's' processes: real host processes the fake GPUs list through a file."""
    listing = tmp_path / "gpu-processes"
    listing.write_text("")
    started: list[subprocess.Popen] = []

    class Owner:
        path = listing

        def list(self, *pids: int) -> None:
            listing.write_text("".join(f"{pid}\n" for pid in pids))

        def start(self) -> subprocess.Popen:
            process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
            started.append(process)
            return process

    yield Owner()
    for process in started:
        process.kill()
        process.wait()


@pytest.fixture
def agents(tmp_path):
    started: list[AgentProcess] = []

    def start(gateway, token: str, *, name: str, listing=None) -> AgentProcess:
        extra = ("--fake-gpu-processes", str(listing)) if listing is not None else ()
        agent = AgentProcess(
            gateway=gateway,
            token=token,
            state_dir=tmp_path / name,
            slices=1,
            runtime="podman",
            extra_args=extra,
        )
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def _online(node) -> bool:
    node.refresh_from_db()
    return node.state == NodeState.ONLINE and VGpu.objects.filter(node=node, state=VGpuState.FREE).exists()


def _tick(rental: Rental) -> Rental:
    market_round_run(pool_id=rental.pool_id)
    rentals_sync()
    metering_run()
    rental.refresh_from_db()
    return rental


def _container(placement_id: str) -> dict:
    result = subprocess.run(
        ["podman", "container", "inspect", f"janction-{placement_id}"], capture_output=True, text=True, check=False
    )
    return json.loads(result.stdout)[0] if result.returncode == 0 else {}


def _when_idle(ticket, provider) -> None:
    node_availability_set(owner=provider, node_id=ticket.node.pk, mode="when_idle", grace_seconds=1)


def _running_rental(buyer, agent, *, image: str, command: list[str], **options):
    """Fund the buyer, rent one interruptible ada-24g vGPU for `command`, and wait until it runs."""
    fund(buyer, 50 * USDC)
    rental = rental_submit(
        owner=buyer,
        pool_name="ada-24g",
        vgpus=1,
        max_price_per_hour="2",
        max_duration_seconds=600,
        image=image,
        command=command,
        accepts_interruptible=True,
        **options,
    )
    wait_until(lambda: _tick(rental).state == RentalState.RUNNING, timeout=60, what=f"running:\n{agent.output()}")
    return rental


def test_owner_process_freezes_a_pausable_placement_unpaid_and_off_the_market_then_it_resumes_paid(
    gateway, agents, owner_processes, test_image, settings
):
    settings.PRICING_DEFAULT_ASK = "1.00"
    provider, buyer = UserFactory(), UserFactory()
    ticket = node_create(owner=provider, name="gamer", reserve_price_per_hour=400_000)
    _when_idle(ticket, provider)
    agent = agents(gateway, ticket.token, name="gamer", listing=owner_processes.path)
    wait_until(lambda: _online(ticket.node), timeout=60, what=f"node online; agent said:\n{agent.output()}")
    rental = _running_rental(
        buyer, agent, image=test_image, command=["sh", "-c", "while true; do echo tick; sleep 0.2; done"], pausable=True
    )
    placement = rental.placements.get()
    # The workload's own process on the GPU is the agent's (pid -> cgroup): not the owner.
    workload_pid = _container(placement.placement_id)["State"]["Pid"]
    owner_processes.list(workload_pid)
    wait_until(lambda: UsageReport.objects.filter(placement_id=placement.node_placement_id).count() >= 2, timeout=30)
    assert NodePlacement.objects.get(pk=placement.node_placement_id).state == "running"
    assert nodes_out_of_market(node_ids=[ticket.node.pk]) == set()

    owner = owner_processes.start()
    owner_processes.list(workload_pid, owner.pid)
    wait_until(
        lambda: NodePlacement.objects.get(pk=placement.node_placement_id).state == "paused",
        timeout=30,
        what=f"paused; agent said:\n{agent.output()}",
    )
    assert _container(placement.placement_id)["State"]["Status"] == "paused"  # its processes are frozen
    assert nodes_out_of_market(node_ids=[ticket.node.pk]) == {ticket.node.pk}
    pause = PlacementPause.objects.get(placement_id=placement.node_placement_id)
    time.sleep(2)
    _tick(rental)
    charged_while_paused = rental.placements.get().buyer_charged
    time.sleep(2)
    _tick(rental)
    assert rental.placements.get().buyer_charged == charged_while_paused  # frozen time is not charged
    reports = UsageReport.objects.filter(placement_id=placement.node_placement_id)
    assert not reports.filter(interval_end_ms__gt=pause.paused_at_ms, interval_start_ms__lt=pause.paused_at_ms + 4000)

    owner.kill()
    owner.wait()
    owner_processes.list(workload_pid)
    wait_until(
        lambda: NodePlacement.objects.get(pk=placement.node_placement_id).state == "running",
        timeout=30,
        what=f"resumed; agent said:\n{agent.output()}",
    )
    pause.refresh_from_db()
    assert pause.resumed_at_ms is not None and pause.ended_by == "resumed"
    assert nodes_out_of_market(node_ids=[ticket.node.pk]) == set()
    wait_until(
        lambda: _tick(rental).placements.get().buyer_charged > charged_while_paused, timeout=30, what="charged again"
    )
    assert reports.filter(interval_start_ms__gte=pause.resumed_at_ms).exists()
    rental_cancel(owner=buyer, rental_id=rental.pk)
    wait_until(lambda: _tick(rental).settled_at is not None, timeout=60, what="settled")
    placement = rental.placements.get()
    assert not UsageReport.objects.filter(
        placement_id=placement.node_placement_id,
        interval_end_ms__gt=pause.paused_at_ms,
        interval_start_ms__lt=pause.resumed_at_ms,
    ).exists()
    assert placement.buyer_charged == owed(placement.metered_vgpu_ms, placement.buyer_payment_per_hour, 1)
    assert rental.charged == placement.buyer_charged and balance(buyer, "escrow") == 0 and ledger_total() == 0


def test_a_non_pausable_restartable_rental_is_interrupted_and_finishes_on_another_node(
    gateway, agents, owner_processes, test_image, settings
):
    settings.PRICING_DEFAULT_ASK = "1.00"
    provider, buyer = UserFactory(), UserFactory()
    gamer = node_create(owner=provider, name="gamer", reserve_price_per_hour=400_000)
    spare = node_create(owner=provider, name="spare", reserve_price_per_hour=600_000)
    _when_idle(gamer, provider)
    _when_idle(spare, provider)
    first = agents(gateway, gamer.token, name="gamer", listing=owner_processes.path)
    wait_until(lambda: _online(gamer.node), timeout=60, what=f"gamer online:\n{first.output()}")
    rental = _running_rental(
        buyer,
        first,
        image=test_image,
        command=["sh", "-c", "echo started; sleep 4; echo done"],
        restart_on_interruption=True,
    )
    on_gamer = rental.placements.get()
    wait_until(lambda: UsageReport.objects.filter(placement_id=on_gamer.node_placement_id).exists(), timeout=30)
    # The spare's own (empty) listing: without one a fake GPU's idle load wanders up to 100%, which a
    # "when idle" policy rightly reads as its owner at work, and the rental could never land there.
    spare_listing = owner_processes.path.with_name("spare-gpu-processes")
    spare_listing.write_text("")
    second = agents(gateway, spare.token, name="spare", listing=spare_listing)
    wait_until(lambda: _online(spare.node), timeout=60, what=f"spare online:\n{second.output()}")
    owner = owner_processes.start()
    owner_processes.list(owner.pid)
    wait_until(
        lambda: _tick(rental).attempt == 2,
        timeout=60,
        what=f"interrupted and requeued; gamer said:\n{first.output()}",
    )
    assert rental.events.filter(to_state=RentalState.INTERRUPTED, reason__contains="owner").exists()
    wait_until(lambda: _tick(rental).settled_at is not None, timeout=90, what=f"finished:\n{second.output()}")
    assert rental.state == RentalState.COMPLETED, rental.state_reason
    placements = {p.node_id: p for p in rental.placements.all()}
    assert set(placements) == {gamer.node.pk, spare.node.pk}
    for placement in placements.values():
        reports = UsageReport.objects.filter(placement_id=placement.node_placement_id)
        assert placement.metered_vgpu_ms == sum(r.vgpu_milliseconds for r in reports)
        assert placement.buyer_charged == owed(placement.metered_vgpu_ms, placement.buyer_payment_per_hour, 1)
    stopped = NodePlacement.objects.get(pk=placements[gamer.node.pk].node_placement_id)
    assert stopped.state == "lost" and "owner" in stopped.message
    ended_ms = int(stopped.stopped_at.timestamp() * 1000)
    assert all(r.interval_end_ms <= ended_ms for r in UsageReport.objects.filter(placement=stopped))
    assert placements[spare.node.pk].metered_vgpu_ms >= 4000  # the whole run happened on the spare node
    assert rental.charged == sum(p.buyer_charged for p in placements.values())
    assert balance(buyer, "escrow") == 0 and ledger_total() == 0
