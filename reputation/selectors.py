"""Reputation reads: scores now (stored folds plus the evidence not folded yet), from scratch, and evidence."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from reputation import beta, config
from reputation.models import Evidence, SubjectKind, SubjectScore

SCORE_QUANTUM = Decimal("0.000001")


def subject_evidence(*, kind: str, ids) -> QuerySet[Evidence]:
    """Return the evidence that counts for subjects of `kind`: a provider's includes its nodes'."""
    if kind == SubjectKind.NODE:
        return Evidence.objects.filter(node_id__in=ids)
    if kind == SubjectKind.PROVIDER:
        return Evidence.objects.filter(user_id__in=ids, subject_kind__in=[SubjectKind.NODE, SubjectKind.PROVIDER])
    if kind == SubjectKind.BUYER:
        return Evidence.objects.filter(user_id__in=ids, subject_kind=SubjectKind.BUYER)
    raise ValueError(f"unknown subject kind {kind!r}")


def _key(kind: str) -> str:
    return "node_id" if kind == SubjectKind.NODE else "user_id"


def evidence_days(*, kind: str, ids, after: date | None = None) -> dict[int, list[tuple[int, int, int]]]:
    """Return per subject its (day ordinal, positive, negative) sums, for days after `after`."""
    rows = subject_evidence(kind=kind, ids=ids)
    if after is not None:
        rows = rows.filter(day__gt=after)
    key = _key(kind)
    days: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for subject, day, positive, negative in (
        rows.values_list(key, "day").annotate(p=Sum("positive"), n=Sum("negative")).values_list(key, "day", "p", "n")
    ).order_by():
        days[subject].append((day.toordinal(), int(positive), int(negative)))
    return days


def states_now(*, kind: str, ids, today: date | None = None) -> dict[int, beta.State]:
    """Return each subject's Beta state as of `today` (default: today UTC), including unfolded evidence."""
    ids = list(ids)
    today = today or timezone.now().date()
    factor = config.factor()
    stored = {row.subject_id: row for row in SubjectScore.objects.filter(subject_kind=kind, subject_id__in=ids)}
    oldest = min((row.through_day for row in stored.values()), default=None)
    if len(stored) < len(set(ids)):
        oldest = None  # a subject without a fold needs all its evidence
    pending = evidence_days(kind=kind, ids=ids, after=oldest)
    states = {}
    for subject in ids:
        row = stored.get(subject)
        state = beta.State(row.alpha, row.beta, row.through_day.toordinal()) if row else beta.State()
        days = [d for d in pending.get(subject, []) if state.day is None or d[0] > state.day]
        state = beta.fold(days, factor=factor, state=state)
        states[subject] = beta.at_day(state, day=today.toordinal(), factor=factor)
    return states


def to_score(micro: int) -> Decimal:
    return (Decimal(micro) / beta.MICRO).quantize(SCORE_QUANTUM)


def scores(*, kind: str, ids, today: date | None = None) -> dict[int, Decimal]:
    """Return each subject's score in [0, 1] now; a subject with no evidence gets the prior's (the cold start)."""
    prior_positive, prior_negative = config.priors()
    return {
        subject: to_score(
            beta.score_micro(state.alpha, state.beta, prior_positive=prior_positive, prior_negative=prior_negative)
        )
        for subject, state in states_now(kind=kind, ids=ids, today=today).items()
    }


def score_of(*, kind: str, subject_id: int) -> Decimal:
    return scores(kind=kind, ids=[subject_id])[subject_id]


def scores_from_scratch(*, kind: str, ids, today: date | None = None) -> dict[int, Decimal]:
    """Return scores folded from all evidence, ignoring the stored folds (the check of the incremental path)."""
    ids = list(ids)
    today = today or timezone.now().date()
    factor = config.factor()
    prior_positive, prior_negative = config.priors()
    days = evidence_days(kind=kind, ids=ids)
    result = {}
    for subject in ids:
        state = beta.at_day(beta.fold(days.get(subject, []), factor=factor), day=today.toordinal(), factor=factor)
        result[subject] = to_score(
            beta.score_micro(state.alpha, state.beta, prior_positive=prior_positive, prior_negative=prior_negative)
        )
    return result


def evidence_about_user(*, user) -> QuerySet[Evidence]:
    """Return every piece of evidence about a user as provider, buyer or owner of a node, newest first."""
    return Evidence.objects.filter(Q(user=user)).select_related("node").order_by("-recorded_at", "-pk")


def reputation_overview(*, user, evidence_limit: int = 100) -> dict:
    """Return what a user may see of its own reputation: its scores as provider and buyer, its nodes', the evidence."""
    from nodes.models import Node

    nodes = list(Node.objects.filter(owner=user, deleted_at__isnull=True).order_by("name").values("id", "name"))
    node_scores = scores(kind=SubjectKind.NODE, ids=[n["id"] for n in nodes])
    return {
        "provider_score": score_of(kind=SubjectKind.PROVIDER, subject_id=user.pk),
        "buyer_score": score_of(kind=SubjectKind.BUYER, subject_id=user.pk),
        "nodes": [{**n, "score": node_scores[n["id"]]} for n in nodes],
        "evidence": list(evidence_about_user(user=user)[:evidence_limit]),
    }
