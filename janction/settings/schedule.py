"""Celery beat: every periodic task in one place, with the periods set by each concern's settings."""

from .chain import CHAIN_WATCH_INTERVAL_SECONDS, POC_EPOCH_SECONDS, SETTLEMENT_BATCH_INTERVAL_SECONDS
from .contributions import CONTRIBUTIONS_REVIEW_INTERVAL_SECONDS
from .nodes import NODE_AVAILABILITY_PUSH_SECONDS, NODE_OFFLINE_CHECK_INTERVAL_SECONDS
from .notifications import NOTIFICATIONS_ESCROW_SCAN_SECONDS
from .pricing import PRICING_ROUND_INTERVAL_SECONDS
from .rentals import RENTALS_METERING_INTERVAL_SECONDS, RENTALS_SYNC_INTERVAL_SECONDS
from .reputation import (
    LEDGER_UNSTAKE_RELEASE_INTERVAL_SECONDS,
    REPUTATION_CHALLENGE_SCHEDULE_SECONDS,
    REPUTATION_COLLECT_INTERVAL_SECONDS,
)

CELERY_BEAT_SCHEDULE = {
    "market-rounds": {"task": "pricing.market_rounds_tick", "schedule": PRICING_ROUND_INTERVAL_SECONDS},
    "node-offline-sweep": {"task": "nodes.node_mark_stale_offline", "schedule": NODE_OFFLINE_CHECK_INTERVAL_SECONDS},
    "availability-schedules": {
        "task": "nodes.availability_schedules_push",
        "schedule": NODE_AVAILABILITY_PUSH_SECONDS,
    },
    "settlement-batch": {"task": "ledger.settlement_batch_run", "schedule": SETTLEMENT_BATCH_INTERVAL_SECONDS},
    "idempotency-purge": {"task": "ledger.idempotency_records_purge", "schedule": 3600},
    "chain-watch": {"task": "ledger.chain_watch_scan", "schedule": CHAIN_WATCH_INTERVAL_SECONDS},
    "rentals-sync": {"task": "rentals.placements_sync", "schedule": RENTALS_SYNC_INTERVAL_SECONDS},
    "rentals-metering": {"task": "rentals.metering_run", "schedule": RENTALS_METERING_INTERVAL_SECONDS},
    "reputation-collect": {"task": "reputation.evidence_collect", "schedule": REPUTATION_COLLECT_INTERVAL_SECONDS},
    "reputation-challenges": {
        "task": "reputation.challenges_schedule",
        "schedule": REPUTATION_CHALLENGE_SCHEDULE_SECONDS,
    },
    "unstakes-release": {"task": "ledger.unstakes_release", "schedule": LEDGER_UNSTAKE_RELEASE_INTERVAL_SECONDS},
    "contribution-epoch": {"task": "ledger.contribution_epoch_run", "schedule": POC_EPOCH_SECONDS},
    "notifications-escrow-low": {
        "task": "marketplace.notifications_escrow_low_scan",
        "schedule": NOTIFICATIONS_ESCROW_SCAN_SECONDS,
    },
    "contributions-review": {
        "task": "contributions.review_pending",
        "schedule": CONTRIBUTIONS_REVIEW_INTERVAL_SECONDS,
    },
}
