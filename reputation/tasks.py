"""Reputation's periodic work: collect evidence, then fold complete days into the stored scores."""

from celery import shared_task

from reputation.challenges import challenges_expire
from reputation.collect import evidence_collect
from reputation.services import scores_fold


@shared_task(name="reputation.evidence_collect")
def evidence_collect_task() -> dict:
    counts = evidence_collect()
    counts["challenges_expired"] = challenges_expire()
    counts["folded_days"] = len(scores_fold())
    return counts
