"""Data contributors in Proof of Contribution and in the settlement DA copy, through the ledger's hooks.

Epoch share: POC_DATA_SHARE of each epoch's emission goes to the contributors of records accepted in the
epoch, pro rata to their counted records: at most POC_DATA_MAX_RECORDS_PER_DEVICE_EPOCH per device and
POC_DATA_MAX_RECORDS_PER_USER_EPOCH per account. Nobody accepted: providers get the whole emission.

DA section: each settlement batch lists a salted commitment to every record accepted since the last batch,
with the ledger's scheme (ledger.settlement.commitments): ``sha256(salt ":" record sha256)``, the salt an
HMAC of the record id under the batch's secret key. The contributor gets the salt from the API; nobody else
can test a guessed search query against the published list.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import Count

from contributions.errors import NotCommitted
from contributions.models import DataReward, Record
from ledger.hooks import BatchSection, EpochShare, batch_section_register, epoch_share_register
from ledger.models import SettlementBatch
from ledger.settlement.commitments import transaction_commitment

SHARE_NAME = "data"
SECTION_NAME = "data_contributions"
COMMITMENT_SCHEME = (
    "sha256(salt ':' sha256_of_record_content); salt = HMAC-SHA256(batch key, 'janction-contribution-salt:' id),"
    " revealed to the record's contributor"
)


def data_scores(start: datetime, end: datetime) -> dict[int, int]:
    """Return per contributor the records accepted in [start, end) that count, after the device and account caps."""
    rows = (
        Record.objects.filter(status=Record.Status.ACCEPTED, accepted_at__gte=start, accepted_at__lt=end)
        .values_list("user_id", "device_id")
        .annotate(records=Count("pk"))
    )
    per_user: dict[int, int] = defaultdict(int)
    for user_id, _, records in rows:
        per_user[user_id] += min(records, settings.POC_DATA_MAX_RECORDS_PER_DEVICE_EPOCH)
    return {user_id: min(count, settings.POC_DATA_MAX_RECORDS_PER_USER_EPOCH) for user_id, count in per_user.items()}


def _record_rewards(start: datetime, end: datetime, amounts: dict[int, int]) -> None:
    scores = data_scores(start, end)
    DataReward.objects.bulk_create(
        [
            DataReward(epoch_start=start, user_id=user_id, records_counted=scores.get(user_id, 0), reward=amount)
            for user_id, amount in sorted(amounts.items())
        ]
    )


def _share() -> Decimal:
    return Decimal(str(settings.POC_DATA_SHARE).strip() or "0")


def record_salt(*, key: str, record_id: int) -> str:
    """Return a record's salt under a batch's commitment key (64 hex digits)."""
    return hmac.new(bytes.fromhex(key), f"janction-contribution-salt:{record_id}".encode(), hashlib.sha256).hexdigest()


def da_section(*, key: str, seq: int) -> dict | None:
    """Commit to every record accepted and not yet in a batch, and mark it as in batch ``seq``."""
    rows = list(
        Record.objects.select_for_update()
        .filter(accepted_at__isnull=False, da_batch_seq__isnull=True)
        .order_by("pk")
        .values_list("pk", "sha256")
    )
    if not rows:
        return None
    Record.objects.filter(pk__in=[pk for pk, _ in rows]).update(da_batch_seq=seq)
    commitments = sorted(
        transaction_commitment(salt=record_salt(key=key, record_id=pk), fingerprint=sha) for pk, sha in rows
    )
    return {"commitment": COMMITMENT_SCHEME, "count": len(commitments), "items": commitments}


def record_commitment_reveal(*, user, record_id: int) -> dict:
    """Reveal to its contributor the salt and commitment of a record a settlement batch committed to."""
    record = Record.objects.filter(pk=record_id, user=user).first()
    if record is None or record.da_batch_seq is None:
        raise NotCommitted(
            "You have no record with this id in a settlement batch yet; accepted records enter the next batch.",
            detail={"record_id": record_id},
        )
    batch = SettlementBatch.objects.get(seq=record.da_batch_seq)
    salt = record_salt(key=batch.commitment_key, record_id=record.pk)
    return {
        "record_id": record.pk,
        "sha256": record.sha256,
        "batch_seq": batch.seq,
        "data_hash": "0x" + batch.data_id,
        "salt": salt,
        "commitment": transaction_commitment(salt=salt, fingerprint=record.sha256),
    }


def hooks_register() -> None:
    """Join Proof of Contribution and the settlement DA copy (called from the app's ready())."""
    epoch_share_register(EpochShare(name=SHARE_NAME, fraction=_share, scores=data_scores, record=_record_rewards))
    batch_section_register(BatchSection(name=SECTION_NAME, build=da_section))
