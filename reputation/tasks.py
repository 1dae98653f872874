"""Celery tasks of reputation: Proof-of-Contribution epochs (thin wrappers over services)."""

from celery import shared_task
from django.db import OperationalError

from reputation.contribution import contribution_epoch_run


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
