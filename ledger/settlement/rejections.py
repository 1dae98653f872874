"""What the platform does when the guardian rejects a posted batch (`BatchRejected` on chain).

The chain watcher calls ``batch_rejection_record`` for each confirmed `BatchRejected`: the batch becomes
`rejected`, and a `batch_rejected` alert is opened for the operator. While that alert is open, no new batch
is prepared or posted: the guardian said something is wrong with what the operator key posted, and posting
the same amounts again unreviewed would only be rejected again (or, with a stolen key, defeat the guardian).
Once the operator has found out why and resolved the alert (admin, Settlement alerts), the next batch is made
as usual and carries everything the rejected one owed: leaves are cumulative, so it holds every amount of the
rejected root plus what was earned since (see docs/settlement.md, "When the guardian rejects a batch").
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone
from hexbytes import HexBytes

from ledger.models import SettlementAlert, SettlementBatch
from ledger.settlement.batches import settlement_alert_open

logger = logging.getLogger(__name__)


def batch_rejection_record(*, seq: int, root: bytes | str, tx_hash: str, block_number: int) -> SettlementBatch | None:
    """Mark batch ``seq`` rejected and alert the operator, once; return the batch (None if it is not ours)."""
    root_hex = HexBytes(root).to_0x_hex()
    detail = {"seq": seq, "root": root_hex, "tx_hash": tx_hash, "block_number": block_number}
    with transaction.atomic():
        batch = SettlementBatch.objects.select_for_update().filter(seq=seq).first()
        if batch is None or batch.root != root_hex:
            # A root this database never prepared was posted (a stolen operator key?) and rejected: say so.
            message = (
                f"The guardian rejected batch {seq} with root {root_hex}, which is not the root this platform "
                f"prepared for seq {seq} ({batch.root if batch else 'none'}). Check who holds the operator key."
            )
            settlement_alert_open(batch, SettlementAlert.Kind.CHAIN_MISMATCH, message, detail)
            logger.error("settlement: %s", message)
            return None
        if batch.status == SettlementBatch.Status.REJECTED:
            return batch  # a re-scan of the same event
        batch.status = SettlementBatch.Status.REJECTED
        batch.rejected_at = timezone.now()
        batch.last_error = f"rejected by the guardian in {tx_hash} (block {block_number})"
        batch.save(update_fields=["status", "rejected_at", "last_error"])
        message = (
            f"The guardian rejected batch {seq} (root {root_hex}) before it became claimable. Posting is held: "
            "find out why, then resolve this alert; the next batch will carry everything batch "
            f"{seq} owed plus what was earned since."
        )
        settlement_alert_open(batch, SettlementAlert.Kind.BATCH_REJECTED, message, detail)
    logger.error(
        "settlement: guardian rejected batch %s (root %s); posting held until the alert is resolved", seq, root_hex
    )
    return batch
