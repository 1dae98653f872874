"""Verification challenges through two real agent processes: the real gRPC mTLS gateway, the sandbox runtime,
rounds and challenges run by the platform's own code. One agent's fake GPU is faulty (--fake-gpu-fault model: the
container sees a cheaper card than the node declares); the other is honest."""

from __future__ import annotations

import pytest

from marketplace.rentals.dispatch import rentals_sync
from marketplace.rentals.models import RentalState
from nodes.models import Node, NodePlacement, NodeState, VGpu, VGpuState
from nodes.services import node_create
from reputation.challenges import challenge_issue
from reputation.models import Challenge, ChallengeState, Evidence, EvidenceKind, SubjectKind
from reputation.selectors import score_of
from tests.factories import UserFactory
from tests.nodes.gateway_fixtures import *  # noqa: F403
from tests.nodes.gateway_fixtures import wait_until
from tests.rentals.conftest import USDC, balance, fund, ledger_total, run_round, submit

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _reference_price(settings):
    settings.PRICING_DEFAULT_ASK = "0.50"


def _online(node: Node) -> bool:
    node.refresh_from_db()
    return node.state == NodeState.ONLINE and VGpu.objects.filter(node=node, state=VGpuState.FREE).count() == 2


def _judged(challenge: Challenge) -> Challenge | None:
    challenge.refresh_from_db()
    return challenge if challenge.state != ChallengeState.SENT else None


def test_a_faulty_agent_is_quarantined_drained_and_refunded_and_the_honest_agent_wins_the_next_round(
    gateway, start_agent
):
    honest_ticket = node_create(owner=UserFactory(), name="honest", reserve_price_per_hour=500_000)
    cheat_ticket = node_create(owner=UserFactory(), name="cheat", reserve_price_per_hour=400_000)
    honest_agent = start_agent(gateway, honest_ticket.token, name="honest", slices=2)
    cheat_agent = start_agent(
        gateway, cheat_ticket.token, name="cheat", slices=2, extra_args=("--fake-gpu-fault", "model")
    )
    honest, cheat = honest_ticket.node, cheat_ticket.node
    wait_until(lambda: _online(honest), timeout=60, what=f"honest online:\n{honest_agent.output()}")
    wait_until(lambda: _online(cheat), timeout=60, what=f"cheat online:\n{cheat_agent.output()}")
    assert cheat.gpus.get().name == "NVIDIA GeForce RTX 4090"  # what its Hello declares

    buyer = UserFactory()
    funded = 100 * USDC
    fund(buyer, funded)
    rental = run_round(submit(buyer, max_price_per_hour="1", command=["sh", "-c", "echo working; sleep 120"]))
    placement = rental.placements.get()
    assert placement.node == cheat  # the cheaper node wins while nothing is known against it
    wait_until(
        lambda: NodePlacement.objects.filter(pk=placement.node_placement_id, state="running").exists(),
        timeout=30,
        what=f"the rental running on the cheat:\n{cheat_agent.output()}",
    )
    rentals_sync()
    rental.refresh_from_db()
    assert rental.state == RentalState.RUNNING

    honest_before = score_of(kind=SubjectKind.NODE, subject_id=honest.pk)
    passed = challenge_issue(node_id=honest.pk)
    passed = wait_until(lambda: _judged(passed), timeout=30, what=f"honest judged:\n{honest_agent.output()}")
    assert passed.state == ChallengeState.PASSED, passed.reason
    assert passed.gpu_seen == "NVIDIA GeForce RTX 4090, 24564"  # the fake backend's card, checked like a real one
    assert "CPU, fake GPUs" in Evidence.objects.get(node=honest, kind=EvidenceKind.CHALLENGE_PASSED).detail

    for attempt in range(2):
        issued = challenge_issue(node_id=cheat.pk)
        failed = wait_until(
            lambda issued=issued: _judged(issued), timeout=30, what=f"cheat judged:\n{cheat_agent.output()}"
        )
        assert failed.state == ChallengeState.FAILED
        assert "'Tesla T4'" in failed.reason and "NVIDIA GeForce RTX 4090" in failed.reason  # seen vs claimed
        cheat.refresh_from_db()
        assert cheat.state == (NodeState.QUARANTINED if attempt else NodeState.ONLINE)
    assert score_of(kind=SubjectKind.NODE, subject_id=cheat.pk) < 0.2

    # Quarantine drains the running placement: interrupted, charged only its reported usage, the rest refunded.
    def settled():
        rentals_sync()
        rental.refresh_from_db()
        return rental.settled_at is not None

    wait_until(settled, timeout=30, what=f"the cheat's rental settled:\n{cheat_agent.output()}")
    assert rental.state in (RentalState.INTERRUPTED, RentalState.FAILED)
    assert rental.escrow_held == 0 and balance(buyer, "escrow") == 0
    assert rental.refunded == rental.held_total - rental.charged
    assert balance(buyer, "available") == funded - rental.charged
    assert ledger_total() == 0
    honest_after = score_of(kind=SubjectKind.NODE, subject_id=honest.pk)
    assert honest_after >= honest_before  # a passed challenge never lowers a score
    again = run_round(submit(buyer, max_price_per_hour="1", command=["sh", "-c", "echo next; sleep 1"]))
    assert again.placements.get().node == honest  # the cheaper cheat gets no more placements
    wait_until(
        lambda: NodePlacement.objects.filter(pk=again.placements.get().node_placement_id, state="exited").exists(),
        timeout=30,
        what=f"the next rental run on the honest node:\n{honest_agent.output()}",
    )
    assert (
        not NodePlacement.objects.filter(node=cheat)
        .exclude(pk=placement.node_placement_id)
        .exclude(placement_id__in=Challenge.objects.filter(node=cheat).values("placement_id"))
        .exists()
    )
