"""Evidence comes from real events (placement ends, gateway refusals, heartbeats), once; self-dealing counts nothing."""

from datetime import UTC, datetime, time, timedelta

import pytest
from django.utils import timezone

from nodes.models import NodeEvent, NodePlacement, NodeState
from nodes.services import (
    GpuClaimed,
    GpuReport,
    HelloReport,
    PlacementStatusReport,
    node_create,
    node_hello,
    placement_status_record,
)
from pricing.models import Bid
from reputation.collect import missed_signals, uptime_evidence
from reputation.errors import EvidenceInvalid, SubjectNotFound
from reputation.models import Alert, Evidence, EvidenceKind, SubjectKind
from reputation.selectors import score_of
from reputation.services import account_link, evidence_correct, evidence_record
from tests.factories import UserFactory


def _placement(node, buyer, *, number: int = 1) -> NodePlacement:
    bid = Bid.objects.create(
        owner=buyer,
        pool_id=node.vgpus.first().pool_id,
        units=1,
        max_price_per_hour=1,
        reference=f"rental:{number}:{node.pk}",
        deadline=timezone.now() + timedelta(hours=1),
    )
    return NodePlacement.objects.create(node=node, placement_id=f"rental-{number}-{bid.pk}-{node.pk}", state="running")


def _end(node, placement, state: str, capture) -> None:
    with capture(execute=True):
        placement_status_record(
            node_id=node.pk,
            status=PlacementStatusReport(
                placement_id=placement.placement_id, state=state, exit_code=0, message="", at_ms=0
            ),
        )


def test_a_completed_placement_counts_for_the_node_and_a_lost_one_against_it(
    node, buyer, django_capture_on_commit_callbacks
):
    _end(node, _placement(node, buyer, number=1), "exited", django_capture_on_commit_callbacks)
    _end(node, _placement(node, buyer, number=2), "lost", django_capture_on_commit_callbacks)
    _end(node, _placement(node, buyer, number=3), "failed", django_capture_on_commit_callbacks)
    kinds = dict(Evidence.objects.filter(node=node).values_list("kind", "negative"))
    assert kinds == {
        EvidenceKind.PLACEMENT_COMPLETED: 0,
        EvidenceKind.PLACEMENT_LOST: 3_000_000,
        EvidenceKind.PLACEMENT_FAILED: 0,  # the workload's own failure: recorded, weighs nothing
    }
    assert score_of(kind=SubjectKind.NODE, subject_id=node.pk) < score_of(kind=SubjectKind.PROVIDER, subject_id=0)


def test_a_repeated_report_or_the_collector_after_the_signal_records_nothing_more(
    node, buyer, django_capture_on_commit_callbacks
):
    placement = _placement(node, buyer)
    _end(node, placement, "exited", django_capture_on_commit_callbacks)
    _end(node, placement, "exited", django_capture_on_commit_callbacks)
    missed_signals(since=timezone.now() - timedelta(hours=1))
    assert Evidence.objects.filter(node=node).count() == 1


def test_the_collector_records_what_a_lost_signal_missed(node, buyer):
    placement = _placement(node, buyer)
    placement_status_record(  # no on_commit callbacks run: the signal is lost
        node_id=node.pk,
        status=PlacementStatusReport(
            placement_id=placement.placement_id, state="lost", exit_code=None, message="", at_ms=0
        ),
    )
    assert not Evidence.objects.exists()
    assert missed_signals(since=timezone.now() - timedelta(hours=1)) == 1
    assert Evidence.objects.get().kind == EvidenceKind.PLACEMENT_LOST


def test_renting_your_own_node_or_a_linked_account_counts_for_nothing(
    provider, node, django_capture_on_commit_callbacks
):
    _end(node, _placement(node, provider, number=1), "exited", django_capture_on_commit_callbacks)
    sock_puppet = UserFactory()
    account_link(user_id=provider.pk, other_id=sock_puppet.pk, reason="same card")
    _end(node, _placement(node, sock_puppet, number=2), "exited", django_capture_on_commit_callbacks)
    rows = list(Evidence.objects.filter(node=node).values_list("self_dealing", "positive", "negative"))
    assert rows == [(True, 0, 0), (True, 0, 0)]
    assert score_of(kind=SubjectKind.NODE, subject_id=node.pk) == score_of(kind=SubjectKind.NODE, subject_id=-1)


def _hello(uuid: str) -> HelloReport:
    gpu = GpuReport(
        index=0,
        uuid=uuid,
        name="H100",
        memory_bytes=80 * 2**30,
        compute_capability="9.0",
        architecture="hopper",
        driver_version="550",
        cuda_version="12.4",
        mig_capable=True,
        mig_enabled=False,
        fake=False,
    )
    return HelloReport(
        agent_version="1",
        runtime="podman",
        hostname="h",
        network_unsupported=False,
        gpus=[gpu],
        vgpus=[],
        placements=[],
    )


def test_a_sybil_pair_is_detected_from_a_duplicated_gpu_uuid(db, django_capture_on_commit_callbacks):
    first = node_create(owner=UserFactory(), name="first").node
    second = node_create(owner=UserFactory(), name="second").node
    node_hello(node_id=first.pk, hello=_hello("GPU-real-1"))
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(GpuClaimed):
        node_hello(node_id=second.pk, hello=_hello("GPU-real-1"))
    evidence = Evidence.objects.get(node=second)
    assert evidence.kind == EvidenceKind.SYBIL_GPU_UUID and evidence.negative == 20_000_000
    assert "Sybil" in Alert.objects.get(evidence=evidence).message
    assert not Evidence.objects.filter(node=first).exists()
    assert score_of(kind=SubjectKind.NODE, subject_id=second.pk) < 0.1
    assert score_of(kind=SubjectKind.PROVIDER, subject_id=second.owner_id) < 0.1


def test_uptime_is_the_share_of_a_day_the_node_was_online(node):
    yesterday = timezone.now().date() - timedelta(days=1)
    start = datetime.combine(yesterday, time.min, tzinfo=UTC)
    NodeEvent.objects.filter(node=node).update(at=start - timedelta(days=1))
    type(node).objects.filter(pk=node.pk).update(
        enrolled_at=start - timedelta(days=1), created_at=start - timedelta(days=1)
    )
    offline = NodeEvent.objects.create(node=node, from_state="online", to_state=NodeState.OFFLINE, reason="t")
    online = NodeEvent.objects.create(node=node, from_state="offline", to_state=NodeState.ONLINE, reason="t")
    NodeEvent.objects.filter(pk=offline.pk).update(at=start + timedelta(hours=6))
    NodeEvent.objects.filter(pk=online.pk).update(at=start + timedelta(hours=12))
    assert uptime_evidence(day=yesterday) == 1
    assert uptime_evidence(day=yesterday) == 0
    evidence = Evidence.objects.get(node=node, kind=EvidenceKind.UPTIME)
    assert (evidence.positive, evidence.negative) == (750_000, 250_000)


def test_evidence_about_a_missing_subject_or_with_bad_amounts_is_refused_and_nothing_is_stored(node):
    cases = [
        ({"subject_kind": "node", "node_id": 10**9}, SubjectNotFound),
        ({"subject_kind": "buyer", "user_id": 10**9}, SubjectNotFound),
        ({"subject_kind": "buyer", "user_id": None}, SubjectNotFound),
        ({"subject_kind": "node", "node_id": node.pk, "negative": -1}, EvidenceInvalid),
        ({"subject_kind": "node", "node_id": node.pk, "negative": 10**20}, EvidenceInvalid),
        ({"subject_kind": "node", "node_id": node.pk, "positive": 1.5}, EvidenceInvalid),
        ({"subject_kind": "martian", "user_id": node.owner_id}, EvidenceInvalid),
        ({"subject_kind": "provider", "user_id": node.owner_id, "node_id": node.pk}, EvidenceInvalid),
        ({"subject_kind": "node", "node_id": node.pk, "corrects_id": 10**9}, SubjectNotFound),
    ]
    for arguments, error in cases:
        with pytest.raises(error):
            evidence_record(kind=EvidenceKind.CHALLENGE_FAILED, source="test", source_key="k", **arguments)
    assert not Evidence.objects.exists()


def test_a_correction_is_new_evidence_and_the_original_stays(node):
    wrong = evidence_record(
        kind=EvidenceKind.PLACEMENT_LOST, subject_kind="node", node_id=node.pk, source="test", source_key="lost:1"
    )
    before = score_of(kind=SubjectKind.NODE, subject_id=node.pk)
    correction = evidence_correct(evidence_id=wrong.pk, reason="the buyer's image was at fault")
    assert (correction.positive, correction.corrects_id) == (wrong.negative, wrong.pk)
    assert Evidence.objects.filter(pk=wrong.pk, negative=3_000_000).exists()
    assert score_of(kind=SubjectKind.NODE, subject_id=node.pk) > before


def test_a_user_sees_its_own_scores_and_evidence_and_nobody_elses(node, provider, client):
    from rest_framework.test import APIClient

    evidence_record(kind=EvidenceKind.PLACEMENT_LOST, subject_kind="node", node_id=node.pk, source="t", source_key="a")
    stranger = UserFactory()
    evidence_record(
        kind=EvidenceKind.DISPUTE_REJECTED, subject_kind="buyer", user_id=stranger.pk, source="t", source_key="b"
    )
    api = APIClient()
    assert api.get("/api/v1/reputation/").status_code in (401, 403)
    api.force_authenticate(provider)
    body = api.get("/api/v1/reputation/").json()
    assert [e["kind"] for e in body["evidence"]] == ["placement_lost"]
    assert body["nodes"] == [{"id": node.pk, "name": "rig", "score": "0.200000"}]
    assert body["buyer_score"] == "0.500000"
    client.force_login(provider)
    page = client.get("/reputation/").content.decode()
    assert "0.200000" in page and "Placement lost by the provider" in page and "Dispute rejected" not in page
