"""Celery tasks of the ledger: settlement batches, the chain watcher, idempotency records (thin wrappers)."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import OperationalError

from ledger.idempotency import idempotency_records_purge
from ledger.settlement.batches import settlement_batch_run
from ledger.settlement.errors import BatchPostFailed, BatchPostPending, ChainUnavailable
from ledger.staking import unstakes_release
from ledger.watcher import chain_watch_scan

# Failures that go away by themselves: the node is down, a post reverted or is not mined yet, a lock timed out.
TRANSIENT_ERRORS = (ChainUnavailable, BatchPostFailed, BatchPostPending, OperationalError)


@shared_task(
    name="ledger.settlement_batch_run",
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=30,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=10,
    acks_late=True,
)
def settlement_batch_run_task() -> int | None:
    """Post pending settlement batches and the next one; return the last batch's seq."""
    batch = settlement_batch_run()
    return batch.seq if batch else None


@shared_task(
    name="ledger.chain_watch_scan",
    autoretry_for=(ChainUnavailable, OperationalError),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=10,
    acks_late=True,
)
def chain_watch_scan_task() -> dict:
    """Scan the Settlement contract's confirmed events; return the block range and counts."""
    result = chain_watch_scan()
    return {
        "from_block": result.from_block,
        "to_block": result.to_block,
        "events": result.events,
        "credited": result.credited,
    }


@shared_task(name="ledger.idempotency_records_purge")
def idempotency_records_purge_task() -> int:
    """Forget completed Idempotency-Key responses past their retention; return how many were deleted."""
    return idempotency_records_purge(older_than=timedelta(hours=settings.JANCTION_IDEMPOTENCY_TTL_HOURS))


@shared_task(name="ledger.unstakes_release")
def unstakes_release_task() -> int:
    """Return the ledger-level unstake requests whose cool-down is over; return how many."""
    return unstakes_release()
