"""Verification challenges end to end on the platform side, with the agent's reports written as the gateway does."""

import pytest
from django.db.models import Sum

from janction.errors import ValidationFailed
from ledger.models import Account
from marketplace.models import RentalState
from nodes.models import NodeCommand, NodeState, PlacementLogLine
from nodes.services import LogChunkReport, PlacementStatusReport, placement_logs_append, placement_status_record
from reputation import challenge_math
from reputation.challenges import challenge_issue, challenges_expire
from reputation.models import ChallengeState, Evidence, EvidenceKind, SubjectKind
from reputation.selectors import score_of
from tests.factories import UserFactory, online_node
from tests.rentals.conftest import USDC, fund, report_state, run_round, submit, sync


@pytest.fixture(autouse=True)
def _reference_price(settings):
    settings.PRICING_DEFAULT_ASK = "0.50"


def _answer(challenge, capture, *, answer: int | None = None, gpu: str = "none", state: str = "exited") -> None:
    """The agent's reports of a challenge placement: its stdout lines, then its end."""
    value = challenge_math.answer(challenge.seed, challenge.size) if answer is None else answer
    placement_logs_append(
        node_id=challenge.node_id,
        chunk=LogChunkReport(
            placement_id=challenge.placement_id, seq=1, stream="stdout", lines=[f"gpu={gpu}", f"answer={value}"]
        ),
    )
    with capture(execute=True):
        placement_status_record(
            node_id=challenge.node_id,
            status=PlacementStatusReport(
                placement_id=challenge.placement_id, state=state, exit_code=0, message="", at_ms=0
            ),
        )
    challenge.refresh_from_db()


@pytest.mark.django_db(transaction=True)
def test_a_node_answering_wrongly_is_quarantined_drained_and_refunded_and_an_honest_node_wins_the_next_round(
    django_capture_on_commit_callbacks,
):
    honest = online_node(UserFactory(), name="honest", vgpus=2, price=500_000)
    cheat = online_node(UserFactory(), name="cheat", vgpus=2, price=400_000)
    buyer = UserFactory()
    fund(buyer, 100 * USDC)
    rental = run_round(submit(buyer, max_price_per_hour="1"))
    placement = rental.placements.get()
    assert placement.node == cheat  # the cheaper node won
    report_state(placement, "running")
    sync()

    good = challenge_issue(node_id=honest.pk)
    start = NodeCommand.objects.get(node=honest)
    assert set(start.message["start_placement"]) >= {"placement_id", "image", "command", "vgpu_local_ids"}
    assert start.message["start_placement"]["placement_id"].startswith("rental-")  # looks like any placement
    _answer(good, django_capture_on_commit_callbacks)
    assert good.state == ChallengeState.PASSED and good.on_cpu and "CPU" in Evidence.objects.get(node=honest).detail

    for attempt in range(2):
        bad = challenge_issue(node_id=cheat.pk)
        _answer(bad, django_capture_on_commit_callbacks, answer=(bad.expected + 1) % challenge_math.PRIME)
        assert bad.state == ChallengeState.FAILED and bad.reason == "wrong answer"
        cheat.refresh_from_db()
        assert cheat.state == (NodeState.QUARANTINED if attempt else NodeState.ONLINE)

    sync()  # the rentals code sees the quarantined node: the placement is interrupted and the escrow refunded
    rental.refresh_from_db()
    assert rental.state in (RentalState.INTERRUPTED, RentalState.FAILED) and rental.escrow_held == 0
    escrow = Account.objects.filter(owner=buyer, kind="escrow").aggregate(total=Sum("balance"))["total"]
    assert escrow == 0

    assert score_of(kind=SubjectKind.NODE, subject_id=honest.pk) > score_of(kind=SubjectKind.NODE, subject_id=-1)
    assert score_of(kind=SubjectKind.NODE, subject_id=cheat.pk) < 0.2
    again = run_round(submit(buyer, max_price_per_hour="1"))
    assert again.placements.get().node == honest  # the cheaper cheat gets no more placements


@pytest.mark.django_db
def test_another_nodes_answer_is_refused_and_nothing_is_stored():
    target = online_node(UserFactory(), name="target", vgpus=1)
    other = online_node(UserFactory(), name="other", vgpus=1)
    challenge = challenge_issue(node_id=target.pk)
    with pytest.raises(ValidationFailed) as refused:
        placement_logs_append(
            node_id=other.pk,
            chunk=LogChunkReport(placement_id=challenge.placement_id, seq=1, stream="stdout", lines=["answer=1"]),
        )
    assert refused.value.code == "placement_not_owned" and refused.value.status == 400
    assert not PlacementLogLine.objects.exists()


@pytest.mark.django_db
def test_a_real_gpu_must_be_the_one_claimed_and_a_silent_node_fails_at_the_deadline(
    django_capture_on_commit_callbacks, settings
):
    node = online_node(UserFactory(), name="real", vgpus=2)
    type(node).objects.filter(pk=node.pk).update(has_fake_gpus=False)
    node.gpus.update(fake=False, name="NVIDIA H100", memory_bytes=80 * 2**30)
    swapped = challenge_issue(node_id=node.pk)
    _answer(swapped, django_capture_on_commit_callbacks, gpu="NVIDIA GeForce RTX 3060, 12288")
    assert swapped.state == ChallengeState.FAILED and "RTX 3060" in swapped.reason
    honest = challenge_issue(node_id=node.pk)
    _answer(honest, django_capture_on_commit_callbacks, gpu="NVIDIA H100, 81920")
    assert honest.state == ChallengeState.PASSED and not honest.on_cpu
    settings.REPUTATION_CHALLENGE_TIMEOUT_SECONDS = -1
    silent = challenge_issue(node_id=node.pk)
    assert challenges_expire() == 1
    silent.refresh_from_db()
    assert silent.state == ChallengeState.FAILED and "deadline" in silent.reason
    assert Evidence.objects.filter(node=node, kind=EvidenceKind.CHALLENGE_FAILED).count() == 2
