"""Celery tasks of reputation: Proof-of-Contribution epochs; evidence collection and the daily score fold."""

from celery import shared_task
from django.db import OperationalError

from reputation.challenges import challenges_expire, challenges_schedule
from reputation.collect import evidence_collect
from reputation.contribution import contribution_epoch_run
from reputation.services import scores_fold


# The name predates the move from the ledger app; beat schedules and queued messages still use it.
@shared_task(
    name="ledger.contribution_epoch_run",
    autoretry_for=(OperationalError,),
    retry_backoff=60,
    retry_backoff_max=900,
    retry_jitter=True,
    max_retries=5,
    acks_late=True,
)
def contribution_epoch_run_task() -> list[str]:
    """Score every finished Proof-of-Contribution epoch not yet scored; return their start times."""
    return [epoch.start.isoformat() for epoch in contribution_epoch_run()]


@shared_task(name="reputation.evidence_collect")
def evidence_collect_task() -> dict:
    counts = evidence_collect()
    counts["challenges_expired"] = challenges_expire()
    counts["folded_days"] = len(scores_fold())
    return counts


@shared_task(name="reputation.challenges_schedule")
def challenges_schedule_task() -> list[int]:
    """Challenge the online nodes whose turn it is (REPUTATION_CHALLENGES_PER_NODE_PER_DAY); return their ids."""
    return [challenge.node_id for challenge in challenges_schedule()]
