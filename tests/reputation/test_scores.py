"""Scores: folded day by day they equal a fold from scratch; a crash mid-fold leaves the old scores."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from reputation import services
from reputation.models import Evidence, EvidenceKind, ScoreFold, SubjectKind, SubjectScore
from reputation.selectors import scores, scores_from_scratch
from reputation.services import evidence_record, scores_fold
from tests.factories import UserFactory, online_node

TODAY = datetime(2026, 6, 30, 12, tzinfo=UTC)


def _evidence(day_offset: int, *, n: int, **arguments) -> None:
    evidence = evidence_record(source="test", source_key=f"t:{day_offset}:{n}:{arguments}", **arguments)
    Evidence.objects.filter(pk=evidence.pk).update(day=(TODAY - timedelta(days=day_offset)).date())


@pytest.fixture
def history(db):
    """Three nodes of two providers and a buyer with 20 days of mixed evidence."""
    alice, bob, carol = UserFactory(), UserFactory(), UserFactory()
    nodes = [online_node(alice, name="a1"), online_node(alice, name="a2"), online_node(bob, name="b1")]
    kinds = [EvidenceKind.PLACEMENT_COMPLETED, EvidenceKind.PLACEMENT_LOST, EvidenceKind.CHALLENGE_PASSED]
    for day in range(20, 0, -1):
        for index, node in enumerate(nodes):
            if (day + index) % 3:
                _evidence(day, n=index, kind=kinds[(day * index) % 3], subject_kind="node", node_id=node.pk)
        if day % 4 == 0:
            _evidence(day, n=9, kind=EvidenceKind.DISPUTE_REJECTED, subject_kind="buyer", user_id=carol.pk)
    return {"nodes": [n.pk for n in nodes], "providers": [alice.pk, bob.pk], "buyers": [carol.pk]}


def _all_scores(history, fn):
    return {
        kind: fn(kind=kind, ids=history[key], today=TODAY.date())
        for kind, key in (
            (SubjectKind.NODE, "nodes"),
            (SubjectKind.PROVIDER, "providers"),
            (SubjectKind.BUYER, "buyers"),
        )
    }


def test_folding_day_by_day_equals_a_fold_from_scratch(history):
    scratch = _all_scores(history, scores_from_scratch)
    assert _all_scores(history, scores) == scratch  # nothing folded yet: reads fold the evidence themselves
    for back in range(15, -1, -3):  # the daily task, run late and irregularly
        scores_fold(now=TODAY - timedelta(days=back))
        assert _all_scores(history, scores) == scratch
    assert ScoreFold.objects.filter(day=(TODAY - timedelta(days=1)).date()).exists()
    assert SubjectScore.objects.count() == 6
    assert len(set(scratch[SubjectKind.NODE].values())) == 3  # the nodes differ: the check can fail


def test_a_crash_in_the_middle_of_a_fold_leaves_the_old_scores_and_the_next_run_finishes(history, monkeypatch):
    scores_fold(now=TODAY - timedelta(days=10))
    before = list(SubjectScore.objects.order_by("pk").values_list("alpha", "beta", "through_day"))
    folds = ScoreFold.objects.count()
    real = services.evidence_days
    calls = {"n": 0}

    def crash(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # between the node and the provider scores of the next day
            raise RuntimeError("worker killed")
        return real(**kwargs)

    monkeypatch.setattr(services, "evidence_days", crash)
    with pytest.raises(RuntimeError):
        scores_fold(now=TODAY)
    assert list(SubjectScore.objects.order_by("pk").values_list("alpha", "beta", "through_day")) == before
    assert ScoreFold.objects.count() == folds
    monkeypatch.setattr(services, "evidence_days", real)
    scores_fold(now=TODAY)
    assert _all_scores(history, scores) == _all_scores(history, scores_from_scratch)


def test_a_new_subject_starts_at_the_documented_cold_start_score_that_passes_the_default_minimum(db, settings):
    node = online_node(UserFactory())
    score = scores(kind=SubjectKind.NODE, ids=[node.pk])[node.pk]
    assert str(score) == "0.500000"
    assert score >= Decimal(settings.REPUTATION_POOL_MIN_SCORE)
