"""Reputation writes: recording evidence (idempotent, append-only), operator alerts, links and the daily fold."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min
from django.utils import timezone

from nodes.models import Node
from reputation import beta, config
from reputation.errors import EvidenceInvalid, SubjectNotFound
from reputation.models import AccountLink, Alert, Evidence, EvidenceKind, ScoreFold, SubjectKind, SubjectScore
from reputation.selectors import evidence_days

logger = logging.getLogger(__name__)

MAX_UNITS_PER_EVIDENCE = 1_000


def users_linked(a: int, b: int) -> bool:
    """Return whether two users are the same person as far as the platform knows (same account, operator link)."""
    if a == b:
        return True
    low, high = sorted((a, b))
    return AccountLink.objects.filter(user_id=low, other_id=high).exists()


def account_link(*, user_id: int, other_id: int, reason: str) -> AccountLink:
    """Record that two accounts are one person (an operator's finding)."""
    if user_id == other_id:
        raise EvidenceInvalid("An account is always linked to itself; name two different accounts.")
    users = get_user_model().objects.filter(pk__in=[user_id, other_id]).count()
    if users != 2:
        raise SubjectNotFound("Both accounts must exist.")
    low, high = sorted((user_id, other_id))
    link, _ = AccountLink.objects.get_or_create(user_id=low, other_id=high, defaults={"reason": reason[:200]})
    return link


def evidence_record(
    *,
    kind: str,
    subject_kind: str,
    source: str,
    source_key: str,
    node_id: int | None = None,
    user_id: int | None = None,
    positive: int | None = None,
    negative: int | None = None,
    at: datetime | None = None,
    detail: str = "",
    counterparty_id: int | None = None,
    corrects_id: int | None = None,
    alert: str = "",
) -> Evidence | None:
    """Store one piece of evidence once (by `source_key`); return it, or None when it was already stored.

    `positive`/`negative` default to the kind's weights. A `counterparty_id` linked to the subject's user
    (the same account, or accounts an operator linked) makes it self-dealing: stored, counting for nothing.
    A non-empty `alert` also raises an operator alert. Nothing is stored when any argument is refused.
    """
    from reputation.weights import amounts

    if kind not in EvidenceKind.values:
        raise EvidenceInvalid(f"Unknown evidence kind {kind!r}; use one of {', '.join(EvidenceKind.values)}.")
    if subject_kind not in SubjectKind.values:
        raise EvidenceInvalid(f"Unknown subject {subject_kind!r}; use node, provider or buyer.")
    if not source_key or len(source_key) > 160:
        raise EvidenceInvalid("Evidence needs a source key of 1 to 160 characters.")
    if subject_kind == SubjectKind.NODE:
        node = Node.objects.filter(pk=node_id).only("owner_id").first() if node_id is not None else None
        if node is None:
            raise SubjectNotFound(f"Node {node_id} does not exist; evidence needs an existing subject.")
        user_id = node.owner_id
    else:
        if node_id is not None:
            raise EvidenceInvalid("Only evidence about a node names a node.")
        if user_id is None or not get_user_model().objects.filter(pk=user_id).exists():
            raise SubjectNotFound(f"User {user_id} does not exist; evidence needs an existing subject.")
    default_positive, default_negative = amounts(kind) if kind != EvidenceKind.CORRECTION else (0, 0)
    positive = default_positive if positive is None else positive
    negative = default_negative if negative is None else negative
    limit = MAX_UNITS_PER_EVIDENCE * beta.MICRO
    for name, value in (("positive", positive), ("negative", negative)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise EvidenceInvalid(f"{name} is a whole number of micro-units from 0 to {limit}.")
    if corrects_id is not None and not Evidence.objects.filter(pk=corrects_id).exists():
        raise SubjectNotFound(f"Evidence {corrects_id} does not exist; a correction names stored evidence.")
    self_dealing = counterparty_id is not None and users_linked(user_id, counterparty_id)
    if self_dealing:
        positive = negative = 0
    now = timezone.now()
    try:
        with transaction.atomic():
            evidence = Evidence.objects.create(
                subject_kind=subject_kind,
                node_id=node_id if subject_kind == SubjectKind.NODE else None,
                user_id=user_id,
                kind=kind,
                positive=positive,
                negative=negative,
                day=now.date(),
                at=at or now,
                source=source[:40],
                source_key=source_key,
                detail=detail[:300],
                self_dealing=self_dealing,
                corrects_id=corrects_id,
            )
            if alert:
                Alert.objects.create(evidence=evidence, message=alert[:500])
    except IntegrityError:
        if Evidence.objects.filter(source_key=source_key).exists():
            return None
        raise
    if alert:
        logger.warning("reputation alert: %s", alert)
    return evidence


def evidence_correct(*, evidence_id: int, reason: str, positive: int | None = None, negative: int | None = None):
    """Offset stored evidence with a new correction (by default its mirror: bad becomes as much good)."""
    original = Evidence.objects.filter(pk=evidence_id).first()
    if original is None:
        raise SubjectNotFound(f"Evidence {evidence_id} does not exist.")
    if not reason.strip():
        raise EvidenceInvalid("A correction says why.")
    return evidence_record(
        kind=EvidenceKind.CORRECTION,
        subject_kind=original.subject_kind,
        node_id=original.node_id,
        user_id=None if original.subject_kind == SubjectKind.NODE else original.user_id,
        positive=original.negative if positive is None else positive,
        negative=original.positive if negative is None else negative,
        source="operator",
        source_key=f"correction:{original.pk}:{Evidence.objects.filter(corrects=original).count() + 1}",
        detail=reason,
        corrects_id=original.pk,
    )


# --- The daily fold ----------------------------------------------------------------------------------------


def _fold_day(day: date) -> ScoreFold | None:
    """Fold one day's evidence into every subject's stored state, in one transaction; None if already folded."""
    factor = config.factor()
    rows = Evidence.objects.filter(day=day)
    try:
        with transaction.atomic():
            # The fold's own row first: a second worker folding the same day waits here, then fails and leaves.
            fold = ScoreFold.objects.create(day=day, evidence_rows=0, subjects=0)
            touched = 0
            for kind in SubjectKind.values:
                ids = _subjects_of_day(kind, day)
                if not ids:
                    continue
                days = evidence_days(kind=kind, ids=ids, after=day - timedelta(days=1))
                stored = {
                    row.subject_id: row
                    for row in SubjectScore.objects.select_for_update().filter(subject_kind=kind, subject_id__in=ids)
                }
                updates, creates = [], []
                for subject in ids:
                    today = [d for d in days.get(subject, []) if d[0] == day.toordinal()]
                    row = stored.get(subject)
                    state = beta.State(row.alpha, row.beta, row.through_day.toordinal()) if row else beta.State()
                    if state.day is not None and state.day >= day.toordinal():
                        continue
                    state = beta.fold(today, factor=factor, state=state)
                    if row is None:
                        creates.append(
                            SubjectScore(
                                subject_kind=kind,
                                subject_id=subject,
                                alpha=state.alpha,
                                beta=state.beta,
                                through_day=day,
                            )
                        )
                    else:
                        row.alpha, row.beta, row.through_day = state.alpha, state.beta, day
                        updates.append(row)
                SubjectScore.objects.bulk_create(creates, batch_size=2000)
                SubjectScore.objects.bulk_update(updates, ["alpha", "beta", "through_day"], batch_size=2000)
                touched += len(creates) + len(updates)
            fold.evidence_rows = rows.count()
            fold.subjects = touched
            fold.save(update_fields=["evidence_rows", "subjects"])
    except IntegrityError:
        return None
    return fold


def _subjects_of_day(kind: str, day: date) -> list[int]:
    rows = Evidence.objects.filter(day=day)
    if kind == SubjectKind.NODE:
        return sorted(set(rows.filter(node__isnull=False).values_list("node_id", flat=True)))
    if kind == SubjectKind.PROVIDER:
        kinds = [SubjectKind.NODE, SubjectKind.PROVIDER]
    else:
        kinds = [SubjectKind.BUYER]
    return sorted(set(rows.filter(subject_kind__in=kinds).values_list("user_id", flat=True)))


def scores_fold(*, now: datetime | None = None) -> list[ScoreFold]:
    """Fold every complete day (ended REPUTATION_FOLD_GRACE_SECONDS ago) not folded yet, oldest first.

    Each day is one transaction: a crash leaves the previous days' scores and the next run folds the rest.
    Reads never wait for this: they add the evidence of unfolded days themselves (selectors.states_now).
    """
    now = now or timezone.now()
    last_complete = (now - timedelta(seconds=settings.REPUTATION_FOLD_GRACE_SECONDS)).date() - timedelta(days=1)
    last = ScoreFold.objects.aggregate(day=Max("day"))["day"]
    if last is None:
        first = Evidence.objects.aggregate(day=Min("day"))["day"]
        if first is None:
            return []
    else:
        first = last + timedelta(days=1)
    folded = []
    day = first
    evidence_on = dict(
        Evidence.objects.filter(day__gte=first, day__lte=last_complete)
        .values_list("day")
        .annotate(n=Count("pk"))
        .values_list("day", "n")
        .order_by()
    )
    while day <= last_complete:
        if evidence_on.get(day):
            fold = _fold_day(day)
        else:
            fold = ScoreFold.objects.get_or_create(day=day, defaults={"evidence_rows": 0, "subjects": 0})[0]
        if fold is not None:
            folded.append(fold)
        day += timedelta(days=1)
    return folded
