"""Data contributions (docs/contributions.md): upload limits, consent terms and the data contributors' PoC share."""

from decimal import Decimal, InvalidOperation

from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_int, env_str

# The terms the extension shows; an upload must consent to exactly this version.
CONTRIBUTIONS_TERMS_VERSION = env_str("CONTRIBUTIONS_TERMS_VERSION", "2026-12-01")
# Whether those terms let exports include records that quote other people (social posts). Off: never exported.
CONTRIBUTIONS_TERMS_ALLOW_QUOTES = env_bool("CONTRIBUTIONS_TERMS_ALLOW_QUOTES", False)
# Size limits: one record's content (UTF-8 bytes), its metadata (JSON bytes), records per batch.
CONTRIBUTIONS_MAX_RECORD_BYTES = env_int("CONTRIBUTIONS_MAX_RECORD_BYTES", 8 * 1024)
CONTRIBUTIONS_MAX_METADATA_BYTES = env_int("CONTRIBUTIONS_MAX_METADATA_BYTES", 1024)
CONTRIBUTIONS_MAX_BATCH_RECORDS = env_int("CONTRIBUTIONS_MAX_BATCH_RECORDS", 50)
# Records one device may store per PoC epoch (a flood stops at this, whatever is accepted).
CONTRIBUTIONS_MAX_UPLOADS_PER_DEVICE_EPOCH = env_int("CONTRIBUTIONS_MAX_UPLOADS_PER_DEVICE_EPOCH", 1000)
# Review: fewer characters than this is rejected automatically.
CONTRIBUTIONS_MIN_CHARS = env_int("CONTRIBUTIONS_MIN_CHARS", 3)
# Unicode scripts accepted automatically; other scripts go to an operator.
CONTRIBUTIONS_AUTO_SCRIPTS = env_str("CONTRIBUTIONS_AUTO_SCRIPTS", "Latin")
CONTRIBUTIONS_REVIEW_INTERVAL_SECONDS = env_int("CONTRIBUTIONS_REVIEW_INTERVAL_SECONDS", 60)

# Proof of Contribution (docs/proof-of-contribution.md): the fraction of each epoch's JCT emission paid to
# data contributors pro rata to their accepted records (when any were accepted in the epoch), and the most
# records that count per device and per account in one epoch.
POC_DATA_SHARE = env_str("POC_DATA_SHARE", "0.1")
try:
    _share = Decimal(POC_DATA_SHARE)
except InvalidOperation:
    _share = Decimal(-1)
if not _share.is_finite() or not Decimal(0) <= _share <= Decimal(1):
    raise ImproperlyConfigured(f"POC_DATA_SHARE={POC_DATA_SHARE!r} must be a decimal fraction from 0 to 1, e.g. 0.1.")
POC_DATA_MAX_RECORDS_PER_DEVICE_EPOCH = env_int("POC_DATA_MAX_RECORDS_PER_DEVICE_EPOCH", 200)
POC_DATA_MAX_RECORDS_PER_USER_EPOCH = env_int("POC_DATA_MAX_RECORDS_PER_USER_EPOCH", 400)
