"""Celery tasks: a market round per pool with waiting bids."""

from celery import shared_task

from pricing.services import market_round_run, market_rounds_due


@shared_task(name="pricing.market_rounds_tick")
def market_rounds_tick() -> int:
    """Queue one round for every pool that has bids waiting; return how many were queued."""
    pools = market_rounds_due()
    for pool_id in pools:
        market_round_pool.delay(pool_id)
    return len(pools)


@shared_task(name="pricing.market_round_pool")
def market_round_pool(pool_id: int) -> int | None:
    """Clear one round of one pool; return the round id, or None when there was nothing to clear."""
    market_round = market_round_run(pool_id=pool_id)
    return market_round.pk if market_round else None
